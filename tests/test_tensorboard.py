"""`fttrace tensorboard`: a store's curves (finished parts and live curves) as event files of per-cell means."""
import struct

import numpy as np
import pandas as pd
import pytest

from fttrace.cli import main
from fttrace.engine.results import ResultsStore, long_frame
from fttrace.tools.tensorboard import EventLog, cell_means, store_rows

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def read_events(directory) -> dict:
    """{tag: {step: value}} of every event file under `directory` (the TFRecord framing read by hand)."""
    out = {}
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


MEMBERS = pd.DataFrame({"member": ["ft0", "ft1", "ft2", "ft3"], "parent": ["pt0", "pt0", "pt1", "pt1"],
                        "seed": [0, 1, 0, 1], "finetune_lr": [1e-3, 1e-3, 1e-2, 1e-2],
                        "finetune_lr_name": ["small", "small", "large", "large"], "prior": [0.2] * 4})
ACC = np.array([[0.1, 0.3, 0.5, 0.9], [0.2, 0.4, 0.6, np.nan]])  # two steps x four members; ft3 frozen at step 1


def records(steps):
    return [(s, {"ft_acc": ACC[i], "ft_loss": 1 - ACC[i]}) for i, s in enumerate(steps)]


@pytest.fixture
def running(tmp_path):
    """A store whose pretraining is finished and whose fine-tuning has logged two evaluations so far."""
    store = ResultsStore(tmp_path)
    store.prepare()
    pre = MEMBERS.iloc[:2].assign(member=["pt0", "pt1"], parent=None)
    pre = pre.drop(columns=["finetune_lr", "finetune_lr_name"])
    curve = [(0, {"pt_acc": np.array([0.0, 0.2])}), (10, {"pt_acc": np.array([0.8, 1.0])})]
    store.write_part("g0-pretrain", long_frame(pre, "pretrain", curve))
    store.write_part("g0-prune", long_frame(pre, "prune", [(0, {"pt_acc": np.array([1.0, 1.0])})]))
    store.write_live("g0-finetune", long_frame(MEMBERS, "finetune", records([0, 50])))
    return store


def test_cells_are_the_varying_hyperparameters_and_values_their_means(running):
    means = cell_means(store_rows(running.workdir))
    assert set(means.phase) == {"pretrain", "finetune"}  # prune logged one step: not a curve
    fine = means[means.phase == "finetune"].set_index(["cell", "metric", "step"]).value
    assert set(fine.index.get_level_values("cell")) == {"finetune_lr=small", "finetune_lr=large"}  # not seed, prior
    assert fine["finetune_lr=small", "ft_acc", 50] == pytest.approx(0.3)
    assert fine["finetune_lr=large", "ft_acc", 50] == pytest.approx(0.6)  # the frozen member's NaN is not averaged
    pre = means[means.phase == "pretrain"].set_index(["cell", "step"]).value
    assert pre["all", 10] == pytest.approx(0.9)  # one cell: the seed is never a cell


def test_event_files_hold_the_means_and_grow_with_the_live_curve(running, tmp_path):
    logdir = tmp_path / "board"
    assert main(["tensorboard", str(running.workdir), "--logdir", str(logdir)]) == 0
    found = read_events(logdir / "finetune" / "finetune_lr=large")
    assert found["ft_acc"] == pytest.approx({0: 0.7, 50: 0.6})
    assert read_events(logdir / "pretrain" / "all")["pt_acc"] == pytest.approx({0: 0.1, 10: 0.9})
    # The run goes on: a third evaluation reaches the live curve; a following writer appends only that step.
    log = EventLog(tmp_path / "followed")
    assert log.write(cell_means(store_rows(running.workdir))) == 2 * 2 * 2 + 2  # 2 cells x 2 metrics x 2 steps + pt
    more = np.vstack([ACC, [[0.3, 0.5, 0.7, np.nan]]])
    grown = [(s, {"ft_acc": more[i], "ft_loss": 1 - more[i]}) for i, s in enumerate([0, 50, 100])]
    running.write_live("g0-finetune", long_frame(MEMBERS, "finetune", grown))
    assert log.write(cell_means(store_rows(running.workdir))) == 2 * 2  # step 100 of 2 cells x 2 metrics
    log.close()
    assert read_events(tmp_path / "followed" / "finetune" / "finetune_lr=small")["ft_acc"] == pytest.approx(
        {0: 0.2, 50: 0.3, 100: 0.4})


def test_a_logdir_it_did_not_write_is_refused(running, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["tensorboard", str(running.workdir), "--logdir", str(tmp_path / "mine")]) == 2
    assert "holds files this command did not write" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["tensorboard", str(tmp_path / "nowhere")]) == 2
    assert "is not a workdir" in capsys.readouterr().err
