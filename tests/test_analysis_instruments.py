"""The instruments against their nulls, per setting: pruning beside random neurons and the control, attention change
over the seed-to-seed null, and the patch site that brings C_PT back."""
import pytest

from analysis.instruments import instrument_tables, missing_note
from analysis.load import load_study
from analysis.taxonomy import taxonomy
from synthetic_store import TV_KEPT, TV_OVERWRITE, TV_SEED, Plant, write_store


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    plant = Plant(seeds=4, priors=("high",), lrs=("medium", "large"), spurious=(0.0,), noise=0.0,
                  kind=lambda lr, prior, s: "wrapper" if lr == "medium" else "overwrite")
    return taxonomy(load_study(write_store(tmp_path_factory.mktemp("instruments") / "run", plant))).evidence


def test_each_instrument_has_a_table_with_its_null(evidence):
    tables = {name: t.set_index("fine-tuning LR") for name, t in instrument_tables(evidence).items()}
    pruning = tables["pruning"]
    # Without noise: the wrapper's C_PT (0.1 unpruned) jumps to 0.94 at k >= 5, 5 of the 8 levels within the budget
    # (1, 2, 3, 5, 8, 10, 15, 20 <= 25.6), and drops by 0.01 at the other 3: a mean gain of (5 x 0.84 - 3 x 0.01) /
    # 8; random neurons and the control: 0.
    gain = (5 * 0.84 - 3 * 0.01) / 8
    assert pruning.loc["medium", "C_PT gain, targeted"] == f"{gain:+.3f} [{gain:+.3f}, {gain:+.3f}]"
    assert pruning.loc["large", "C_PT gain, targeted"].startswith("-0.010")
    assert pruning.loc["medium", "C_PT gain, random neurons (null)"].startswith("+0.000")
    assert pruning.loc["medium", "C_PT gain, targeted on the control (null)"].startswith("+0.000")
    # C_FT falls from 0.95 to 0.35 at the same 5 levels (and by 0.01 at the others): removing them takes C_FT away.
    assert pruning.loc["medium", "C_FT change, targeted"].startswith(f"{(5 * (0.35 - 0.95) - 3 * 0.01) / 8:+.3f}")
    attention = tables["attention"]
    assert attention.loc["medium", "attention change / seed null (mean over heads)"].startswith(
        f"{TV_KEPT / TV_SEED:.2f}")
    assert attention.loc["large", "attention change / seed null (mean over heads)"].startswith(
        f"{TV_OVERWRITE / TV_SEED:.2f}")
    patching = tables["patching"]
    assert patching.loc["medium", "most frequent C_PT site"] == "L1.mlp (4/4)"
    assert patching.loc["medium", "C_PT gain of the best patch"].startswith("+0.8")
    # Where no patch brings C_PT back (the overwrite), no site is named.
    assert patching.loc["large", "C_PT gain of the best patch"].startswith("+0.000")
    assert patching.loc["large", "most frequent C_PT site"] == "none (4/4)"
    assert (pruning.seeds == 4).all()


def test_an_instrument_without_data_says_so(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "wrapper",
                  phases=("pretrain", "finetune", "regime", "prune"))
    evidence = taxonomy(load_study(write_store(tmp_path / "run", plant))).evidence
    tables = instrument_tables(evidence)
    assert not tables["pruning"].empty and tables["attention"].empty and tables["patching"].empty
    assert missing_note(evidence, "attention") == "no data in the store"
    lacking = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,), lacking=("high",))
    evidence = taxonomy(load_study(write_store(tmp_path / "lacking", lacking))).evidence
    assert instrument_tables(evidence)["pruning"].empty
    assert missing_note(evidence, "pruning") == "no member of a healthy lineage whose parent had C_PT"


def test_attention_with_a_zero_seed_null_reports_the_change_without_a_ratio(tmp_path):
    # Every pretrained member the same model (a Tracr study): no seed-to-seed variation to divide by.
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,), noise=0.0, tv_seed=0.0,
                  kind=lambda *a: "wrapper")
    evidence = taxonomy(load_study(write_store(tmp_path / "run", plant))).evidence
    assert instrument_tables(evidence)["attention"].empty
    assert evidence.attn_tv.dropna().round(6).eq(TV_KEPT).all()
    note = missing_note(evidence, "attention")
    assert note.startswith("the seed-to-seed null is 0") and f"total variation {TV_KEPT:.3f}" in note
