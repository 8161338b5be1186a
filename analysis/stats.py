"""Statistics over seeds: bootstrap intervals, rates with Wilson intervals, exact paired one-sided signed-rank tests
and their exact power, Holm's correction and logistic regression. Generic tools; `emergence` and `claims` apply them.
scipy.stats and statsmodels do the work (bootstrap, Wilson, Holm, logit); written here only what they cannot: the
exact signed-rank p and power with ties and zeros (scipy's "exact" ignores ties) and the two-stage cluster bootstrap.

The seed is the unit of replication: members of one seed share their initialisation and, across the cells of one
prior, their pretrained parent, so intervals and tests first average within a seed and then vary over seeds.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from analysis.schema import Z95
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

CONFIDENCE = 0.95
N_BOOT = 2000


def bootstrap_mean(values, confidence: float = CONFIDENCE, n_boot: int = N_BOOT, seed: int = 0):
    """(mean, low, high): percentile bootstrap interval of the mean (scipy.stats.bootstrap); NaN bounds with fewer
    than two values."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    if len(values) == 1:
        return float(values[0]), np.nan, np.nan
    found = scipy.stats.bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                                  method="percentile", rng=np.random.default_rng(seed))
    return float(values.mean()), float(found.confidence_interval.low), float(found.confidence_interval.high)


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def seed_means(frame: pd.DataFrame, value: str, by=()) -> pd.DataFrame:
    """Mean of `value` within each (by..., seed): one number per seed and cell."""
    keys = list(dict.fromkeys([*by, "seed"]))
    return frame.dropna(subset=[value]).groupby(keys, sort=False, dropna=False)[value].mean().reset_index()


def seed_series(frame: pd.DataFrame, value: str) -> pd.Series:
    """The mean of `value` per seed, indexed by seed (empty where the frame lacks the column)."""
    if value not in frame:
        return pd.Series(dtype=float)
    return seed_means(frame, value).set_index("seed")[value]


def cell_intervals(frame: pd.DataFrame, value: str, cells, confidence: float = CONFIDENCE,
                   log: bool = False) -> pd.DataFrame:
    """Per cell: seeds, mean over seeds of `value` and its bootstrap interval (columns value, value_lo, value_hi).

    log: summarise log(value) and report exp of the mean and bounds (the geometric mean; for ratios).
    """
    cells = list(cells)
    data = frame.assign(**{value: np.log(frame[value]) if log else frame[value]})
    per_seed = seed_means(data, value, cells)
    rows = []
    for key, group in per_seed.groupby(cells, sort=False, dropna=False) if cells else [((), per_seed)]:
        mean, low, high = bootstrap_mean(group[value], confidence)
        if log:
            mean, low, high = np.exp([mean, low, high])
        rows.append({**dict(zip(cells, _as_tuple(key))), "seeds": len(group),
                     value: mean, f"{value}_lo": low, f"{value}_hi": high})
    return pd.DataFrame(rows, columns=[*cells, "seeds", value, f"{value}_lo", f"{value}_hi"])




def gap_text(gap, se) -> str:
    """`+0.82 [0.10]`: a gap and 1.96 of its standard errors."""
    return f"{gap:+.2f} [{Z95 * se:.2f}]"


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (statsmodels; unlike a bootstrap, not degenerate at 0/n or n/n)."""
    if n == 0:
        return np.nan, np.nan
    low, high = proportion_confint(k, n, 1 - confidence, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


def rate_intervals(frame: pd.DataFrame, indicator: str, cells, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per cell: members with a 0/1 `indicator` (n), how many are 1 (k), the rate and its Wilson interval."""
    cells = list(cells)
    rows = []
    for key, group in frame.groupby(cells, sort=False, dropna=False):
        values = group[indicator].dropna()
        k, n = int(values.sum()), len(values)
        low, high = wilson_interval(k, n, confidence)
        rows.append({**dict(zip(cells, _as_tuple(key))), "k": k, "n": n, "rate": k / n if n else np.nan,
                     "rate_lo": low, "rate_hi": high})
    return pd.DataFrame(rows, columns=[*cells, "k", "n", "rate", "rate_lo", "rate_hi"])


def _signed_ranks(differences) -> tuple[np.ndarray, np.ndarray]:
    """(doubled ranks, positive) of the non-zero differences: zeros are dropped, tied |differences| share their
    mid-rank (scipy's defaults; doubled, mid-ranks are whole numbers)."""
    d = np.asarray(differences, float)
    d = d[~np.isnan(d) & (d != 0)]
    return np.rint(2 * scipy.stats.rankdata(np.abs(d))).astype(int), d > 0


def _rank_sum_distribution(doubled: np.ndarray, positive_probability) -> np.ndarray:
    """P(doubled W+ = s) for s = 0 .. sum(doubled): W+ is the rank sum of the positive differences, each difference
    positive independently with its probability (1/2 each: the test's null), convolved one difference at a time."""
    probability = np.broadcast_to(np.asarray(positive_probability, float), doubled.shape)
    distribution = np.zeros(int(doubled.sum()) + 1)
    distribution[0] = 1.0
    for rank, q in zip(doubled, probability):
        shifted = np.concatenate([np.zeros(rank), distribution[:len(distribution) - rank]])
        distribution = (1 - q) * distribution + q * shifted
    return distribution


def _upper_tails(distribution: np.ndarray) -> np.ndarray:
    """tail[s] = P(statistic >= s)."""
    return distribution[::-1].cumsum()[::-1]


def signed_rank_p(differences) -> float:
    """Exact one-sided (> 0) Wilcoxon signed-rank p over the signs of the observed |differences|, ties and zeros
    included: zeros dropped, ties at their mid-rank, p the share of the 2^k sign patterns of the k non-zero
    differences whose W+ is at least the observed one (1 without a non-zero difference).

    scipy.stats.wilcoxon gives the same number with method=PermutationMethod() by enumerating the 2^k patterns
    (method="exact" ignores ties); the convolution here is exact at any k, and `signed_rank_power` needs it under
    an alternative too, so that the power is that of this very test.
    """
    doubled, positive = _signed_ranks(differences)
    if len(doubled) == 0:
        return 1.0
    return float(_upper_tails(_rank_sum_distribution(doubled, 0.5))[doubled[positive].sum()])


def signed_rank_power(differences, shift_to: float, level: float) -> float:
    """Exact power of `signed_rank_p` < `level`, given the observed |differences| (their zeros and ties, so the test
    actually run): the per-seed values normal around `shift_to` with their observed spread s, each non-zero
    difference of size a is positive with probability 1 / (1 + exp(-2 a shift_to / s^2)) (the chance of its sign
    given its size), and the power is the probability of the sign patterns whose p is below `level`.

    0 where even all k signs positive (p = 2^-k) cannot get below `level`; the size of the test (at most `level`)
    at shift_to = 0. NaN without values.
    """
    values = np.asarray(differences, float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.nan
    doubled, _ = _signed_ranks(values)
    if len(doubled) == 0:
        return 0.0
    size = np.abs(values[values != 0])
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tilt = np.where(shift_to == 0, 0.0, 2 * size * shift_to / spread ** 2)
    positive = scipy.special.expit(tilt)
    critical = np.flatnonzero(_upper_tails(_rank_sum_distribution(doubled, 0.5)) < level)
    if len(critical) == 0:
        return 0.0
    return float(_rank_sum_distribution(doubled, positive)[critical[0]:].sum())


@dataclasses.dataclass
class PairedTest:
    """One-sided Wilcoxon signed-rank test that per-seed differences are > 0, with the mean difference."""
    n: int  # seeds
    effect: float  # mean per-seed difference
    effect_lo: float
    effect_hi: float
    rank_biserial: float  # (W+ - W-) / (W+ + W-): -1..1, the share of rank mass favouring the effect
    p: float
    min_p: float  # the smallest p the exact test can give: 2^-k with k non-zero differences (ties or not)
    nonzero: int  # seeds whose difference is not 0 (the signed-rank test drops ties at 0)


def paired_test(differences, confidence: float = CONFIDENCE) -> PairedTest:
    d = np.asarray(differences, float)
    d = d[~np.isnan(d)]
    effect, low, high = bootstrap_mean(d, confidence)
    doubled, positive = _signed_ranks(d)
    if len(doubled) == 0:
        return PairedTest(len(d), effect, low, high, 0.0, 1.0, 1.0, 0)
    w_plus, w_minus = doubled[positive].sum(), doubled[~positive].sum()
    return PairedTest(len(d), effect, low, high, float((w_plus - w_minus) / (w_plus + w_minus)), signed_rank_p(d),
                      0.5 ** len(doubled), len(doubled))


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjustment (statsmodels) and the level of the step each test gets: alpha / the number of
    tests not yet passed, alpha / m for the smallest p, ..., alpha for the largest; tied p-values share the first
    (strictest) step of their tie, since the later ones cannot pass unless it does. NaN entries are not part of the
    family and get NaN."""
    p = np.asarray(pvalues, float)
    adjusted, levels = np.full_like(p, np.nan), np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if len(tested):
        adjusted[tested] = multipletests(p[tested], alpha, method="holm")[1]
        ordered = np.sort(p[tested])
        levels[tested] = alpha / (len(tested) - np.searchsorted(ordered, p[tested], side="left"))
    return adjusted, levels


@dataclasses.dataclass
class LogisticFit:
    reason: str  # why there is no fit ("" when there is one)
    n: int
    table: pd.DataFrame | None = None  # per term: coef, se, odds_ratio, or_lo, or_hi, p
    dropped: list[str] = dataclasses.field(default_factory=list)  # constant predictors left out

    @property
    def available(self) -> bool:
        return not self.reason


MIN_MEMBERS = 10


def _separating(x: pd.Series, y: pd.Series) -> bool:
    """Whether x alone separates the outcomes (every 1 above every 0, or below), ties at the border included."""
    ones, zeros = x[y == 1], x[y == 0]
    return ones.min() >= zeros.max() or ones.max() <= zeros.min()


def _coefficients(fit, confidence: float) -> pd.DataFrame:
    """A fitted logit's table: coefficient, standard error, odds ratio with its interval, p; one row per term."""
    interval = fit.conf_int(1 - confidence)
    table = pd.DataFrame({"coef": fit.params, "se": fit.bse, "odds_ratio": np.exp(fit.params),
                          "or_lo": np.exp(interval[0]), "or_hi": np.exp(interval[1]), "p": fit.pvalues})
    return table.rename_axis("term").reset_index()


def logistic_regression(y: pd.Series, predictors: pd.DataFrame, confidence: float = CONFIDENCE) -> LogisticFit:
    """Logit of a 0/1 outcome on the predictors; a reason instead of a fit where none is meaningful.

    Standard errors treat the rows as independent.
    """
    known = y.notna() & predictors.notna().all(axis=1)
    y, x = y[known].astype(float), predictors[known].astype(float)
    n = len(y)
    if n < MIN_MEMBERS:
        return LogisticFit(f"too few members with an indicator ({n}; at least {MIN_MEMBERS} needed)", n)
    if y.nunique() < 2:
        return LogisticFit(f"the outcome is {'1' if y.iloc[0] else '0'} for all {n} members: nothing to explain", n)
    dropped = [c for c in x if x[c].nunique() < 2]
    x = x.drop(columns=dropped)
    if x.empty:
        return LogisticFit("no predictor varies across these members", n, dropped=dropped)
    separating = [c for c in x if _separating(x[c], y)]
    if separating:
        return LogisticFit(f"separation: {', '.join(separating)} splits the outcomes without overlap (ties at the "
                           "border included), so the maximum-likelihood coefficient is infinite; read the rates per "
                           "setting instead", n, dropped=dropped)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(disp=0, maxiter=200)
        except (PerfectSeparationError, np.linalg.LinAlgError) as e:
            return LogisticFit(f"the fit failed ({e})", n, dropped=dropped)
    trouble = {type(w.message) for w in caught} & {PerfectSeparationWarning, ConvergenceWarning}
    if trouble or not fit.mle_retvals.get("converged", True) or not np.isfinite(fit.bse).all():
        return LogisticFit("the settings (jointly) separate the outcome, so the fit does not converge (see the "
                           "rates per setting instead)", n, dropped=dropped)
    return LogisticFit("", n, _coefficients(fit, confidence), dropped)


def cluster_bootstrap_share(values, clusters, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                            seed: int = 0) -> tuple[float, float, float]:
    """(share, low, high) of a 0/1 outcome whose rows come in clusters (the members of one pretraining seed).
    Hand-written: scipy.stats.bootstrap resamples independent observations, not clusters and then rows within them.

    A two-stage bootstrap: resample the clusters, then the rows within each drawn cluster (a cluster's count of
    ones is then binomial in its size and share); the share of a replicate is its ones over its rows. Rows of one
    cluster are not independent draws, so the interval is wider than a Wilson interval over the rows where they
    resemble each other. Where every row has the same outcome the bootstrap has no spread: the interval is then
    Wilson's over the clusters (as if each cluster were one draw). NaN bounds with a single cluster.
    """
    frame = pd.DataFrame({"y": np.asarray(values, float), "c": np.asarray(clusters)}).dropna()
    if frame.empty:
        return np.nan, np.nan, np.nan
    per = frame.groupby("c").y.agg(["sum", "size"])
    k, n, share = per["sum"].to_numpy(), per["size"].to_numpy(), frame.y.mean()
    if len(per) < 2:
        return float(share), np.nan, np.nan
    if share in (0.0, 1.0):
        low, high = wilson_interval(int(share) * len(per), len(per), confidence)
        return float(share), low, high
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(per), (n_boot, len(per)))
    ones = rng.binomial(n[drawn], k[drawn] / n[drawn])
    shares = ones.sum(axis=1) / n[drawn].sum(axis=1)
    low, high = np.quantile(shares, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(share), float(low), float(high)


def cluster_rate_intervals(frame: pd.DataFrame, indicator: str, cells, cluster: str = "seed",
                           confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per cell: rows with a 0/1 `indicator` (n), how many are 1 (k), its clusters, the rate and its two-stage
    cluster-bootstrap interval (`cluster_bootstrap_share`)."""
    cells = list(cells)
    columns = [*cells, "k", "n", "clusters", "rate", "rate_lo", "rate_hi"]
    groups = frame.groupby(cells, sort=False, dropna=False) if cells else [((), frame)]
    rows = []
    for key, group in groups:
        known = group.dropna(subset=[indicator])
        rate, low, high = cluster_bootstrap_share(known[indicator], known[cluster], confidence)
        rows.append({**dict(zip(cells, _as_tuple(key))), "k": int(known[indicator].sum()), "n": len(known),
                     "clusters": known[cluster].nunique(), "rate": rate, "rate_lo": low, "rate_hi": high})
    return pd.DataFrame(rows, columns=columns)


def clustered_logistic_regression(y: pd.Series, predictors: pd.DataFrame, clusters: pd.Series,
                                  confidence: float = CONFIDENCE) -> LogisticFit:
    """`logistic_regression` with cluster-robust standard errors (statsmodels cov_type "cluster", t with clusters
    - 1 degrees of freedom): rows of one cluster, the members of one pretraining seed, are not independent.

    The same reasons where no fit is meaningful, and one more: fewer clusters than coefficients leave the robust
    covariance without enough independent pieces.
    """
    plain = logistic_regression(y, predictors, confidence)
    if not plain.available:
        return plain
    known = y.notna() & predictors.notna().all(axis=1) & clusters.notna()
    x = sm.add_constant(predictors[known].drop(columns=plain.dropped).astype(float), has_constant="add")
    groups = pd.factorize(clusters[known])[0]
    if groups.max() + 1 <= x.shape[1]:
        return LogisticFit(f"{groups.max() + 1} seed(s) for {x.shape[1]} coefficients: too few seeds for "
                           "seed-clustered standard errors", plain.n, dropped=plain.dropped)
    fit = sm.Logit(y[known].astype(float), x).fit(disp=0, maxiter=200, cov_type="cluster",
                                                   cov_kwds={"groups": groups}, use_t=True)
    if not np.isfinite(fit.bse).all():
        return LogisticFit("the seed-clustered standard errors are not finite", plain.n, dropped=plain.dropped)
    return LogisticFit("", plain.n, _coefficients(fit, confidence), plain.dropped)
