"""The statistics find planted effects in synthetic stores, and find none where none was planted (at about the
stated error rate)."""
import numpy as np
import pandas as pd
import pytest

from analysis.claims import evaluate_claims
from analysis.emergence import headline
from analysis.errors import AnalysisError
from analysis.load import load_study
from analysis.stats import bootstrap_mean, holm, logistic_regression, paired_test, wilson_interval
from analysis.wrapper import Thresholds, wrapper_evidence
from synthetic_store import WRAPPER_REFT_STEP, Plant, build_frame, write_store

LRS = ("small", "medium", "large")


def _evidence(tmp_path, plant, seed=0, thresholds=Thresholds(), name="run"):
    return wrapper_evidence(load_study(write_store(tmp_path / name, plant, seed)), thresholds)


def _wrapper_where(cells):
    return lambda lr, prior, spurious: 1.0 if (lr, prior, spurious) in cells else 0.0


PLANTED_CELLS = {("small", "high", 0.0), ("medium", "high", 0.0), ("small", "high", 1.0), ("medium", "high", 1.0)}
PLANTED = Plant(seeds=8, priors=("high", "low"), lrs=LRS, wrapper_rate=_wrapper_where(PLANTED_CELLS))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _evidence(tmp_path_factory.mktemp("planted"), PLANTED)


def test_the_wrapper_indicator_marks_exactly_the_planted_members(planted):
    planted_cell = [(lr, prior, s) in PLANTED_CELLS
                    for lr, prior, s in zip(planted.finetune_lr_name, planted.prior_name, planted.spurious)]
    assert planted.wrapper.notna().all()
    np.testing.assert_array_equal(planted.wrapper.to_numpy(), np.array(planted_cell, float))
    wrappers = planted[planted.wrapper == 1]
    assert (wrappers.prune_k_revive == 5).all() and (wrappers.probe_ratio > 0.9).all()
    # The speed-up is the control's censored steps over the planted reFT step.
    np.testing.assert_allclose(wrappers.reft_speedup, wrappers.control_steps / WRAPPER_REFT_STEP)


def test_the_headline_says_yes_exactly_where_a_wrapper_was_planted(planted):
    result = headline(planted)
    table = result.table
    verdicts = dict(zip(zip(table.finetune_lr_label, table.prior_label, table.spurious), table.verdict))
    assert {cell for cell, v in verdicts.items() if v == "yes"} == PLANTED_CELLS
    assert all(v == "no" for cell, v in verdicts.items() if cell not in PLANTED_CELLS)
    assert result.overall.startswith("A wrapper emerged in 32 of 96 judged fine-tuned members (33%")
    assert "The criterion met least often" in result.overall
    assert "fine-tuning LR small, prior high, C_Tr 0: YES — 8/8 (100%, 95% CI 68%-100%)" in result.sentences


def test_the_speed_up_counts_only_members_that_lost_the_capability(tmp_path):
    """A member that kept C_PT meets the reFT threshold at once; its 'speed-up' would only echo the control's
    budget, so a setting where every member kept C_PT has none."""
    plant = Plant(seeds=4, priors=("high",), lrs=LRS, spurious=(0.0,), kept=lambda lr, prior, s: lr == "small")
    table = headline(_evidence(tmp_path, plant)).table.set_index("finetune_lr_label")
    assert table.loc["small", "lost_rate"] == 0 and np.isnan(table.loc["small", "reft_speedup"])
    assert (table.loc[["medium", "large"], "lost_rate"] == 1).all()
    assert np.isfinite(table.loc[["medium", "large"], "reft_speedup"]).all()


def test_claims_are_supported_where_planted(tmp_path):
    everywhere_but_large = Plant(seeds=10, priors=("high",), lrs=LRS, spurious=(0.0,),
                                 wrapper_rate=lambda lr, prior, s: float(lr != "large"))
    claims = {c.id: c for c in evaluate_claims(_evidence(tmp_path, everywhere_but_large))}
    assert {i: c.verdict for i, c in claims.items()} == {i: "supported" for i in ("1", "2", "3", "4a", "4b", "4c")}
    assert claims["1"].test.effect > 0.3 and claims["1"].test.rank_biserial == 1.0
    assert claims["3"].effect_text.startswith("x")


def test_no_claim_is_supported_in_a_null_store(tmp_path):
    null = Plant(seeds=10, priors=("high",), lrs=LRS, spurious=(0.0,), rewritten_probe_ratio=0.9)
    claims = evaluate_claims(_evidence(tmp_path, null))
    assert all(c.test is not None for c in claims)
    assert not [c.id for c in claims if c.verdict == "supported"]


def test_claim_tests_keep_their_error_rate_over_null_stores(tmp_path):
    """Holm keeps the chance of any false claim per store at or below alpha = 0.05: over 20 null stores, more than 3
    with a false claim would happen with probability < 2% if that held."""
    null = Plant(seeds=8, priors=("high",), lrs=("medium", "large"), spurious=(0.0,), rewritten_probe_ratio=0.9)
    false_claims = 0
    for seed in range(20):
        claims = evaluate_claims(_evidence(tmp_path, null, seed=seed, name=f"null{seed}"))
        false_claims += any(c.verdict == "supported" for c in claims)
    assert false_claims <= 3


def test_paired_test_false_positive_rate_is_near_alpha_and_it_has_power():
    rng = np.random.default_rng(0)
    null = [paired_test(rng.normal(0, 1, 10)).p < 0.05 for _ in range(2000)]
    assert 0.025 <= np.mean(null) <= 0.065
    shifted = [paired_test(rng.normal(1, 1, 10)).p < 0.05 for _ in range(300)]
    assert np.mean(shifted) > 0.8


def test_paired_test_counts_only_nonzero_differences_toward_its_smallest_p():
    test = paired_test([0.0] * 7 + [0.5, 0.3])
    assert (test.n, test.nonzero, test.min_p) == (9, 2, 0.25)
    assert paired_test(np.zeros(5)).nonzero == 0 and paired_test(np.zeros(5)).p == 1.0


def test_bootstrap_intervals_cover_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(400):
        _, low, high = bootstrap_mean(rng.normal(3.0, 1.0, 20), n_boot=1000, seed=int(rng.integers(1 << 30)))
        covered.append(low <= 3.0 <= high)
    assert 0.88 <= np.mean(covered) <= 0.98


def test_wilson_interval_and_holm_match_hand_computed_values():
    low, high = wilson_interval(0, 4)
    assert low == 0 and high == pytest.approx(0.4899, abs=1e-4)
    low, high = wilson_interval(4, 4)
    assert high == 1 and low == pytest.approx(0.5101, abs=1e-4)
    np.testing.assert_allclose(holm([0.01, 0.04, np.nan, 0.03]), [0.03, 0.06, np.nan, 0.06])


def test_logistic_regression_recovers_the_learning_rate_effect(tmp_path):
    falling = Plant(seeds=30, priors=("high", "low"), lrs=LRS, spurious=(0.0,),
                    wrapper_rate=lambda lr, prior, s: {"small": 0.85, "medium": 0.5, "large": 0.15}[lr])
    fit = headline(_evidence(tmp_path, falling)).regression
    assert fit.available, fit.reason
    lr = fit.table.set_index("term").loc["log10 fine-tuning LR"]
    assert lr.coef < 0 and lr.p < 0.001 and lr.or_hi < 1
    assert "spurious C_Tr" in fit.dropped  # one spurious strength: nothing to estimate


def test_logistic_regression_explains_why_it_has_no_fit():
    x = pd.DataFrame({"lr": np.repeat([-5.0, -4.0, -3.0], 10), "prior": np.tile([0.2, 0.02], 15)})
    separated = logistic_regression(pd.Series((x.lr < -4.5).astype(float)), x)
    assert not separated.available and separated.reason.startswith("separation: lr")
    assert "too few" in logistic_regression(pd.Series([0.0, 1.0] * 3), x.head(6)).reason
    assert "for all 30 members" in logistic_regression(pd.Series(np.zeros(30)), x).reason


def test_members_without_a_pretrained_capability_or_with_divergence_are_left_out(tmp_path):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium",), spurious=(0.0,), diverged=("ft1",))
    evidence = _evidence(tmp_path, plant).set_index("finetuned")
    assert evidence.loc["ft1", "left_out"] == "diverged" and np.isnan(evidence.loc["ft1", "wrapper"])
    assert (evidence.drop(index="ft1").left_out == "").all()
    strict = _evidence(tmp_path, plant, thresholds=Thresholds(min_pretrained_acc=0.99), name="strict")
    assert strict.wrapper.isna().all()
    assert set(strict.left_out) == {"parent without C_PT", "diverged"}


def test_thresholds_decide_the_indicator(tmp_path):
    plant = Plant(seeds=4, priors=("high",), lrs=("medium",), spurious=(0.0,), wrapper_rate=lambda *a: 1.0)
    assert (_evidence(tmp_path, plant).wrapper == 1).all()
    unreachable = Thresholds.from_strings(["reft_speedup=1000"])
    assert (_evidence(tmp_path, plant, thresholds=unreachable, name="t2").wrapper == 0).all()
    tight = Thresholds.from_strings(["prune_units=2", "prune_fraction=0.001"])  # planted revival needs 5 neurons
    assert (_evidence(tmp_path, plant, thresholds=tight, name="t3").wrapper == 0).all()


@pytest.mark.parametrize("assignment, message", [
    ("probe_ratio", "expected NAME=VALUE"), ("speed=2", "expected NAME=VALUE"), ("probe_ratio=high", "not a number"),
    ("probe_ratio=1.5", "outside [0, 1]"), ("prune_method=weights", "prune_method='weights'")])
def test_bad_thresholds_are_refused(assignment, message):
    with pytest.raises(AnalysisError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Thresholds.from_strings([assignment])


def test_claims_without_their_data_are_reported_as_not_tested(tmp_path):
    plant = Plant(seeds=4, priors=("high",), lrs=("medium",), spurious=(0.0,),
                  phases=("pretrain", "finetune", "reft", "control_pretrain", "control_reft"))
    evidence = _evidence(tmp_path, plant)
    assert evidence.wrapper.isna().all()
    assert set(evidence.left_out) == {"no prune, probe results"}
    claims = {c.id: c.verdict for c in evaluate_claims(evidence)}
    assert claims["1"] == "not tested (no prune results for small/medium-LR members)"
    assert claims["2"] == "not tested (no probe results for small/medium-LR members)"
    assert not claims["3"].startswith("not tested")  # reFT and its control are in the store
    assert claims["4a"] == "not tested (no prune results for small/medium-LR members)"
    assert claims["4c"] == "not tested (no fine-tuned members at large LR)"
    assert headline(evidence).regression.reason.startswith("too few members with an indicator (0;")


def test_an_empty_fine_tuning_phase_gives_a_headline_not_a_crash(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    study = load_study(write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"],
                                   status="running"))
    evidence = wrapper_evidence(study)
    assert evidence.empty
    assert headline(evidence).overall == "No fine-tuned member could be judged (no fine-tuned members)."
    assert all(c.verdict.startswith("not tested (no fine-tuned members") for c in evaluate_claims(evidence))
