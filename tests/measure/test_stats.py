"""Mann-Whitney U and the bootstrap CI, against scipy and on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_autoglm.measure.stats import bootstrap_ratio_ci, compare, mann_whitney_u


def test_mann_whitney_matches_scipy_asymptotic():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    cases = [
        (rng.lognormal(0, 0.3, 20), rng.lognormal(0.2, 0.3, 25)),
        (rng.normal(10, 1, 15), rng.normal(10, 1, 15)),
        (np.round(rng.normal(5, 1, 30), 1), np.round(rng.normal(5.3, 1, 30), 1)),  # many ties
    ]
    for a, b in cases:
        u, p = mann_whitney_u(a, b)
        ref = scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
        assert u == pytest.approx(ref.statistic)
        assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_mann_whitney_complete_separation_small_sample():
    # 10 vs 10, fully separated: U = 0; the normal approximation gives p ~ 1.8e-4.
    u, p = mann_whitney_u(np.arange(10.0), np.arange(10.0) + 100)
    assert u == 0.0
    assert 1e-4 < p < 3e-4
    assert mann_whitney_u([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])[1] == 1.0


def test_bootstrap_ci_covers_the_true_ratio():
    rng = np.random.default_rng(1)
    a = rng.lognormal(np.log(10.0), 0.05, 40)
    b = rng.lognormal(np.log(8.0), 0.05, 40)
    ratio, lo, hi = bootstrap_ratio_ci(a, b)
    assert lo < 0.8 < hi
    assert lo < ratio < hi
    assert hi - lo < 0.1


def test_compare_verdicts():
    rng = np.random.default_rng(2)
    slow = rng.lognormal(np.log(10.0), 0.05, 30)
    fast = rng.lognormal(np.log(7.0), 0.05, 30)
    assert compare(slow, fast).verdict == "faster"
    assert compare(fast, slow).verdict == "slower"
    same = rng.lognormal(np.log(10.0), 0.05, 30)
    assert compare(slow, same).verdict == "no significant difference"
    # a real but tiny shift (0.5%) on very quiet data: significant, yet below the 1% effect threshold
    base = 10.0 + rng.normal(0, 0.001, 40)
    shifted = base * 1.005
    result = compare(base, shifted)
    assert result.p_value < 0.05 and result.verdict == "no significant difference" and "effect threshold" in result.reason
