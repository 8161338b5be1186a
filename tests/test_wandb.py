"""`fttrace wandb`: a store's members as Weights & Biases runs, written offline and read back from W&B's own files:
one run per member in the study's group, its settings as config, its curves over its phase's step, its last
measures as summary."""
import json
import struct

import pytest

from fttrace.cli import main
from fttrace.engine.results import read_manifest
from fttrace.tools.wandb_writer import study_group

pytest.importorskip("wandb", reason="W&B runs need the [wandb] extra")
from wandb.proto import wandb_internal_pb2  # noqa: E402

BLOCK, HEADER = 32768, 7  # W&B's transaction log: LevelDB's log framing in 32 KiB blocks, after a 7-byte file header
FULL, FIRST, LAST = 1, 2, 4


def records(path):
    """Every record of a run's .wandb file (the framing read by hand; the checksums are not checked)."""
    data, at, pending = path.read_bytes(), HEADER, b""
    assert data[:4] == b":W&B"
    while at + HEADER <= len(data):
        if BLOCK - at % BLOCK < HEADER:  # a block's tail too short for a record header is padding
            at += BLOCK - at % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + HEADER])
        chunk, at = data[at + HEADER:at + HEADER + length], at + HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            yield wandb_internal_pb2.Record.FromString(pending)


def key(item) -> str:
    return item.key or ".".join(item.nested_key)


def read_run(directory) -> dict:
    """One offline run: its name, group, job_type, config, history (the records logged, W&B's own keys left out),
    summary and the step metric of each metric glob."""
    (path,) = directory.glob("*.wandb")
    run = dict(config={}, history=[], summary={}, steps={})
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(name=record.run.display_name, group=record.run.run_group, job_type=record.run.job_type)
            run["config"].update({key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "history":
            run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item
                                   if not key(i).startswith("_")})
        elif kind == "summary":
            run["summary"].update({key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "metric" and record.metric.glob_name:
            run["steps"][record.metric.glob_name] = record.metric.step_metric
    run["config"] = {k: v for k, v in run["config"].items() if not k.startswith("_")}
    run["summary"] = {k: v for k, v in run["summary"].items() if not k.startswith("_")}
    return run


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B offline and silent, its settings and caches in the test's directory, no account."""
    for name, value in dict(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tmp_path / "default",
                            WANDB_CONFIG_DIR=tmp_path / "config", WANDB_CACHE_DIR=tmp_path / "cache",
                            WANDB_DATA_DIR=tmp_path / "data", HOME=tmp_path / "home").items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_each_member_is_an_offline_run_with_its_settings_curves_and_measures(running_store, offline, tmp_path,
                                                                            capsys):
    workdir = running_store.workdir
    assert main(["wandb", str(workdir), "--mode", "offline", "--dir", str(tmp_path / "wb")]) == 0
    assert capsys.readouterr().out.startswith("6 W&B runs (one per member) in project fttrace")
    runs = {r["name"]: r for r in map(read_run, sorted((tmp_path / "wb" / "wandb").glob("offline-run-*")))}
    assert sorted(runs) == ["ft0", "ft1", "ft2", "ft3", "pt0", "pt1"]
    group = study_group(workdir, read_manifest(workdir))
    assert group.startswith("run-") and {r["group"] for r in runs.values()} == {group}
    # job_type: the phase that trained it (its final record's, or the live phase of a member still training).
    assert {n: r["job_type"] for n, r in runs.items()} == dict(pt0="pretrain", pt1="pretrain", ft0="finetune",
                                                               ft1="finetune", ft2="finetune", ft3="finetune")
    # Config: the member's settings and cell; none it lacks (a pretrained member has no fine-tuning LR).
    assert runs["ft2"]["config"] == pytest.approx(dict(parent="pt1", seed=0, prior=0.2, finetune_lr=1e-2,
                                                       finetune_lr_name="large", cell="finetune_lr=large"))
    assert runs["pt0"]["config"] == pytest.approx(dict(seed=0, prior=0.2, cell="all"))
    # History: each curve over its phase's own step; the frozen member's NaN is left out.
    curve = [{"finetune/step": s, "finetune/ft_acc": a, "finetune/ft_loss": 1 - a} for s, a in ((0, 0.3), (50, 0.4))]
    assert runs["ft1"]["history"] == [pytest.approx(record) for record in curve]
    assert runs["ft3"]["history"] == [pytest.approx({"finetune/step": 0, "finetune/ft_acc": 0.9,
                                                     "finetune/ft_loss": 0.1})]
    assert runs["pt1"]["history"] == [{"pretrain/step": 0, "pretrain/pt_acc": 0.2},
                                      {"pretrain/step": 10, "pretrain/pt_acc": 1.0}]
    assert runs["pt1"]["steps"] == {"pretrain/*": "pretrain/step"}
    # Summary: every measure at its last step, an evaluation logged once included.
    assert runs["pt0"]["summary"] == pytest.approx({"pretrain/step": 10, "pretrain/pt_acc": 0.8,
                                                    "pretrain/diverged_step": -1, "prune/pt_acc": 1.0})
    assert runs["ft2"]["summary"] == pytest.approx({"finetune/step": 50, "finetune/ft_acc": 0.6,
                                                    "finetune/ft_loss": 0.4})


def test_w_and_b_refusals_are_one_line(running_store, offline, tmp_path, capsys):
    workdir = running_store.workdir
    assert main(["wandb", str(workdir), "--mode", "online", "--dir", str(tmp_path / "wb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: W&B refused run pt0:") and "--mode offline" in err[0]
    assert main(["wandb", str(tmp_path / "nowhere"), "--mode", "offline"]) == 2
    assert "is not an fttrace workdir" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["wandb", str(workdir), "--mode", "offline", "--dir", str(tmp_path / "file" / "wb")]) == 2
    assert "--dir" in capsys.readouterr().err
