"""The regime, shown before any verdict: the flags on cells whose verdicts cannot mean what they say, the study
checks, the probes' nulls, and a store written without regime diagnostics."""
import numpy as np
import pytest

from analysis.analyse import analyse
from analysis.regime import LACK_PT, NO_OP, NO_REGIME, NOT_YET
from synthetic_store import ALL_PHASES, Plant, build_frame, write_store


def _cells(regime):
    return regime.cells.set_index(["finetune_lr_label", "prior_label"])["flags"]


def test_flags_mark_a_no_op_cell_and_a_cell_whose_parents_lack_c_pt(tmp_path):
    plant = Plant(seeds=3, priors=("high", "low"), lrs=("medium", "large"), spurious=(0.0,), lacking=("low",),
                  kind=lambda lr, prior, s: "no-op" if lr == "medium" else "kept")
    a = analyse(write_store(tmp_path / "run", plant))
    flags = _cells(a.regime)
    assert flags[("large", "high")] == ""
    assert flags[("medium", "high")].startswith(NO_OP) and "0% of members learnt their task" in flags[("medium",
                                                                                                          "high")]
    assert flags[("large", "low")].startswith(LACK_PT) and NO_OP not in flags[("large", "low")]
    assert LACK_PT in flags[("medium", "low")] and NO_OP in flags[("medium", "low")]
    text = a.summary_text()
    assert "FLAG fine-tuning LR medium, prior high, C_Tr 0: " + NO_OP in text
    assert "needs >= 0.9" in text and "needs >= 90%" in text  # the requirement numbers are printed


@pytest.mark.parametrize("contrast, word", [(True, "holds"), (False, "FAILS")])
def test_the_prior_check_needs_a_prior_contrast(tmp_path, contrast, word):
    plant = Plant(seeds=2, priors=("high", "medium", "low"), lrs=("medium",), spurious=(0.0,), prior_contrast=contrast,
                  kind=lambda *a: "kept")
    checks = analyse(write_store(tmp_path / "run", plant)).regime.checks
    prior = [c for c in checks if "the prior sets how much of C_FT" in c]
    assert len(prior) == 1 and prior[0].startswith(f"{word}: ")
    assert "at prior high" in prior[0] and "at prior low" in prior[0] and "operand-blind level 0.30" in prior[0]
    assert any(c.startswith("holds: evaluation strings are held out") for c in checks)


def test_the_prior_table_and_the_probe_nulls(tmp_path):
    plant = Plant(seeds=3, priors=("high", "low"), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "overwrite")
    r = analyse(write_store(tmp_path / "run", plant)).regime
    assert list(r.priors.prior) == ["high", "low"]  # highest prior first
    assert r.priors.ft_acc[0] > 0.8 and r.priors.ft_acc[1] == pytest.approx(r.priors.blind_acc[1], abs=0.1)
    assert "pretraining answer 90%" in r.priors["O_FT queries answered with"][1]
    levels = r.levels.set_index("level").selectivity
    assert set(levels.index) == {"pretrained", "fine-tuned", "reverse-fine-tuned", "control (never had C_PT)",
                                 "control after C_PT training", "untrained"}
    assert float(levels["untrained"].split()[0]) < 0.1 < float(levels["pretrained"].split()[0])


def test_a_store_without_regime_diagnostics_is_analysed_with_a_note(tmp_path):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium",), spurious=(0.0,), target=0.0,
                  phases=tuple(p for p in ALL_PHASES if p != "regime"), kind=lambda *a: "wrapper")
    a = analyse(write_store(tmp_path / "old", plant))
    assert not a.regime.available and a.regime.note == NO_REGIME
    assert "written by an fttrace without regime diagnostics" in a.summary_text()
    assert set(a.evidence.accuracy_source) == {"training eval"}
    assert set(a.evidence.taxon) == {"hidden wrapper"}  # the classes still come from what the store has
    assert not a.regime.cells.empty


def test_a_run_that_has_not_reached_the_regime_says_so(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    a = analyse(write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"], status="running"))
    assert a.regime.note == NOT_YET and a.regime.cells.empty


def test_a_swept_fine_tuning_hyperparameter_splits_every_cell(tmp_path):
    plant = Plant(seeds=4, priors=("high",), lrs=("medium", "large"), spurious=(0.0,))
    frame = build_frame(plant)
    finetuned = frame.member.str.startswith("ft")
    frame["finetune_weight_decay"] = np.where(finetuned, (frame.seed % 2) * 0.1, np.nan)
    a = analyse(write_store(tmp_path / "run", plant, frame=frame))
    assert a.by == ("finetune_weight_decay",)
    cells = a.regime.cells
    assert len(cells) == 4 and set(cells.finetune_weight_decay) == {0.0, 0.1}
    assert "fine-tuning weight decay" in a.summary_text()
