"""Fault probes: faults and bad inputs, each made the way a user or an unlucky machine makes it (two writers on one
workdir, kills, flipped bytes, truncated files, a full disk, out-of-range settings, a sweep too large for memory),
on tiny studies, and what fttrace did about each: nothing may be silently wrong or end in a traceback.

    python benchmarks/fault_probes.py                      # every probe (10 min 46 s on the 2-core AMD EPYC)
    python benchmarks/fault_probes.py --only sigterm merge-into-source
    python benchmarks/fault_probes.py --keep /tmp/probes   # work in /tmp/probes and leave it there

Run it from the checkout's virtual environment (fttrace installed, with the [test] extra: the tiny settings are
tests/helpers.py's). Every probe runs the installed CLI as subprocesses (`fttrace ...`, `python -m analysis ...`,
`python -c "import fttrace; ..."`) in a temporary directory, sharing one compilation cache, and classifies what
came out:

    one-line error   non-zero exit, exactly one stderr line starting `fttrace: error:` (or `analysis: error:`)
                     that names what the probe expects, no `Traceback` anywhere (for `python -c`: fttrace's own
                     exception type with a one-line message, nothing chained to it)
    correct          the right behaviour, verified by the probe: results equal to an undisturbed run's, a manifest
                     byte for byte as it was, a stop by signal that says how to resume, a summary that says the run
                     is unfinished
    silently wrong   exit 0 (or a stop that claims success) with wrong or mixed results, or bad input accepted
    traceback        a `Traceback` in the output
    other            anything else (the reason says what), and probes skipped for want of something

It prints one row per probe (a Markdown table: name, what was done, exit code, class, reason), the count of each
class and the wall time, and exits 1 if any probe is `silently wrong` or `traceback`. Progress goes to stderr.

The reference runs are the smoke study at tests/helpers.py's TINY size without evaluations, with a pretraining of
200 steps checkpointed every 10 (so a run can be stopped mid-phase with two checkpoints behind it), and
configs/canary_unlock.py:tiny. The full-disk probe mounts a small tmpfs (it needs root; otherwise it is skipped).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import NO_EVALS, SMOKE, TINY  # noqa: E402 -- the tests' tiny settings, in one place

CANARY = f"{ROOT}/configs/canary_unlock.py:tiny"
STORIES = f"{ROOT}/configs/stories_twist.py:tiny"
SMOKE_OVERRIDES = [f"--config.{o}" for o in TINY + [NO_EVALS, "pretrain.steps=200", "checkpoint.every_chunks=1"]]
FTTRACE = shutil.which("fttrace", path=str(Path(sys.executable).parent)) or shutil.which("fttrace") or "fttrace"
TIMEOUT = 900  # seconds any one command may take

ONE_LINE, CORRECT, SILENT, TRACEBACK, OTHER = "one-line error", "correct", "silently wrong", "traceback", "other"
CLASSES = (ONE_LINE, CORRECT, SILENT, TRACEBACK, OTHER)
FAILING = (SILENT, TRACEBACK)


@dataclasses.dataclass
class Outcome:
    did: str
    code: int | None
    kind: str
    reason: str


@dataclasses.dataclass
class Done:
    """A finished command: its exit status (negative: killed by that signal), stdout and stderr."""
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def last(self) -> str:
        lines = self.err.strip().splitlines() or self.out.strip().splitlines()
        return lines[-1] if lines else ""


class SetupError(Exception):
    """Something a probe needs (a reference run, a killed run) could not be made; the probe is `other`."""


# ---------------------------------------------------------------------------------------------- running commands

def default_sigint() -> None:
    """In a child: SIGINT back to its default, so Python turns it into KeyboardInterrupt even when this script was
    started in the background (where the shell ignores SIGINT for its children)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lab:
    """The probes' directory: commands run in it with one compilation cache, and the runs several probes share."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        self.env.update(FTTRACE_COMPILATION_CACHE=str(root / "xla-cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONUNBUFFERED="1")
        self.made: dict[str, Path] = {}
        self.running: list[tuple[subprocess.Popen, Path]] = []

    def path(self, name: str) -> Path:
        return self.root / name

    def short(self, text: str) -> str:
        return text.replace(str(self.root), "TMP")

    def start(self, name: str, *args, program=(FTTRACE,)) -> subprocess.Popen:
        """Start `program ARGS` (default `fttrace`) in the background, its output to TMP/logs/<name>.{out,err}."""
        logs = self.path("logs")
        logs.mkdir(exist_ok=True)
        with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
            process = subprocess.Popen([*program, *map(str, args)], cwd=ROOT, env=self.env, stdout=out, stderr=err,
                                       preexec_fn=default_sigint)
        self.running.append((process, logs / name))
        return process

    def finish(self, process: subprocess.Popen, timeout: float = TIMEOUT) -> Done:
        stem = next(stem for p, stem in self.running if p is process)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise SetupError(f"`{stem.name}` took more than {timeout:.0f} s; killed")
        finally:
            self.running = [(p, s) for p, s in self.running if p is not process]
        return Done(process.returncode, Path(f"{stem}.out").read_text(), Path(f"{stem}.err").read_text())

    def run(self, name: str, *args, program=(FTTRACE,)) -> Done:
        return self.finish(self.start(name, *args, program=program))

    def fttrace(self, name: str, *args) -> Done:
        return self.run(name, *args)

    def python(self, name: str, *args) -> Done:
        return self.run(name, *args, program=(sys.executable,))

    def call(self, function: str, *args) -> str:
        """What `function(*args)` of this file returns, computed in a child process: what needs JAX runs there,
        so that this process, which forks the others, never starts JAX's threads."""
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import fault_probes; " \
               f"print(fault_probes.{function}(*sys.argv[1:]))"
        done = self.python(function, "-c", code, *args)
        if done.code != 0:
            raise SetupError(f"{function} failed: {self.short(done.last())}")
        return done.out.strip()

    def stop_all(self) -> None:
        for process, _ in list(self.running):
            process.kill()
            self.finish(process)

    def once(self, key: str, make) -> Path:
        """A run several probes share, made on first use; a failure to make it fails every probe that needs it."""
        if key not in self.made:
            try:
                self.made[key] = make()
            except SetupError as e:
                self.made[key] = e
        if isinstance(self.made[key], SetupError):
            raise self.made[key]
        return self.made[key]


def smoke_run(workdir, *extra) -> list:
    return ["run", SMOKE, "--workdir", workdir, "-q", *SMOKE_OVERRIDES, *extra]


def finished_run(lab: Lab, name: str, *args) -> Path:
    done = lab.fttrace(name, *args)
    if done.code != 0:
        raise SetupError(f"the reference run {name} failed (exit {done.code}): {lab.short(done.last())}")
    return lab.path(name)


def reference(lab: Lab) -> Path:
    """A finished smoke run: what an undisturbed run of SMOKE_OVERRIDES gives."""
    return lab.once("reference", lambda: finished_run(lab, "reference", *smoke_run(lab.path("reference"))))


def canary_reference(lab: Lab) -> Path:
    return lab.once("canary", lambda: finished_run(lab, "canary", "run", CANARY, "--workdir", lab.path("canary"), "-q"))


def copy_of(lab: Lab, name: str) -> Path:
    """A copy of the finished smoke reference, for a probe to damage."""
    work = lab.path(name)
    shutil.copytree(reference(lab), work, symlinks=True)
    return work


def wait_until(condition, process: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise SetupError(f"the run ended (exit {process.returncode}) before {what}")
        if time.time() > deadline:
            raise SetupError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.01)


def holder_pid(workdir: Path) -> int | None:
    """The process id the workdir's lock record names, if any."""
    try:
        return json.loads((workdir / "lock.json").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None


def checkpoint_steps(workdir: Path, phase: str = "g0-pretrain") -> list[int]:
    """The steps of the complete checkpoints of one phase (orbax renames a checkpoint into place once written)."""
    folder = workdir / "checkpoints" / phase
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def killed_after(lab: Lab, name: str, args: list, ready, what: str, sig=signal.SIGKILL) -> Done:
    """Start `fttrace ARGS`, send it `sig` once `ready()` holds, and return how it ended."""
    process = lab.start(name, *args)
    wait_until(ready, process, what)
    process.send_signal(sig)
    return lab.finish(process)


# ------------------------------------------------------------------------------------------- results and files

def canonical(path: Path) -> pd.DataFrame:
    """A results file's rows in an order that depends on their values only."""
    frame = pd.read_parquet(path)
    order = frame.apply(lambda row: "\x1f".join(map(repr, row)), axis=1).sort_values(kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def difference(workdir: Path, reference_dir: Path) -> str | None:
    """None when the two workdirs' results.parquet hold the same rows, bit for bit; else what differs."""
    try:
        pd.testing.assert_frame_equal(canonical(workdir / "results.parquet"),
                                      canonical(reference_dir / "results.parquet"), check_exact=True)
    except (AssertionError, OSError, ValueError) as e:
        return " ".join(str(e).split())[:160]
    return None


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def leaves(tree, name=""):
    """(path, array) of every array in a nested dict."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, f"{name}/{key}" if name else key)
    else:
        yield name, np.asarray(tree)


def flip_array_bytes(step_dir: str) -> str:
    """Flip 4 bytes of a parameter row where its raw bytes lie in the checkpoint's data files (as
    tests/test_checksums.py does); where no row's bytes are found as they are (compressed), 4 bytes in the middle of
    the largest data file. Returns what was flipped. (Imports JAX: run it with `Lab.call`.)"""
    from fttrace.engine.checkpoint import read_params
    step_dir = Path(step_dir)
    params, _ = read_params(step_dir.parent, int(step_dir.name))
    files = {p: p.read_bytes() for p in (step_dir / "state").rglob("*") if p.is_file()}
    for name, leaf in leaves(params):
        row = leaf[0].tobytes()
        for start in range(0, len(row) - 32, 32):
            needle = row[start:start + 32]
            for path, data in files.items():
                if data.count(needle) == 1:
                    i = data.index(needle)
                    path.write_bytes(data[:i] + bytes(b ^ 0xFF for b in data[i:i + 4]) + data[i + 4:])
                    return f"4 bytes of params/{name} row 0"
    path = max(files, key=lambda p: len(files[p]))
    data, i = files[path], len(files[path]) // 2
    path.write_bytes(data[:i] + bytes(b ^ 0xFF for b in data[i:i + 4]) + data[i + 4:])
    return f"4 bytes mid-file of state/{path.relative_to(step_dir / 'state')} (no raw row bytes found)"


# ------------------------------------------------------------------------------------------------ classifying

def error_outcome(lab: Lab, did: str, done: Done, *expected, prefix: str = "fttrace: error:") -> Outcome:
    """`one-line error` when the command failed with one `prefix` line on stderr naming each of `expected` and no
    traceback; exit 0 is bad input accepted (`silently wrong`)."""
    if "Traceback" in done.text:
        return Outcome(did, done.code, TRACEBACK, lab.short(done.last()))
    if done.code == 0:
        return Outcome(did, 0, SILENT, f"accepted (exit 0): {lab.short(done.last())}".strip())
    if done.code < 0:
        return Outcome(did, done.code, OTHER, f"killed by {signal.Signals(-done.code).name}")
    errors = [line for line in done.err.splitlines() if line.startswith(prefix)]
    if len(errors) != 1:
        return Outcome(did, done.code, OTHER, f"{len(errors)} `{prefix}` lines: {lab.short(done.last())}")
    missing = [text for text in expected if text not in errors[0]]
    if missing:
        return Outcome(did, done.code, OTHER, f"does not name {missing}: {lab.short(errors[0])}")
    return Outcome(did, done.code, ONE_LINE, lab.short(errors[0]))


def exception_outcome(lab: Lab, did: str, done: Done, *expected) -> Outcome:
    """For `python -c`: `one-line error` when fttrace's own exception type ends it with a one-line message naming
    each of `expected`, with no other exception chained to it (the raw reader's error)."""
    last = done.last()
    chained = done.text.count("Traceback") > 1 or "During handling" in done.text or "ArrowInvalid" in done.text
    if done.code == 0:
        return Outcome(did, 0, SILENT, "read without complaint")
    if last.startswith("fttrace.errors.UserError: ") and not chained and all(t in last for t in expected):
        return Outcome(did, done.code, ONE_LINE, lab.short(last))
    return Outcome(did, done.code, TRACEBACK if "Traceback" in done.text else OTHER, lab.short(last))


def aftermath(outcome: Outcome, code: int | None, before: str) -> Outcome:
    """What a follow-up run (the holder, a resume) found, as the probe's outcome: its failure is no refusal of the
    probe's fault, so a one-line error there is `other`."""
    kind = OTHER if outcome.kind == ONE_LINE else outcome.kind
    return Outcome(outcome.did, code, kind, f"{before}{outcome.reason}")


def results_outcome(lab: Lab, did: str, done: Done, workdir: Path, ok: str) -> Outcome:
    """A run that should end as an undisturbed one: `correct` when it exits 0 with the reference's results."""
    if "Traceback" in done.text:
        return Outcome(did, done.code, TRACEBACK, lab.short(done.last()))
    if done.code != 0:
        return aftermath(error_outcome(lab, did, done), done.code, "expected exit 0: ")
    diff = difference(workdir, reference(lab))
    if diff:
        return Outcome(did, 0, SILENT, f"exit 0, results differ from an undisturbed run's: {diff}")
    return Outcome(did, 0, CORRECT, ok)


# --------------------------------------------------------------------------------- 1, 2: one writer per workdir

def probe_two_runs(lab: Lab) -> Outcome:
    lone = canary_reference(lab)
    work = lab.path("canary-contested")
    did = "`fttrace run canary:tiny --config.seed=1` into a workdir that a canary:tiny run holds; 1st vs a lone run"
    first = lab.start("canary-contested-1", "run", CANARY, "--workdir", work, "-q")
    wait_until(lambda: holder_pid(work) == first.pid, first, "the first run holding the workdir")
    second = lab.fttrace("canary-contested-2", "run", CANARY, "--workdir", work, "-q", "--config.seed=1")
    still_running = first.poll() is None
    done = lab.finish(first)
    if done.code != 0:
        return Outcome(did, second.code, OTHER, f"the first run failed (exit {done.code}): {lab.short(done.last())}")
    diff = difference(work, lone)
    if diff:
        return Outcome(did, second.code, SILENT, f"the first run's results differ from a lone run's: {diff}")
    return second_refused(lab, did, first, second, still_running, "the first run's results equal a lone run's")


def second_refused(lab: Lab, did: str, first, second, still_running: bool, first_kept: str) -> Outcome:
    """The outcome of a second run started while `first` held the workdir: one line naming the holder's process,
    asked while the first still ran (else inconclusive); `first_kept`: what was checked of the first run."""
    if not still_running:
        return Outcome(did, second.code, OTHER, "inconclusive: the first run ended before the second was answered")
    outcome = error_outcome(lab, did, second, "is being written by `fttrace run`", f"process {first.pid}")
    outcome.reason += f"; {first_kept}"
    return outcome


def probe_overwrite_held(lab: Lab) -> Outcome:
    reference(lab)
    work = lab.path("held")
    did = "`fttrace run smoke --overwrite` into a workdir a smoke run holds; the holder's results vs undisturbed"
    first = lab.start("held-1", *smoke_run(work))
    wait_until(lambda: holder_pid(work) == first.pid, first, "the first run holding the workdir")
    second = lab.fttrace("held-2", *smoke_run(work, "--overwrite"))
    still_running = first.poll() is None
    held = results_outcome(lab, did, lab.finish(first), work, "")
    if held.kind != CORRECT:
        return aftermath(held, second.code, "the holder: ")
    return second_refused(lab, did, first, second, still_running, "the holder's results equal an undisturbed run's")


# ------------------------------------------------------------------------ 3: SIGKILL, a damaged checkpoint, resume

def probe_kill_flip_resume(lab: Lab) -> Outcome:
    reference(lab)
    work = lab.path("kill-flip")
    killed_after(lab, "kill-flip-1", smoke_run(work), lambda: len(checkpoint_steps(work)) >= 2,
                 "two pretraining checkpoints")
    if (work / "parts" / "g0-pretrain.parquet").exists():
        raise SetupError("pretraining ended before the kill")
    newest = checkpoint_steps(work)[-1]
    flipped = lab.call("flip_array_bytes", work / "checkpoints" / "g0-pretrain" / str(newest))
    did = f"SIGKILL mid-pretraining, {flipped} of its newest checkpoint (step {newest}) flipped, same command again"
    done = lab.fttrace("kill-flip-2", *smoke_run(work))
    if "Traceback" in done.text or done.code != 0:
        return error_outcome(lab, did, done, "is damaged")
    said = [line for line in done.err.splitlines() if "is damaged" in line]
    if not said or "resumes from the checkpoint before it" not in said[0]:
        return Outcome(did, 0, SILENT, "exit 0 without a word about the damaged checkpoint")
    outcome = results_outcome(lab, did, done, work, "fell back to the checkpoint before it, saying so; results "
                                                    "equal an uninterrupted run's")
    outcome.reason += f" ({lab.short(said[0])[:90]}...)"
    return outcome


# -------------------------------------------------------------------------------- 4: merge into one of its sources

def shards(lab: Lab) -> tuple[Path, Path]:
    def make():
        dirs = [lab.path("shards") / f"s{i}" for i in range(2)]
        started = [lab.start(f"shard-{i}", *smoke_run(d, "--config.sweep.seeds=2", "--shard", f"{i}/2"))
                   for i, d in enumerate(dirs)]
        for i, process in enumerate(started):
            done = lab.finish(process)
            if done.code != 0:
                raise SetupError(f"shard {i}/2 failed (exit {done.code}): {lab.short(done.last())}")
        return dirs
    return lab.once("shards", make)


def merge_probe(lab: Lab, spelling: str) -> Outcome:
    s0, s1 = shards(lab)
    out = {"absolute": s0, "dotdot": s1 / ".." / "s0", "symlink": lab.path("link-to-s0")}[spelling]
    if spelling == "symlink" and not out.is_symlink():
        out.symlink_to(s0)
    did = f"`fttrace merge s0 s1 --out {lab.short(str(out))} --overwrite`"
    before = snapshot(s0)
    done = lab.fttrace(f"merge-{spelling}", "merge", s0, s1, "--out", out, "--overwrite")
    outcome = error_outcome(lab, did, done, "choose another directory")
    if snapshot(s0) != before:
        kind = SILENT if done.code == 0 else OTHER
        return Outcome(did, done.code, kind, f"s0's files changed; {outcome.reason}")
    return outcome


# ------------------------------------------------------------------------------------------ 5: numeric bounds

def bounds_probe(lab: Lab, config: str, override: str) -> Outcome:
    key = override.split("=")[0]
    work = lab.path(f"bounds-{key}")
    did = f"`fttrace run {Path(config).name} --config.{override}`"
    done = lab.fttrace(f"bounds-{key}", "run", config, "--workdir", work, "-q", f"--config.{override}")
    if done.code != 0 and "pip install" in done.err:
        return Outcome(did, done.code, OTHER, f"skipped: {lab.short(done.last())}")
    outcome = error_outcome(lab, did, done, key)
    if work.exists() and outcome.kind == ONE_LINE:
        return Outcome(did, done.code, OTHER, f"refused, but left a workdir behind: {outcome.reason}")
    return outcome


# ------------------------------------------------------------------------------------- 6: damaged Parquet files

def probe_status_truncated_results(lab: Lab) -> Outcome:
    work = copy_of(lab, "truncated-results-status")
    truncate(work / "results.parquet")
    done = lab.fttrace("status-truncated", "status", work)
    return error_outcome(lab, "results.parquet cut in half, `fttrace status W`", done,
                         str(work / "results.parquet"), "is damaged")


def probe_open_truncated_results(lab: Lab) -> Outcome:
    work = copy_of(lab, "truncated-results-open")
    truncate(work / "results.parquet")
    done = lab.python("open-truncated", "-c", f"import fttrace; fttrace.open({str(work)!r}).results")
    return exception_outcome(lab, "results.parquet cut in half, `python -c \"fttrace.open(W).results\"`", done,
                             str(work / "results.parquet"), "is damaged")


def probe_run_truncated_part(lab: Lab) -> Outcome:
    work = copy_of(lab, "truncated-part")
    shutil.rmtree(work / "live", ignore_errors=True)
    part = work / "parts" / "g0-finetune.parquet"
    truncate(part)
    did = "parts/g0-finetune.parquet cut in half, same `fttrace run` again; then the part deleted, run again"
    outcome = error_outcome(lab, did, lab.fttrace("truncated-part-1", *smoke_run(work)), str(part), "delete it")
    if outcome.kind != ONE_LINE:
        return outcome
    part.unlink()
    again = results_outcome(lab, did, lab.fttrace("truncated-part-2", *smoke_run(work)), work, "")
    if again.kind != CORRECT:
        return aftermath(again, outcome.code, "once deleted: ")
    outcome.reason += "; deleted, the next run recomputed it: results equal an undisturbed run's"
    return outcome


def probe_tensorboard_truncated_live(lab: Lab) -> Outcome:
    work = copy_of(lab, "truncated-live")
    live = work / "live" / "g0-finetune.parquet"
    live.parent.mkdir(exist_ok=True)
    live.write_bytes((work / "parts" / "g0-finetune.parquet").read_bytes())  # a curve a phase left, as in tests
    truncate(live)
    done = lab.fttrace("tensorboard-truncated", "tensorboard", work, "--logdir", lab.path("tensorboard"))
    if done.code != 0 and "pip install" in done.err:
        return Outcome("live/g0-finetune.parquet cut in half, `fttrace tensorboard W`", done.code, OTHER,
                       f"skipped: {lab.short(done.last())}")
    return error_outcome(lab, "live/g0-finetune.parquet cut in half, `fttrace tensorboard W`", done, str(live),
                         "is damaged")


# ---------------------------------------------------------------------------- 7, 8: a config that exits; memory

def probe_config_exits(lab: Lab) -> Outcome:
    config = lab.path("exits.py")
    config.write_text("import sys\nsys.exit(3)\n")
    done = lab.fttrace("config-exits", "run", config, "--workdir", lab.path("exits"), "-q")
    return error_outcome(lab, "`fttrace run exits.py`, a config file that calls sys.exit(3)", done, str(config),
                         "sys.exit(3)")


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def state_bytes(workdir: str) -> int:
    """Bytes of one pretraining member's training state: its parameters and Adam's two moments. (Imports JAX.)"""
    import fttrace
    return 3 * sum(leaf.nbytes for _, leaf in leaves(fttrace.open(workdir).params("pt0")))


def probe_huge_sweep(lab: Lab) -> Outcome:
    """Seeds enough for the members' states to need 4x the machine's memory; the run is killed by this probe if it
    grows past half the memory, so the machine stays up."""
    per_member = int(lab.call("state_bytes", reference(lab)))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    seeds = int(4 * ram / per_member)
    did = f"`--config.sweep.seeds={seeds:,}` ({per_member:,} B of state a member, 4x the {ram / 2**30:.0f} GiB RAM)"
    process = lab.start("huge", *smoke_run(lab.path("huge"), f"--config.sweep.seeds={seeds}"))
    deadline, peak = time.time() + 600, 0
    while process.poll() is None:
        peak = max(peak, rss_bytes(process.pid))
        if peak > ram / 2 or time.time() > deadline:
            process.kill()
            lab.finish(process)
            why = f"grew to {peak / 2**30:.1f} GiB" if peak > ram / 2 else "ran 600 s"
            return Outcome(did, None, OTHER, f"killed by the probe: it {why} without a refusal")
        time.sleep(0.2)
    done = lab.finish(process)
    outcome = error_outcome(lab, did, done, "GiB", "fewer")
    if done.code == -signal.SIGKILL:
        outcome.reason = "killed by SIGKILL (the kernel's OOM killer?) with no message"
    outcome.reason += f" (peak RSS {peak / 2**30:.1f} GiB)"
    return outcome


# ----------------------------------------------------------------------------------- 9: signals; status after

def signal_probe(lab: Lab, sig: signal.Signals) -> Outcome:
    work = lab.path(sig.name.lower())
    did = f"{sig.name} after the first pretraining checkpoint; `fttrace status W`"
    done = killed_after(lab, sig.name.lower(), smoke_run(work), lambda: checkpoint_steps(work),
                        "the first checkpoint", sig)
    status = lab.fttrace(f"{sig.name.lower()}-status", "status", work)
    if "Traceback" in done.text + status.text:
        return Outcome(did, done.code, TRACEBACK, lab.short((done if "Traceback" in done.text else status).last()))
    lines = done.err.strip().splitlines()
    if done.code != 128 + sig or len(lines) != 1 or "run the same command again" not in lines[0]:
        return Outcome(did, done.code, OTHER, f"expected exit {128 + sig} and one line saying how to resume; "
                                              f"stderr: {lab.short(' | '.join(lines))[:150]}")
    shown = status.out.splitlines()[0] if status.out else status.last()
    if status.code != 0 or ", stopped (started " not in shown:
        kind = SILENT if ", running since " in shown else OTHER
        return Outcome(did, done.code, kind, f"status after it: {lab.short(shown)}")
    return Outcome(did, done.code, CORRECT, f"{lines[0]} / status: {lab.short(shown)[:60]}...")


def probe_sigkill_status(lab: Lab) -> Outcome:
    work = lab.path("sigkill")
    did = "SIGKILL after the first pretraining checkpoint; `fttrace status W`"
    killed = killed_after(lab, "sigkill", smoke_run(work), lambda: checkpoint_steps(work), "the first checkpoint")
    status = lab.fttrace("sigkill-status", "status", work)
    if "Traceback" in status.text:
        return Outcome(did, status.code, TRACEBACK, lab.short(status.last()))
    shown = status.out.splitlines()[0] if status.out else status.last()
    if status.code == 0 and "stopped (process gone)" in shown:
        return Outcome(did, status.code, CORRECT, f"killed ({killed.code}); status: {lab.short(shown)[:100]}")
    kind = SILENT if status.code == 0 and ", running since " in shown else OTHER
    return Outcome(did, status.code, kind, f"status: {lab.short(shown)}")


# ------------------------------------------------------------------------------ 10, 11, 12: shards, reruns, manifest

def probe_empty_shard(lab: Lab) -> Outcome:
    work = lab.path("empty-shard")
    done = lab.fttrace("empty-shard", *smoke_run(work, "--config.sweep.seeds=1", "--shard", "1/2"))
    outcome = error_outcome(lab, "`fttrace run smoke --config.sweep.seeds=1 --shard 1/2` (a shard with no member)",
                            done, "--shard 1/2", "no members")
    if work.exists() and outcome.kind == ONE_LINE:
        return dataclasses.replace(outcome, kind=OTHER, reason=f"refused, but left a workdir: {outcome.reason}")
    return outcome


def probe_rerun_finished(lab: Lab) -> Outcome:
    work = copy_of(lab, "rerun")
    before = {name: (work / name).read_bytes() for name in ("manifest.json", "results.parquet")}
    did = "the same `fttrace run` again on a finished workdir"
    done = lab.fttrace("rerun", *smoke_run(work))
    if "Traceback" in done.text or done.code != 0:
        return error_outcome(lab, did, done)
    changed = [name for name, data in before.items() if (work / name).read_bytes() != data]
    if changed:
        return Outcome(did, 0, SILENT, f"exit 0, but {' and '.join(changed)} rewritten")
    return Outcome(did, 0, CORRECT, "manifest.json and results.parquet byte for byte as they were")


def probe_overwrite_damaged_manifest(lab: Lab) -> Outcome:
    work = copy_of(lab, "damaged-manifest")
    (work / "manifest.json").write_text("{not json")
    did = "manifest.json replaced by `{not json`, `fttrace run ... --overwrite`"
    done = lab.fttrace("damaged-manifest", *smoke_run(work, "--overwrite"))
    outcome = results_outcome(lab, did, done, work, "started over: results equal an undisturbed run's")
    if outcome.kind == CORRECT:
        found = json.loads((work / "manifest.json").read_text())
        if found.get("status") != "complete" or len(found.get("invocations", [])) != 1:
            return Outcome(did, 0, SILENT, f"manifest status {found.get('status')!r}, "
                                           f"{len(found.get('invocations', []))} invocations")
        outcome.reason += ", manifest complete with one invocation"
    return outcome


# ------------------------------------------------------------------------------------------- 13: the analysis

def probe_analysis_damaged_manifest(lab: Lab) -> Outcome:
    work = copy_of(lab, "analysis-damaged-manifest")
    (work / "manifest.json").write_text("{not json")
    done = lab.python("analysis-damaged", "-m", "analysis", "summary", work)
    return error_outcome(lab, "manifest.json replaced by `{not json`, `python -m analysis summary W`", done,
                         "manifest.json", prefix="analysis: error:")


def probe_analysis_unfinished(lab: Lab) -> Outcome:
    work = lab.path("canary-half")
    did = "canary:tiny SIGKILLed once suppression has a checkpoint, `python -m analysis summary W`"
    killed_after(lab, "canary-half", ["run", CANARY, "--workdir", work, "-q"],
                 lambda: checkpoint_steps(work, "g0-suppress"), "a suppression checkpoint")
    done = lab.python("analysis-half", "-m", "analysis", "summary", work)
    if "Traceback" in done.text or done.code != 0:
        return error_outcome(lab, did, done, prefix="analysis: error:")
    first = done.out.strip().splitlines()[0] if done.out.strip() else ""
    if "not 'complete'" not in first:
        said = "said later" if "not 'complete'" in done.out else "never said"
        return Outcome(did, 0, SILENT, f"unfinished run {said}; first line: {lab.short(first)[:100]}")
    return Outcome(did, 0, CORRECT, f"first line: {lab.short(first)[:110]}")


def probe_analysis_url(lab: Lab) -> Outcome:
    done = lab.python("analysis-url", "-m", "analysis", "summary", "gs://bucket/run")
    return error_outcome(lab, "`python -m analysis summary gs://bucket/run`", done, "gs://bucket/run",
                         prefix="analysis: error:")


# ------------------------------------------------------------------------------------------------ 14: full disk

def fill(folder: Path) -> None:
    """Write zeros into `folder` until its filesystem is full."""
    block = b"\0" * (1 << 20)
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass


def probe_full_disk(lab: Lab) -> Outcome:
    did = "workdir on a 256 MiB tmpfs filled up after the first checkpoint; then space freed, same command again"
    if os.geteuid() != 0 or not shutil.which("mount"):
        return Outcome(did, None, OTHER, "skipped: needs a full filesystem (root, to mount a small tmpfs)")
    reference(lab)
    disk = lab.path("small-disk")
    disk.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disk)]).returncode != 0:
        return Outcome(did, None, OTHER, "skipped: needs a full filesystem (mounting a tmpfs failed)")
    try:
        return full_disk_run(lab, did, disk / "w", disk)
    finally:
        lab.stop_all()
        subprocess.run(["umount", "--lazy", str(disk)])


def full_disk_run(lab: Lab, did: str, work: Path, disk: Path) -> Outcome:
    process = lab.start("full-disk-1", *smoke_run(work))
    wait_until(lambda: checkpoint_steps(work), process, "the first checkpoint")
    fill(disk)
    done = lab.finish(process)
    if done.code == 0:
        return Outcome(did, 0, OTHER, "inconclusive: the run finished before the disk was full")
    outcome = error_outcome(lab, did, done, "No space left on device")
    (disk / "filler").unlink()
    again = results_outcome(lab, did, lab.fttrace("full-disk-2", *smoke_run(work)), work, "")
    if again.kind != CORRECT:
        return aftermath(again, done.code, f"{outcome.reason}; then: ")
    outcome.reason += "; freed, the same command resumed to an undisturbed run's results"
    return outcome


# ---------------------------------------------------------------------------------------------------- the table

PROBES = {
    "two-runs-one-workdir": probe_two_runs,
    "overwrite-while-held": probe_overwrite_held,
    "kill-flip-resume": probe_kill_flip_resume,
    "merge-into-source": lambda lab: merge_probe(lab, "absolute"),
    "merge-into-source-dotdot": lambda lab: merge_probe(lab, "dotdot"),
    "merge-into-source-symlink": lambda lab: merge_probe(lab, "symlink"),
    "bounds-lr-scale": lambda lab: bounds_probe(lab, SMOKE, "finetune.lr_scale.medium=-10.0"),
    "bounds-canary-lr": lambda lab: bounds_probe(lab, CANARY, "pretrain.lr=1e999"),
    "bounds-weight-decay": lambda lab: bounds_probe(lab, SMOKE, "pretrain.weight_decay=-1"),
    "bounds-b1": lambda lab: bounds_probe(lab, SMOKE, "finetune.b1=2.0"),
    "bounds-stories-temperature": lambda lab: bounds_probe(lab, STORIES, "generate.temperature=1e999"),
    "status-truncated-results": probe_status_truncated_results,
    "open-truncated-results": probe_open_truncated_results,
    "run-truncated-part": probe_run_truncated_part,
    "tensorboard-truncated-live": probe_tensorboard_truncated_live,
    "config-exits": probe_config_exits,
    "huge-sweep": probe_huge_sweep,
    "sigterm": lambda lab: signal_probe(lab, signal.SIGTERM),
    "sigint": lambda lab: signal_probe(lab, signal.SIGINT),
    "sigkill-status": probe_sigkill_status,
    "empty-shard": probe_empty_shard,
    "rerun-finished": probe_rerun_finished,
    "overwrite-damaged-manifest": probe_overwrite_damaged_manifest,
    "analysis-damaged-manifest": probe_analysis_damaged_manifest,
    "analysis-unfinished-canary": probe_analysis_unfinished,
    "analysis-url": probe_analysis_url,
    "full-disk": probe_full_disk,
}


def run_probe(lab: Lab, name: str) -> Outcome:
    try:
        return PROBES[name](lab)
    except SetupError as e:
        return Outcome(name, None, OTHER, f"setup: {lab.short(str(e))}")
    except Exception as e:  # noqa: BLE001 -- a bug in this script: reported as the probe's outcome, the rest go on
        return Outcome(name, None, OTHER, f"probe failed: {type(e).__name__}: {lab.short(str(e))[:150]}")
    finally:
        lab.stop_all()


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def table(rows: list[tuple[str, Outcome]]) -> str:
    lines = ["| probe | what was done | exit | class | reason |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {cell(o.did)} | {'' if o.code is None else o.code} | {o.kind} | {cell(o.reason)} |"
              for name, o in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(PROBES), metavar="NAME",
                        help=f"run only these probes: {', '.join(PROBES)}")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and leave it there (default: a temporary "
                                                      "directory, removed at the end)")
    args = parser.parse_args(argv)
    root = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="fault-probes-"))
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()) and args.keep:
        parser.error(f"--keep {args.keep}: not empty (the probes need a directory of their own)")
    lab, rows, start = Lab(root), [], time.time()
    try:
        for name in args.only or PROBES:
            began = time.time()
            outcome = run_probe(lab, name)
            rows.append((name, outcome))
            print(f"[{time.time() - start:6.0f} s] {name}: {outcome.kind} ({time.time() - began:.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        lab.stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    counts = {kind: sum(o.kind == kind for _, o in rows) for kind in CLASSES}
    print(table(rows))
    print("\n" + ", ".join(f"{kind}: {n}" for kind, n in counts.items()))
    print(f"wall time: {time.time() - start:.0f} s")
    return 1 if any(counts[kind] for kind in FAILING) else 0


if __name__ == "__main__":
    sys.exit(main())
