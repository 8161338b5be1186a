"""The language-model studies on the one engine: killed and resumed mid-phase, several devices, several processes,
shards and merge, the workdir identity and the old workdir schema, all as for the PCFG study (test_survive.py).

The runs are real `fttrace run` subprocesses of the canary study's tiny form on 2 seeds (2 pretrained, 2
suppressed, 6 unlock members), pretraining evaluated at step 4 as well, so that a checkpoint exists mid-phase; and of
the stories study's tiny form on one device and on eight.
"""
import json
import signal
import socket
import time

import numpy as np
import pandas as pd
import pytest

import fttrace
from fttrace.cli import main
from helpers import ROOT, Runs

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

CONFIG = str(ROOT / "configs" / "canary_unlock.py")
ARGS = ["--config.sweep.seeds=2", "--config.pretrain.eval_steps=(0,4,8)", "--config.checkpoint.every_chunks=1"]
STORIES = [str(ROOT / "configs" / "stories_twist.py")]
KEYS = ["phase", "member", "step", "metric"]
TIMEOUT = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class StudyRuns(Runs):
    def start(self, name, *args, devices=None, quiet=True, study=None):
        """`fttrace run` of the canary config (ARGS) or, with `study=[CONFIG, ARGS...]`, of another."""
        config, *extra = study or [CONFIG, *ARGS]
        return self.launch(name, ["run", f"{config}:tiny", "--workdir", str(self.workdir(name.split("#")[0])),
                                  *(["-q"] if quiet else []), *extra, *args], devices)


def results(workdir) -> pd.DataFrame:
    return pd.read_parquet(workdir / "results.parquet").sort_values(KEYS).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = StudyRuns(tmp_path_factory.mktemp("lm-engine"))
    runs.start("reference")
    runs.start("devices8", devices=8)
    code, log = runs.wait("reference")
    assert code == 0, log
    port = free_port()
    for k in range(2):
        runs.start(f"processes#{k}", "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id",
                   str(k), devices=1)
    for index in range(2):
        runs.start(f"shard{index}", "--shard", f"{index}/2")
    runs.start("stories-reference", study=STORIES)
    runs.start("stories-devices8", devices=8, study=STORIES)
    yield runs
    runs.stop_all()


@pytest.fixture(scope="module")
def reference(runs):
    return results(runs.workdir("reference"))


def finished(runs, *names):
    for name in names:
        code, log = runs.wait(name)
        assert code == 0, log


def assert_same(frame, reference):
    """Same rows; values within float32 rounding, but a probe's held-out accuracy, which may flip an example or
    two (1/8 each here) where features differ in their last bits between layouts."""
    pd.testing.assert_frame_equal(frame.drop(columns="value"), reference.drop(columns="value"))
    probe = frame.metric.str.startswith("probe").to_numpy()
    np.testing.assert_allclose(frame.value[~probe], reference.value[~probe], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(frame.value[probe], reference.value[probe], atol=2 / 8 + 1e-6)


def test_killed_mid_phase_and_resumed_equals_an_uninterrupted_run(runs, reference):
    work = runs.workdir("interrupted")
    process = runs.start("interrupted#1")
    deadline = time.time() + TIMEOUT
    while not (work / "checkpoints" / "g0-pretrain" / "4").exists() and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    code, _ = runs.wait("interrupted#1")
    assert code == -signal.SIGKILL
    assert not (work / "results.parquet").exists() or set(results(work).phase) <= {"pretrain"}
    runs.start("interrupted#2", quiet=False)
    code, log = runs.wait("interrupted#2")
    assert code == 0, log
    assert "group 0 pretrain: resuming from the checkpoint at step 4" in log
    pd.testing.assert_frame_equal(results(work), reference, check_exact=True)
    assert json.loads((work / "manifest.json").read_text())["status"] == "complete"


def test_eight_devices_equal_one_device(runs, reference):
    finished(runs, "devices8")
    work = runs.workdir("devices8")
    assert len(json.loads((work / "manifest.json").read_text())["devices"]) == 8
    assert_same(results(work), reference)  # 2, 2 and 6 members padded to 8: no pad member in the results
    # members stacked on eight devices read back as on one
    np.testing.assert_allclose(fttrace.open(work).params(7)["unembed"]["kernel"],
                               fttrace.open(runs.workdir("reference")).params(7)["unembed"]["kernel"], rtol=1e-4,
                               atol=1e-5)


def test_stories_on_eight_devices_equal_one_device(runs):
    finished(runs, "stories-reference", "stories-devices8")
    one, eight = (results(runs.workdir(name)) for name in ("stories-reference", "stories-devices8"))
    assert len(json.loads((runs.workdir("stories-devices8") / "manifest.json").read_text())["devices"]) == 8
    assert set(one.phase) == {"pretrain", "finetune", "recovery"} and (one.metric == "feature_rate").any()
    assert_same(eight, one)


def test_two_processes_each_write_their_own_members(runs, reference):
    finished(runs, "processes#0", "processes#1")
    work = runs.workdir("processes")
    written = json.loads((work / "manifest.json").read_text())
    assert written["processes"] == 2 and written["status"] == "complete"
    assert_same(results(work), reference)


def test_shards_hold_whole_seeds_and_merge_into_the_whole_run(runs, reference, tmp_path):
    finished(runs, "shard0", "shard1")
    shards = [runs.workdir(f"shard{i}") for i in range(2)]
    seeds = [set(results(s).seed) for s in shards]
    assert seeds == [{0}, {1}]  # a seed's lineages (and its controls) never split
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "merged")]) == 0
    merged = results(tmp_path / "merged")
    assert set(merged.member) == set(reference.member)  # ids are the whole run's
    assert_same(merged, reference)
    opened = fttrace.open(tmp_path / "merged")
    np.testing.assert_array_equal(opened.params(3)["unembed"]["kernel"],
                                  fttrace.open(shards[1]).params(3)["unembed"]["kernel"])


def test_another_config_in_the_workdir_is_refused_by_name(runs, capsys):
    work = runs.workdir("reference")
    assert main(["run", f"{CONFIG}:tiny", "--workdir", str(work), "-q", *ARGS, "--config.sweep.seeds=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fttrace: error: workdir") and "sweep.seeds: 2 -> 3" in err


def test_a_workdir_of_the_earlier_language_model_schema_is_refused_by_name(tmp_path, capsys):
    from fttrace import config as config_lib
    config = config_lib.load(f"{CONFIG}:tiny", [])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "pretrain.msgpack").write_bytes(b"phase-end parameters")
    earlier = dict(config=config.to_dict(), versions={"fttrace": "0.1"}, devices=["cpu:0"], fingerprint="abc",
                   status="done")
    (tmp_path / "manifest.json").write_text(json.dumps(earlier))
    assert main(["run", f"{CONFIG}:tiny", "--workdir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "canary_unlock run of an earlier fttrace" in err[0]
    assert (tmp_path / "checkpoints" / "pretrain.msgpack").read_bytes() == b"phase-end parameters"


def test_a_fine_tuning_protocol_is_an_axis_of_any_phase_of_a_language_model_study(tmp_path):
    """LoRA against full fine-tuning in the canaries' suppression phase: each suppressed member once per protocol,
    its children once per copy; a LoRA member moves only its adapted block matrices, a full one everything."""
    from fttrace import config as config_lib
    from fttrace.engine.runner import run_study
    config = config_lib.load(f"{CONFIG}:tiny", ["protocols.phase=suppress", "sweep.protocol=('full','lora2')"])
    frame = pd.read_parquet(run_study(config, tmp_path, quiet=True))
    members = frame.drop_duplicates("member").set_index("member")
    assert members.groupby("phase").size().to_dict() == {"pretrain": 1, "suppress": 2, "finetune": 6}
    suppressed = members[members.phase == "suppress"]
    assert sorted(suppressed.protocol) == ["full", "lora2"] and set(suppressed.lora_rank.dropna()) == {2.0}
    unlock = members[members.phase == "finetune"]
    assert (unlock.protocol.to_numpy() == suppressed.protocol[unlock.parent.astype(int)].to_numpy()).all()
    run = fttrace.open(tmp_path)
    pretrained = run.params(0)
    for member, row in suppressed.iterrows():
        params = run.params(member)  # the LoRA tree merged into plain weights
        same_embedding = np.array_equal(params["embed"]["embedding"], pretrained["embed"]["embedding"])
        moved_query = not np.array_equal(params["block_0"]["attn"]["query"]["kernel"],
                                         pretrained["block_0"]["attn"]["query"]["kernel"])
        assert (same_embedding, moved_query) == ((True, True) if row.protocol == "lora2" else (False, True))
