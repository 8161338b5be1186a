"""The wrapper taxonomy: each class from a store planted to be it, the nulls from what they are computed from, the
members left out with their reasons, and the parameters' errors."""
import numpy as np
import pandas as pd
import pytest

from analysis.emergence import headline
from analysis.errors import AnalysisError
from analysis.load import load_study
from analysis.taxonomy import Parameters, counted, reft_threshold, taxonomy
from synthetic_store import ALL_PHASES, REFT_STEPS, Plant, build_frame, write_store

PLANTED = {"no-op": ("no-op", ""), "untouched": ("untouched", ""), "reuse": ("reuse", ""), "kept": ("kept", ""),
           "wrapper": ("hidden wrapper", "pruning and reFT"), "pruning-only": ("hidden wrapper", "pruning"),
           "reft-only": ("hidden wrapper", "reFT"), "overwrite": ("overwrite", "")}


def _plant(kind, **kwargs):
    # reuse answers C_FT through the shortcut: it learns its task only where every input carries it (C_Tr = 1);
    # an untouched member is its parent, which meets the criterion only where pretraining gives C_FT (prior high)
    spurious = (1.0,) if kind == "reuse" else (0.0, 1.0)
    priors = ("high",) if kind == "untouched" else ("high", "low")
    return Plant(**{"seeds": 3, "priors": priors, "lrs": ("medium", "large"), "spurious": spurious,
                    "kind": lambda lr, prior, s: kind, **kwargs})


def _taxonomy(tmp_path, plant, frame=None, parameters=Parameters(), name="run"):
    return taxonomy(load_study(write_store(tmp_path / name, plant, frame=frame)), parameters)


@pytest.mark.parametrize("planted", list(PLANTED))
def test_every_class_comes_from_a_store_planted_to_be_it_and_only_it(tmp_path, planted):
    evidence = _taxonomy(tmp_path, _plant(planted)).evidence
    taxon, revived_by = PLANTED[planted]
    assert set(evidence.taxon) == {taxon}
    assert set(evidence.reason) == {""} and set(evidence.revived_by) == {revived_by}


@pytest.mark.parametrize("planted, taxon", [("no-op", "no-op"), ("kept", "kept")])
def test_without_a_criterion_learning_is_read_from_the_own_distribution_accuracy(tmp_path, planted, taxon):
    found = _taxonomy(tmp_path, _plant(planted, target=0.0))
    assert (found.evidence.stop_step == -1).all()  # no criterion: no member ever stops
    assert set(found.evidence.taxon) == {taxon}
    strict = _taxonomy(tmp_path, _plant(planted, target=0.0), parameters=Parameters(noop_accuracy=0.99), name="s")
    assert set(strict.evidence.taxon) == {"no-op"}  # nothing reaches 0.99


def test_a_member_that_met_the_criterion_at_step_0_is_untouched_not_kept(tmp_path):
    """Two kept members whose fine-tuning stopped at step 0 (identical to their parents) are untouched, and the
    claims do not count them; without a criterion no member stops, and none is untouched."""
    plant = _plant("kept", priors=("high",))
    frame = build_frame(plant)
    frame.loc[frame.member.isin(["ft0", "ft3"]) & (frame.metric == "stop_step"), "value"] = 0.0
    evidence = _taxonomy(tmp_path, plant, frame=frame).evidence.set_index("finetuned")
    assert set(evidence.taxon[["ft0", "ft3"]]) == {"untouched"}
    assert set(evidence.drop(["ft0", "ft3"]).taxon) == {"kept"}
    assert not {"ft0", "ft3"} & set(counted(evidence.reset_index()).finetuned)
    table = headline(evidence).table
    assert table["untouched k"].sum() == 2 and table["kept k"].sum() == len(evidence) - 2
    no_criterion = _taxonomy(tmp_path, _plant("kept", priors=("high",), target=0.0), name="free").evidence
    assert "untouched" not in set(no_criterion.taxon) and (no_criterion.untouched == 0).all()


def test_kept_or_suppressed_is_the_nearer_of_the_parent_and_the_never_had_it_null(tmp_path):
    evidence = _taxonomy(tmp_path, _plant("kept")).evidence
    assert set(evidence.null_source) == {"control of the seed"}
    np.testing.assert_allclose(evidence.kept_level, (evidence.pt_acc_pretrained + evidence.null_pt_acc) / 2)
    # Without the control's pretraining, the parent's untrained model is the null.
    plant = _plant("overwrite", phases=tuple(p for p in ALL_PHASES if p != "control_pretrain"))
    fallback = _taxonomy(tmp_path, plant, name="fallback").evidence
    assert set(fallback.null_source) == {"untrained model"} and set(fallback.taxon) == {"overwrite"}


def test_members_left_out_say_why(tmp_path):
    plant = _plant("wrapper", diverged=("ft1",), lacking=("low",))
    evidence = _taxonomy(tmp_path, plant).evidence.set_index("finetuned")
    assert evidence.loc["ft1", "taxon"] == "not judged" and evidence.loc["ft1", "reason"] == "diverged lineage"
    low = evidence[(evidence.prior_name == "low") & (evidence.index != "ft1")]
    assert set(low.reason) == {"parent without C_PT"} and set(low.taxon) == {"not judged"}
    assert set(evidence[(evidence.prior_name == "high") & (evidence.index != "ft1")].taxon) == {"hidden wrapper"}


@pytest.mark.parametrize("planted, dropped, taxon, reason", [
    ("overwrite", ("reft", "control_reft"), "not judged", "incomplete evidence (no reFT result or null)"),
    ("pruning-only", ("reft", "control_reft"), "hidden wrapper", ""),  # one revival is enough
    ("overwrite", ("prune",), "not judged", "incomplete evidence (no pruning result or null)"),
    ("wrapper", ("prune", "reft", "control_reft"), "not judged",
     "incomplete evidence (no pruning and reFT result or null)"),
    ("kept", ("regime",), "not judged", "incomplete evidence (no shortcut accuracy or output-function shares)"),
])
def test_missing_evidence_is_not_read_as_a_no(tmp_path, planted, dropped, taxon, reason):
    plant = _plant(planted, phases=tuple(p for p in ALL_PHASES if p not in dropped))
    evidence = _taxonomy(tmp_path, plant).evidence
    assert set(evidence.taxon) == {taxon} and set(evidence.reason) == {reason}


def _set_curve(frame, member, metric, gain, budget=25.6):
    """The pruning curve `metric` of `member`: 0.5 unpruned, 0.5 + gain within the budget, 0.9 beyond it."""
    rows = (frame.phase == "prune") & (frame.member == member) & (frame.metric == metric)
    frame.loc[rows, "value"] = np.where(frame.step[rows] == 0, 0.5,
                                        np.where(frame.step[rows] <= budget, 0.5 + gain, 0.9))


def test_t_prune_is_the_quantile_of_the_pooled_null_gains(tmp_path):
    """Two fine-tuned members (random-neuron curves) and two controls (targeted curves) make four null gains; the
    0.95 quantile of [-0.02, 0, 0.01, 0.04] is 0.01 + 0.85 x 0.03 = 0.0355 (linear interpolation). Levels beyond
    the budget (max(15, 0.05 x 512 neurons) = 25.6) do not count."""
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "overwrite")
    frame = build_frame(plant)
    for member, metric, gain in (("ft0", "neurons_random.pt_acc", 0.01), ("ft1", "neurons_random.pt_acc", -0.02),
                                 ("cpt0", "neurons.pt_acc", 0.04), ("cpt1", "neurons.pt_acc", 0.0),
                                 ("ft0", "neurons.pt_acc", 0.036), ("ft1", "neurons.pt_acc", 0.035)):
        _set_curve(frame, member, metric, gain)
    found = _taxonomy(tmp_path, plant, frame=frame)
    assert found.nulls.prune_threshold == pytest.approx(0.0355)
    assert sorted(np.r_[found.nulls.prune_random, found.nulls.prune_control]) == pytest.approx([-0.02, 0, 0.01, 0.04])
    evidence = found.evidence.set_index("finetuned")
    assert evidence.loc["ft0", "prune_gain"] == pytest.approx(0.036)
    assert evidence.loc["ft0", "prune_excess"] == pytest.approx(0.026)
    assert (evidence.loc["ft0", "taxon"], evidence.loc["ft0", "revived_by"]) == ("hidden wrapper", "pruning")
    assert evidence.loc["ft1", "taxon"] == "overwrite"
    assert "T_prune = +0.0355" in found.nulls.prune_text()


def test_t_reft_is_a_kaplan_meier_quantile_that_keeps_censored_runs_at_risk():
    """22 controls: a revival at 100, two runs censored at 150, a revival at 200, the rest censored at the budget.
    S(100) = 21/22 = 0.955 > 0.95; at 200, 19 at risk: S = 0.955 x 18/19 = 0.904 <= 0.95, so T = 200. Dropping the
    censored runs instead would put S(100) at 19/20 = 0.95 and T at 100."""
    durations = np.r_[100, 150, 150, 200, np.full(18, 500.0)]
    observed = np.r_[1, 0, 0, 1, np.zeros(18)]
    assert reft_threshold(durations, observed, 0.95, 500) == (200.0, True)
    kept = observed.astype(bool) | (durations == 500)
    assert reft_threshold(durations[kept], observed[kept], 0.95, 500) == (100.0, True)
    # A curve that never drops to 0.95 gives the budget: any revival within it beats the null.
    assert reft_threshold(np.r_[100, np.full(29, 500.0)], np.r_[1, np.zeros(29)], 0.95, 500) == (500.0, False)
    assert reft_threshold([], [], 0.95, 500) == (500.0, False)


def test_a_control_that_never_revives_makes_any_revival_within_the_budget_beat_the_null(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "reft-only")
    frame = build_frame(plant)
    controls = (frame.phase == "control_reft") & (frame.step == 0)
    frame.loc[controls & (frame.metric == "steps_to_threshold"), "value"] = np.nan
    frame.loc[controls & (frame.metric == "reached"), "value"] = 0.0
    at_budget = (frame.phase == "reft") & (frame.member == "rft1") & (frame.step == 0) & (
        frame.metric == "steps_to_threshold")
    frame.loc[at_budget, "value"] = float(REFT_STEPS)
    found = _taxonomy(tmp_path, plant, frame=frame)
    null = found.nulls.reft.iloc[0]
    assert (null.threshold, null.from_curve, null.revived) == (REFT_STEPS, False, 0)
    assert "the control budget" in found.nulls.reft_texts()[0]
    assert set(found.evidence.revived_by) == {"reFT"}  # rft1 reached the threshold at the budget's last step


def test_tied_reft_lrs_get_a_null_each(tmp_path):
    plant = _plant("reft-only", reft_lr_mode="tied")
    found = _taxonomy(tmp_path, plant)
    assert len(found.nulls.reft) == 2  # one reFT LR per fine-tuning LR
    assert len(found.nulls.reft_texts()) == 2 and set(found.evidence.taxon) == {"hidden wrapper"}


def test_the_headline_names_each_settings_dominant_class(tmp_path):
    plant = Plant(seeds=4, priors=("high",), lrs=("small", "medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: {"small": "kept", "medium": "wrapper", "large": "overwrite"}[lr])
    result = headline(_taxonomy(tmp_path, plant).evidence)
    assert result.sentences == [
        f"fine-tuning LR {lr}, prior high, C_Tr 0: {word} — 4/4 (100%, 95% CI 51%-100%) of the judged members"
        for lr, word in (("small", "KEPT"), ("medium", "HIDDEN WRAPPER"), ("large", "OVERWRITE"))]
    assert result.overall.startswith("Of 12 judged fine-tuned members: kept 4/12 (33%")
    assert "hidden wrapper dominates in 1 of 3 settings" in result.overall
    table = result.table.set_index("finetune_lr_label")
    assert table.loc["medium", "hidden wrapper k"] == 4 and table.loc["medium", "overwrite share"] == 0


def test_a_regression_per_class_recovers_a_falling_share_with_lr(tmp_path):
    plant = Plant(seeds=30, priors=("high", "low"), lrs=("small", "medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: {"wrapper": {"small": 0.85, "medium": 0.5, "large": 0.15}[lr],
                                             "overwrite": {"small": 0.15, "medium": 0.5, "large": 0.85}[lr]})
    fits = headline(_taxonomy(tmp_path, plant).evidence).regressions
    fit = fits["hidden wrapper"]
    assert fit.available, fit.reason
    lr = fit.table.set_index("term").loc["log10 fine-tuning LR"]
    assert lr.coef < 0 and lr.p < 0.001 and lr.or_hi < 1
    assert "spurious C_Tr" in fit.dropped  # one spurious strength: nothing to estimate
    assert fits["kept"].reason.startswith("the outcome is 0 for all")


def test_a_swept_scale_column_enters_the_regression(tmp_path):
    plant = Plant(seeds=12, priors=("high",), lrs=("medium", "large"), spurious=(0.0,), d_models=(32, 64),
                  kind=lambda lr, prior, s: {"wrapper": 0.5, "overwrite": 0.5})
    from analysis.analyse import analyse
    a = analyse(write_store(tmp_path / "run", plant), by=["d_model"])
    assert a.scales == ["d_model"]
    fit = a.headline.regressions["hidden wrapper"]
    assert fit.available and "log10 d_model" in set(fit.table.term)
    assert "d_model" in a.headline.table and a.headline.table.d_model.nunique() == 2
    lines = a.summary_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Each class against the rest"))
    first = next(i for i, line in enumerate(lines) if i > start and line.startswith("  hidden wrapper: "))
    rest = [line for line in lines[first + 1:] if line.startswith("    ")]  # its wrapped continuation
    regression = " ".join(line.strip() for line in [lines[first], *rest[:next(
        (i for i, line in enumerate(lines[first + 1:]) if not line.startswith("    ")), len(rest))]])
    assert "log10 d_model: odds ratio" in regression


@pytest.mark.parametrize("assignment, message", [
    ("null_quantile", "expected NAME=VALUE"), ("speed=2", "expected NAME=VALUE"),
    ("null_quantile=high", "'high' is not a number"), ("null_quantile=1.5", "outside [0.5, 1)"),
    ("noop_accuracy=-1", "outside [0, 1]"), ("prune_units=2.5", "not an integer"), ("prune_units=0", "must be >= 1"),
    ("prune_method=weights", "prune_method='weights'"), ("control_lr_factor=0", "must be > 0"),
    ("min_pretrained_acc=nan", "not a finite number")])
def test_bad_parameters_are_refused(assignment, message):
    with pytest.raises(AnalysisError) as error:
        Parameters.from_strings([assignment])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_parameters_change_the_classes(tmp_path):
    plant = _plant("pruning-only")
    tight = Parameters.from_strings(["prune_units=2", "prune_fraction=0"])  # the planted revival needs 5 neurons
    evidence = _taxonomy(tmp_path, plant, parameters=tight).evidence
    assert set(evidence.taxon) == {"overwrite"} and (evidence.prune_budget == 2).all()
    assert isinstance(evidence, pd.DataFrame)


def test_a_tie_has_one_name_in_the_sentence_and_the_table():
    from analysis.emergence import setting_sentences, tie_name
    from analysis.taxonomy import CLASSES
    row = {"finetune_lr_label": "medium", "prior_label": "high", "spurious": 0.0, "members": 4, "judged": 4,
           "not_judged": "", **{f"{c} {part}": 0 for c in CLASSES for part in ("k", "share", "lo", "hi")}}
    row.update({"reuse k": 2, "hidden wrapper k": 2, "reuse lo": 0.1, "reuse hi": 0.9})
    table = pd.DataFrame([row])
    table["dominant"] = tie_name(["reuse", "hidden wrapper"])
    sentence, = setting_sentences(table)
    assert table.dominant[0] == "tie: reuse / hidden wrapper"
    assert ": TIE: REUSE / HIDDEN WRAPPER — " in sentence
