"""Nothing damaged is read silently: checkpoint and results-part checksums, damaged Parquet files under every reader,
a full disk while saving or preparing data, a config that exits -- each one `fttrace: error:` line, no traceback.

Checkpoint damage is made inside array data: a leaf of random bits is stored by tensorstore as raw bytes, which are
found in the checkpoint's files and flipped there (orbax reads such bytes back without complaint).
"""
import errno
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import fttrace
from fttrace import cli
from fttrace.engine.checkpoint import CHECKSUMS, Checkpoints, DamagedCheckpoint, read_params
from fttrace.engine.placement import Placement
from fttrace.engine.progress import Progress
from fttrace.engine.results import ResultsStore, checksum_path, read_parquet
from fttrace.engine.runner import PhaseRunner
from fttrace.errors import UserError
from helpers import NO_EVALS, ROOT, SMOKE, TINY

BITS = jax.random.bits(jax.random.key(0), (2, 4096), jnp.uint32)  # incompressible: stored as raw bytes


def bits_state():
    return {"params": {"w": BITS}, "step": jnp.full((2,), 7, jnp.int32)}


def records(steps):
    return [(s, {"acc": jnp.full((2,), s / 100, jnp.float32)}) for s in steps]


def save_steps(root, steps=(10, 20)):
    checkpoints = Checkpoints(root / "checkpoints", "run-a", Placement(), 1, 3)
    with checkpoints.phase("g0-pretrain") as phase:
        for last in steps:
            phase.save(bits_state(), records(range(0, last + 1, 10)))
    return checkpoints


def flip_array_bytes(step_dir) -> None:
    """Flip 4 bytes of BITS's row 1 where they lie in the checkpoint's data files."""
    needle = np.asarray(BITS[1]).tobytes()[1000:1032]
    flipped = 0
    for path in step_dir.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        if needle in data:
            i = data.index(needle)
            path.write_bytes(data[:i] + bytes(b ^ 0xFF for b in data[i:i + 4]) + data[i + 4:])
            flipped += 1
    assert flipped, "the array's bytes were not found in the checkpoint"


def test_byte_flips_in_array_data_are_caught_on_restore(tmp_path):
    checkpoints = save_steps(tmp_path, steps=(10,))
    step_dir = tmp_path / "checkpoints" / "g0-pretrain" / "10"
    flip_array_bytes(step_dir)
    with checkpoints.phase("g0-pretrain") as phase, pytest.raises(DamagedCheckpoint) as error:
        phase.restore(bits_state(), 10)
    assert str(error.value).startswith(f"checkpoint {step_dir} is damaged or incomplete (the data of state/params/w, "
                                       "row 1, does not match its checksum)")
    with pytest.raises(DamagedCheckpoint, match="state/params/w, row 1"):
        read_params(tmp_path / "checkpoints" / "g0-pretrain")  # fttrace.open's reader checks too
    # The flip is inside the data: without the checksums orbax returns the changed values as they are.
    shutil.rmtree(step_dir / CHECKSUMS)
    with checkpoints.phase("g0-pretrain") as phase:
        state, _ = phase.restore(bits_state(), 10)
    assert not np.array_equal(np.asarray(state["params"]["w"]), np.asarray(BITS))


def runner(root, checkpoints):
    store = ResultsStore(root)
    store.prepare()
    return PhaseRunner(None, 0, store, Progress(quiet=True), Placement(), checkpoints)


def test_resume_falls_back_to_the_checkpoint_before_a_damaged_one(tmp_path, capsys):
    checkpoints = save_steps(tmp_path)
    flip_array_bytes(tmp_path / "checkpoints" / "g0-pretrain" / "20")
    with checkpoints.phase("g0-pretrain") as phase:
        state, restored, step = runner(tmp_path, checkpoints)._resume("group 0 pretrain", phase, bits_state())
        assert step == 10 and [s for s, _ in restored] == [0, 10]
        np.testing.assert_array_equal(state["params"]["w"], BITS)
        assert phase.steps() == [10]
        phase.save(bits_state(), records([0, 10, 20]))  # the resumed phase writes step 20 again
        assert phase.steps() == [10, 20]
    err = capsys.readouterr().err.strip().splitlines()
    aside = tmp_path / "checkpoints" / "g0-pretrain" / "20.damaged"
    assert err == [f"group 0 pretrain: checkpoint {tmp_path}/checkpoints/g0-pretrain/20 is damaged (the data of "
                   f"state/params/w, row 1, does not match its checksum); it is kept as {aside} and the phase "
                   "resumes from the checkpoint before it"]
    assert (aside / "state").is_dir()


def test_a_damaged_checkpoint_without_one_before_it_is_the_error(tmp_path):
    checkpoints = save_steps(tmp_path, steps=(10,))
    flip_array_bytes(tmp_path / "checkpoints" / "g0-pretrain" / "10")
    with checkpoints.phase("g0-pretrain") as phase, pytest.raises(DamagedCheckpoint, match="row 1"):
        runner(tmp_path, checkpoints)._resume("group 0 pretrain", phase, bits_state())
    assert (tmp_path / "checkpoints" / "g0-pretrain" / "10").is_dir()  # kept


def test_checkpoints_written_without_checksums_are_accepted(tmp_path):
    checkpoints = save_steps(tmp_path, steps=(10,))
    shutil.rmtree(tmp_path / "checkpoints" / "g0-pretrain" / "10" / CHECKSUMS)
    with checkpoints.phase("g0-pretrain") as phase:
        state, _ = phase.restore(bits_state(), 10)
    np.testing.assert_array_equal(state["params"]["w"], BITS)
    params, step = read_params(tmp_path / "checkpoints" / "g0-pretrain")
    assert step == 10 and np.array_equal(params["w"], np.asarray(BITS))


def test_full_disk_at_a_checkpoint_save_is_one_line(tmp_path, capfd, monkeypatch):
    import orbax.checkpoint._src.handlers.json_checkpoint_handler as json_handler

    async def full(self, item, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    monkeypatch.setattr(json_handler.JsonCheckpointHandler, "_save_fn", full)
    work = tmp_path / "w"
    assert cli.main(["run", SMOKE, "--workdir", str(work), "-q", *[f"--config.{o}" for o in TINY + [NO_EVALS]]]) == 2
    out = capfd.readouterr()
    log = out.out + out.err
    assert "Traceback" not in log and "ERROR" not in log, log
    lines = log.strip().splitlines()  # the first checkpoint the phase saves (log-spaced ones included)
    assert len(lines) == 1 and re.fullmatch(rf"fttrace: error: cannot write checkpoint {re.escape(str(work))}/"
                                            r"checkpoints/g0-pretrain/\d+: No space left on device", lines[0]), lines


# ---------------------------------------------------------------- results parts and Parquet files

def test_byte_flips_in_a_results_part_are_caught(tmp_path):
    store = ResultsStore(tmp_path)
    store.prepare()
    store.write_part("g0-pretrain", pd.DataFrame({"member": ["pt0", "pt1"], "value": [1.0, 2.0]}))
    part = tmp_path / "parts" / "g0-pretrain.parquet"
    assert checksum_path(part).exists()
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(UserError) as error:
        store.merge_parts()
    assert str(error.value) == (f"{part} is damaged (its bytes do not match its checksum g0-pretrain.parquet.sha256); "
                                "delete it and run the workdir again: the run recomputes that part")
    with pytest.raises(UserError, match="is damaged"):
        store.read_part("g0-pretrain")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run's workdir, with a live curve left in it (as a running sweep has)."""
    work = tmp_path_factory.mktemp("checksums") / "finished"
    assert cli.main(["run", SMOKE, "--workdir", str(work), "-q", *[f"--config.{o}" for o in TINY + [NO_EVALS]]]) == 0
    (work / "live").mkdir(exist_ok=True)
    shutil.copy(work / "parts" / "g0-pretrain.parquet", work / "live" / "g0-finetune.parquet")
    return work


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def one_line(capsys, code, *expected) -> str:
    out = capsys.readouterr()
    assert code == 2 and "Traceback" not in out.out + out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fttrace: error: "), lines
    assert all(text in lines[0] for text in expected), lines[0]
    return lines[0]


def test_damaged_results_file_under_every_reader(finished, tmp_path, capsys):
    work = tmp_path / "w"
    shutil.copytree(finished, work)
    truncate(work / "results.parquet")
    results = str(work / "results.parquet")
    one_line(capsys, cli.main(["status", str(work)]), results, "is damaged or not a Parquet file", "rewrite it")
    with pytest.raises(UserError, match="results.parquet is damaged or not a Parquet file"):
        fttrace.open(work).results
    shutil.rmtree(work / "parts")  # a merged workdir's shape: results.parquet is what tensorboard reads
    pytest.importorskip("tensorboardX")
    one_line(capsys, cli.main(["tensorboard", str(work)]), results, "is damaged")


def test_damaged_live_curve_under_every_reader(finished, tmp_path, capsys):
    work = tmp_path / "w"
    shutil.copytree(finished, work)
    live = work / "live" / "g0-finetune.parquet"
    truncate(live)
    with pytest.raises(UserError, match=f"{live} is damaged or not a Parquet file .*rewritten as its phase trains"):
        fttrace.open(work).live()
    pytest.importorskip("tensorboardX")
    one_line(capsys, cli.main(["tensorboard", str(work)]), str(live), "is damaged")


@pytest.mark.parametrize("damage", [truncate, lambda p: p.write_bytes(p.read_bytes()[:-9] + b"\0" * 9)])
def test_damaged_part_under_run_is_one_line_and_recomputed_once_deleted(finished, tmp_path, capsys, damage):
    work = tmp_path / "w"
    shutil.copytree(finished, work)
    shutil.rmtree(work / "live")
    part = work / "parts" / "g0-finetune.parquet"
    damage(part)
    args = ["run", SMOKE, "--workdir", str(work), "-q", *[f"--config.{o}" for o in TINY + [NO_EVALS]]]
    one_line(capsys, cli.main(args), str(part), "delete it and run the workdir again")
    part.unlink()
    assert cli.main(args) == 0
    pd.testing.assert_frame_equal(read_parquet(work / "results.parquet"), read_parquet(finished / "results.parquet"))


# ---------------------------------------------------------------- full disk while preparing data; configs that exit

def full_disk(*args, **kwargs):
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "shard.tmp")
    except OSError:  # TFDS chains its clean-up failures onto the first
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "shard")


@pytest.mark.parametrize("where", ["dataset", "tokens"])
def test_full_disk_while_preparing_stories_is_one_line(tmp_path, capfd, monkeypatch, where):
    pytest.importorskip("sentencepiece")
    import tensorflow_datasets as tfds
    from fttrace.lm import tokens
    if where == "dataset":
        monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", full_disk)
        expected = "cannot prepare the dataset generated_stories"
    else:
        monkeypatch.setattr(tokens.np, "savez", full_disk)
        expected = "cannot write "
    code = cli.main(["run", str(ROOT / "configs" / "stories_twist.py:tiny"), "--workdir", str(tmp_path / "w"), "-q"])
    out = capfd.readouterr()
    assert code == 2 and "Traceback" not in out.out + out.err, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fttrace: error: {expected}"), lines
    assert lines[0].endswith(("No space left on device", "the preparation starts over)"))
    assert not list((tmp_path / "w").rglob("*.tmp"))


def test_a_config_that_exits_is_one_line(tmp_path, capsys):
    for body in ("import sys\nsys.exit(3)\n",
                 "import sys\ndef get_config():\n    sys.exit(3)\n"):
        config = tmp_path / "exits.py"
        config.write_text(body)
        code = cli.main(["run", str(config), "--workdir", str(tmp_path / "w")])
        one_line(capsys, code, str(config), "sys.exit(3)")
        assert not (tmp_path / "w").exists()
