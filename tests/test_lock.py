"""One writer per workdir, a manifest that keeps its history, and clean ends.

The runs are `fttrace run` subprocesses of the tiny smoke study without evaluations (one lineage), sharing one
compilation cache: a lone reference run (started over, with --overwrite, in a workdir whose manifest is damaged and
whose lock a dead process left), and a contested run, which 20 other writers try to share while it runs, which is
stopped by SIGTERM after its first checkpoint and resumed; a rerun of the finished workdir is stopped by SIGINT.
"""
import contextlib
import errno
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from fttrace.cli import main
from fttrace.engine import lock as lock_lib
from fttrace.engine.lock import LOCK_FILE, WorkdirLock, holder_of
from fttrace.errors import UserError
from helpers import NO_EVALS, ROOT, SMOKE, TINY, Runs, dead_pid

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

ARGS = [f"--config.{o}" for o in TINY + [NO_EVALS, "checkpoint.every_chunks=1"]]
KEYS = ["phase", "member", "step", "metric"]
TIMEOUT = 900
WRITERS = 20


class SmokeRuns(Runs):
    def start(self, name, *args):
        """Start `fttrace run SMOKE --workdir tmp/<name> -q ARGS`."""
        return self.launch(name, ["run", SMOKE, "--workdir", str(self.workdir(name.split("#")[0])), "-q", *ARGS,
                                  *args])


def dead_holder() -> dict:
    return dict(host=platform.node(), pid=dead_pid(), since="2026-01-02 03:04:05 UTC", command="run")


def wait_for(condition, process) -> None:
    deadline = time.time() + TIMEOUT
    while not condition():
        assert process.poll() is None and time.time() < deadline, "the run ended before it was expected to"
        time.sleep(0.02)


def held_by(workdir, process) -> bool:
    holder = holder_of(workdir)
    return holder is not None and holder["pid"] == process.pid


def sorted_frame(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(KEYS).reset_index(drop=True)


def fttrace(*args) -> tuple[int, str, str]:
    """`fttrace ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = SmokeRuns(tmp_path_factory.mktemp("lock"))
    yield runs
    runs.stop_all()


@pytest.fixture(scope="module")
def lone(runs):
    """The reference: started over in a workdir with a damaged manifest and a dead process's lock record."""
    work = runs.workdir("lone")
    work.mkdir()
    (work / "manifest.json").write_text("{not json")
    (work / LOCK_FILE).write_text(json.dumps(dead_holder()))
    code, log = runs.run("lone", "--overwrite")
    assert code == 0, log
    return work, log


@pytest.fixture(scope="module")
def contested(runs, lone):
    """A run that other writers try to share, stopped by SIGTERM after its first checkpoint, then resumed; what was
    seen at each point."""
    seen, work = {}, runs.workdir("contested")
    first = runs.start("contested#1")
    wait_for(lambda: held_by(work, first) and (work / "manifest.json").exists(), first)
    seen["status_running"] = fttrace("status", str(work))
    seen["writers"] = [fttrace("run", SMOKE, "--workdir", str(work), "-q", *ARGS, f"--config.sweep.seed_offset={k}")
                       for k in range(1, WRITERS + 1)]  # other seeds, the same workdir, each a whole `fttrace run`
    seen["overwrite"] = fttrace("run", SMOKE, "--workdir", str(work), "-q", *ARGS, "--overwrite")
    seen["pid"] = first.pid
    # stopped once its first checkpoint is written and its progress recorded (the record follows the checkpoint)
    wait_for(lambda: (work / "checkpoints" / "g0-pretrain" / "10").exists() and (work / "progress.json").exists(),
             first)
    first.send_signal(signal.SIGTERM)
    seen["sigterm"] = runs.wait("contested#1")
    seen["status_stopped"] = fttrace("status", str(work))
    seen["resumed"] = runs.run("contested#2")
    seen["manifest"] = (work / "manifest.json").read_bytes()
    rerun = runs.start("contested#3")  # a rerun of the finished workdir, stopped by SIGINT
    wait_for(lambda: held_by(work, rerun), rerun)
    rerun.send_signal(signal.SIGINT)
    seen["sigint"] = runs.wait("contested#3")
    seen["manifest_after_sigint"] = (work / "manifest.json").read_bytes()
    return seen


def test_a_second_writer_is_refused_naming_the_holder(contested):
    pid = contested["pid"]
    assert len(contested["writers"]) == WRITERS
    for code, _, err in [*contested["writers"], contested["overwrite"]]:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("fttrace: error: workdir ") and \
            f"is being written by `fttrace run`, process {pid} on {platform.node()} since " in lines[0], err
    code, shown, _ = contested["status_running"]
    assert code == 0 and "counter study, running since " in shown and f", process {pid} on " in shown


def test_the_first_writer_ends_as_a_lone_run_would(contested, lone, runs):
    """Stopped by SIGTERM and resumed, with 21 writers refused meanwhile: bit for bit the lone run's results."""
    work = runs.workdir("contested")
    code, log = contested["resumed"]
    assert code == 0 and "taking over" not in log, log  # the stopped run had released its lock
    pd.testing.assert_frame_equal(sorted_frame(work / "results.parquet"),
                                  sorted_frame(lone[0] / "results.parquet"), check_exact=True)
    assert holder_of(work) is None and (work / LOCK_FILE).read_text() == ""


def test_signals_end_a_run_with_one_line_that_says_how_to_resume(contested):
    for name, number in (("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT)):
        code, log = contested[name]
        assert code == 128 + number and "Traceback" not in log, log
        assert log.strip().splitlines() == [
            f"fttrace: stopped by {signal.Signals(number).name}; the finished phases and the checkpoints are kept: "
            "run the same command again to resume"]
    code, shown, _ = contested["status_stopped"]
    assert code == 0 and "study, stopped (started " in shown and "stopped at: group 0 pretrain" in shown


def test_the_manifest_keeps_its_history(contested):
    found = json.loads(contested["manifest"])
    assert found["status"] == "complete" and found["wall_s"] > 0 and found["ended"]
    first, resumed = found["invocations"]
    assert first["argv"] == found["argv"] and first["pid"] == contested["pid"] and "wall_s" not in first
    assert resumed["pid"] != first["pid"] and resumed["wall_s"] == found["wall_s"]
    # A rerun of the finished workdir that fails (stopped) leaves the manifest as it was: still complete.
    assert contested["manifest_after_sigint"] == contested["manifest"]


def test_a_dead_holders_lock_is_taken_over_and_overwrite_starts_over_a_damaged_manifest(lone):
    work, log = lone
    said = [line for line in log.splitlines() if "taking over" in line]
    assert len(said) == 1 and said[0].startswith(f"fttrace: taking over workdir {work} from `fttrace run`, process ")
    assert said[0].endswith("which is gone") and "Traceback" not in log
    found = json.loads((work / "manifest.json").read_text())
    assert found["status"] == "complete" and len(found["invocations"]) == 1


def test_a_writer_in_another_process_is_refused_and_touches_nothing(lone, runs):
    """`fttrace run` (the program) on a workdir this process holds: one line naming this process, exit 2, every file
    as it was."""
    work = lone[0]
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    with WorkdirLock(work, "run"):
        done = subprocess.run([sys.executable, "-m", "fttrace.cli", "run", SMOKE, "--workdir", str(work), "-q",
                               *ARGS, "--overwrite"], cwd=ROOT, env=runs.env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        during = {p: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    assert done.returncode == 2 and not done.stdout, done
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"fttrace: error: workdir {work} is being written by `fttrace run`, process "
                           f"{os.getpid()} on {platform.node()} since ")
    assert line.endswith("; wait for it to end or stop it, then run this again")
    assert during == {p: b for p, b in before.items() if p.name != LOCK_FILE}
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before


def test_merge_into_a_held_workdir_is_refused(lone, tmp_path, capsys):
    from fttrace.tools.merge import merge_workdirs
    out = tmp_path / "merged"
    out.mkdir()
    with WorkdirLock(out, "run"), pytest.raises(UserError, match="is being written by `fttrace run`, process"):
        merge_workdirs([lone[0]], out)
    assert not (out / "manifest.json").exists() and not (out / "results.parquet").exists()
    assert merge_workdirs([lone[0]], out).exists()  # released: the merge goes through


def test_an_empty_shard_is_refused_at_launch(tmp_path, capsys):
    assert main(["run", SMOKE, "--workdir", str(tmp_path / "w"), *ARGS, "--config.sweep.seeds=1",
                 "--shard", "1/2"]) == 2
    assert "--shard 1/2: this shard of the grid holds no members" in one_error(capsys)
    assert not (tmp_path / "w").exists()


def test_one_lock_per_workdir_released_on_any_exit(tmp_path):
    said = []
    with WorkdirLock(tmp_path, "run", say=said.append):
        holder = holder_of(tmp_path)
        assert holder["pid"] == os.getpid() and holder["host"] == platform.node() and holder["command"] == "run"
        with pytest.raises(UserError, match=f"is being written by `fttrace run`, process {os.getpid()}"):
            WorkdirLock(tmp_path, "merge").__enter__()
    with pytest.raises(RuntimeError), WorkdirLock(tmp_path, "run"):
        raise RuntimeError("any exit")
    assert holder_of(tmp_path) is None and not said
    left = dead_holder()
    (tmp_path / LOCK_FILE).write_text(json.dumps(left))
    with WorkdirLock(tmp_path, "merge", say=said.append):
        assert holder_of(tmp_path)["command"] == "merge"
    assert said == [f"fttrace: taking over workdir {tmp_path} from `fttrace run`, process {left['pid']} on "
                    f"{platform.node()} since 2026-01-02 03:04:05 UTC, which is gone"]
    assert holder_of(tmp_path) is None


def test_where_the_filesystem_has_no_locks_the_record_is_the_lock(tmp_path, monkeypatch):
    """gs://, or an NFS mount without locking: a record of a live process (or of another host) is refused, saying how
    to clear it; one left here by a process that is gone is taken over; release removes only this process's own."""
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(lock_lib.fcntl, "flock", no_locks)
    said = []
    for holder in (dict(dead_holder(), pid=os.getppid()), dict(dead_holder(), host="elsewhere")):
        (tmp_path / LOCK_FILE).write_text(json.dumps(holder))
        with pytest.raises(UserError, match=f"process {holder['pid']} on {holder['host']} since .*; wait for it to "
                                            f"end or stop it, then run this again \\(if it is gone, delete "):
            WorkdirLock(tmp_path, "run").__enter__()
        assert holder_of(tmp_path) == holder
    (tmp_path / LOCK_FILE).write_text(json.dumps(dead_holder()))
    with WorkdirLock(tmp_path, "run", say=said.append):
        assert holder_of(tmp_path)["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"process {os.getpid()}"):
            WorkdirLock(tmp_path, "run").__enter__()
    assert len(said) == 1 and said[0].endswith("which is gone") and not (tmp_path / LOCK_FILE).exists()
