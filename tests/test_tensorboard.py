"""`fttrace tensorboard`: a store's curves (finished parts and live curves) as event files: a run per member with its
hyperparameters (the hparams plugin), and each cell's mean and quantiles."""
import struct

import numpy as np
import pandas as pd
import pytest

from fttrace.cli import main
from fttrace.engine.results import long_frame
from fttrace.tools.logged import label, store_rows
from fttrace.tools.tensorboard import EventLog, cell_means
from helpers import STORE_ACC, STORE_MEMBERS, finetune_records

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def events(directory):
    """Every event of the event files directly in `directory` (the TFRecord framing read by hand)."""
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            yield event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4


def read_events(directory) -> dict:
    """{tag: {step: value}} of the scalars of one run's directory."""
    out = {}
    for event in events(directory):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def read_hparams(directory) -> dict:
    """The hyperparameters the hparams plugin shows for one run (its session start info)."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    for event in events(directory):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                            for k, v in data.session_start_info.hparams.items()}
    return {}


def test_cells_are_the_varying_hyperparameters_and_values_their_means(running_store):
    means = cell_means(store_rows(running_store.workdir))
    assert set(means.phase) == {"pretrain", "finetune"}  # prune logged one step: not a curve
    fine = means[means.phase == "finetune"].set_index(["cell", "metric", "step"]).value
    assert set(fine.index.get_level_values("cell")) == {"finetune_lr=small", "finetune_lr=large"}  # not seed, prior
    assert fine["finetune_lr=small", "ft_acc", 50] == pytest.approx(0.3)
    assert fine["finetune_lr=large", "ft_acc", 50] == pytest.approx(0.6)  # the frozen member's NaN is not averaged
    pre = means[means.phase == "pretrain"].set_index(["cell", "step"]).value
    assert pre["all", 10] == pytest.approx(0.9)  # one cell: the seed is never a cell


def test_event_files_hold_the_means_and_grow_with_the_live_curve(running_store, tmp_path):
    logdir = tmp_path / "board"
    assert main(["tensorboard", str(running_store.workdir), "--logdir", str(logdir)]) == 0
    found = read_events(logdir / "finetune" / "finetune_lr=large" / "cell")
    assert found["ft_acc"] == pytest.approx({0: 0.7, 50: 0.6})
    assert found["ft_acc/q10"] == pytest.approx({0: 0.54, 50: 0.6}) and found["ft_acc/q90"][0] == pytest.approx(0.86)
    assert read_events(logdir / "pretrain" / "all" / "cell")["pt_acc"] == pytest.approx({0: 0.1, 10: 0.9})
    # One run per member, under its cell: its own curve (the frozen member's NaN left out) and its settings.
    assert read_events(logdir / "finetune" / "finetune_lr=large" / "ft3")["ft_acc"] == pytest.approx({0: 0.9})
    assert read_events(logdir / "pretrain" / "all" / "pt1")["pt_acc"] == pytest.approx({0: 0.2, 10: 1.0})
    assert sorted(p.name for p in (logdir / "finetune" / "finetune_lr=small").iterdir()) == ["cell", "ft0", "ft1"]
    settings = read_hparams(logdir / "finetune" / "finetune_lr=large" / "ft2")
    assert settings == pytest.approx({"cell": "finetune_lr=large", "parent": "pt1", "seed": 0, "finetune_lr": 1e-2,
                                      "finetune_lr_name": "large", "prior": 0.2})
    assert "finetune_lr" not in read_hparams(logdir / "pretrain" / "all" / "pt0")  # a setting it does not have
    # The run goes on: a third evaluation reaches the live curve; a following writer appends only that step.
    log = EventLog(tmp_path / "followed")
    members, cells = 2 * 2 + (4 * 2 * 2 - 2), 1 * 2 * 4 + 2 * 2 * 2 * 4  # scalars x (mean, q10, q50, q90)
    assert log.write(store_rows(running_store.workdir)) == members + cells
    more = STORE_ACC + [[0.3, 0.5, 0.7, np.nan]]
    running_store.write_live("g0-finetune", long_frame(pd.DataFrame(STORE_MEMBERS), "finetune",
                                                 finetune_records(more, [0, 50, 100])))
    assert log.write(store_rows(running_store.workdir)) == 3 * 2 + 2 * 2 * 4  # step 100: 3 members, 2 cells; 2 metrics
    log.close()
    assert read_events(tmp_path / "followed" / "finetune" / "finetune_lr=small" / "cell")["ft_acc"] == pytest.approx(
        {0: 0.2, 50: 0.3, 100: 0.4})
    assert read_events(tmp_path / "followed" / "finetune" / "finetune_lr=small" / "ft1")["ft_acc"] == pytest.approx(
        {0: 0.3, 50: 0.4, 100: 0.5})


def test_run_names_leave_out_settings_a_member_does_not_have():
    assert label({"prior": "low", "finetune_lr": np.nan, "spurious": None, "reft_lr_name": "nan", "c": 0.5}) == (
        "prior=low,c=0.5")
    assert label({"finetune_lr": np.nan}) == "all"


def test_a_logdir_it_did_not_write_is_refused(running_store, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["tensorboard", str(running_store.workdir), "--logdir", str(tmp_path / "mine")]) == 2
    assert "holds files this command did not write" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["tensorboard", str(tmp_path / "nowhere")]) == 2
    assert "is not a workdir" in capsys.readouterr().err


def test_the_help_says_what_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "TensorBoard event files: a run per member with its settings (HPARAMS tab), and each cell's mean" in shown
    assert "one mean per cell" not in shown
