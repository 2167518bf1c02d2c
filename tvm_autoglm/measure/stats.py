"""Statistics for A/B latency comparisons, in numpy only.

Latency samples are skewed and have outliers, so nothing here assumes a
normal distribution: the ratio of medians gets a bootstrap confidence
interval and the location shift a Mann-Whitney U test. Implemented here
(rather than importing scipy) so the measure package needs only numpy; the
tests cross-check against scipy where it is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _rank_with_ties(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and the sizes of the tie groups."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks, ends - starts


def mann_whitney_u(a, b) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: (U of ``a``, p-value).

    Normal approximation with tie and continuity correction, the same as
    ``scipy.stats.mannwhitneyu(a, b, method="asymptotic")``; adequate for the
    10+ samples per side that a benchmark collects.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs at least one sample on each side")
    ranks, ties = _rank_with_ties(np.concatenate([a, b]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    mean = n1 * n2 / 2.0
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return u1, 1.0  # all values identical
    u_big = max(u1, n1 * n2 - u1)
    z = (u_big - mean - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u1, min(1.0, p)


def bootstrap_ratio_ci(a, b, n_boot: int = 4000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """median(b) / median(a) with a percentile bootstrap CI (each side resampled independently)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("bootstrap_ratio_ci needs at least one sample on each side")
    rng = np.random.default_rng(seed)
    med_a = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))], axis=1)
    med_b = np.median(b[rng.integers(0, len(b), size=(n_boot, len(b)))], axis=1)
    ratios = med_b / med_a
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(ratios, [tail, 100.0 - tail])
    return float(np.median(b) / np.median(a)), float(lo), float(hi)


@dataclass
class Comparison:
    ratio: float  # median(B) / median(A): < 1 means B is faster
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str  # "faster" | "slower" | "no significant difference" (B relative to A)
    reason: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


def compare(a, b, alpha: float = 0.05, min_effect: float = 0.01, seed: int = 0) -> Comparison:
    """B relative to A. "faster"/"slower" needs all three: p < alpha, the CI excluding 1, and |ratio - 1| >= min_effect.

    The effect threshold keeps a real but negligible difference (say 0.3%
    from code alignment) from being reported as a win.
    """
    ratio, lo, hi = bootstrap_ratio_ci(a, b, seed=seed)
    _, p = mann_whitney_u(a, b)
    if p >= alpha:
        verdict, reason = "no significant difference", f"p = {p:.3g} >= {alpha}"
    elif lo <= 1.0 <= hi:
        verdict, reason = "no significant difference", f"the 95% CI [{lo:.3f}, {hi:.3f}] contains 1"
    elif abs(ratio - 1.0) < min_effect:
        verdict, reason = "no significant difference", f"|ratio - 1| = {abs(ratio - 1):.3%} is below the {min_effect:.0%} effect threshold"
    else:
        verdict = "faster" if ratio < 1.0 else "slower"
        reason = f"p = {p:.3g} < {alpha}, CI [{lo:.3f}, {hi:.3f}] excludes 1"
    return Comparison(ratio, lo, hi, p, verdict, reason)
