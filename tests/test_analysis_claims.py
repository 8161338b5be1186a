"""The claims get definite verdicts: supported where an effect is planted, refuted where a null is planted with a
tight spread, inconclusive where a small sample cannot tell; every tested claim states its power."""
import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis.claims import ClaimResult, evaluate_claims, judge
from analysis.load import load_study
from analysis.stats import paired_test, power, signed_rank_p
from analysis.taxonomy import taxonomy
from synthetic_store import Plant, write_store

LRS = ("small", "medium", "large")


def _claims(tmp_path, plant, seed=0, name="run"):
    return {c.id: c for c in evaluate_claims(taxonomy(load_study(write_store(tmp_path / name, plant, seed))).evidence)}


def test_a_planted_effect_is_supported_with_its_power(tmp_path):
    plant = Plant(seeds=10, priors=("high",), lrs=LRS, spurious=(0.0,),
                  kind=lambda lr, prior, s: "overwrite" if lr == "large" else "wrapper")
    claims = _claims(tmp_path, plant)
    assert {i: c.verdict for i, c in claims.items()} == {i: "supported" for i in ("1", "2", "3", "4a", "4b", "4c")}
    assert claims["1"].test.effect > 0.4 and claims["1"].test.rank_biserial == 1.0
    assert claims["1"].power_text == "power 1.00 to detect +0.05 accuracy with 10 seeds"
    assert claims["3"].effect_text.startswith("x") and "log-rank reFT vs control" in claims["3"].detail
    assert "SESOI 0" in claims["2"].power_text  # a margin claim: its power is the test's rate at the margin


def test_a_planted_null_with_a_tight_spread_is_refuted(tmp_path):
    plant = Plant(seeds=10, priors=("high",), lrs=LRS, spurious=(0.0,), kind=lambda *a: "overwrite")
    claims = _claims(tmp_path, plant)
    for i in ("1", "2", "3", "4a", "4c"):
        assert claims[i].verdict == "refuted", (i, claims[i].verdict, claims[i].upper)
        assert claims[i].upper < claims[i].sesoi and "below the SESOI" in claims[i].detail
    # Both LRs overwrite alike: the selectivity difference is centred on 0, which a SESOI of 0 cannot refute.
    assert claims["4b"].verdict == "inconclusive"


def _judged(values, sesoi=0.05):
    result = ClaimResult("x", "a claim", "a measure", sesoi, f"{sesoi:+g}", paired_test(values), pd.Series(values))
    result.p_holm = result.test.p
    judge(result, alpha=0.05, tested=1)
    return result


def test_a_noisy_small_sample_is_inconclusive(tmp_path):
    noisy = _judged([0.3, -0.2, 0.25, -0.1])
    assert noisy.verdict == "inconclusive" and noisy.upper > 0.05
    assert "smallest attainable p, 0.0625" in noisy.power_text
    assert _judged([0.30, 0.32, 0.29, 0.31, 0.33, 0.30]).verdict == "supported"
    assert _judged([0.01, 0.0, -0.01, 0.02, 0.0, 0.01]).verdict == "refuted"
    # A wrapper store with 4 seeds: effects are large, but four seeds cannot reach alpha / 6.
    plant = Plant(seeds=4, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: "wrapper" if lr == "medium" else "overwrite")
    claims = _claims(tmp_path, plant)
    assert claims["1"].verdict == "inconclusive" and claims["1"].power == 0
    assert "with 4 seeds the smallest attainable p, 0.0625, is not below alpha / 6" in claims["1"].power_text


def test_claims_say_why_they_are_not_tested(tmp_path):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "no-op")
    claims = _claims(tmp_path, plant)
    assert claims["1"].verdict == "not tested (fine-tuning did not learn C_FT at small/medium LR: no member to test)"
    assert claims["4a"].verdict == "not tested (fine-tuning did not learn C_FT at small/medium LR: no member to test)"
    kept = _claims(tmp_path, Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                                   kind=lambda *a: "kept"), name="kept")
    assert kept["1"].verdict == "not tested (fine-tuning at small/medium LR suppressed C_PT in no member: nothing to " \
                                "revive)"
    # The probe claim, like the other two, reads suppressed members only: a kept C_PT is readable trivially.
    assert kept["2"].verdict == kept["1"].verdict


def test_claims_keep_their_error_rate_over_null_stores(tmp_path):
    """Every claim is false in a store whose overwrites prune and revive like the nulls; Holm keeps the chance of
    any supported claim per store at or below alpha = 0.05, so 3 or more of 12 would happen with probability
    < 2% if that held."""
    plant = Plant(seeds=8, priors=("high",), lrs=("medium", "large"), spurious=(0.0,), null_like=True,
                  kind=lambda *a: "overwrite")
    false = sum(any(c.verdict == "supported" for c in _claims(tmp_path, plant, seed, f"null{seed}").values())
                for seed in range(12))
    assert false <= 2


def test_the_power_simulation_is_at_the_test_level_under_the_null_and_grows_with_seeds():
    rng = np.random.default_rng(0)
    at_null = [power(rng.normal(0, 1, 20), 0.0, 0.05, seed=i) for i in range(5)]
    assert 0.02 <= np.mean(at_null) <= 0.1
    values = rng.normal(0, 0.1, 12)
    powers = [power(values, 0.05, 0.05, n=n) for n in (6, 12, 24, 48)]
    assert powers == sorted(powers) and powers[0] < 0.5 < powers[-1]
    assert power(values, 0.05, 0.05, n=4) == 0  # 4 seeds cannot give p < 0.05


def test_the_signed_rank_p_is_exact_with_ties_and_zeros():
    rng = np.random.default_rng(3)
    for n in (3, 7, 12, 25):
        x = rng.normal(0.3, 1, n)
        exact = scipy.stats.wilcoxon(x, alternative="greater", method="exact").pvalue
        assert signed_rank_p(x)[0] == pytest.approx(exact, rel=1e-9)
    x = np.array([1.0, 1.0, 2.0, -2.0, 3.0, 0.0, 0.5, -0.5])
    nonzero = x[x != 0]
    ranks = scipy.stats.rankdata(np.abs(nonzero))
    observed = ranks[nonzero > 0].sum()
    sums = [ranks[np.array(s, bool)].sum() for s in itertools.product([0, 1], repeat=len(nonzero))]
    assert signed_rank_p(x)[0] == pytest.approx(np.mean(np.array(sums) >= observed - 1e-9))
    assert signed_rank_p(np.zeros(4))[0] == 1.0
    rows = rng.normal(0.2, 1, (3, 9))
    np.testing.assert_allclose(signed_rank_p(rows), [signed_rank_p(r)[0] for r in rows])


def test_claims_without_their_data_are_reported_as_not_tested(tmp_path):
    plant = Plant(seeds=4, priors=("high",), lrs=("medium",), spurious=(0.0,), kind=lambda *a: "reft-only",
                  phases=("pretrain", "finetune", "reft", "control_pretrain", "control_reft", "regime"))
    claims = {i: c.verdict for i, c in _claims(tmp_path, plant).items()}
    assert claims["1"] == "not tested (no prune results for small/medium-LR members)"
    assert claims["2"] == "not tested (no probe selectivity results for small/medium-LR members)"
    assert not claims["3"].startswith("not tested")  # reFT and its control are in the store
    assert claims["4a"] == "not tested (no prune results for small/medium-LR members)"
    assert claims["4c"] == "not tested (no fine-tuned members at large LR)"


def test_an_empty_fine_tuning_phase_gives_verdicts_not_a_crash(tmp_path):
    from synthetic_store import build_frame
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    study = load_study(write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"],
                                   status="running"))
    evidence = taxonomy(study).evidence
    assert evidence.empty
    assert all(c.verdict.startswith("not tested (no fine-tuned members") for c in evaluate_claims(evidence))
