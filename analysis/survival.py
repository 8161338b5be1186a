"""Survival analysis of steps until a capability is revived: Kaplan-Meier curves with Greenwood intervals, their
median, value and restricted mean, the k-sample log-rank test and Cox regression.

A run that never reaches the threshold within its step budget tells us only that revival takes longer than the
budget: it is right-censored there. Dropping such runs, or counting them at the budget, biases the mean steps to
revival downwards; these estimators use them as what they are. "Survival" S(t) is the chance of not yet being
revived after t steps, an "event" is a revival. The log-rank test and Cox regression are statsmodels' (survdiff,
PHReg); Kaplan-Meier stays hand-written, for the reason its docstring gives.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import scipy.stats
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import survdiff
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from analysis.stats import CONFIDENCE, MIN_MEMBERS

KM_COLUMNS = ["time", "at_risk", "events", "censored", "survival", "survival_lo", "survival_hi"]


def _clean(durations, observed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(durations, observed as bool, kept mask) with NaN durations dropped; ValueError on malformed input."""
    d = np.asarray(durations, float).ravel()
    o = np.asarray(observed, float).ravel()
    if len(d) != len(o):
        raise ValueError(f"durations and observed differ in length ({len(d)} and {len(o)})")
    kept = ~np.isnan(d)
    d, o = d[kept], o[kept]
    if (d < 0).any() or np.isinf(d).any():
        raise ValueError("durations must be finite and >= 0")
    if not np.isin(o, (0.0, 1.0)).all():
        raise ValueError("observed must be 0/1 (or False/True) wherever the duration is known")
    return d, o.astype(bool), kept


def kaplan_meier(durations, observed, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The Kaplan-Meier estimate of S(t) with a pointwise log(-log) Greenwood interval (columns KM_COLUMNS).

    Hand-written: statsmodels' SurvfuncRight takes S as exp(cumsum(log(1 - d/n))), whose float noise (S = 0.5 + 1e-16
    with 2 of 4 revived) moves a median that lies at S = 0.5 exactly, and its interval is a simultaneous band.

    One row per distinct time with an event or a censoring, after a row at time 0 (merged with the time-0 row
    where some durations are 0, whose revivals then count there). Events at a time precede censorings at it.
    The interval is [1, 1] where S = 1 and NaN where S = 0; an empty frame when no duration is known.
    """
    d, o, _ = _clean(durations, observed)
    if len(d) == 0:
        return pd.DataFrame(columns=KM_COLUMNS)
    times = np.unique(np.r_[0.0, d])
    at_risk = len(d) - np.searchsorted(np.sort(d), times, side="left")  # members with duration >= t
    events = np.array([np.sum(o & (d == t)) for t in times])
    censored = np.array([np.sum(~o & (d == t)) for t in times])
    survival = np.cumprod(1 - events / at_risk)
    # Greenwood: Var(log S) = sum of d / (n (n - d)); infinite once everyone at risk is revived (S = 0 there).
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(events > 0, events / (at_risk * (at_risk - events)), 0.0))
        # log(-log S) has standard error sqrt(Var(log S)) / |log S|; back-transformed, S^exp(+-z se).
        z = scipy.stats.norm.ppf((1 + confidence) / 2)
        se = np.sqrt(greenwood) / np.abs(np.log(survival))
        low = np.clip(survival ** np.exp(z * se), 0, 1)
        high = np.clip(survival ** np.exp(-z * se), 0, 1)
    low = np.where(survival == 1, 1.0, np.where(survival == 0, np.nan, low))
    high = np.where(survival == 1, 1.0, np.where(survival == 0, np.nan, high))
    return pd.DataFrame({"time": times, "at_risk": at_risk, "events": events, "censored": censored,
                         "survival": survival, "survival_lo": low, "survival_hi": high}, columns=KM_COLUMNS)


def median_time(km: pd.DataFrame) -> float:
    """The smallest time with S(t) <= 0.5 (the median steps to revival); NaN if the curve never gets there."""
    reached = km.time[km.survival <= 0.5]
    return float(reached.iloc[0]) if len(reached) else np.nan


def survival_at(km: pd.DataFrame, t: float) -> float:
    """S(t) from the right-continuous step function: 1 before time 0, the last value beyond the last time."""
    if km.empty or np.isnan(t):
        return np.nan
    if t < km.time.iloc[0]:
        return 1.0
    return float(km.survival.iloc[np.searchsorted(km.time.to_numpy(), t, side="right") - 1])


def restricted_mean(km: pd.DataFrame, horizon: float) -> float:
    """The area under S from 0 to `horizon`: the mean steps to revival when every run is stopped at `horizon`.

    Beyond the last time S is held at its last value, so a horizon past the longest run extrapolates.
    """
    if km.empty or np.isnan(horizon):
        return np.nan
    if horizon < 0:
        raise ValueError(f"the horizon must be >= 0 (got {horizon})")
    times, survival = km.time.to_numpy(float), km.survival.to_numpy(float)
    # Each step holds its value from its own time to the next one (or the horizon).
    right = np.minimum(np.r_[times[1:], np.inf], horizon)
    return float(np.sum(survival * np.clip(right - times, 0, None)))


@dataclasses.dataclass
class LogRank:
    """The k-sample log-rank test that all groups share one survival function (chi-square with df degrees)."""
    statistic: float
    df: int
    p: float
    groups: int  # groups with members
    n: int  # members with a known duration
    events: int
    reason: str = ""  # why there is no test ("" when there is one)


def logrank(durations, observed, groups) -> LogRank:
    """statsmodels' survdiff over the groups that the revivals inform, with df = those groups - 1.

    Kept as a wrapper: survdiff solves with every group's covariance and always counts k - 1 degrees of freedom, so
    a group with no run at risk at an informative revival (all censored before the first) makes it singular.
    Risk sets only shrink, so the informed groups are those at risk at the first revival, unless every run at risk
    then is revived there (no revival time then tells the groups apart).
    """
    labels, size = pd.Series(np.asarray(groups, object).ravel()), np.asarray(durations).size
    if len(labels) != size:
        raise ValueError(f"durations and groups differ in length ({size} and {len(labels)})")
    d, o, kept = _clean(durations, observed)
    labels = labels[kept].reset_index(drop=True)
    known = labels.notna().to_numpy()  # a run without a group label takes no part
    d, o, codes = d[known], o[known], pd.factorize(labels[known])[0]
    k, n, events = int(codes.max() + 1) if len(codes) else 0, len(d), int(o.sum())
    if k < 2:
        which = "only 1 group" if k else "no group"
        return LogRank(np.nan, 0, np.nan, k, n, events, f"{which} with members: nothing to compare")
    if events == 0:
        return LogRank(np.nan, 0, np.nan, k, n, 0, "no revivals at all: every run is censored")
    first = d[o].min()
    at_risk = d >= first
    informed = np.isin(codes, np.unique(codes[at_risk])) if (o & (d == first)).sum() < at_risk.sum() else \
        np.zeros(n, bool)
    df = len(np.unique(codes[informed])) - 1
    if df < 1:
        return LogRank(np.nan, 0, np.nan, k, n, events, "the revivals carry no information on the groups "
                       "(no time with revivals has members of two groups at risk)")
    statistic, _ = survdiff(d[informed], o[informed].astype(float), codes[informed])
    return LogRank(float(statistic), df, float(scipy.stats.chi2.sf(statistic, df)), k, n, events)


@dataclasses.dataclass
class CoxFit:
    reason: str  # why there is no fit ("" when there is one)
    n: int
    events: int
    table: pd.DataFrame | None = None  # per term: coef, se, hazard_ratio, hr_lo, hr_hi, p (HR > 1: faster revival)
    dropped: list[str] = dataclasses.field(default_factory=list)  # constant predictors left out

    @property
    def available(self) -> bool:
        return not self.reason


def cox_regression(durations, observed, predictors: pd.DataFrame, confidence: float = CONFIDENCE) -> CoxFit:
    """Cox proportional-hazards regression of the revival hazard on the predictors (Efron's ties).

    Rows match by position. Standard errors treat the rows as independent.
    """
    d = np.asarray(durations, float).ravel()
    if len(d) != len(predictors):
        raise ValueError(f"durations and predictors differ in length ({len(d)} and {len(predictors)})")
    x = predictors.reset_index(drop=True).astype(float)
    # Drop incomplete rows before validating, so a NaN duration never reaches _clean's checks on observed.
    known = ~np.isnan(d) & x.notna().all(axis=1).to_numpy()
    d, o, _ = _clean(d[known], np.asarray(observed, float).ravel()[known])
    x = x[known].reset_index(drop=True)
    n, events = len(d), int(o.sum())
    if n < MIN_MEMBERS:
        return CoxFit(f"too few runs with a duration and all predictors ({n}; at least {MIN_MEMBERS} needed)",
                      n, events)
    if events == 0:
        return CoxFit(f"no revivals among the {n} runs: every run is censored", n, 0)
    constant = [c for c in x if x[c].nunique() < 2]
    x, dropped = x.drop(columns=constant), [str(c) for c in constant]
    if x.empty:
        return CoxFit("no predictor varies across these runs", n, events, dropped=dropped)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = PHReg(d, x.to_numpy(), status=o.astype(float), ties="efron").fit()
        except (np.linalg.LinAlgError, ValueError) as e:
            return CoxFit(f"the fit failed ({e})", n, events, dropped=dropped)
    se = np.asarray(fit.bse, float)
    # Monotone likelihood (the Cox analogue of separation) shows as a convergence warning and a huge se.
    if any(issubclass(w.category, ConvergenceWarning) for w in caught) or not np.isfinite(se).all():
        return CoxFit("the fit does not converge: the predictors (jointly) order the revivals without overlap, so "
                      "the maximum-likelihood hazard ratio is infinite (see the curves per setting instead)",
                      n, events, dropped=dropped)
    coef, interval = np.asarray(fit.params, float), np.asarray(fit.conf_int(1 - confidence), float)
    table = pd.DataFrame({"term": [str(c) for c in x], "coef": coef, "se": se, "hazard_ratio": np.exp(coef),
                          "hr_lo": np.exp(interval[:, 0]), "hr_hi": np.exp(interval[:, 1]),
                          "p": np.asarray(fit.pvalues, float)})
    return CoxFit("", n, events, table, dropped)
