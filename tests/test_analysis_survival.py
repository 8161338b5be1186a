"""The survival estimators reproduce hand-computed Kaplan-Meier tables, Greenwood intervals and summaries, the
log-rank test agrees with statsmodels and separates what differs, and Cox regression recovers a planted hazard
ratio."""
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import survdiff

from analysis.survival import (KM_COLUMNS, cox_regression, kaplan_meier, logrank, median_time, restricted_mean,
                               survival_at)

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs revived (1) or censored at their budget (0); ties at 2 and 4 mix a revival with a censoring.
DURATIONS = [1, 2, 2, 3, 4, 4, 5, 6]
OBSERVED = [1, 1, 0, 1, 0, 1, 1, 0]
# By hand: at each time, at risk n = runs with duration >= t, S = product of (1 - events / n) so far.
HAND = pd.DataFrame({
    "time": [0, 1, 2, 3, 4, 5, 6],
    "at_risk": [8, 8, 7, 5, 4, 2, 1],
    "events": [0, 1, 1, 1, 1, 1, 0],
    "censored": [0, 0, 1, 0, 1, 0, 1],
    "survival": [1,
                 7 / 8,  # 1 * (1 - 1/8)
                 0.75,  # 7/8 * (1 - 1/7)
                 0.6,  # 0.75 * (1 - 1/5)
                 0.45,  # 0.6 * (1 - 1/4)
                 0.225,  # 0.45 * (1 - 1/2)
                 0.225],  # no revival at 6, only a censoring
})


@pytest.fixture
def km():
    return kaplan_meier(DURATIONS, OBSERVED)


def test_kaplan_meier_matches_the_hand_table(km):
    assert list(km.columns) == KM_COLUMNS
    for column in HAND:
        np.testing.assert_allclose(km[column].to_numpy(float), HAND[column].to_numpy(float), err_msg=column)


def test_kaplan_meier_takes_series_and_drops_unknown_durations(km):
    with_unknown = kaplan_meier(pd.Series(DURATIONS + [np.nan]), pd.Series(OBSERVED + [1]))
    pd.testing.assert_frame_equal(with_unknown, km)


def test_without_censoring_kaplan_meier_is_one_minus_the_ecdf():
    durations = np.random.default_rng(1).integers(0, 12, 50)  # ties, and some revived at step 0
    km = kaplan_meier(durations, np.ones(50))
    expected = [np.mean(durations > t) for t in km.time]
    np.testing.assert_allclose(km.survival, expected)
    np.testing.assert_array_equal(km.time, np.unique(np.r_[0, durations]))
    assert km.censored.sum() == 0 and km.events.sum() == 50


def test_the_greenwood_interval_matches_a_hand_computation(km):
    inside = km[(km.survival > 0) & (km.survival < 1)]
    assert ((inside.survival_lo < inside.survival) & (inside.survival < inside.survival_hi)).all()
    assert ((km.survival_lo >= 0) & (km.survival_hi <= 1)).all()
    # At t = 3: Var(log S) = 1/(8*7) + 1/(7*6) + 1/(5*4) (Greenwood), S = 0.6; log(-log S) has standard error
    # sqrt(Var(log S)) / |log 0.6|, and the bounds are S^exp(+-1.96 se).
    greenwood = 1 / (8 * 7) + 1 / (7 * 6) + 1 / (5 * 4)
    se = np.sqrt(greenwood) / abs(np.log(0.6))
    z = scipy.stats.norm.ppf(0.975)
    row = km[km.time == 3].iloc[0]
    np.testing.assert_allclose([row.survival_lo, row.survival_hi], [0.6 ** np.exp(z * se), 0.6 ** np.exp(-z * se)])
    np.testing.assert_allclose([row.survival_lo, row.survival_hi], [0.1955, 0.8523], atol=1e-4)
    # A wider confidence gives a wider interval; where S = 1 the interval is [1, 1].
    wide = kaplan_meier(DURATIONS, OBSERVED, confidence=0.99)
    assert (wide.survival_lo[1:] < km.survival_lo[1:]).all() and (wide.survival_hi[1:] > km.survival_hi[1:]).all()
    assert km.survival_lo[0] == km.survival_hi[0] == 1


def test_a_median_at_exactly_one_half_is_found_there():
    # 2 of 4 revived by t = 2: S(2) is 0.5 exactly (a product, not exp of a sum of logs), so the median is 2.
    km = kaplan_meier([1, 2, 3, 4], [1, 1, 1, 1])
    assert km.survival[km.time == 2].item() == 0.5 and median_time(km) == 2


def test_the_interval_is_undefined_where_everyone_is_revived():
    km = kaplan_meier([1, 2, 3], [1, 1, 1])
    np.testing.assert_allclose(km.survival, [1, 2 / 3, 1 / 3, 0])
    assert np.isnan(km.survival_lo.iloc[-1]) and np.isnan(km.survival_hi.iloc[-1])
    assert km.survival_lo.iloc[:-1].notna().all()


def test_median_value_and_restricted_mean_on_the_hand_table(km):
    assert median_time(km) == 4  # S(3) = 0.6 > 0.5 >= S(4) = 0.45
    assert np.isnan(median_time(kaplan_meier([1, 2, 3, 4], [1, 0, 0, 0])))  # S never below 0.75
    assert survival_at(km, -1) == 1 and survival_at(km, 0.5) == 1
    # Right-continuous: the drop at 2 counts at 2; beyond the last time the last value holds.
    np.testing.assert_allclose([survival_at(km, t) for t in (2, 2.9, 3.5, 6, 100)], [0.75, 0.75, 0.6, 0.225, 0.225])
    # Rectangles of width 1 from 0 to 6: 1 + 7/8 + 0.75 + 0.6 + 0.45 + 0.225 = 3.9.
    np.testing.assert_allclose(restricted_mean(km, 6), 3.9)
    # To 4.5: 1 + 7/8 + 0.75 + 0.6 + 0.45 * 0.5 = 3.45; to 0.5: 0.5 * 1.
    np.testing.assert_allclose(restricted_mean(km, 4.5), 3.45)
    np.testing.assert_allclose(restricted_mean(km, 0.5), 0.5)
    assert restricted_mean(km, 0) == 0
    # Uneven steps: S = 1 on [0, 2), 1/2 on [2, 5), 0 after: 2 * 1 + 3 * 0.5 = 3.5 whatever the horizon past 5.
    np.testing.assert_allclose(restricted_mean(kaplan_meier([2, 5], [1, 1]), 10), 3.5)
    # Censored at 5 with S = 1/2 still: held there, so to 8 it is 2 + 6 * 0.5 = 5.
    np.testing.assert_allclose(restricted_mean(kaplan_meier([2, 5], [1, 0]), 8), 5)


def test_an_empty_sample_gives_an_empty_curve_and_nan_summaries():
    km = kaplan_meier([np.nan], [1])
    assert km.empty and list(km.columns) == KM_COLUMNS
    assert np.isnan(median_time(km)) and np.isnan(survival_at(km, 1)) and np.isnan(restricted_mean(km, 1))


def test_logrank_finds_nothing_between_identical_groups():
    test = logrank(DURATIONS * 2, OBSERVED * 2, ["a"] * 8 + ["b"] * 8)
    assert test.reason == "" and test.p > 0.5 and test.df == 1
    assert (test.groups, test.n, test.events) == (2, 16, 10)


def test_logrank_separates_clearly_different_groups():
    rng = np.random.default_rng(0)
    durations = np.r_[rng.exponential(1, 60), rng.exponential(1 / 5, 60)]
    test = logrank(durations, np.ones(120), np.repeat(["slow", "fast"], 60))
    assert test.p < 1e-4 and test.statistic > 15


def test_logrank_agrees_with_statsmodels_on_three_censored_groups():
    rng = np.random.default_rng(3)
    groups = np.repeat([0, 1, 2], [40, 30, 50])
    times = rng.exponential(1 / np.array([1.0, 1.5, 0.8])[groups]).round(1)  # rounded: ties
    budget = rng.uniform(0.5, 3, len(groups))
    durations, observed = np.minimum(times, budget), (times <= budget).astype(int)
    test = logrank(durations, observed, groups)
    statistic, p = survdiff(durations, observed, groups)
    assert test.df == 2 and test.groups == 3
    np.testing.assert_allclose(test.statistic, statistic, rtol=1e-6)
    np.testing.assert_allclose(test.p, p, rtol=1e-6)


def test_logrank_leaves_out_a_group_no_revival_informs():
    # Group c is censored before the first revival: statsmodels' survdiff over all three is singular; the test is
    # the one of a against b, with 1 degree of freedom.
    durations = [2, 3, 4, 5, 6, 7, 3, 5, 8, 9, 10, 11, 0.5, 1]
    observed = [1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0]
    groups = ["a"] * 6 + ["b"] * 6 + ["c"] * 2
    with pytest.raises(np.linalg.LinAlgError):
        survdiff(np.array(durations), np.array(observed), np.array(groups))
    test = logrank(durations, observed, groups)
    statistic, p = survdiff(np.array(durations[:12]), np.array(observed[:12]), np.array(groups[:12]))
    assert (test.df, test.groups, test.n, test.events) == (1, 3, 14, 8)
    np.testing.assert_allclose([test.statistic, test.p], [statistic, p], rtol=1e-9)
    # Everyone at risk at the first revival is revived there: nothing tells the groups apart.
    assert logrank([1, 1, 0.5], [1, 1, 0], ["a", "b", "b"]).df == 0


def test_logrank_gives_a_reason_without_two_groups_or_revivals():
    single = logrank(DURATIONS, OBSERVED, ["a"] * 8)
    assert np.isnan(single.statistic) and np.isnan(single.p) and "only 1 group" in single.reason
    censored = logrank(DURATIONS, [0] * 8, ["a", "b"] * 4)
    assert np.isnan(censored.p) and "no revivals" in censored.reason


def _planted_cox(n=400, log_hr=0.8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    times = rng.exponential(1 / np.exp(log_hr * x))
    budget = 1.5  # administrative censoring: every run stops at the same step budget
    return np.minimum(times, budget), (times <= budget).astype(int), x


def test_cox_recovers_a_planted_hazard_ratio():
    durations, observed, x = _planted_cox()
    assert 0 < observed.mean() < 1
    fit = cox_regression(durations, observed, pd.DataFrame({"x": x, "constant": 1.0}))
    assert fit.available and fit.n == 400 and fit.events == observed.sum()
    assert fit.dropped == ["constant"]
    row = fit.table.set_index("term").loc["x"]
    assert list(fit.table.columns) == ["term", "coef", "se", "hazard_ratio", "hr_lo", "hr_hi", "p"]
    assert abs(row.coef - 0.8) < 0.2 and row.p < 1e-6
    np.testing.assert_allclose(row.hazard_ratio, np.exp(row.coef))
    assert row.hr_lo < row.hazard_ratio < row.hr_hi
    np.testing.assert_allclose(np.log([row.hr_lo, row.hr_hi]), row.coef + np.array([-1, 1]) * 1.959964 * row.se,
                               rtol=1e-5)


def test_cox_uses_efron_ties():
    durations, observed, x = _planted_cox(n=200, seed=2)
    durations = np.ceil(durations * 4) / 4  # whole quarter-budgets: many ties
    fit = cox_regression(durations, observed, pd.DataFrame({"x": x}))
    efron = PHReg(durations, x[:, None], status=observed, ties="efron").fit()
    breslow = PHReg(durations, x[:, None], status=observed, ties="breslow").fit()
    assert abs(efron.params[0] - breslow.params[0]) > 1e-3  # the ties matter here
    np.testing.assert_allclose(fit.table.coef, efron.params, rtol=1e-6)
    np.testing.assert_allclose(fit.table.se, efron.bse, rtol=1e-6)


def test_cox_drops_rows_with_unknown_predictors_or_durations():
    durations, observed, x = _planted_cox(n=100)
    x[:5] = np.nan
    durations[5:8] = np.nan
    fit = cox_regression(durations, observed, pd.DataFrame({"x": x}))
    assert fit.available and fit.n == 92


def test_cox_gives_a_reason_where_no_fit_is_meaningful():
    durations, observed, x = _planted_cox(n=9)
    few = cox_regression(durations, observed, pd.DataFrame({"x": x}))
    assert not few.available and "too few" in few.reason and few.table is None
    durations, observed, x = _planted_cox(n=50)
    flat = cox_regression(durations, observed, pd.DataFrame({"c": np.ones(50)}))
    assert not flat.available and flat.dropped == ["c"] and "no predictor varies" in flat.reason
    none = cox_regression(durations, np.zeros(50), pd.DataFrame({"x": x}))
    assert not none.available and "no revivals" in none.reason
    # Every x = 1 run is revived before any x = 0 run stops: the hazard ratio is infinite.
    split = np.repeat([1.0, 0.0], 20)
    ordered = cox_regression(np.r_[np.linspace(1, 5, 20), np.full(20, 10.0)], split, pd.DataFrame({"x": split}))
    assert not ordered.available and "does not converge" in ordered.reason


def test_bad_input_raises():
    for call in (lambda: kaplan_meier([1, -1, 2], [1, 1, 0]),
                 lambda: kaplan_meier([1, 2, 3], [1, 0]),
                 lambda: kaplan_meier([1, 2], [1, 2]),
                 lambda: kaplan_meier([1, np.inf], [1, 0]),
                 lambda: logrank([1, -2], [1, 1], ["a", "b"]),
                 lambda: logrank([1, 2], [1, 1], ["a"]),
                 lambda: cox_regression([1, 2], [1, 1], pd.DataFrame({"x": [1.0, 2.0, 3.0]})),
                 lambda: cox_regression([-1.0] * 12, [1] * 12, pd.DataFrame({"x": np.arange(12.0)})),
                 lambda: restricted_mean(kaplan_meier(DURATIONS, OBSERVED), -1)):
        with pytest.raises(ValueError):
            call()


def test_the_module_imports_without_the_engine():
    script = ("import sys; import analysis.survival; "
              "assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'fttrace')]")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_kaplan_meier_figure_draws_each_curve_with_its_greenwood_band():
    from matplotlib.collections import PolyCollection

    from analysis.figures import km_curves
    km = kaplan_meier(DURATIONS, OBSERVED)
    fig = km_curves({("medium", "reFT"): km, ("medium", "control x1"): kaplan_meier([5, 6, 7], [1, 1, 0])},
                    budget=10)
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(ax.lines) == 2 and len(bands) == 2
    # The reFT band steps to the Greenwood bounds at t = 3 (0.1955, 0.8523).
    vertices = bands[0].get_paths()[0].vertices
    at3 = vertices[np.isclose(vertices[:, 0], 3)][:, 1]
    assert np.isclose(at3, 0.1955, atol=1e-4).any() and np.isclose(at3, 0.8523, atol=1e-4).any()
