"""helpers.stats against reference values typed as literals (torch-free).

References: Wilson bounds from the published formula (Wilson 1927; Newcombe 1998), e.g. 0 of 10
gives the upper bound z²/(n + z²) = 3.8415/13.8415 = 0.2775; the paired-t interval worked by hand
for d = [1.1, 0.7, 0.8, 0.5, 0.5, 0.8]: mean 0.73333, s = 0.225093, se = 0.0918937,
t(0.975, 5) = 2.570582, half-width 0.236221.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent



from helpers import stats  # noqa: E402  (helpers/__init__ is lazy: no torch)
A = [5.1, 4.8, 6.0, 5.5, 4.9, 5.7]
B = [4.0, 4.1, 5.2, 5.0, 4.4, 4.9]


@pytest.mark.parametrize("k, n, p, lo, hi", [
    (59, 60, 0.983333, 0.911449, 0.997052),   # the example [0.9113, 0.9970]
    (0, 60, 0.0, 0.0, 0.060172),              # k = 0: lower bound exactly 0
    (60, 60, 1.0, 0.939828, 1.0),             # k = n: upper bound exactly 1
    (30, 60, 0.5, 0.377350, 0.622650),
    (0, 10, 0.0, 0.0, 0.277533),              # z²/(n + z²)
    (7, 10, 0.7, 0.396778, 0.892209),
    (115, 117, 0.982906, 0.939810, 0.995300),
    (14, 20, 0.7, 0.481027, 0.854523),
])
def test_wilson_reference_values(k, n, p, lo, hi):
    est = stats.wilson(k, n)
    assert (est.value, est.lo, est.hi) == pytest.approx((p, lo, hi), abs=2e-6)
    assert est.n == n and est.method == "Wilson"


def test_wilson_other_level_and_unpacking():
    p, lo, hi = stats.wilson(7, 10, level=0.90)   # unpacks as a (p, lo, hi) tuple
    assert (p, lo, hi) == pytest.approx((0.7, 0.441700, 0.873123), abs=2e-6)


@pytest.mark.parametrize("k, n", [(0, 0), (1, 0), (-1, 5), (6, 5), (2.5, 5), (1, 2.5)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(ValueError, match="Wilson"):
        stats.wilson(k, n)


def test_wilson_rejects_bad_level():
    with pytest.raises(ValueError, match="level"):
        stats.wilson(1, 2, level=95)


def test_paired_t_reference_values():
    est = stats.paired_t(A, B)
    assert (est.value, est.lo, est.hi) == pytest.approx((0.733333, 0.497113, 0.969554), abs=2e-6)
    assert est.n == 6 and est.method == "paired t"
    assert est.half_width == pytest.approx(0.236221, abs=2e-6)
    back = stats.paired_t(B, A)                    # the sign follows a - b
    assert (back.value, back.lo, back.hi) == pytest.approx((-0.733333, -0.969554, -0.497113), abs=2e-6)


def test_paired_t_edge_cases():
    same = stats.paired_t([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])   # constant difference: zero-width interval
    assert (same.value, same.lo, same.hi) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same number"):
        stats.paired_t([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired_t([1.0], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        stats.paired_t([1.0, np.nan, 2.0], [0.0, 0.0, 0.0])


def test_mean_ci_reference_values():
    est = stats.mean_ci([0.2, 0.4, 0.1, 0.3, 0.5])  # mean 0.3, s = 0.158114, t(0.975, 4) = 2.776445
    assert (est.value, est.lo, est.hi) == pytest.approx((0.3, 0.103676, 0.496324), abs=2e-6)
    assert est.n == 5 and est.method == "t"


def test_paired_bootstrap_is_deterministic_and_close_to_t():
    one, two = stats.paired_bootstrap(A, B, seed=0), stats.paired_bootstrap(A, B, seed=0)
    assert (one.lo, one.hi) == (two.lo, two.hi)
    x, zero = [0.13, 0.71, 0.29, 0.98, 0.44, 0.52, 0.07, 0.66], [0.0] * 8
    assert stats.paired_bootstrap(x, zero, seed=1).lo != stats.paired_bootstrap(x, zero, seed=2).lo
    assert one.value == pytest.approx(0.733333, abs=2e-6)
    # the percentile interval of a mean of 6 values lies inside the range of the differences
    assert 0.5 <= one.lo < one.value < one.hi <= 1.1
    assert one.method == "paired bootstrap"
    with pytest.raises(ValueError, match="n_boot"):
        stats.paired_bootstrap(A, B, n_boot=10)


def test_ratio_bootstrap():
    num, den = [0.2, 0.3, 0.25, 0.35], [0.4, 0.6, 0.5, 0.7]   # every ratio is 0.5
    est = stats.ratio_bootstrap(num, den)
    assert (est.value, est.lo, est.hi) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="denominator"):
        stats.ratio_bootstrap([1.0, 1.0], [0.0, 0.0])


def test_random_mask_f1_matches_area_fraction():
    ref = np.zeros((10, 10), bool)
    ref[:5, :5] = True                       # area 25 of 100: expected chance F1 exactly 0.25
    assert stats.random_mask_f1(ref, n_draws=2000, seed=0) == pytest.approx(0.25, abs=0.01)
    assert stats.random_mask_f1(ref, seed=3) == stats.random_mask_f1(ref, seed=3)
    assert stats.random_mask_f1(np.ones((4, 4), bool)) == 1.0
    with pytest.raises(ValueError, match="empty"):
        stats.random_mask_f1(np.zeros((4, 4), bool))


def test_estimate_str():
    assert str(stats.wilson(59, 60)) == "0.983 [0.911, 0.997] (n=60, Wilson 95%)"
    pp = stats.Estimate(4.1667, 0.0948, 8.2385, 24, "paired t", 0.95, " pp")
    assert str(pp) == "4.17 pp [0.0948, 8.24] (n=24, paired t 95%)"
    assert str(stats.wilson(0, 60)) == "0 [0, 0.0602] (n=60, Wilson 95%)"
    assert str(stats.wilson(59, 60).scaled(100, "%")) == "98.3% [91.1, 99.7] (n=60, Wilson 95%)"


def test_saved_latency_from_times():
    times = pd.DataFrame({"round": [0, 0, 1, 1, 2, 2], "method": ["full CFG", "m"] * 3,
                          "seconds": [2.0, 1.5, 2.0, 1.6, 2.0, 1.4], "sampler": "ddim", "steps": 50})
    est = stats.saved_latency(times, "m", sampler="ddim", steps=50)   # 25, 20, 30 %: mean 25, sd 5
    # half-width t(0.975, 2) · 5 / √3 = 4.302653 · 2.886751 = 12.4206
    assert (est.value, est.lo, est.hi, est.n) == pytest.approx((25.0, 12.579, 37.421, 3), abs=1e-3)
    with pytest.raises(ValueError, match="no rounds"):
        stats.saved_latency(times, "other", sampler="ddim", steps=50)
