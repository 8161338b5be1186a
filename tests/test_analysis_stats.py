"""The generic statistics: paired tests keep their error rate and have power, bootstrap intervals and bounds cover
at about the nominal rate, Wilson and Holm match hand-computed values, and regressions say why they have no fit."""
import numpy as np
import pandas as pd
import pytest

from analysis.stats import bootstrap_mean, bootstrap_upper, holm, logistic_regression, paired_test, wilson_interval


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


def test_the_one_sided_upper_bound_covers_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(2)
    covered = [bootstrap_upper(rng.normal(0.0, 1.0, 15), 0.95, n_boot=1000, seed=i) >= 0.0 for i in range(300)]
    assert 0.88 <= np.mean(covered) <= 0.99
    assert np.isnan(bootstrap_upper([1.0])) and bootstrap_upper([2.0, 2.0, 2.0]) == 2.0


def test_logistic_regression_explains_why_it_has_no_fit():
    x = pd.DataFrame({"lr": np.repeat([-5.0, -4.0, -3.0], 10), "prior": np.tile([0.2, 0.02], 15)})
    separated = logistic_regression(pd.Series((x.lr < -4.5).astype(float)), x)
    assert not separated.available and separated.reason.startswith("separation: lr")
    assert "too few" in logistic_regression(pd.Series([0.0, 1.0] * 3), x.head(6)).reason
    assert "for all 30 members" in logistic_regression(pd.Series(np.zeros(30)), x).reason
