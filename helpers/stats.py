"""Interval estimates for the notebooks' headline numbers (pure numpy + scipy, no torch).

Which method goes with which number (the evidence guide, EVIDENCE.md §3):

* a proportion (follow rates, accuracies out of n images): :func:`wilson`, the Wilson score interval;
* a mean of per-unit values (F1 over tokens, attention mass over prompts): :func:`mean_ci`, a
  Student-t interval;
* a difference of two conditions on the same seeds: :func:`paired_t` (the default of every rule in
  :mod:`helpers.verdicts`), with :func:`paired_bootstrap` offered as a distribution-free check;
* a ratio of two means on the same units (relative F1): :func:`ratio_bootstrap`;
* the chance level of a mask overlap: :func:`random_mask_f1`;
* saved latency from the benchmark's same-round timings (a pandas table): :func:`saved_latency`.

Every function returns an :class:`Estimate`, which prints as ``0.983 [0.911, 0.997] (n=60, Wilson 95%)``
and unpacks as ``value, lo, hi = estimate``.

This module imports nothing from the package, so it can be loaded on its own by file path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import stats as _sp

__all__ = ["Estimate", "wilson", "mean_ci", "paired_t", "paired_bootstrap", "ratio_bootstrap", "random_mask_f1",
           "saved_latency"]


def _fmt(x: float) -> str:
    """Three significant digits, no exponent for the magnitudes the notebooks print."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


@dataclass(frozen=True)
class Estimate:
    """A headline number with its interval.

    Attributes:
        value: the point estimate.
        lo, hi: the interval's bounds.
        n: the number of independent units behind it (images, prompts, tokens, rounds).
        method: how the interval was computed, e.g. ``"Wilson"``, ``"paired t"``.
        level: the interval's coverage (0.95 for a 95% interval).
        unit: printed after the value (e.g. ``" pp"``, ``"%"``); empty by default.
    """

    value: float
    lo: float
    hi: float
    n: int
    method: str
    level: float = 0.95
    unit: str = ""

    def __iter__(self) -> Iterator[float]:
        """``value, lo, hi = estimate``."""
        return iter((self.value, self.lo, self.hi))

    def __str__(self) -> str:
        return (f"{_fmt(self.value)}{self.unit} [{_fmt(self.lo)}, {_fmt(self.hi)}] "
                f"(n={self.n}, {self.method} {self.level * 100:.0f}%)")

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.hi - self.lo) / 2

    def scaled(self, factor: float, unit: str | None = None) -> "Estimate":
        """The same estimate multiplied by a positive ``factor`` (e.g. 100 for percent)."""
        if factor <= 0:
            raise ValueError(f"scaled() needs a positive factor, got {factor}.")
        return Estimate(self.value * factor, self.lo * factor, self.hi * factor, self.n, self.method, self.level,
                        self.unit if unit is None else unit)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.95), got {level}.")


def _vector(x: Sequence[float] | np.ndarray, name: str, min_n: int) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN: drop or impute those units before computing an interval.")
    if arr.size < min_n:
        raise ValueError(f"{name} needs at least {min_n} values for an interval, got {arr.size}.")
    return arr


def wilson(k: int, n: int, level: float = 0.95) -> Estimate:
    """Wilson score interval for a proportion k / n.

    With z the normal quantile of ``(1 + level) / 2`` and p = k / n::

        centre = (p + z²/2n) / (1 + z²/n),  half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)

    It stays inside [0, 1] and is informative at k = 0 (lower bound 0, upper bound z²/(n + z²))
    and at k = n (upper bound 1), where the Wald interval collapses to a point.

    Returns:
        An :class:`Estimate` (value p, method ``"Wilson"``); unpack it as ``p, lo, hi``.

    Raises:
        ValueError: when n is not a positive integer or k is not an integer in [0, n].
    """
    _check_level(level)
    if int(n) != n or n <= 0:
        raise ValueError(f"A Wilson interval needs a positive whole number of trials n, got n={n}.")
    if int(k) != k or not 0 <= k <= n:
        raise ValueError(f"A Wilson interval needs a whole number of successes k between 0 and n={n}, got k={k}.")
    k, n = int(k), int(n)
    z = float(_sp.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return Estimate(p, lo, hi, n, "Wilson", level)


def mean_ci(x: Sequence[float] | np.ndarray, level: float = 0.95) -> Estimate:
    """Student-t interval of a mean: mean ± t_{n-1} · s / √n (s: sample standard deviation, ddof=1).

    Used for the mean F1 over tokens (notebook 01) and mean attention mass over prompts (03).
    When every value is equal the interval is the point itself.
    """
    _check_level(level)
    arr = _vector(x, "mean_ci input", 2)
    n = arr.size
    m = float(arr.mean())
    half = float(_sp.t.ppf(0.5 + level / 2, n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return Estimate(m, m - half, m + half, n, "t", level)



def mean_ci_or_nan(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)`` of :func:`mean_ci` over the non-NaN values; with fewer than two values the
    interval is NaN (and the mean too when there are none), for tables that must not raise."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return (float(x[0]) if x.size else math.nan), math.nan, math.nan, int(x.size)
    e = mean_ci(x, level)
    return e.value, e.lo, e.hi, e.n

def _differences(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    a_, b_ = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a_.shape != b_.shape:
        raise ValueError(f"Paired samples need the same number of units, got {a_.size} and {b_.size}.")
    return _vector(a_ - b_, "the paired differences", 2)


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95) -> Estimate:
    """Mean of the paired differences a − b with a Student-t interval (n − 1 degrees of freedom).

    ``a[i]`` and ``b[i]`` must be the same unit (prompt and seed) under two conditions. This is the
    interval every rule in :mod:`helpers.verdicts` uses for differences; see :func:`paired_bootstrap`
    for a distribution-free alternative.
    """
    est = mean_ci(_differences(a, b), level)
    return Estimate(est.value, est.lo, est.hi, est.n, "paired t", level)


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95,
                     n_boot: int = 10000, seed: int = 0) -> Estimate:
    """Percentile bootstrap of the mean paired difference a − b (units resampled with replacement).

    Deterministic for a given ``seed`` (numpy ``default_rng``). Offered as a check on
    :func:`paired_t`; the rules do not use it by default. With few units (n < ~15) and discrete
    scores the percentile interval is too narrow: prefer the t interval there.
    """
    _check_level(level)
    if n_boot < 100:
        raise ValueError(f"n_boot should be at least 100 for a percentile interval, got {n_boot}.")
    d = _differences(a, b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return Estimate(float(d.mean()), float(lo), float(hi), d.size, "paired bootstrap", level)


def ratio_bootstrap(num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray, level: float = 0.95,
                    n_boot: int = 10000, seed: int = 0) -> Estimate:
    """mean(num) / mean(den) over the same units, with a percentile bootstrap interval.

    Units (e.g. object tokens) are resampled jointly, so num[i] stays paired with den[i]. Used for
    the relative F1 of notebook 01 (F1 at step N/5 over F1 at the last step, a ratio of means over
    all tokens rather than a mean of per-token ratios, which explodes when one denominator is near 0).
    Resamples whose denominator is 0 are dropped; if more than half are, a ValueError is raised.
    """
    _check_level(level)
    n_, d_ = np.asarray(num, dtype=np.float64).ravel(), np.asarray(den, dtype=np.float64).ravel()
    if n_.shape != d_.shape:
        raise ValueError(f"ratio_bootstrap needs paired arrays of one length, got {n_.size} and {d_.size}.")
    n_, d_ = _vector(n_, "the numerator", 2), _vector(d_, "the denominator", 2)
    if d_.mean() == 0:
        raise ValueError("The denominator's mean is 0: a ratio of means is undefined here.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_.size, size=(n_boot, n_.size))
    top, bottom = n_[idx].mean(axis=1), d_[idx].mean(axis=1)
    ok = bottom != 0
    if ok.mean() < 0.5:
        raise ValueError("Most bootstrap resamples have a zero denominator: the ratio is not estimable.")
    lo, hi = np.quantile(top[ok] / bottom[ok], [0.5 - level / 2, 0.5 + level / 2])
    return Estimate(float(n_.mean() / d_.mean()), float(lo), float(hi), n_.size, "bootstrap", level)


def random_mask_f1(reference: np.ndarray, area: int | None = None, n_draws: int = 200, seed: int = 0) -> float:
    """Chance F1: mean F1 against ``reference`` of masks of ``area`` pixels placed uniformly at random.

    ``area`` defaults to the reference's own area A. Then precision = recall = TP / A for every
    draw, so the expected F1 is exactly A / (number of pixels): the object's area fraction. The
    Monte-Carlo mean (``n_draws`` draws, numpy ``default_rng(seed)``) converges to it.
    """
    ref = np.asarray(reference, dtype=bool).ravel()
    total, a_ref = ref.size, int(ref.sum())
    area = a_ref if area is None else int(area)
    if total == 0 or a_ref == 0:
        raise ValueError("The reference mask is empty: the chance F1 of an empty object is undefined.")
    if not 0 < area <= total:
        raise ValueError(f"area must be between 1 and the mask's {total} pixels, got {area}.")
    rng = np.random.default_rng(seed)
    f1 = np.empty(n_draws)
    for i in range(n_draws):
        tp = int(ref[rng.choice(total, size=area, replace=False)].sum())
        f1[i] = 2 * tp / (area + a_ref)
    return float(f1.mean())


def saved_latency(times: Any, method: str, *, sampler: str, steps: int,
                  baseline: str = "full CFG", level: float = 0.95) -> Estimate:
    """Saved latency in % of one method against full CFG, from the benchmark's ``times.csv``.

    Per round, 100 · (1 − t_method / t_baseline) in the same round (columns ``round, method,
    seconds, sampler, steps``); mean over rounds with a t interval (n = rounds). The benchmark's
    own table reports the median of the same ratios.
    """
    block = times[(times["sampler"].astype(str).str.lower() == sampler.lower()) & (times["steps"] == steps)]
    wide = block.pivot(index="round", columns="method", values="seconds")
    if method not in wide or baseline not in wide:
        raise ValueError(f"times has no rounds of {method!r} and {baseline!r} for {sampler} with {steps} steps.")
    saved = 100 * (1 - wide[method] / wide[baseline])
    est = mean_ci(saved.dropna().to_numpy(), level)
    return Estimate(est.value, est.lo, est.hi, est.n, "t over rounds", level, "%")
