"""Sweeps that survive: resume after SIGKILL, many devices, several processes, shards of the grid, bad input.

The runs are real `fttrace run` subprocesses on one small grid (3 seeds x pretraining LRs 1e-3 and 1e30, which
diverges at once; one fine-tuning child per lineage), sharing one compilation cache. Pretraining and fine-tuning
are configured alike, so both phases run one compiled program; the runs on 8 devices and on 2 processes start
first, in the background, because they compile their own programs.
"""
import asyncio
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import flax.traverse_util
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import fttrace
from fttrace.engine.checkpoint import FINGERPRINTS, Checkpoints, ignore_abandoned_reads, run_fingerprint
from fttrace.cli import main
from fttrace.errors import UserError
from fttrace.tools.merge import merge_workdirs
from fttrace.engine.runner import check_workdir, run_identity
from fttrace.engine.placement import Placement
from fttrace.engine.results import ResultsStore, manifest, write_json
from fttrace.answer.sweep import build_groups, shard_groups
from helpers import NO_EVALS, ROOT, SMOKE, TINY, Runs, assert_open_gives_logged_accuracies, tiny_config

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

GRID = TINY + [NO_EVALS, "sweep.seeds=3", "sweep.pretrain_lr=(1e-3,1e30)", "pretrain.schedule=constant",
               "pretrain.warmup_steps=0", "finetune.steps=20", "checkpoint.every_chunks=1"]
KEYS = ["phase", "member", "step", "metric"]
EVALS = "evals=('reft','prune','probe','attention')"
TIMEOUT = 900


def config_args(*extra):
    return [f"--config.{o}" for o in GRID + list(extra)]


def sorted_frame(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(KEYS).reset_index(drop=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def snapshot(workdir, skip=("manifest.json", "progress.json", "lock.json")) -> dict:
    """Every file's bytes, but the manifest, the progress record and the lock's record (rewritten as runs come and
    go), the live curves (which a phase's results part replaces) and orbax's unfinished temporaries."""
    return {p: p.read_bytes() for p in workdir.rglob("*")
            if p.is_file() and p.name not in skip and "orbax-checkpoint-tmp" not in str(p) and p.parent.name != "live"}


class SmokeRuns(Runs):
    def start(self, name, *args, fault=None, devices=None, config=()):
        """Start `fttrace run SMOKE --workdir tmp/<name> ARGS` (through the fault driver with `fault`)."""
        program = [sys.executable, str(ROOT / "tests" / "fault_driver.py"), fault] if fault else None
        return self.launch(name, ["run", SMOKE, "--workdir", str(self.workdir(name.split("#")[0])), "-q", *args,
                                  *config_args(*config)], devices, program)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = SmokeRuns(tmp_path_factory.mktemp("survive"))
    # Training and every evaluation on one device, on 8 devices, and in two processes (the same command on two
    # "hosts", 2 devices each).
    runs.start("evals-reference", config=[EVALS])
    runs.start("evals-devices8", devices=8, config=[EVALS])
    port = free_port()
    for k in range(2):
        runs.start(f"evals-processes#{k}", "--coordinator", f"localhost:{port}", "--num-processes", "2",
                   "--process-id", str(k), devices=2, config=[EVALS])
    code, log = runs.run("reference")
    assert code == 0, log
    for index in range(2):  # shards of a grid twice as large, with the same shapes as the reference
        runs.start(f"shard{index}", "--shard", f"{index}/2", config=["sweep.seeds=6"])
    yield runs
    runs.stop_all()


@pytest.fixture(scope="module")
def reference(runs):
    return sorted_frame(runs.workdir("reference") / "results.parquet")


@pytest.fixture(scope="module")
def interrupted(runs):
    """One workdir through kills and failures, each run resuming the last; what was seen at each point."""
    seen, work = {}, runs.workdir("interrupted")
    process = runs.start("interrupted#1")  # killed from outside once its first checkpoint exists
    deadline = time.time() + TIMEOUT
    while not (work / "checkpoints" / "g0-pretrain" / "10").exists() and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    seen["kill"] = runs.wait("interrupted#1")
    seen["kill_manifest"] = json.loads((work / "manifest.json").read_text())
    seen["kill_live"] = fttrace.open(work).live()
    seen["kill_status"] = main(["status", str(work)])
    shutil.copytree(work, runs.workdir("damaged"))

    before = snapshot(work)  # checkpoint 10 of pretraining
    seen["disk_full"] = runs.run("interrupted#2", fault="disk-full-checkpoint:2")  # pretrain ends, fine-tuning fails
    after = snapshot(work)
    seen["disk_full_kept"] = all(after.get(path) == data for path, data in before.items())
    seen["disk_full_results"] = pd.read_parquet(work / "results.parquet")

    seen["kill_writing"] = runs.run("interrupted#3", fault="kill-writing-results:2")  # the 1st write is at start
    seen["kill_writing_results"] = pd.read_parquet(work / "results.parquet")
    seen["kill_writing_temporaries"] = list(work.glob(".results.parquet.*.tmp"))

    seen["last"] = runs.run("interrupted#4")
    return seen


def test_sweep_killed_and_resumed_equals_an_uninterrupted_run(runs, interrupted, reference):
    code, _ = interrupted["kill"]
    assert code == -signal.SIGKILL and interrupted["kill_manifest"]["status"] == "running"
    assert interrupted["last"][0] == 0, interrupted["last"][1]
    work = runs.workdir("interrupted")
    pd.testing.assert_frame_equal(sorted_frame(work / "results.parquet"), reference, check_exact=True)
    assert json.loads((work / "manifest.json").read_text())["status"] == "complete"
    assert not list(work.rglob("*.tmp"))
    # Killed mid-phase, the pretraining curves so far were readable (live), and its status said where it was;
    # finished, no live curve is left.
    live = interrupted["kill_live"]
    assert set(live.phase) == {"pretrain"} and {0, 10} <= set(live.step) and set(live.member) == {
        f"pt{i}" for i in range(6)}
    columns = [c for c in live.columns if c != "status"]  # a member's status is known at the end of the phase
    first = reference[(reference.phase == "pretrain") & reference.step.isin([0, 10])][columns]
    so_far = live[live.step.isin([0, 10])].sort_values(KEYS).reset_index(drop=True)[columns]
    pd.testing.assert_frame_equal(so_far, first.reset_index(drop=True), check_exact=True, check_dtype=False)
    assert interrupted["kill_status"] == 0 and fttrace.open(work).live() is None


def test_divergence_isolation_survives_resume(runs, interrupted, reference):
    resumed = sorted_frame(runs.workdir("interrupted") / "results.parquet")
    status = resumed.groupby("member").status.first()
    assert set(status[status == "diverged"].index) == {"pt1", "pt3", "pt5", "ft1", "ft3", "ft5"}
    assert set(status[status == "ok"].index) == {"pt0", "pt2", "pt4", "ft0", "ft2", "ft4"}
    steps = resumed[resumed.metric == "diverged_step"].set_index(["phase", "member"]).value
    # They diverged before the first checkpoint (step 10): their frozen states crossed every resume.
    assert steps[[("pretrain", m) for m in ("pt1", "pt3", "pt5")]].between(0, 9).all()
    healthy = resumed[resumed.member.isin(["pt0", "pt2", "pt4"]) & resumed.metric.str.endswith("loss")]
    assert np.isfinite(healthy.value.dropna()).all() and healthy.step.max() == 20


def test_results_file_is_never_partial(interrupted):
    code, _ = interrupted["kill_writing"]
    assert code == -signal.SIGKILL and interrupted["kill_writing_temporaries"]  # killed halfway through the write
    pd.testing.assert_frame_equal(interrupted["kill_writing_results"], interrupted["disk_full_results"])
    assert set(interrupted["kill_writing_results"].phase) == {"pretrain"}  # the previous version, whole


def test_full_disk_is_one_clear_error_and_loses_nothing(interrupted):
    code, log = interrupted["disk_full"]
    assert code == 2 and interrupted["disk_full_kept"]
    error = log.strip().splitlines()[-1]
    assert error.startswith("fttrace: error: cannot write checkpoint ") and "g0-finetune/10" in error
    assert error.endswith("No space left on device") and "Traceback" not in log
    assert set(interrupted["disk_full_results"].phase) == {"pretrain"}  # what finished before stays


def test_damaged_checkpoint_is_refused_and_kept(runs, interrupted):
    work = runs.workdir("damaged")
    biggest = max((p for p in (work / "checkpoints" / "g0-pretrain" / "10" / "state").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    before = snapshot(work)
    code, log = runs.run("damaged")
    assert code == 2 and "Traceback" not in log, log
    assert log.strip().splitlines()[-1].startswith(
        f"fttrace: error: checkpoint {work}/checkpoints/g0-pretrain/10 is damaged or incomplete")
    assert snapshot(work) == before


@pytest.fixture(scope="module")
def processes(runs):
    """The workdir of the two-process evaluation run, once both processes have exited cleanly."""
    for k in range(2):
        code, log = runs.wait(f"evals-processes#{k}")
        assert code == 0, log
    return runs.workdir("evals-processes")


@pytest.fixture(scope="module")
def devices8(runs):
    code, log = runs.wait("evals-devices8")
    assert code == 0, log
    return runs.workdir("evals-devices8")


@pytest.fixture(scope="module")
def eval_reference(runs):
    code, log = runs.wait("evals-reference")
    assert code == 0, log
    return sorted_frame(runs.workdir("evals-reference") / "results.parquet")


def assert_same_evaluations(frame, reference):
    """Same rows and values as on one device. A probe's held-out accuracy counts examples on either side of a
    boundary the probe learned from features that differ in the last float bits between device layouts, so it
    may differ by a flipped example or two (1/64 each here); everything else within float32 rounding."""
    pd.testing.assert_frame_equal(frame.drop(columns="value"), reference.drop(columns="value"))
    probe = (frame.phase == "probe").to_numpy()
    np.testing.assert_allclose(frame.value[~probe], reference.value[~probe], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(frame.value[probe], reference.value[probe], atol=2 / 64 + 1e-6)


def test_eight_devices_equal_one_device(devices8, eval_reference):
    assert len(json.loads((devices8 / "manifest.json").read_text())["devices"]) == 8
    assert set(eval_reference.phase) == {"pretrain", "finetune", "reft", "control_pretrain", "control_reft",
                                         "prune", "probe", "attention", "regime"}
    # 6 lineages (and 6 controls) padded to 8 devices: no pad member reaches any evaluation's results.
    assert_same_evaluations(sorted_frame(devices8 / "results.parquet"), eval_reference)


def test_processes_meet_at_the_coordination_services_barrier(monkeypatch):
    """`sync` waits at the coordination service's barrier, with a timeout in hours, not at a collective (the first
    CPU collective gives the other processes 30 s to arrive; processes start unevenly)."""
    from fttrace.engine import placement
    calls = []
    monkeypatch.setattr(placement.jax, "process_count", lambda: 2)
    monkeypatch.setattr(placement.ocp.multihost, "get_barrier_sync_fn", lambda: lambda **kw: calls.append(kw))
    monkeypatch.setattr(placement.ocp.multihost, "sync_global_processes",
                        lambda *a, **k: pytest.fail("a collective barrier"))
    placement.sync("fttrace-start")
    assert calls == [dict(key="fttrace-start", timeout_ms=placement.SYNC_TIMEOUT_S * 1000)]
    assert placement.SYNC_TIMEOUT_S >= 3600


LATE = """
import sys, time
from fttrace.engine import checkpoint
make = checkpoint.PhaseCheckpoints.__init__
first = [True]
def late(self, *args, **kwargs):
    if first:  # this process reaches its first checkpoint a minute after the other
        first.clear()
        time.sleep(65)
    make(self, *args, **kwargs)
checkpoint.PhaseCheckpoints.__init__ = late
from fttrace.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_orbax_checkpoint_barriers_go_through_the_coordination_service():
    from orbax.checkpoint._src.multihost import multihost

    from fttrace.engine import placement
    placement.orbax_barriers_wait()
    assert multihost.EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER.value
    assert multihost.coordination_timeout() == placement.SYNC_TIMEOUT_S


def test_a_process_a_minute_late_to_its_first_checkpoint_is_waited_for(tmp_path):
    """Two processes, the second reaching its first checkpoint 65 s after the first: orbax's barriers wait (a
    collective would give it 30 s), and the run ends complete."""
    runs, port = Runs(tmp_path), free_port()
    arguments = ["run", SMOKE, "--workdir", str(tmp_path / "late"), "-q", *config_args(NO_EVALS),
                 "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    runs.launch("late#0", [*arguments, "--process-id", "0"], devices=1)
    runs.launch("late#1", [*arguments, "--process-id", "1"], devices=1, program=[sys.executable, "-c", LATE])
    for k in range(2):
        code, log = runs.wait(f"late#{k}")
        assert code == 0, log
    assert json.loads((tmp_path / "late" / "manifest.json").read_text())["status"] == "complete"


def test_two_processes_each_write_their_own_members(processes, eval_reference):
    work = processes
    assert_same_evaluations(sorted_frame(work / "results.parquet"), eval_reference)
    state = work / "checkpoints" / "g0-pretrain" / "20" / "state"
    assert (state / "ocdbt.process_0").is_dir() and (state / "ocdbt.process_1").is_dir()
    written = json.loads((work / "manifest.json").read_text())
    assert written["processes"] == 2 and len(written["devices"]) == 4 and written["status"] == "complete"
    # 6 lineages padded to 8 over 2 x 2 devices: process 0 holds pt0-pt3, process 1 pt4, pt5 and two pads.
    # reFT thresholds need every lineage's pretrained accuracy, which the other process trained.
    for part, held in (("pretrain", {0: {"pt0", "pt1", "pt2", "pt3"}, 1: {"pt4", "pt5"}}),
                       ("prune", {0: {"pt0", "pt1", "pt2", "pt3", "ft0", "ft1", "ft2", "ft3", "cpt0", "cpt1",
                                      "cpt2", "cpt3"}, 1: {"pt4", "pt5", "ft4", "ft5", "cpt4", "cpt5"}}),
                       ("reft-summary", {0: {"rft0", "rft1", "rft2", "rft3"}, 1: {"rft4", "rft5"}})):
        found = {k: set(pd.read_parquet(work / "parts" / f"g0-{part}.process-{k}-of-2.parquet").member)
                 for k in (0, 1)}
        assert found == held, part


def test_open_gives_every_member_as_the_run_evaluated_it_on_any_layout(runs, eval_reference, devices8, processes):
    """fttrace.open reads each member's parameters from its checkpoint, un-padded, whatever device count or process
    count wrote it: on every layout, every trained member's accuracy on the run's held-out sets is the one the run
    logged at the end of its phase, and sampled members' parameters agree across layouts."""
    reference = fttrace.open(runs.workdir("evals-reference"))
    sets = reference.heldout()
    assert len(sets["pt"][1]) == 64
    phases = set(reference.members.phase)
    assert phases == {"pretrain", "finetune", "reft", "control_pretrain", "control_reft"}
    for name, work in (("1 device", runs.workdir("evals-reference")), ("8 devices", devices8),
                       ("2 processes", processes)):
        run = fttrace.open(work)
        pd.testing.assert_frame_equal(run.members, reference.members)
        # float32 rounding between layouts may flip a near-tied answer or two
        assert_open_gives_logged_accuracies(run, reference.results, sets, tolerance=2 / len(sets["pt"][1]))
        # Members of lineages at LR 1e-3 (the diverged ones froze at weights of order 1e30, which no two reduction
        # orders round alike), without the attention key biases: the softmax leaves them no gradient but float
        # noise, which Adam scales up to steps of the LR's size, differently in every layout.
        control = run.members[run.members.parent == "cpt0"].member.iloc[-1]
        for member in ("pt0", "ft2", "rft4", "cpt0", control):
            mine, theirs = (flax.traverse_util.flatten_dict(r.params(member)) for r in (run, reference))
            for path in mine:
                if path[-3:] != ("attn", "key", "bias"):
                    np.testing.assert_allclose(mine[path], theirs[path], rtol=1e-5, atol=1e-6,
                                               err_msg=f"{name} {member} {path}")
    assert reference.steps("pt0") == [10, 20] and not np.array_equal(
        reference.params("pt0", step=10)["embed"]["embedding"], reference.params("pt0")["embed"]["embedding"])


@pytest.fixture(scope="module")
def shards(runs):
    for index in range(2):
        code, log = runs.wait(f"shard{index}")
        assert code == 0, log
    return [runs.workdir(f"shard{index}") for index in range(2)]


def test_shards_merge_into_the_whole_grid(shards, reference, tmp_path):
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "merged")]) == 0
    merged = sorted_frame(tmp_path / "merged" / "results.parquet")
    assert set(merged[merged.phase == "pretrain"].member) == {f"pt{i}" for i in range(12)}
    assert set(merged[merged.phase == "finetune"].member) == {f"ft{i}" for i in range(12)}
    halves = [set(pd.read_parquet(s / "results.parquet").member) for s in shards]
    assert not halves[0] & halves[1] and "pt0" in halves[0] and "pt1" in halves[1]  # grid-wide ids, dealt in turn
    # The reference grid's members are the first 6 of this grid, trained alone: equal to float tolerance.
    common = merged[merged.member.isin(reference.member)].reset_index(drop=True)
    np.testing.assert_allclose(common.value, reference.value, rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["merged_from"][1]["shard"] == [1, 2]
    # A merged workdir opens each member from the shard that trained it.
    opened = fttrace.open(tmp_path / "merged")
    for member, shard in (("pt1", shards[1]), ("ft2", shards[0])):
        np.testing.assert_array_equal(opened.params(member)["unembed"]["kernel"],
                                      fttrace.open(shard).params(member)["unembed"]["kernel"])


def test_merge_never_writes_into_a_source(shards, tmp_path, capsys, monkeypatch):
    """--out naming a source however it is spelled (absolute, relative with `..`, through a symbolic link), or a
    folder holding one, is refused with one line before anything is written: the shard keeps its results."""
    before = {f: (shards[0] / f).read_bytes() for f in ("manifest.json", "results.parquet")}
    (tmp_path / "link").symlink_to(shards[0])
    monkeypatch.chdir(shards[0].parent)
    spellings = [str(shards[0].resolve()), f"{shards[1].name}/../{shards[0].name}", str(tmp_path / "link"),
                 str(shards[0].parent)]
    for out in spellings:
        capsys.readouterr()
        assert main(["merge", *map(str, shards), "--out", out, "--overwrite"]) == 2, out
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is, holds or lies inside the source" in err[0], (out, err)
    assert {f: (shards[0] / f).read_bytes() for f in before} == before


def test_object_store_places_compare_by_normalised_url():
    from fttrace.tools.merge import overlap
    assert overlap("gs://bucket/runs/s0", "gs://bucket//runs/x/../s0/")
    assert overlap("gs://bucket/runs", "gs://bucket/runs/s0")
    assert not overlap("gs://bucket/runs/s0", "gs://bucket/runs/s01")
    assert not overlap("gs://bucket/runs/s0", "gs://other/runs/s0")


def copy_with(source, target, edit):
    shutil.copytree(source, target)
    edit(target)
    return target


def drop_member(member):
    def edit(work):
        frame = pd.read_parquet(work / "results.parquet")
        frame[frame.member != member].to_parquet(work / "results.parquet")
    return edit


def set_manifest(**changes):
    def edit(work):
        found = json.loads((work / "manifest.json").read_text())
        found.update(changes)
        (work / "manifest.json").write_text(json.dumps(found))
    return edit


@pytest.mark.parametrize("which, edit, message", [
    ([0], None, "shard(s) 1/2 missing from the merge"),
    ([0, 0], None, "shard 0/2 is given twice"),
    ([0, 1], drop_member("ft3"), "members missing from the merge: finetune ft3"),
    ([0, 1], set_manifest(status="running"), "holds an unfinished run (status 'running')"),
    ([0, 1], set_manifest(shard=[0, 2]), "shard 0/2 is given twice"),
    ([0, 1], set_manifest(config={"other": 1}), "holds a run of a different config"),
    ([0, 1], lambda work: (work / "results.parquet").unlink(), "claims a complete run but holds no results.parquet"),
])
def test_merge_refuses_incomplete_or_overlapping_shards(shards, tmp_path, which, edit, message):
    sources = [shards[i] for i in which]
    if edit:
        sources[-1] = copy_with(sources[-1], tmp_path / "edited", edit)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge_workdirs(sources, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_a_member_in_two_shards(shards, tmp_path):
    def add_pt1(work):
        other = pd.read_parquet(shards[1] / "results.parquet")
        both = pd.concat([pd.read_parquet(work / "results.parquet"), other[other.member == "pt1"]])
        both.to_parquet(work / "results.parquet")
    sources = [copy_with(shards[0], tmp_path / "edited", add_pt1), shards[1]]
    with pytest.raises(UserError, match="members in more than one source: pretrain pt1"):
        merge_workdirs(sources, tmp_path / "merged")


def test_shard_groups_deal_self_contained_lineages():
    config = tiny_config(NO_EVALS, "sweep.seeds=3", "sweep.spurious=(0.0,1.0)", "sweep.shapes.d_model=(16,32)")
    groups = build_groups(config)
    seen = []
    for index in range(4):
        for group in shard_groups(groups, index, 4):
            pt, ft = group.pretrain, group.finetune
            assert (pt.member.to_numpy()[ft.parent_index] == ft.parent.to_numpy()).all()  # parents travel along
            seen += [(group.index, m) for m in [*pt.member, *ft.member]]
    everything = [(g.index, m) for g in groups for m in [*g.pretrain.member, *g.finetune.member]]
    assert sorted(seen) == sorted(everything) and len(set(seen)) == len(seen)


def test_shards_keep_a_measured_only_pretraining_member_beside_a_fine_tuned_lineage():
    config = tiny_config(NO_EVALS, "sweep.seeds=3", "sweep.prior=('high','low')", "sweep.finetune_priors=('low',)",
                         "sweep.shapes.d_model=(16,32)")
    groups = build_groups(config)
    assert all(set(g.pretrain.prior_name[g.parent_index]) == {"low"} for g in groups)
    assert all((g.pretrain.prior_name == "high").sum() == 3 for g in groups)  # measured only: no children
    for count in (2, 3, 6):
        seen = []
        for index in range(count):
            for group in shard_groups(groups, index, count):
                assert len(group.finetune), (count, index)
                seen += [(group.index, m) for m in [*group.pretrain.member, *group.finetune.member]]
        everything = [(g.index, m) for g in groups for m in [*g.pretrain.member, *g.finetune.member]]
        assert sorted(seen) == sorted(everything) and len(set(seen)) == len(seen)


def small_state(n=2):
    return {"w": jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3), "step": jnp.full((n,), 7, jnp.int32)}


def checkpoints(workdir, fingerprint="run-a", every_chunks=2, keep=2):
    return Checkpoints(workdir / "checkpoints", fingerprint, Placement(), every_chunks, keep)


def records(steps, n=2):
    return [(s, {"pt_acc": jnp.full((n,), s / 100, jnp.float32)}) for s in steps]


def test_checkpoints_round_trip_and_follow_the_interval(tmp_path):
    with checkpoints(tmp_path).phase("g0-pretrain") as phase:
        for last in (10, 20, 30, 40, 50):  # chunk 1 .. 5 of a 50-step phase, every 2 chunks and at the end
            phase.after_chunk(small_state(), records(range(0, last + 1, 10)), final_step=50)
        assert phase.steps() == [40, 50]  # 20 and 40 were due, 50 ends the phase; the newest 2 are kept
        state, restored = phase.restore(small_state(), 50)
    assert all((np.asarray(state[k]) == np.asarray(small_state()[k])).all() for k in state)
    assert [s for s, _ in restored] == [0, 10, 20, 30, 40, 50]
    np.testing.assert_array_equal(restored[-1][1]["pt_acc"], np.full(2, 0.5, np.float32))


def test_checkpoints_under_a_relative_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with checkpoints(pathlib.Path("runs") / "relative").phase("g0-pretrain") as phase:
        phase.save(small_state(), records([0, 10]))
        assert phase.steps() == [10]
        _, restored = phase.restore(small_state(), 10)
    assert [s for s, _ in restored] == [0, 10]
    assert (tmp_path / "runs" / "relative" / "checkpoints" / "g0-pretrain" / "10").is_dir()


def tamper_meta(directory, **changes):
    meta = directory / "checkpoints" / "g0-pretrain" / "10" / "meta" / "metadata"
    found = json.loads(meta.read_text())
    found.update(changes)
    meta.write_text(json.dumps(found))


@pytest.mark.parametrize("tamper, message", [
    (lambda d: tamper_meta(d, fttrace="0.0.1"),
     f"was written by fttrace 0.0.1 and this is fttrace {fttrace.__version__}"),
    (lambda d: tamper_meta(d, run="run-b"), "belongs to a run of another config or shard"),
    (lambda d: tamper_meta(d, devices=8), "was written on 8 devices and this run has 1"),
    (lambda d: (d / "checkpoints" / "g0-pretrain" / "10" / "meta" / "metadata").write_text("{garbled"),
     "is damaged or incomplete (its metadata cannot be read)"),
    (lambda d: [p.write_bytes(b"") for p in (d / "checkpoints" / "g0-pretrain" / "10" / "state").rglob("*")
                if p.is_file() and p.stat().st_size > 100],
     "is damaged or incomplete (its arrays cannot be read)"),
])
def test_checkpoint_of_another_run_or_version_or_damaged_is_refused(tmp_path, tamper, message):
    with checkpoints(tmp_path).phase("g0-pretrain") as phase:
        phase.save(small_state(), records([0, 10]))
    tamper(tmp_path)
    with checkpoints(tmp_path).phase("g0-pretrain") as phase, pytest.raises(UserError) as error:
        phase.restore(small_state(), 10)
    assert message in str(error.value) and str(tmp_path / "checkpoints" / "g0-pretrain" / "10") in str(error.value)


def test_a_restore_that_fails_for_another_reason_does_not_blame_the_checkpoint(tmp_path):
    from fttrace.engine.checkpoint import restore_failure
    with checkpoints(tmp_path).phase("g0-pretrain") as phase:
        phase.save(small_state(), records([0, 10]))
    with checkpoints(tmp_path).phase("g0-pretrain") as phase, pytest.raises(UserError) as error:
        phase.restore(small_state(3), 10)  # a state of another member count
    assert "does not fit this run's state" in str(error.value) and "delete" not in str(error.value)
    assert (tmp_path / "checkpoints" / "g0-pretrain" / "10").is_dir()
    memory = restore_failure("ck/10", RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9.00GiB"), "x")
    assert isinstance(memory, UserError) and "ran out of memory" in str(memory) and "delete" not in str(memory)
    bug = TypeError("unsupported operand")
    assert restore_failure("ck/10", bug, "x") is bug  # a bug is raised as itself
    for damage in (ValueError("Error reading: DATA_LOSS"), Exception("Encountered error while reading array index")):
        assert "damaged" in str(restore_failure("ck/10", damage, "its arrays cannot be read"))


def test_a_part_that_cannot_be_written_keeps_the_previous_one(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.prepare()
    store.write_part("g0-pretrain", pd.DataFrame({"member": ["pt0"], "value": [1.0]}))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(UserError, match=r"cannot write .*g0-pretrain.parquet: No space left on device"):
        store.write_part("g0-pretrain", pd.DataFrame({"member": ["pt0"], "value": [2.0]}))
    monkeypatch.undo()
    assert store.read_part("g0-pretrain").value.tolist() == [1.0] and store.read().value.tolist() == [1.0]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("previous, message", [
    (dict(shard=[1, 4]), "holds shard 1/4 of the grid, not the whole grid"),
    (dict(fttrace="0.0.1"), f"holds a run of fttrace 0.0.1 and this is fttrace {fttrace.__version__}"),
    (dict(devices=["cpu:0", "cpu:1"]), "holds a run on 2 device(s) in 1 process(es) and this one has 1 in 1"),
])
def test_workdir_of_another_shard_version_or_device_layout_is_refused(tmp_path, previous, message):
    config = tiny_config(NO_EVALS)
    identity = run_identity(config)
    store = ResultsStore(tmp_path)
    store.prepare()
    found = manifest(identity["config"], previous.get("devices", ["cpu:0"]), shard=previous.get("shard"),
                     processes=1)
    found["versions"]["fttrace"] = previous.get("fttrace", fttrace.__version__)
    write_json(tmp_path / "manifest.json", found)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_workdir(store, identity, dict(devices=["cpu:0"], processes=1), overwrite=False)
    check_workdir(store, identity, dict(devices=["cpu:0"], processes=1), overwrite=True)


def test_a_run_started_before_an_upgrade_resumes_from_its_checkpoints(tmp_path):
    """A run whose checkpoints carry the fingerprint of its whole config (what identified a run before the
    results-neutral keys, and before an empty sweep section, were left out of it) resumes after the upgrade."""
    config = tiny_config(NO_EVALS)
    identity = run_identity(config)
    assert "finetune_optimizer" not in identity["config"]["sweep"]  # an empty sweep section is no axis
    swept = run_identity(tiny_config(NO_EVALS, "sweep.finetune_optimizer.weight_decay=(0.0,0.1)"))
    assert swept["config"]["sweep"]["finetune_optimizer"] == {"weight_decay": [0.0, 0.1]}
    before_upgrade = json.loads(json.dumps(identity["config"]))
    before_upgrade["checkpoint"] = dict(every_chunks=5, keep=2)
    before_upgrade["sweep"].pop("finetune_optimizer", None)
    store = ResultsStore(tmp_path)
    store.prepare()
    write_json(tmp_path / "manifest.json", manifest(before_upgrade, ["cpu:0"], processes=1))
    earlier = check_workdir(store, identity, dict(devices=["cpu:0"], processes=1), overwrite=False)
    old_fingerprint = run_fingerprint(dict(config=before_upgrade, shard=None))
    assert earlier == (old_fingerprint,) and run_fingerprint(identity) != old_fingerprint
    with checkpoints(tmp_path, old_fingerprint).phase("g0-pretrain") as phase:
        phase.save(small_state(), records([0, 10]))
    upgraded = Checkpoints(tmp_path / "checkpoints", run_fingerprint(identity), Placement(), 2, 2, earlier)
    with upgraded.phase("g0-pretrain") as phase:
        _, restored = phase.restore(small_state(), 10)
    assert [s for s, _ in restored] == [0, 10]
    listed = manifest(identity["config"], ["cpu:0"], processes=1, **{FINGERPRINTS: sorted(upgraded.accepted)})
    write_json(tmp_path / "manifest.json", listed)  # the fingerprints outlive the manifest's rewrite
    assert old_fingerprint in check_workdir(store, identity, dict(devices=["cpu:0"], processes=1), overwrite=False)


@pytest.mark.parametrize("args, message", [
    (["--shard", "2/2"], "--shard 2/2: expected I/N with 0 <= I < N"),
    (["--shard", "one/two"], "--shard one/two: expected I/N"),
    (["--coordinator", "localhost:1234"], "--coordinator, --num-processes and --process-id go together"),
    (["--config.checkpoint.every_chunks=-1"], "config key 'checkpoint.every_chunks': must be a non-negative integer"),
    (["--config.checkpoint.keep=0"], "config key 'checkpoint.keep': must be a positive integer"),
])
def test_bad_run_options_are_refused(tmp_path, capsys, args, message):
    assert main(["run", SMOKE, "--workdir", str(tmp_path / "w"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


LAUNCH = ROOT / "launch"


def dry_run(script, *args, **env):
    out = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, DRY_RUN="1", FTTRACE="echo fttrace", REMOTE_DIR=".", **env))
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def remote(command: str, **env) -> str:
    """Run a printed remote command (`echo fttrace ...`) here, as the remote shell would."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **env)).stdout.strip()


def option(line: str, name: str) -> str:
    words = shlex.split(line)
    return words[words.index(name) + 1]


@pytest.mark.parametrize("script", sorted(p.name for p in LAUNCH.glob("*.sh")))
def test_launch_script_parses_and_explains_itself(script):
    assert subprocess.run(["bash", "-n", str(LAUNCH / script)]).returncode == 0
    lines = (LAUNCH / script).read_text().splitlines()
    if script != "common.sh":  # sourced by the others
        assert lines[0] == "#!/usr/bin/env bash" and lines[1].startswith("# ")
        assert any(line.startswith("# When: ") for line in lines)


def test_launch_local_and_multi_gpu_run_fttrace_here():
    assert dry_run("local.sh", "configs/smoke.py", "runs/x", "--config.sweep.seeds=2") == [
        "echo fttrace run configs/smoke.py --workdir runs/x --config.sweep.seeds=2"]
    [line] = dry_run("multi_gpu.sh", "configs/smoke.py", "/shared/x", GPUS="0,1", COORDINATOR="gpu0:8476",
                     NUM_PROCESSES="2", PROCESS_ID="1")
    assert remote(line) == "fttrace run configs/smoke.py --workdir /shared/x --coordinator gpu0:8476 " \
                           "--num-processes 2 --process-id 1"
    assert line.startswith("env CUDA_VISIBLE_DEVICES=0\\,1 ")


def test_launch_tpu_pod_runs_one_command_on_every_host():
    [line] = dry_run("tpu_pod.sh", "configs/smoke.py", "gs://bucket/study",
                     "--config.sweep.finetune_lr=(1e-5,1e-4)", TPU_NAME="slice", ZONE="us-central2-b")
    assert line.startswith("gcloud compute tpus tpu-vm ssh slice --zone us-central2-b --worker=all --command ")
    assert remote(option(line, "--command")) == "fttrace run configs/smoke.py --workdir gs://bucket/study " \
                                                "--distributed --config.sweep.finetune_lr=(1e-5,1e-4)"


def test_launch_slurm_array_runs_shard_per_task_then_merges():
    array, merge = dry_run("slurm_array.sh", "configs/smoke.py", "/shared/s", "4", "--config.sweep.seeds=8",
                           SBATCH_ARGS="--partition=gpu --gres=gpu:4")
    assert "--array=0-3" in array and "--partition=gpu" in array and "--requeue" in array
    assert remote(option(array, "--wrap"), SLURM_ARRAY_TASK_ID="2") == \
        "fttrace run configs/smoke.py --workdir /shared/s/shard-2 --shard 2/4 -q --config.sweep.seeds=8"
    assert "--dependency=afterok:" in merge
    assert remote(option(merge, "--wrap")) == "fttrace merge " + " ".join(
        f"/shared/s/shard-{i}" for i in range(4)) + " --out /shared/s/merged"


def late_completion(loop):
    """The error, and its traceback from `call_soon_threadsafe` in, that a read completing into `loop` reports."""
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as error:
        return error, error.__traceback__.tb_next  # as reported from C: call_soon_threadsafe is the outermost frame
    raise AssertionError("the loop is open")


def test_late_reads_of_an_abandoned_checkpoint_stay_quiet(monkeypatch):
    """tensorstore's threads report a closed event loop through sys.unraisablehook or sys.excepthook, on any thread
    and up to the interpreter's exit; only that report is dropped."""
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, tb: seen.append(("except", kind, str(error))))
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(("unraisable", u.exc_type, str(u.exc_value))))
    ignore_abandoned_reads()
    ignore_abandoned_reads()  # idempotent: one filter each, not two
    loop = asyncio.new_event_loop()
    loop.close()
    late, late_traceback = late_completion(loop)

    def report(error, traceback):
        sys.excepthook(type(error), error, traceback)
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=traceback,
                                                 err_msg=None, object=None))

    for error, traceback in ((late, late_traceback), (RuntimeError("other"), late_traceback),
                             (ValueError("Event loop is closed"), late_traceback), (late, late.__traceback__),
                             (RuntimeError("Event loop is closed"), None)):
        thread = threading.Thread(target=report, args=(error, traceback))
        thread.start()
        thread.join()
    report(late, late_traceback)  # on the main thread too (the interpreter's exit)
    reported = [(kind, str(error)) for kind, error in
                ((RuntimeError, "other"), (ValueError, "Event loop is closed"), (RuntimeError, "Event loop is closed"),
                 (RuntimeError, "Event loop is closed"))]
    assert seen == [(hook, *r) for r in reported for hook in ("except", "unraisable")]
