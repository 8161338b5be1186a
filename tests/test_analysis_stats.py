"""The generic statistics: paired tests keep their error rate and have power, the signed-rank p and its power are
exact with ties and zeros (against scipy and brute-force enumeration), bootstrap intervals cover at about the nominal
rate, Wilson and Holm match hand-computed values, and regressions say why they have no fit."""
import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.special
import scipy.stats

from analysis.stats import (bootstrap_mean, holm, logistic_regression, paired_test, signed_rank_p, signed_rank_power,
                            wilson_interval)


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
    adjusted, levels = holm([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])
    np.testing.assert_allclose(levels, [0.05 / 3, 0.05, np.nan, 0.05 / 2])  # smallest p first, at alpha / 3
    _, tied = holm([0.02, 0.01, 0.02, 0.5])
    np.testing.assert_allclose(tied, [0.05 / 3, 0.05 / 4, 0.05 / 3, 0.05])  # a tie shares its strictest step


def _sign_flip_p(values) -> float:
    """scipy's signed-rank test over all 2^k sign patterns (exact with ties and zeros)."""
    if not np.any(values):
        return 1.0
    return scipy.stats.wilcoxon(values, alternative="greater",
                                method=scipy.stats.PermutationMethod(n_resamples=np.inf)).pvalue


def test_the_signed_rank_p_is_scipys_sign_flip_p_with_ties_and_zeros():
    rng = np.random.default_rng(3)
    for n in (3, 7, 12, 16):
        tied = np.round(rng.normal(0.3, 1, n), 1)  # ties and zeros at this rounding
        assert signed_rank_p(tied) == pytest.approx(_sign_flip_p(tied), rel=1e-9)
        x = rng.normal(0.3, 1, n)
        exact = scipy.stats.wilcoxon(x, alternative="greater", method="exact").pvalue
        assert signed_rank_p(x) == pytest.approx(exact, rel=1e-9)
    x = np.array([1.0, 1.0, 2.0, -2.0, 3.0, 0.0, 0.5, -0.5])
    assert signed_rank_p(x) == pytest.approx(_sign_flip_p(x), rel=1e-12)
    assert signed_rank_p(x) != pytest.approx(scipy.stats.wilcoxon(x, alternative="greater", method="exact").pvalue)
    assert signed_rank_p(np.zeros(4)) == 1.0


def test_the_exact_power_with_ties_matches_a_brute_force_enumeration():
    values = np.array([0.1, 0.1, -0.2, 0.0, 0.3, 0.05, 0.0, -0.1])  # 6 non-zero, two ties, two zeros
    shift, level = 0.05, 0.1
    nonzero = values[values != 0]
    positive = scipy.special.expit(2 * np.abs(nonzero) * shift / values.std(ddof=1) ** 2)
    brute = 0.0
    for signs in itertools.product([1, -1], repeat=len(nonzero)):
        chance = np.prod(np.where(np.array(signs) > 0, positive, 1 - positive))
        brute += chance * (_sign_flip_p(np.abs(nonzero) * signs) < level)
    assert 0 < brute < 1 and signed_rank_power(values, shift, level) == pytest.approx(brute, rel=1e-12)
    # No effect: the power is the test's size, at most the level.
    assert 0 < signed_rank_power(values, 0.0, level) <= level


def test_the_power_is_zero_where_the_exact_test_cannot_reach_its_level_and_grows_with_the_effect():
    half_zero = np.array([0.0] * 6 + [0.2, 0.3, 0.25, 0.1, 0.35, 0.15])  # 6 non-zero of 12: the smallest p is 1/64
    assert paired_test(half_zero).min_p == 1 / 64
    assert signed_rank_power(half_zero, 0.05, 0.05 / 6) == 0.0  # 1/64 > 0.05 / 6 at Holm's first step
    assert signed_rank_power(half_zero, 0.05, 0.05) > 0  # at its last step, 0.05, it can reject
    values = np.random.default_rng(0).normal(0.0, 0.1, 12)
    powers = [signed_rank_power(values, shift, 0.05) for shift in (0.0, 0.02, 0.05, 0.1)]
    assert powers == sorted(powers) and powers[0] <= 0.05 and powers[-1] > 0.8


def test_logistic_regression_explains_why_it_has_no_fit():
    x = pd.DataFrame({"lr": np.repeat([-5.0, -4.0, -3.0], 10), "prior": np.tile([0.2, 0.02], 15)})
    separated = logistic_regression(pd.Series((x.lr < -4.5).astype(float)), x)
    assert not separated.available and separated.reason.startswith("separation: lr")
    assert "too few" in logistic_regression(pd.Series([0.0, 1.0] * 3), x.head(6)).reason
    assert "for all 30 members" in logistic_regression(pd.Series(np.zeros(30)), x).reason
