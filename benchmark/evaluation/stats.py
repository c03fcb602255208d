"""Statistics over class splits: mean ± std with a 95% CI, paired comparisons of two methods, and
Holm's correction when several comparisons are read together.

The papers report only the mean over the 10 splits; we always add the spread (DESIGN.md §1).
Too few values give nan, silently: a one-split smoke run should not fill the log with warnings.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for n < 2
    n: int
    ci95: tuple[float, float]  # Student-t 95% confidence interval of the mean; nan for n < 2


@dataclass(frozen=True)
class PairedComparison:
    n: int
    diff: float  # mean of a - b over the splits
    diff_ci95: tuple[float, float]  # Student-t 95% CI of the mean difference
    t_pvalue: float  # paired t-test, two-sided
    wilcoxon_pvalue: float  # Wilcoxon signed-rank, two-sided (zero differences dropped)


def summarise(values) -> Summary:
    """Mean, std (ddof=1), n and 95% CI = mean ± t_{0.975, n-1} · std / sqrt(n)."""
    x = _finite_vector(values, "values")
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return Summary(mean, math.nan, n, (math.nan, math.nan))
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, (mean - half, mean + half))


def paired_comparison(a, b) -> PairedComparison:
    """Compare two methods evaluated on the same splits (a[i] and b[i] from split i)."""
    a, b = _finite_vector(a, "a"), _finite_vector(b, "b")
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same splits: {len(a)} vs {len(b)} values")
    d = summarise(a - b)
    if d.n < 2:
        return PairedComparison(d.n, d.mean, d.ci95, math.nan, math.nan)
    # Identical or constant differences make the tests degenerate (scipy returns nan, or 0 for a
    # constant non-zero shift, and warns); the values are kept, the warnings are not.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        t_p = float(stats.ttest_rel(a, b).pvalue)
        w_p = float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else math.nan
    return PairedComparison(d.n, d.mean, d.ci95, t_p, w_p)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values; nan entries are not part of the family and stay nan.

    With the m p-values sorted, p_(1) <= ... <= p_(m): p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    Rejecting every hypothesis with p~ < alpha keeps the family-wise error rate at alpha (Holm 1979).
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    out = np.full(p.shape, math.nan)
    out[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return out


def _finite_vector(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: every value must be finite, got {x.tolist()}")
    return x
