"""benchmarks/device_check.sh and its measurements (fttrace/bench/device_check.py).

The pieces run here on the CPU at tiny sizes; the whole check's CPU rehearsal (benchmarks/rehearsal_env.sh) is read
by the last test when FTTRACE_REHEARSAL_OUT names the $OUT that rehearsal wrote.
"""
import json
import os
import pathlib
import re
import shlex
import subprocess

import pytest

from fttrace import config as config_lib
from fttrace.bench import device_check, throughput as bench
from helpers import ROOT

CONFIGS = ROOT / "configs"
REHEARSAL_OUT = os.environ.get("FTTRACE_REHEARSAL_OUT")


def test_rows_are_appended_one_json_line_each_and_the_summary_names_the_steps_not_done(tmp_path):
    device_check.Rows(tmp_path, "ref").write(kind="matmul", flops=1.5e12, sizes=(1, 2))
    device_check.Rows(tmp_path, "ref").write(status="done", seconds=3.0)
    lines = (tmp_path / device_check.RESULTS).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == ["ref", "ref"]
    assert device_check.read_rows(tmp_path)[0]["sizes"] == [1, 2]
    text = device_check.summary(tmp_path)
    assert "steps done: ref" in text and "preflight" in text.splitlines()[-1]


def test_preflight_refuses_a_cpu_backend_outside_the_rehearsal(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DEVICE_CHECK_REHEARSAL", raising=False)
    assert device_check.main(["preflight", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: JAX's backend is cpu, not a GPU or TPU")
    (row,) = device_check.read_rows(tmp_path)  # what it saw is kept; no "done" row
    assert row["backend"] == "cpu" and row["versions"]["jax"]


def test_memory_plan_compiles_without_materialising_a_member():
    setup = bench.setup_from_config(config_lib.load(str(CONFIGS / "bench.py"), [
        "shape=tiny", "model.dtype=bfloat16", "members=(64,)", "steps=1"]))
    plan = device_check.memory_plan(setup, 64)
    assert setup.initial is None and not setup.programs  # no state was built, no program kept
    assert plan["members"] == 64 and plan["planned_mb"] > 0 and plan["argument_mb"] > 0
    assert plan["fits"] is None  # XLA:CPU reports no memory limit


def test_the_counter_grid_runs_a_tenth_of_its_steps():
    config = config_lib.load(str(CONFIGS / "pcfg_counter.py"))
    cut = config_lib.load(str(CONFIGS / "pcfg_counter.py"), device_check.tenth(config, []))
    for phase in ("pretrain", "finetune", "reft"):
        assert cut[phase].steps == config[phase].steps // 10
        assert cut[phase].eval_every == config[phase].eval_every // 10


def test_the_torch_step_compares_like_for_like_with_autocast(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="the torch loop needs pip install 'fttrace[torch]'")
    monkeypatch.setenv("DEVICE_CHECK_REHEARSAL", "1")
    device_check.run_step("torch", tmp_path, CONFIGS)
    rows = device_check.read_rows(tmp_path)
    trained = {r["mode"]: r for r in rows if r.get("kind") == "train"}
    assert trained["torch"]["torch_autocast_bf16"] and trained["torch"]["work"] == trained["vmap_full"]["work"]
    (comparison,) = [r for r in rows if r.get("kind") == "comparison"]
    assert comparison["vmap_full_over_torch"] > 0 and rows[-1]["status"] == "done"


def test_dry_run_installs_offline_then_bounds_every_step_within_nine_minutes():
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh")], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, DRY_RUN="1", DEVICE_CHECK_REHEARSAL="0"))
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line) for line in done.stdout.splitlines() if line]
    installs = [words for words in lines if words[0] != "timeout"]
    steps = [words for words in lines if words[0] == "timeout"]
    assert installs[-1][1:] == ["-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "--quiet",
                                "."]
    assert all("--no-index" in words for words in installs)
    assert [words[7] for words in steps] == [name for name, _, _ in device_check.STEPS]
    assert all(words[:3] == ["timeout", "-k", "10"] and int(words[3]) > 0 for words in steps)
    assert sum(int(words[3]) for words in steps) <= 9 * 60


def out_files(out: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.skipif(not REHEARSAL_OUT, reason="FTTRACE_REHEARSAL_OUT names no rehearsal's $OUT")
def test_rehearsal_wrote_every_steps_rows_within_what_comes_back():
    out = pathlib.Path(REHEARSAL_OUT)
    files = out_files(out)
    assert 0 < len(files) <= 8, files
    for p in out.rglob("*"):
        relative = p.relative_to(out)
        assert len(relative.parts) - (1 if p.is_file() else 0) <= 2, relative  # at most 2 folders down
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in relative.parts), relative
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    rows = device_check.read_rows(out)
    done = {r["step"] for r in rows if r.get("status") == "done"}
    assert done >= {"install"} | {name for name, _, _ in device_check.STEPS}, done
    assert not [r for r in rows if r.get("status") in ("failed", "timed out", "no time left")]
    by = lambda step, kind: [r for r in rows if r["step"] == step and r.get("kind") == kind]  # noqa: E731
    (env,) = by("preflight", "environment")
    assert env["rehearsal"] and env["missing_requirements"] == [] and env["versions"]["jax"] == "0.11.2"
    assert {r["dtype"] for r in by("ref", "matmul")} == {"bfloat16", "float32"}
    trained = by("ref", "train")
    assert [(r["dtype"], r["mode"], r["members"]) for r in trained] == list(map(tuple, device_check.REHEARSAL.ref))
    assert all(r["member_steps_per_s"] > 0 and r["compile_s"] > 0 and r["mfu_matmul"] > 0 for r in trained)
    assert [r["members"] for r in by("memory_plan", "memory_plan")] == list(device_check.REHEARSAL.plan)
    assert {r["mode"] for r in by("torch", "train")} == {"vmap_full", "torch"}
    assert by("stories", "train") and {r["mode"] for r in by("stories", "decode")} == {"vmap", "vmap_whole_cache"}
    (trace,) = by("trace", "trace")
    assert trace["kept"] and (out / device_check.TRACE).exists()
    for step in ("default", "counter"):
        (study,) = by(step, "study")
        assert study["status"] == "complete" and study["compile_s"] > 0 and study["phases_s"] > 0
    (counter,) = by("counter", "study")
    assert counter["wall_s"] <= counter["full_wall_s_estimate"] <= counter["full_wall_s_upper"]
    assert counter["full_wall_s_upper"] > counter["wall_s"] and counter["step_scale"] == 10
    (tests,) = by("gpu_tests", "tests")
    assert tests["pytest_exit"] == 0
