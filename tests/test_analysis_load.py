"""Loading results stores: lineage joins, shard stores as one sweep, and one clear error per bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.load import load_study
from synthetic_store import Plant, build_frame, config_for, write_store

PLANT = Plant(seeds=4, priors=("high", "low"), lrs=("medium", "large"), spurious=(0.0, 1.0))


@pytest.fixture(scope="module")
def frame():
    return build_frame(PLANT, seed=1)


def test_members_are_joined_to_their_lineage_and_hyperparameters(tmp_path, frame):
    study = load_study(write_store(tmp_path / "run", PLANT, frame=frame))
    members = study.members.set_index("member")
    kinds = members.kind.value_counts()
    assert kinds["pretrained"] == 8 and kinds["finetuned"] == 32 and kinds["reft"] == 32
    # One control per seed, trained on C_PT at the seed's one (shared) reFT LR x 1 and x 10.
    assert kinds["control_pretrained"] == 4 and kinds["control_reft"] == 4 * 2
    assert members.loc["rft5", "parent"] == "ft5" and members.loc["rft5", "pretrained"] == "pt1"
    assert members.loc["cpt0-0.0001-x10", "pretrained"] == "cpt0"
    assert members.loc["cpt0-0.0001-x10", "reft_lr_base"] == pytest.approx(1e-4)
    assert members.loc["ft5", "finetune_lr_label"] == "medium" and members.loc["pt1", "prior_label"] == "low"
    lineage = study.lineage.set_index("finetuned")
    assert len(lineage) == 32 and lineage.loc["ft5", "reft"] == "rft5"
    # A fine-tuned member carries its parent's seed and prior, and its own LR and spurious strength.
    for ft, row in lineage.iterrows():
        parent = members.loc[row.pretrained]
        assert (row.seed, row.prior) == (parent.seed, parent.prior)
    assert set(lineage.spurious) == {0.0, 1.0}


def test_shard_stores_load_as_one_sweep(tmp_path, frame):
    first = frame.seed < 2
    shards = [write_store(tmp_path / f"shard{i}", PLANT, frame=frame[part], shard=(i, 2))
              for i, part in enumerate((first, ~first))]
    whole = load_study(shards)
    assert len(whole.results) == len(frame) and whole.notes == []
    assert whole.members.member.nunique() == frame.member.nunique()
    partial = load_study(shards[:1])
    assert any("1/2" in note for note in partial.notes)


def grown(seeds: int, offset: int) -> dict:
    """PLANT's config run on seeds [offset, offset + seeds) (a sweep grown by seeds in another workdir)."""
    config = config_for(PLANT)
    config["sweep"].update(seeds=seeds, seed_offset=offset)
    return config


def test_a_sweep_grown_by_seeds_loads_as_one_sweep(tmp_path, frame):
    first = frame.seed < 2
    parts = [write_store(tmp_path / "a", PLANT, frame=frame[first], config=grown(2, 0)),
             write_store(tmp_path / "b", PLANT, frame=frame[~first], config=grown(2, 2))]
    both, whole = load_study(parts), load_study(write_store(tmp_path / "whole", PLANT, frame=frame))
    key = ["member", "phase", "step", "metric"]
    pd.testing.assert_frame_equal(both.results.drop(columns="store").sort_values(key).reset_index(drop=True),
                                  whole.results.drop(columns="store").sort_values(key).reset_index(drop=True))
    pd.testing.assert_frame_equal(both.members.drop(columns="store", errors="ignore").sort_values("member")
                                  .reset_index(drop=True),
                                  whole.members.drop(columns="store", errors="ignore").sort_values("member")
                                  .reset_index(drop=True))
    overlapping = [write_store(tmp_path / "c", PLANT, frame=frame[frame.seed < 3], config=grown(3, 0)), parts[1]]
    with pytest.raises(AnalysisError, match="both hold seeds from 2 on"):
        load_study(overlapping)


def test_a_store_in_progress_is_loaded_with_a_note(tmp_path, frame):
    study = load_study(write_store(tmp_path / "run", PLANT, frame=frame[frame.phase == "pretrain"],
                                   status="running"))
    assert any("running" in note for note in study.notes)
    assert study.lineage.empty


def _foreign_parquet(path):
    path.mkdir()
    pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}).to_parquet(path / "results.parquet")
    (path / "manifest.json").write_text(json.dumps({"config": {}}))
    return [path]


def _garbage_parquet(path):
    path.mkdir()
    (path / "results.parquet").write_bytes(b"not parquet at all")
    (path / "manifest.json").write_text(json.dumps({"config": {}}))
    return [path]


def _no_manifest(path, frame):
    write_store(path, PLANT, frame=frame)
    (path / "manifest.json").unlink()
    return [path]


def _damaged_manifest(path, frame):
    write_store(path, PLANT, frame=frame)
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text[:len(text) // 2])  # cut mid-write
    return [path]


def _different_configs(path, frame):
    other = config_for(PLANT)
    other["model"]["d_model"] = 128
    return [write_store(path / "a", PLANT, frame=frame[frame.seed < 2], shard=(0, 2)),
            write_store(path / "b", PLANT, frame=frame[frame.seed >= 2], shard=(1, 2), config=other)]


def _overlapping(path, frame):
    return [write_store(path / "a", PLANT, frame=frame[frame.seed < 3]),
            write_store(path / "b", PLANT, frame=frame[frame.seed >= 2])]


def _different_splits(path, frame):
    return [write_store(path / "a", PLANT, frame=frame[frame.seed < 2], shard=(0, 2)),
            write_store(path / "b", PLANT, frame=frame[frame.seed >= 2], shard=(1, 3))]


def _missing_column(path, frame):
    return [write_store(path, PLANT, frame=frame.drop(columns="seed"))]


@pytest.mark.parametrize("make, expected", [
    (lambda p, f: [p / "nowhere"], "no such directory"),
    (lambda p, f: [p.mkdir() or p], "no results.parquet"),
    (lambda p, f: _foreign_parquet(p), "not an fttrace results store (missing columns: member"),
    (lambda p, f: _garbage_parquet(p), "not a readable Parquet file"),
    (_no_manifest, "no manifest.json"),
    (_damaged_manifest, "manifest.json: unreadable"),
    (_missing_column, "missing columns: seed"),
    (_different_configs, "hold different configs (model.d_model)"),
    (_overlapping, "hold the same rows"),
    (_different_splits, "shards of different splits"),
    (lambda p, f: [write_store(p, PLANT, frame=f)] * 2, "given twice"),
], ids=["missing-dir", "no-results", "foreign-parquet", "not-parquet", "no-manifest", "damaged-manifest", "missing-column",
        "different-configs", "overlapping-stores", "different-splits", "same-path-twice"])
def test_bad_stores_raise_one_clear_error(tmp_path, frame, make, expected):
    paths = make(tmp_path / "store", frame)
    with pytest.raises(AnalysisError) as error:
        load_study(paths)
    message = str(error.value)
    assert expected in message
    assert str(tmp_path / "store") in message  # names the path at fault
    assert "\n" not in message


def test_repeated_rows_inside_one_store_are_refused(tmp_path, frame):
    doubled = pd.concat([frame, frame.iloc[:3]], ignore_index=True)
    with pytest.raises(AnalysisError, match="repeated rows .*pt0 pretrain step 0"):
        load_study(write_store(tmp_path / "run", PLANT, frame=doubled))


def test_hyperparameter_columns_of_later_phases_are_added_when_absent(tmp_path, frame):
    pretrain = frame[frame.phase == "pretrain"].drop(columns=["finetune_lr", "finetune_lr_name", "spurious",
                                                              "reft_lr", "reft_lr_base", "control_lr_factor"])
    study = load_study(write_store(tmp_path / "run", PLANT, frame=pretrain))
    assert {"finetune_lr", "spurious", "reft_lr_base", "control_lr_factor"} <= set(study.results.columns)
    assert np.isnan(study.members.finetune_lr).all()


def test_a_store_without_the_reft_lr_base_column_matches_controls_by_their_lr(tmp_path, frame):
    """Stores written before `reft_lr_base` ran each control at its matched reFT LR x its factor."""
    study = load_study(write_store(tmp_path / "run", PLANT, frame=frame.drop(columns="reft_lr_base")))
    controls = study.members[study.members.kind == "control_reft"]
    np.testing.assert_allclose(controls.reft_lr_base, controls.reft_lr / controls.control_lr_factor)
