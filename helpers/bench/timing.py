"""Timing you can trust (issue 24): interleaved order, median ratios with intervals, a monotonicity check
across k, the measured hardware limit beside the call-count limit, machine load, and the x̂0-space scale
of the guidance term. Pure numpy/pandas (no torch), so it loads and is tested without the model.

Units: ratios are plain numbers (t_method / t_baseline); saved latency, both limits and the gap are in
percent of the full-CFG run time, like the benchmark table's ``saved_latency`` and ``limit`` columns.

Intervals are over timing rounds (n = rounds): the median of per-round values with a percentile bootstrap
interval (``interval="bootstrap"``, the default) or the distribution-free order-statistic interval of the
median (``interval="order"``, binomial(n, 1/2)); see :func:`median_interval`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import pandas as pd

from ..stats import Estimate

__all__ = ["Interval", "RatioInterval", "interleaved_order", "median_interval", "ratio_interval",
           "ratio_table", "monotonicity_flags", "limit_hw", "limit_calls", "gap", "machine_load",
           "x0_guidance_scale", "x0_guidance_norm"]

T = TypeVar("T")
INTERVALS = ("bootstrap", "order")


#: A median over rounds with its interval (lo/hi NaN for n = 1): the project's one interval type.
Interval = Estimate


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}.")


def _times(x: Any, name: str) -> np.ndarray:
    """A 1-D float array of positive, finite times (a scalar becomes length 1)."""
    arr = np.atleast_1d(np.asarray(x, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty number or 1-D array, got shape {np.shape(x)}.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must hold positive finite times, got {arr.tolist()}.")
    return arr


def _same_length(arrays: dict[str, np.ndarray]) -> int:
    """The common number of rounds; length-1 arrays (scalars) broadcast."""
    lengths = {len(a) for a in arrays.values() if len(a) > 1}
    if len(lengths) > 1:
        raise ValueError("the per-round arrays must have the same length, got "
                         + ", ".join(f"{k}: {len(v)}" for k, v in arrays.items()) + ".")
    return lengths.pop() if lengths else 1


def interleaved_order(methods: Sequence[T], repeats: int, seed: int = 0) -> list[tuple[int, T]]:
    """The execution order ``[(round, method), ...]``: every method once per round, shuffled in each round.

    Round r is ``rng.permutation(len(methods))`` of ``np.random.default_rng(seed)`` drawn in round order, the
    order :func:`helpers.bench.acceleration.time_methods` runs today, so drift (thermal, load) hits every
    method alike and each method meets the baseline in every round.
    """
    methods = list(methods)
    if not methods:
        raise ValueError("interleaved_order needs at least one method, got none.")
    if any(methods[i] == methods[j] for i in range(len(methods)) for j in range(i)):
        raise ValueError(f"methods must be distinct, got {methods!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
    rng = np.random.default_rng(seed)
    return [(r, methods[i]) for r in range(int(repeats)) for i in rng.permutation(len(methods))]


def _order_ranks(n: int, level: float) -> tuple[int, int, float]:
    """1-based ranks (j, n + 1 - j) of the order-statistic interval of the median and its exact coverage:
    the largest j with P(Bin(n, 1/2) <= j - 1) <= (1 - level) / 2, else j = 1 (min, max)."""
    tail = [sum(math.comb(n, i) for i in range(j)) / 2 ** n for j in range(1, n // 2 + 1)]
    j = max([j for j, t in enumerate(tail, start=1) if t <= (1 - level) / 2], default=1)
    return j, n + 1 - j, 1 - 2 * tail[j - 1]


def median_interval(values: Sequence[float] | np.ndarray, level: float = 0.95, n_boot: int = 10_000,
                    seed: int = 0, interval: str = "bootstrap") -> Interval:
    """The median of per-round values with its interval over rounds.

    ``"bootstrap"``: rounds resampled with replacement ``n_boot`` times, the (α/2, 1 − α/2) percentiles of the
    resampled medians. ``"order"``: the order statistics (x_(j), x_(n+1−j)) with the largest j whose
    binomial(n, 1/2) coverage is ≥ level (distribution-free); when n is too small for that (n ≤ 5 at 95%)
    it is (min, max) and the method string states the coverage reached. n = 1: lo = hi = NaN.
    """
    _check_level(level)
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}.")
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"median_interval needs a non-empty array of finite values, got {x.tolist()}.")
    n, med = len(x), float(np.median(x))
    if n == 1:
        return Interval(med, math.nan, math.nan, 1, "one measurement", level)
    if interval == "order":
        j, k, cover = _order_ranks(n, level)
        s = np.sort(x)
        name = "order statistics" + ("" if cover >= level else f" (coverage only {cover:.1%}: too few rounds)")
        return Interval(med, float(s[j - 1]), float(s[k - 1]), n, name, level)
    rng = np.random.default_rng(seed)
    meds = np.median(x[rng.integers(0, n, size=(int(n_boot), n))], axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return Interval(med, float(lo), float(hi), n, "percentile bootstrap", level)


@dataclass(frozen=True)
class RatioInterval:
    """Median same-round ratio t_method / t_baseline and saved latency 100 · (1 − ratio) in %, both with
    their interval (the saved interval is the ratio interval mapped through 1 − r, so its ends swap)."""

    ratio: Interval
    saved: Interval

    def row(self) -> dict[str, float]:
        """The benchmark table's columns: ``ratio``, ``ratio_lo``, ``ratio_hi``, ``saved_latency``,
        ``saved_lo``, ``saved_hi``, ``n_rounds``."""
        return {"ratio": self.ratio.value, "ratio_lo": self.ratio.lo, "ratio_hi": self.ratio.hi,
                "saved_latency": self.saved.value, "saved_lo": self.saved.lo, "saved_hi": self.saved.hi,
                "n_rounds": self.ratio.n}


def ratio_interval(times_method: Sequence[float] | np.ndarray, times_baseline: Sequence[float] | np.ndarray,
                   level: float = 0.95, n_boot: int = 10_000, seed: int = 0, interval: str = "bootstrap"
                   ) -> RatioInterval:
    """Per round i (paired: same round), r_i = t_method[i] / t_baseline[i]; the median ratio with its interval
    (:func:`median_interval`: percentile bootstrap over rounds by default, or ``interval="order"``), and
    saved latency 100 · (1 − median r) % with [100 · (1 − hi), 100 · (1 − lo)].
    """
    m, b = _times(times_method, "times_method"), _times(times_baseline, "times_baseline")
    if len(m) != len(b):
        raise ValueError(f"times_method has {len(m)} rounds but times_baseline has {len(b)}: pair them by round.")
    r = median_interval(m / b, level, n_boot, seed, interval)
    saved = Interval(100 * (1 - r.value), 100 * (1 - r.hi), 100 * (1 - r.lo), r.n, r.method, level)
    return RatioInterval(r, saved)


def ratio_table(times: pd.DataFrame, baseline: str = "full CFG", by: Sequence[str] = ("sampler", "steps"),
                level: float = 0.95, n_boot: int = 10_000, seed: int = 0, interval: str = "bootstrap") -> pd.DataFrame:
    """:func:`ratio_interval` for every method of a ``times.csv``-style table (columns ``round, method,
    seconds`` and ``by``): one row per group and method with ``median_s`` and :meth:`RatioInterval.row`'s
    columns. Rounds where the method or the baseline is missing are left out of that method's pairs."""
    need = {"round", "method", "seconds", *by}
    if not need <= set(times.columns):
        raise ValueError(f"times lacks the columns {sorted(need - set(times.columns))}.")
    rows = []
    for key, block in (times.groupby(list(by)) if by else [((), times)]):
        wide = block.pivot(index="round", columns="method", values="seconds")
        if baseline not in wide:
            raise ValueError(f"times has no {baseline!r} rounds for {dict(zip(by, np.atleast_1d(key)))}.")
        for method in wide.columns:
            pair = pd.concat({"m": wide[method], "b": wide[baseline]}, axis=1).dropna()
            res = ratio_interval(pair["m"], pair["b"], level, n_boot, seed, interval)
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "method": method,
                         "median_s": float(pair["m"].median()), **res.row()})
    return pd.DataFrame(rows)


def monotonicity_flags(table: pd.DataFrame, group_cols: Sequence[str], k_col: str, value_col: str, lo_col: str,
                       hi_col: str, increasing: bool = True, flag_col: str = "monotone") -> pd.DataFrame:
    """A copy of ``table`` with ``flag_col``: within each group ordered by k, each row's step from the row at
    the previous k. ``"ok"``: the value moves the expected way (or is equal; the first k of a group);
    ``"within noise"``: it moves the wrong way but the two intervals [lo, hi] overlap; ``"VIOLATION"``: the
    wrong way and the intervals are disjoint. ``increasing``: the value should grow with k (saved latency of
    text off after k shrinks with k: pass ``increasing=False``).
    """
    cols = [*group_cols, k_col, value_col, lo_col, hi_col]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}.")
    k, v, lo, hi = table[[k_col, value_col, lo_col, hi_col]].astype(float).to_numpy().T
    if not np.all(np.isfinite([k, v, lo, hi])):
        raise ValueError(f"{k_col}, {value_col}, {lo_col} and {hi_col} must be finite in every row (filter first).")
    if np.any(lo > hi):
        raise ValueError(f"{lo_col} exceeds {hi_col} in some rows: the intervals are malformed.")
    flags = np.full(len(table), "ok", dtype=object)
    groups = (table.groupby(list(group_cols), sort=False, dropna=False).indices if group_cols
              else {(): np.arange(len(table))})
    for key, pos in groups.items():
        if len(np.unique(k[pos])) < len(pos):
            raise ValueError(f"group {key!r} has repeated {k_col} values: add the column that separates them.")
        pos = pos[np.argsort(k[pos], kind="stable")]
        for p, q in zip(pos[:-1], pos[1:]):
            if v[q] < v[p] if increasing else v[q] > v[p]:
                flags[q] = "within noise" if (lo[q] <= hi[p] and lo[p] <= hi[q]) else "VIOLATION"
    return table.assign(**{flag_col: flags})


def _nonneg(a: float, name: str) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)) or not math.isfinite(a) or a < 0:
        raise ValueError(f"{name} must be a finite number ≥ 0, got {a!r}.")
    return float(a)


def _hw(t_B: Any, t_2B: Any, a: float, T_full: Any, T_method: Any | None, level: float, n_boot: int, seed: int,
        interval: str) -> Interval:
    """Per round 100 · (a · (t_2B − t_B) − (T_full − T_method)) / T_full (no T_method: the limit alone)."""
    arr = {"t_B": _times(t_B, "t_B"), "t_2B": _times(t_2B, "t_2B"), "T_full": _times(T_full, "T_full")}
    if T_method is not None:
        arr["T_method"] = _times(T_method, "T_method")
    n, a = _same_length(arr), _nonneg(a, "a")
    saved = arr["T_full"] - arr["T_method"] if T_method is not None else 0.0
    per = 100 * (a * (arr["t_2B"] - arr["t_B"]) - saved) / arr["T_full"] * np.ones(n)
    return median_interval(per, level, n_boot, seed, interval)


def limit_hw(t_B: Any, t_2B: Any, a: float, T_full: Any, level: float = 0.95, n_boot: int = 10_000,
             seed: int = 0, interval: str = "bootstrap") -> Interval:
    """The measured hardware limit of dropping the text pass for the last ``a`` steps, in % of the run:
    100 · a · (t_2B − t_B) / T_full. t_B, t_2B: seconds per denoiser call at batch B and 2B, timed in the
    same run; T_full: seconds of the whole full-CFG run. Scalars give the value (lo = hi = NaN); per-round
    arrays (scalars broadcast) give the median of the per-round limits with its interval over rounds.
    Negative when batch 2B is not slower than B (noise): reported, not clipped.
    """
    return _hw(t_B, t_2B, a, T_full, None, level, n_boot, seed, interval)


def limit_calls(evals: float, N: int) -> float:
    """The call-count limit in %: 100 · (1 − evals / 2N), ``evals`` denoiser evaluations per image of N
    steps (full CFG: 2N, so 0%); the saving if the denoiser were the only cost and scaled linearly."""
    evals = _nonneg(evals, "evals")
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive integer number of steps, got {N!r}.")
    if evals > 2 * N:
        raise ValueError(f"evals ({evals:g}) exceeds 2N = {2 * N}: not a CFG run of {N} steps.")
    return 100 * (1 - evals / (2 * N))


def gap(t_B: Any, t_2B: Any, a: float, T_full: Any, T_method: Any, level: float = 0.95, n_boot: int = 10_000,
        seed: int = 0, interval: str = "bootstrap") -> Interval:
    """limit_hw − saved, in percentage points (positive: the method is below the hardware's limit), paired
    by round: per round 100 · (a · (t_2B − t_B) − (T_full − T_method)) / T_full, its median and interval
    over rounds (the median of differences, not the difference of the two medians). T_method: seconds of
    the method's run in the same rounds as T_full.
    """
    return _hw(t_B, t_2B, a, T_full, T_method, level, n_boot, seed, interval)


def machine_load() -> dict[str, float | int | None]:
    """For the run's metadata: 1/5/15-minute load average (``os.getloadavg``; None where the OS has none),
    ``cpu_count`` (``os.cpu_count``) and ``cpus_usable`` (this process's CPU affinity, where known)."""
    try:
        l1, l5, l15 = os.getloadavg()
    except (OSError, AttributeError):
        l1 = l5 = l15 = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"load_1m": l1, "load_5m": l5, "load_15m": l15, "cpu_count": os.cpu_count(), "cpus_usable": usable}


def _alphas(alphas_cumprod_t: Any) -> np.ndarray:
    abar = np.asarray(alphas_cumprod_t, dtype=np.float64)
    if abar.size == 0 or not np.all(np.isfinite(abar)) or np.any(abar <= 0) or np.any(abar > 1):
        raise ValueError(f"alphas_cumprod_t must be non-empty with every ᾱ_t in (0, 1], got {abar.tolist()}.")
    return abar


def x0_guidance_scale(alphas_cumprod_t: Any) -> np.ndarray | float:
    """√((1 − ᾱ_t) / ᾱ_t): how much a change of ε moves x̂0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, in the
    shape of the input (a float for a scalar)."""
    abar = _alphas(alphas_cumprod_t)
    s = np.sqrt((1 - abar) / abar)
    return float(s) if s.ndim == 0 else s


def x0_guidance_norm(eps_c_minus_u_norm: Any, alphas_cumprod_t: Any) -> np.ndarray | float:
    """The guidance term's size on the predicted clean image, ‖ε_c − ε_u‖ · √((1 − ᾱ_t) / ᾱ_t) (the
    adaptive stop's x̂0-space criterion): arrays of one shape (per step), or either one a scalar."""
    abar = _alphas(alphas_cumprod_t)
    norm = np.asarray(eps_c_minus_u_norm, dtype=np.float64)
    if norm.size == 0 or not np.all(np.isfinite(norm)) or np.any(norm < 0):
        raise ValueError(f"eps_c_minus_u_norm must be non-empty, finite and ≥ 0, got {norm.tolist()}.")
    if norm.ndim and abar.ndim and norm.shape != abar.shape:
        raise ValueError(f"eps_c_minus_u_norm has shape {norm.shape} but alphas_cumprod_t has {abar.shape}.")
    out = norm * np.sqrt((1 - abar) / abar)
    return float(out) if np.ndim(out) == 0 else out
