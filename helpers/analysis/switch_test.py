"""The causal switch test of notebook 05: prompt A for the first k steps, then B (and B then A).

If the text acts in the first steps, the final image shows what the *early* prompt asked for, even
when the late prompt conditions most of the steps. Per S-PromptSet pair (A, B) whose attributes
differ and per switch step k, both orders are generated from the same noise; a reader (the toy
world's attribute evaluator, or any classifier ``images -> [{attribute: value}]``) reads each final
image, and the reading is compared with the early and with the late prompt:

* against the ``"prompts"``: the values A and B name;
* against the ``"images"``: what the reader reads in the model's own images of A alone and B alone
  from the same seed (k = N and k = 0), which stays meaningful when the model draws a prompt imperfectly.

A comparison is usable only where the two references differ (else it cannot tell early from late).

* :func:`readings_table`: the long table :func:`helpers.verdicts.text_conveyed_early` reads;
* :func:`rate_curve`: per attribute, reference, order (and both pooled) and k, the rates of following
  the early and the late prompt with Wilson 95% intervals;
* :func:`crossover`: the first k at which the early prompt wins (pooled rate above a threshold),
  with a pair-bootstrap percentile interval.

No torch: this module loads with :mod:`helpers.verdicts`.

>>> table = readings_table({("A->B", 5): reads, ("A->B", 0): b_reads, ...}, truth_a, truth_b, steps=50)
>>> rate_curve(table).query("attribute == 'shape' and order == 'both orders'")
>>> crossover(table, "shape")          # e.g. 10 [5, 15] (n=60, pair bootstrap 95%)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import stats

#: The two orders: "A->B" = A for the first k steps, then B; "B->A" the reverse.
ORDERS: tuple[str, str] = ("A->B", "B->A")
#: The ``order`` label of the pooled rows of :func:`rate_curve`.
BOTH = "both orders"
#: Columns of :func:`readings_table` (``early`` / ``late``: 1.0 when the reading equals that prompt's value).
COLUMNS = ("pair", "order", "k", "steps", "attribute", "against", "early", "late")
REFERENCES = ("prompts", "images")


def readings_table(readings: Mapping[tuple[str, int], Sequence[Mapping[str, Any]]],
                   truth_a: Sequence[Mapping[str, Any]], truth_b: Sequence[Mapping[str, Any]], steps: int,
                   attributes: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per switched image, attribute and reference: does the reading follow the early or the late prompt?

    Args:
        readings: ``(order, k) -> one reading per pair`` (a dict attribute -> value), order in
            :data:`ORDERS`, ``0 <= k <= steps``. The pure images must be there: A alone is ``("A->B",
            steps)`` or ``("B->A", 0)``, B alone ``("A->B", 0)`` or ``("B->A", steps)``.
        truth_a, truth_b: per pair, the attribute values A and B name.
        steps: N, the number of sampling steps.
        attributes: which attributes to compare (default: every attribute the pure readings carry).

    Returns:
        Columns :data:`COLUMNS`; ``early`` and ``late`` are 1.0 / 0.0 (both 0: neither). Rows exist only
        where the two references differ and both are known.

    Raises:
        ValueError: for an unknown order, a k outside [0, steps], lengths that differ, or no pure images.
    """
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer (N), not {steps!r}.")
    bad = [key for key in readings if key[0] not in ORDERS or not 0 <= int(key[1]) <= steps]
    if bad:
        raise ValueError(f"readings keys must be (order in {ORDERS}, 0 <= k <= {steps}), got {bad[:3]}.")
    n = len(truth_a)
    lengths = {len(truth_b)} | {len(r) for r in readings.values()}
    if lengths != {n}:
        raise ValueError(f"every reading list and truth_b need one entry per pair ({n} in truth_a), "
                         f"got lengths {sorted(lengths)}.")
    pure_a = readings.get(("A->B", steps), readings.get(("B->A", 0)))
    pure_b = readings.get(("A->B", 0), readings.get(("B->A", steps)))
    if pure_a is None or pure_b is None:
        raise ValueError("the readings need A alone (k = N of A->B) and B alone (k = 0 of A->B) as references.")
    if attributes is None:
        attributes = sorted({a for r in list(pure_a) + list(pure_b) for a in r})
    rows = []
    for (order, k), reads in sorted(readings.items(), key=lambda kv: (ORDERS.index(kv[0][0]), int(kv[0][1]))):
        for i, r in enumerate(reads):
            refs = {"prompts": (truth_a[i], truth_b[i]), "images": (pure_a[i], pure_b[i])}
            for attr in attributes:
                for against, (ref_a, ref_b) in refs.items():
                    a, b = ref_a.get(attr), ref_b.get(attr)
                    if a is None or b is None or a == b:
                        continue
                    early, late = (a, b) if order == "A->B" else (b, a)
                    value = r.get(attr)
                    rows.append((i, order, int(k), int(steps), attr, against, float(value == early),
                                 float(value == late)))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _check(table: pd.DataFrame) -> pd.DataFrame:
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"The switch table lacks the columns {sorted(missing)} (see switch_test.readings_table).")
    return table.dropna(subset=["early", "late"])


def rate_curve(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per attribute, reference, order (each and :data:`BOTH` pooled) and k: the rates of following the early
    and the late prompt, Wilson intervals over the usable images.

    Columns: ``attribute, against, order, k, early, early_lo, early_hi, late, late_lo, late_hi, n``.
    """
    table = _check(table)
    rows = []
    for (attr, against), block in table.groupby(["attribute", "against"], sort=False):
        for order in ORDERS + (BOTH,):
            part = block if order == BOTH else block[block["order"] == order]
            for k, g in part.groupby("k"):
                e = stats.wilson(int(g["early"].sum()), len(g), level)
                lt = stats.wilson(int(g["late"].sum()), len(g), level)
                rows.append({"attribute": attr, "against": against, "order": order, "k": int(k), "early": e.value,
                             "early_lo": e.lo, "early_hi": e.hi, "late": lt.value, "late_lo": lt.lo,
                             "late_hi": lt.hi, "n": len(g)})
    return pd.DataFrame(rows, columns=["attribute", "against", "order", "k", "early", "early_lo", "early_hi", "late",
                                       "late_lo", "late_hi", "n"])


def _first_above(hits: np.ndarray, counts: np.ndarray, ks: np.ndarray, threshold: float) -> np.ndarray:
    """Per row of ``(..., k)`` counts, the first k whose rate hits / counts exceeds ``threshold`` (inf: none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        above = np.where(counts > 0, hits / counts, np.nan) > threshold
    return np.where(above.any(-1), ks[above.argmax(-1)].astype(float), np.inf)


def crossover(table: pd.DataFrame, attribute: str = "shape", against: str = "images", threshold: float = 0.5,
              level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> stats.Estimate:
    """The first switch step k at which more than ``threshold`` of the images (both orders pooled) follow the
    early prompt's ``attribute``, with a percentile interval from ``n_boot`` resamples of the pairs (a pair's
    images at every k and in both orders stay together). ``inf`` means never on the table's grid of k.

    Raises:
        ValueError: when the table has no usable row for ``attribute`` against ``against``.
    """
    table = _check(table)
    part = table[(table["attribute"] == attribute) & (table["against"] == against)]
    if part.empty:
        raise ValueError(f"The switch table has no usable rows for {attribute!r} against the {against}.")
    ks = np.sort(part["k"].unique())
    pairs = np.sort(part["pair"].unique())
    grouped = part.groupby(["pair", "k"])["early"]
    hits = grouped.sum().unstack("k").reindex(index=pairs, columns=ks).fillna(0).to_numpy(float)
    counts = grouped.count().unstack("k").reindex(index=pairs, columns=ks).fillna(0).to_numpy(float)
    point = float(_first_above(hits.sum(0), counts.sum(0), ks, threshold))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(pairs), np.full(len(pairs), 1 / len(pairs)), size=n_boot).astype(float)
    boot = _first_above(weights @ hits, weights @ counts, ks, threshold)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return stats.Estimate(point, float(lo), float(hi), len(pairs), "pair bootstrap", level)


def crossover_table(table: pd.DataFrame, threshold: float = 0.5, level: float = 0.95, n_boot: int = 10000,
                    seed: int = 0) -> pd.DataFrame:
    """:func:`crossover` for every attribute and reference of the table: ``attribute, against, crossover_k, lo,
    hi, n, method`` (``inf``: the early prompt never wins on the grid)."""
    table = _check(table)
    rows = []
    for (attr, against), _ in table.groupby(["attribute", "against"], sort=False):
        e = crossover(table, attr, against, threshold, level, n_boot, seed)
        rows.append({"attribute": attr, "against": against, "crossover_k": e.value, "lo": e.lo, "hi": e.hi, "n": e.n,
                     "method": e.method})
    return pd.DataFrame(rows, columns=["attribute", "against", "crossover_k", "lo", "hi", "n", "method"])
