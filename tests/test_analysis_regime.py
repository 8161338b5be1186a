"""The regime, shown before any verdict: the flags on cells whose verdicts cannot mean what they say, the study
checks, the probes' nulls, and a store written without regime diagnostics."""
import numpy as np
import pandas as pd
import pytest

from analysis.analyse import analyse
from analysis.regime import LACK_PT, NO_OP, NO_REGIME, NOT_YET
from analysis.report import write_report
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
    assert any(c.startswith("holds: test sets are fresh (0.0% of test strings") for c in checks)


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


def _missed(tmp_path, frame_edit=None, seeds=10):
    """Wrappers at the high prior, kept at the low one; seed 1's pretraining missed C_FT at the high prior (its
    C_FT is the operand-blind level), which the prior's mean over seeds (0.86) hides."""
    plant = Plant(seeds=seeds, priors=("high", "low"), lrs=("medium",), spurious=(0.0,), missed=((1, "high"),),
                  kind=lambda lr, prior, s: "wrapper" if prior == "high" else "kept")
    frame = build_frame(plant)
    if frame_edit:
        frame_edit(frame)
    return analyse(write_store(tmp_path / "run", plant, frame=frame))


def test_a_seed_that_missed_the_regime_fails_the_study_check_though_the_mean_passes(tmp_path):
    a = _missed(tmp_path)
    r = a.regime
    assert r.priors.ft_acc[0] >= 0.8  # the mean over seeds would pass
    prior = next(c for c in r.checks if "the prior sets how much of C_FT" in c)
    assert prior.startswith("FAILS: ") and "in 9 of 10 seeds only (not in seed 1)" in prior
    assert "lowest 0.3" in prior and "seed 1;" in prior
    outside = next(c for c in r.checks if "outside the regime" in c)
    assert outside.startswith("FAILS: 1 of 10 seeds outside the regime: seed 1 (prior high: C_FT 0.3")
    assert "their 1 fine-tuned descendants are not judged" in outside
    parents = r.parents.set_index(["seed", "prior_label"])
    assert parents.in_regime[(1, "high")] == 0 and (parents.in_regime.drop((1, "high")) == 1).all()
    seeds = r.seeds.set_index("seed")
    assert seeds.regime[1].startswith("OUTSIDE (prior high: C_FT 0.3") and set(seeds.regime.drop(1)) == {"in"}
    assert list(seeds.columns) == ["prior high C_PT/C_FT", "prior low C_PT/C_FT", "regime"]
    text = a.summary_text()
    assert "Pretrained models per seed" in text and "OUTSIDE (prior high: C_FT 0.3" in text
    page = write_report(a, tmp_path / "report").read_text()
    assert "Pretrained models per seed" in page and "parent outside regime" in page
    assert max(len(line) for line in text[text.index("== Regime"):text.index("Pretrained models per prior")]
               .splitlines()) <= 120


def test_the_descendants_of_a_parent_outside_the_regime_are_counted_nowhere(tmp_path):
    a = _missed(tmp_path)
    evidence = a.evidence.set_index("seed")
    high = evidence[evidence.prior_name == "high"]
    assert (high.taxon[1], high.reason[1]) == ("not judged", "parent outside the regime")
    assert set(high.drop(1).taxon) == {"hidden wrapper"} and set(evidence[evidence.prior_name == "low"].taxon) == {
        "kept"}
    cells = a.regime.cells.set_index("prior_label")["parent outside regime"]
    assert (cells["high"], cells["low"]) == (1, 0)
    table = a.headline.table.set_index("prior_label")
    assert table.judged["high"] == 9 and table.not_judged["high"] == "parent outside the regime (1)"
    assert "parent outside the regime (1)" in a.class_display().to_string()
    claim = next(c for c in a.claims if c.id == "1")  # read on the suppressed members: the high prior only
    assert sorted(claim.values.index) == [s for s in range(10) if s != 1]


def test_a_parent_short_of_c_pt_by_the_regime_but_not_by_the_taxonomy_is_outside(tmp_path):
    """The taxonomy leaves out parents below min_pretrained_acc (0.5) as without C_PT; one at 0.8 had C_PT but
    is outside the regime (0.9)."""
    def weaken(frame):
        frame.loc[(frame.member == "pt4") & (frame.phase == "regime") & (frame.metric == "test.pt_acc"), "value"] = 0.8
    a = _missed(tmp_path, weaken)
    parents = a.regime.parents
    assert parents.outside["pt4"] == "C_PT 0.80 < 0.9" and parents.seed["pt4"] == 2
    evidence = a.evidence.set_index("pretrained")
    assert evidence.reason["pt4"] == "parent outside the regime" and evidence.has_capability["pt4"] == 0
    assert "seed 2 (prior high: C_PT 0.80 < 0.9)" in next(c for c in a.regime.checks if "outside the regime" in c)


def test_the_probe_layer_is_chosen_on_the_validation_set_not_on_the_accuracy_it_reports():
    from types import SimpleNamespace
    from analysis.measures import selectivity
    rows = []
    for step, (test_pt, val_pt) in enumerate([(0.9, 0.5), (0.6, 0.8)]):  # layer 0 looks best on test only
        for target, test, val in (("pt", test_pt, val_pt), ("control", 0.3, 0.3)):
            rows += [dict(member="ft0", phase="probe", step=step, metric=f"resid.{target}_acc", value=test),
                     dict(member="ft0", phase="probe", step=step, metric=f"resid.{target}_val_acc", value=val)]
    chosen = selectivity(SimpleNamespace(results=pd.DataFrame(rows)))
    assert chosen.loc["ft0", "probe_pt"] == 0.6 and abs(chosen.loc["ft0", "selectivity"] - 0.3) < 1e-12
    plain = pd.DataFrame([r for r in rows if "_val_" not in r["metric"]])  # a store without validation accuracies
    assert selectivity(SimpleNamespace(results=plain)).loc["ft0", "probe_pt"] == 0.9
