import io
import json
import os
import platform
import re
import subprocess
import sys

import pandas as pd
import pytest

from fttrace.cli import main
from fttrace.engine.progress import Progress
from helpers import NO_EVALS, ROOT, SMOKE, TINY, dead_pid


def fttrace(*args):
    return main([*args])


def overrides(*items):
    return [f"--config.{o}" for o in TINY + [NO_EVALS] + list(items)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    assert fttrace("run", SMOKE, "--workdir", str(workdir), "-q", *overrides("sweep.seeds=2")) == 0
    return workdir


def test_run_writes_results_and_manifest(finished_run, capsys):
    frame = pd.read_parquet(finished_run / "results.parquet")
    assert set(frame.phase) == {"pretrain", "finetune", "regime"}  # the regime diagnostics always run
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["wall_s"] > 0
    times = manifest["time"]  # where the time went: each phase (its host-side measurements apart), each evaluation
    assert {label: t["kind"] for label, t in times.items()} == {
        "group 0 pretrain": "phase", "group 0 finetune": "phase", "group 0 regime": "evaluation"}
    assert sum(t["wall_s"] for t in times.values()) < manifest["wall_s"]
    assert all(0 <= t["measuring_s"] <= t["wall_s"] for t in times.values() if t["kind"] == "phase")
    assert manifest["config"]["sweep"]["seeds"] == 2
    assert {"jax", "flax", "optax"} <= set(manifest["versions"]) and manifest["devices"]
    # What reproduces it beyond the config: the command, the XLA/JAX environment, the source tree, every package.
    assert manifest["argv"] and isinstance(manifest["environment"], dict)
    # the CPU its floats came from, and the code XLA generated for it (AVX2 and AVX-512 round differently)
    assert manifest["machine"]["cores"] >= 1 and manifest["machine"]["isa"] and manifest["machine"]["cpu"]
    assert manifest["machine"]["xla_cpu_max_isa"] == (os.environ.get("XLA_FLAGS", "").partition("max_isa=")[2].split()
                                                       or [None])[0]
    assert "FTTRACE_COMPILATION_CACHE" in manifest["environment"]  # set by the test session
    assert manifest["git_dirty"] in (True, False, None) and {"jax", "numpy", "pandas"} <= set(manifest["packages"])
    task = manifest["task"]  # what the run's task was: its operands, the probes' control terminal, the held-out share
    assert task["kind"] == "pcfg" and task["pt_operand"] == 0 and task["other_operands"] == [3]
    assert task["control_operand"] not in (0, 2, 3) and task["holdout"] == 0.1
    assert not list(finished_run.glob("**/*.tmp"))


def snapshot(workdir):
    return {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("args, message", [
    (["--config.sweep.seedz=2"], "unknown config key 'sweep.seedz'"),
    (["--config.model.nope.x=2"], "unknown config key 'model.nope'"),
    (["--config.sweep.seeds=many"], "config key 'sweep.seeds': expected a value of type int"),
    (["--config.model.n_heads=3"], "config key 'model.n_heads'"),
    (["--config.sweep.prior=('huge',)"], "config key 'sweep.prior': unknown name 'huge'"),
    (["--config.pretrain.eval_every=7"], "config key 'pretrain.eval_every': must divide"),
    (["--config.task.data_len=5"], "data_len"),
    (["--config.evals=('probe',)", "--config.probe.fitter=lasso"],
     "config key 'probe.fitter': must be 'softmax' or 'ridge'"),
    (["--config.sweep.seeds=4"], "holds a run of a different config (sweep.seeds: 2 -> 4)"),
])
def test_bad_input_is_refused_and_nothing_is_lost(finished_run, capsys, args, message):
    before = snapshot(finished_run)
    assert fttrace("run", SMOKE, "--workdir", str(finished_run), "-q", *overrides("sweep.seeds=2"), *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(finished_run) == before


def test_a_setting_that_cannot_change_results_does_not_block_resume(finished_run, capsys):
    """A rerun of a finished workdir (here with another checkpoint cadence, which cannot change a result) changes
    nothing: the results and the manifest stay byte for byte (its command line, wall time and config: the first
    run's), and `fttrace status` reports the first run's wall time."""
    from fttrace.engine.progress import duration
    before = {name: (finished_run / name).read_bytes() for name in ("results.parquet", "manifest.json")}
    assert fttrace("run", SMOKE, "--workdir", str(finished_run), "-q",
                   *overrides("sweep.seeds=2", "checkpoint.keep=3", "checkpoint.every_chunks=2")) == 0
    assert {name: (finished_run / name).read_bytes() for name in before} == before
    manifest = json.loads(before["manifest.json"])
    assert manifest["config"]["checkpoint"] == {"every_chunks": 5, "keep": 2, "keep_log_spaced": 8}  # the whole config, as first given
    assert [i["argv"] for i in manifest["invocations"]] == [manifest["argv"]]
    assert "checkpoint.keep=3" not in " ".join(manifest["argv"]) and manifest["invocations"][0]["wall_s"] > 0
    capsys.readouterr()
    assert fttrace("status", str(finished_run)) == 0
    assert f", wall {duration(manifest['wall_s'])}\n" in capsys.readouterr().out


def test_missing_config_file(tmp_path, capsys):
    assert fttrace("run", str(tmp_path / "nope.py"), "--workdir", str(tmp_path / "w")) == 2
    assert "config file not found" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_broken_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n")
    assert fttrace("run", str(bad), "--workdir", str(tmp_path / "w")) == 2
    assert "syntax error" in capsys.readouterr().err


def test_unwritable_workdir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert fttrace("run", SMOKE, "--workdir", str(blocker / "sub"), "-q") == 2
    assert "is not writable" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"


def test_console_script_reports_errors_with_exit_status():
    out = subprocess.run([sys.executable, "-m", "fttrace.cli", "run", SMOKE, "--workdir", "/tmp/x",
                          "--config.sweep.bogus=1"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "unknown config key 'sweep.bogus'" in out.stderr


def test_progress_of_a_resumed_phase_counts_only_the_steps_since():
    clock = iter([100.0, 102.0])
    stream = io.StringIO()
    with Progress(stream=stream, clock=lambda: next(clock)).phase("group 0 reft", 40, first_step=1000) as on_chunk:
        on_chunk(1050, 3000, 2.0)  # 50 steps in 2 s after resuming at step 1000
    assert stream.getvalue().strip().endswith("step 1050/3000, 40 members, 1000 member-steps/s, ETA 1m 18s")


@pytest.mark.slow
def test_progress_shows_each_evaluation_its_sets_and_its_time(tmp_path, capsys):
    """An evaluation says when it starts, each set of members it has evaluated (sets and members done of those it
    announced, members/s, ETA), and its time; plain lines where stderr is no terminal."""
    args = [f"--config.{o}" for o in TINY + ["sweep.seeds=1", "evals=('attention',)"]]
    assert fttrace("run", SMOKE, "--workdir", str(tmp_path / "run"), *args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    start = [i for i, line in enumerate(lines) if re.match(r"group 0 attention +\.\.\.$", line)]
    sets = [i for i, line in enumerate(lines) if re.match(
        r"group 0 attention +members (\d)/2, set \1/2 \(1 member\), [\d.]+ members/s, ETA \d+m \d\ds$", line)]
    done = [i for i, line in enumerate(lines)
            if re.match(r"group 0 attention +done in \d+\.\ds, 2 members in 2 sets$", line)]
    assert len(start) == 1 and len(sets) == 2 and len(done) == 1 and start[0] < sets[0] < sets[-1] < done[0], err
    assert lines[sets[-1]].endswith("ETA 0m 00s")


def test_a_phase_inside_an_evaluation_is_counted_once_in_the_time_shares():
    """reFT's control trains inside the reFT evaluation: the shares of the time add up to the wall time."""
    from fttrace.tools.status import time_shares
    clock = iter([0.0, 10.0, 40.0, 70.0])  # evaluation starts, phase starts, its chunk ends, evaluation ends
    progress = Progress(stream=io.StringIO(), clock=lambda: next(clock))
    with progress.evaluation("group 0 reft"):
        with progress.phase("group 0 control_pretrain", 4) as on_chunk:
            on_chunk(100, 100, 30.0, training=0)
    assert progress.times == {"group 0 control_pretrain": dict(kind="phase", wall_s=30.0, measuring_s=0.0,
                                                               within="group 0 reft"),
                              "group 0 reft": dict(kind="evaluation", wall_s=70.0)}
    line = time_shares(dict(progress.times, **{"group 0 finetune": dict(kind="phase", wall_s=20.0)}), 100.0)
    assert "training phases 0m 50s (50%)" in line and "evaluations 0m 40s (40%)" in line
    assert "the rest 0m 10s (10%)" in line


def test_version_help_and_python_m(capsys):
    import fttrace as package
    with pytest.raises(SystemExit) as exit_:
        fttrace("--version")
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fttrace {package.__version__}"
    with pytest.raises(SystemExit):
        fttrace("run", "--help")
    shown = capsys.readouterr().out
    assert "--config.KEY=VALUE" in shown and "\n  pcfg_counter\n" in shown and ":small" in shown
    assert ":gpu" in shown and "\n  default\n" in shown and "tracr_common" not in shown  # a sibling, not a config
    done = subprocess.run([sys.executable, "-m", "fttrace", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("fttrace ")


def test_an_unknown_variant_is_refused_naming_the_known_ones(tmp_path, capsys):
    assert fttrace("run", f"{ROOT}/configs/pcfg_counter.py:big", "--workdir", str(tmp_path / "w")) == 2
    assert capsys.readouterr().err.strip() == (f"fttrace: error: config file {ROOT}/configs/pcfg_counter.py has no "
                                               "variant 'big'; its variants: small")
    assert fttrace("run", f"{SMOKE}:tiny", "--workdir", str(tmp_path / "w")) == 2
    assert "has no variant 'tiny'; it has none" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_config_prints_the_resolved_config_and_names_differences(finished_run, capsys):
    assert fttrace("config", SMOKE, "--config.sweep.seeds=3") == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["sweep"]["seeds"] == 3 and resolved["model"]["d_model"] == 32
    assert fttrace("config", "--diff", str(finished_run), SMOKE) == 0
    shown = capsys.readouterr().out.splitlines()
    assert "sweep.seeds: 2 -> 4" in shown and "model.d_model: 16 -> 32" in shown
    assert any(line.startswith("evals: [] -> ['reft', 'planted', 'prune'") for line in shown)
    assert fttrace("config", "--diff", SMOKE, SMOKE) == 0
    assert capsys.readouterr().out.strip() == "no differences"
    assert fttrace("config", "--diff", SMOKE, str(finished_run / "nowhere")) == 2
    assert "fttrace: error: config file not found" in capsys.readouterr().err


def test_config_and_its_diff_compile_nothing():
    """Validation checks what it checks without running JAX code: `fttrace config` answers at once."""
    env = {**os.environ, "JAX_LOG_COMPILES": "1", "FTTRACE_COMPILATION_CACHE": "off"}
    done = subprocess.run([sys.executable, "-m", "fttrace", "config", "--diff", f"{ROOT}/configs/default.py",
                           f"{ROOT}/configs/smoke.py"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0 and "sweep.seeds: 12 -> 4" in done.stdout, done.stderr
    assert "Compiling" not in done.stderr, done.stderr[:2000]


def test_status_of_a_finished_and_of_a_running_run(finished_run, tmp_path, capsys):
    assert fttrace("status", str(finished_run)) == 0
    shown = capsys.readouterr().out
    assert ": counter study, finished " in shown and "done: g0-finetune, g0-pretrain, g0-regime" in shown
    assert "diverged: none of 4 members with results" in shown
    assert re.search(r"time: training phases \d+m \d+s \(\d+%\), measurements inside them .* evaluations \d+m "
                     r"\d+s \(\d+%\), the rest", shown)
    # A run in its fine-tuning phase: the manifest says running, the progress record where it is.
    running = tmp_path / "running"
    running.mkdir()
    found = json.loads((finished_run / "manifest.json").read_text())
    (running / "manifest.json").write_text(json.dumps(dict(found, status="running")))
    with Progress(quiet=True, record=running / "progress.json").phase("group 0 finetune", 4) as on_chunk:
        on_chunk(10, 100, 1.0, training=3, trained=4)
    holder = dict(host=platform.node(), pid=os.getpid(), since="2026-01-02 03:04:05 UTC", command="run")
    (running / "lock.json").write_text(json.dumps(holder))  # this process holds the workdir
    assert fttrace("status", str(running)) == 0
    shown = capsys.readouterr().out
    assert f"counter study, running since 2026-01-02 03:04:05 UTC, process {os.getpid()} on" in shown
    assert "done: nothing yet" in shown
    assert re.search(r"now: group 0 finetune  step 10/100, 3 of 4 members training, \d+ member-steps/s, ETA", shown)
    # Its process gone (killed: its lock record left behind), or ended without finishing (the record cleared): stopped.
    (running / "lock.json").write_text(json.dumps(dict(holder, pid=dead_pid())))
    assert fttrace("status", str(running)) == 0
    shown = capsys.readouterr().out
    assert "counter study, stopped (process gone): process" in shown and "running since" not in shown
    assert "stopped at: group 0 finetune  step 10/100" in shown
    (running / "lock.json").write_text("")
    assert fttrace("status", str(running)) == 0
    assert re.search(r"counter study, stopped \(started .*\)", capsys.readouterr().out)
    # A run that holds its workdir but has not written its manifest yet is starting.
    starting = tmp_path / "starting"
    starting.mkdir()
    (starting / "lock.json").write_text(json.dumps(holder))
    assert fttrace("status", str(starting)) == 0
    assert capsys.readouterr().out.strip() == f"{starting}: starting, `fttrace run`, process {os.getpid()} on " \
                                              f"{platform.node()} since 2026-01-02 03:04:05 UTC"
    # A stories workdir written in the LM studies' old manifest schema ("done", wall_seconds) reads as finished.
    old = tmp_path / "old_schema"
    old.mkdir()
    schema = {k: v for k, v in found.items() if k not in ("status", "wall_s")}
    (old / "manifest.json").write_text(json.dumps(dict(schema, status="done", wall_seconds=125.0)))
    assert fttrace("status", str(old)) == 0
    assert re.search(r"counter study, finished .*, wall 2m 05s", capsys.readouterr().out)
    assert fttrace("status", str(tmp_path)) == 2
    assert "is not an fttrace workdir" in capsys.readouterr().err


OPTIONAL = """
import sys

BLOCKED = ("tracr", "haiku", "tensorflow_datasets", "sentencepiece", "array_record", "gcsfs", "torch")


class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Missing())
from fttrace import config as config_lib
from fttrace.cli import main
from fttrace.answer.sweep import build_groups
from fttrace.answer.tasks.registry import build_task

config = config_lib.load("configs/default.py")
build_groups(config), build_task(config)
import fttrace.answer.study, fttrace.tools.workdir, fttrace.tools.status, fttrace.answer.evals  # noqa: E401
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
assert not loaded, loaded
work = sys.argv[1]
for args in (["run", "configs/tracr_counter.py:tiny"], ["run", "configs/stories_twist.py:tiny"],
             ["run", "configs/smoke.py"]):
    code = main([*args, "--workdir", work + "/w" if args[1] != "configs/smoke.py" else "gs://bucket/w", "-q"])
    assert code == 2, args
"""


def test_the_core_runs_without_the_optional_packages_and_names_the_extra_a_study_needs(tmp_path):
    done = subprocess.run([sys.executable, "-c", OPTIONAL, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("fttrace: error:")]
    assert len(errors) == 3 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors[0] == "fttrace: error: task 'tracr' needs the Tracr compiler (tracr): pip install 'fttrace[tracr]'"
    assert errors[1] == ("fttrace: error: the stories_twist study needs the story data packages (sentencepiece): "
                         "pip install 'fttrace[stories]'")
    assert errors[2] == "fttrace: error: workdir gs://bucket/w: gs:// paths need gcsfs: pip install 'fttrace[gcs]'"
    assert not (tmp_path / "w").exists()


def test_a_reader_that_leaves_early_is_no_error():
    """`fttrace config C | head -1` where head has gone before fttrace writes: no traceback, the pipe's exit code."""
    child = subprocess.Popen([sys.executable, "-m", "fttrace", "config", SMOKE], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT)
    child.stdout.close()  # the reader leaves before the child has printed anything
    stderr = child.stderr.read().decode()
    assert child.wait() == 141 and stderr == "", stderr
