"""Notebook 04's ablations and controls of the switched-[EOS] prompts, on the first ``n_ablation`` pairs of an
:class:`helpers.analysis.eos_study.EOSStudy` (same seeds as its A, B and switched images).

* :func:`k_ablation`: the number k of switched [EOS] embeddings, taken first (the paper's), last or at random;
* :func:`replacement`: zero / random vectors in place of the semantic or [EOS]-class embeddings, on the
  switched prompts and on the original prompts A (the paper's table);
* :func:`kv_ablation`: B's [EOS] in the keys only, the values only, or both; the KL of the attention per step;
* :func:`class_only`: [SOS]-only and [EOS]-only conditionings;
* :func:`controls`: every condition's rates of following B and staying A with Wilson intervals, with the
  two controls of the [EOS]-class switch: only the real [EOS], only the padding.

Each returns its tables (``.tables``: file stem -> table, for :func:`helpers.analysis.eos_study.save`).

>>> k = k_ablation(study); rep = replacement(study, "source"); kv = kv_ablation(study)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..text import surgery
from . import alignment, eos_controls
from .eos_study import EOSStudy

__all__ = ["KAblation", "Replacement", "KVAblation", "ClassOnly", "Controls", "k_ablation", "replacement",
           "kv_ablation", "class_only", "controls"]


# ------------------------------------------------------------------------------ 4a: k
@dataclasses.dataclass
class KAblation:
    """The number k of switched [EOS] embeddings, in three orders (:func:`k_ablation`).

    ``first``: condition (``"0"``, each k, ``"all"``) -> score table of the first-k switch (the paper's);
    ``orders``: ``(order, k)`` -> score table for every order (k = 0 and ``"all"`` shared).
    """

    first: dict[str, pd.DataFrame]
    orders: dict[tuple[str, str], pd.DataFrame]

    @property
    def summary(self) -> pd.DataFrame:
        """``alignment.summarize_conditions`` of the first-k tables (index condition, metric)."""
        return alignment.summarize_conditions(self.first)

    @property
    def orders_summary(self) -> pd.DataFrame:
        """``alignment.summarize_conditions`` of every (order, k), conditions ``"<order> k=<k>"``, with the
        columns ``order`` and ``k`` first (k = 0 and ``"all"`` repeated in each order)."""
        out = alignment.summarize_conditions({f"{order} k={k}": df for (order, k), df in self.orders.items()})
        names = out.index.get_level_values("condition")
        out.insert(0, "order", [c.split(" k=")[0] for c in names])
        out.insert(1, "k", [c.split(" k=")[1] for c in names])
        return out

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {"ablation_k": self.summary, "ablation_k_orders": self.orders_summary}


def k_ablation(study: EOSStudy, orders: Sequence[str] = eos_controls.ORDERS) -> KAblation:
    """Only k of the [EOS]-class embeddings come from B, the rest stay A's (k = 0: prompt A; ``"all"``: the
    switch). ``"first"``: the first k slots (sweeps ``k=<k>``); ``"last"``: the last k (``last k=<k>``);
    ``"random"``: k slots drawn per pair (``random k=<k>``, :func:`helpers.analysis.eos_controls.k_order_prompts`
    with the study's seed)."""
    if any(order not in eos_controls.ORDERS for order in orders):
        raise ValueError(f"orders must be among {eos_controls.ORDERS}, not {tuple(orders)!r}")
    n = study.settings.n_ablation
    A, B = study.A[:n], study.B[:n]
    k_tables = {"0": study.table_of("A")}
    for k in study.settings.k_values:
        prompts = [surgery.switch_eos(a, b, k=min(k, len(a.eos_class))) for a, b in zip(A, B)]
        k_tables[str(k)] = study.condition(prompts, f"k={k}")
    k_tables["all"] = study.table_of("switched")
    by_order = {}
    for order in orders:
        by_order[(order, "0")] = k_tables["0"]
        for k in study.settings.k_values:
            by_order[(order, str(k))] = k_tables[str(k)] if order == "first" else study.condition(
                eos_controls.k_order_prompts(A, B, k, order, seed=study.seed), f"{order} k={k}")
        by_order[(order, "all")] = k_tables["all"]
    return KAblation(k_tables, by_order)


# ------------------------------------------------------------------------------ 4b: zero / random
@dataclasses.dataclass
class Replacement:
    """Zero or random replacement of the semantic or [EOS]-class embeddings of one prompt set (:func:`replacement`)."""

    on: str
    tables_by_condition: dict[str, pd.DataFrame]

    @property
    def summary(self) -> pd.DataFrame:
        return alignment.summarize_conditions(self.tables_by_condition)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {"ablation_replacement" if self.on == "switched" else "ablation_replacement_source": self.summary}


def replacement(study: EOSStudy, on: str = "switched") -> Replacement:
    """Replace the semantic or the [EOS]-class embeddings by zero vectors or by random vectors of the same norms
    (:func:`helpers.text.surgery.replace_tokens`, draws from one generator seeded with the study's seed).

    ``on="switched"``: in the switched prompts (removes what survives from A, or B's [EOS]); ``"source"``: in
    the original prompts A (the paper's table), sweeps prefixed ``"A: "``. The first row is the prompt set itself.
    """
    if on not in ("switched", "source"):
        raise ValueError(f"on must be 'switched' or 'source', not {on!r}")
    n = study.settings.n_ablation
    g = torch.Generator().manual_seed(study.seed)
    base = study.S[:n] if on == "switched" else study.A[:n]
    rep_tables = {on: study.table_of("switched" if on == "switched" else "A")}
    for which in ("semantic", "eos"):
        for mode in ("zero", "random"):
            prompts = [surgery.replace_tokens(e, which, mode, g) for e in base]
            name = f"{'semantic' if which == 'semantic' else '[EOS] class'} -> {mode}"
            rep_tables[name] = study.condition(prompts, name if on == "switched" else f"A: {name}")
    return Replacement(on, rep_tables)


# ------------------------------------------------------------------------------ 4c: K / V
@dataclasses.dataclass
class KVAblation:
    """B's [EOS] in the keys only, the values only, or both, and the KL of the attention (:func:`kv_ablation`)."""

    tables_by_condition: dict[str, pd.DataFrame]
    kl: Any  # helpers.hooks.kv.AttentionKL of the keys-only run
    kl_steps: eos_controls.KLSteps
    kl_by_step: pd.DataFrame  # kl_steps.table(): per step, mean over prompts with a t interval

    @property
    def summary(self) -> pd.DataFrame:
        return alignment.summarize_conditions(self.tables_by_condition)

    @property
    def kl_result(self) -> dict[str, float]:
        return self.kl.result()

    @property
    def tables(self) -> dict[str, Any]:
        return {"ablation_kv": self.summary, "kl_keys": self.kl_result, "kl_keys_per_layer": self.kl.layer_table(),
                "kl_keys_by_step": self.kl_by_step}

    def kl_text(self) -> str:
        overall = self.kl_steps.overall()
        return ("KL(p_A || p_switched keys) = {kl_substituted:.4f} nats; KL(p_A || uniform) = {kl_uniform:.4f}; "
                "KL(p_switched || uniform) = {kl_uniform_substituted:.4f}".format(**self.kl_result)
                + "\nper prompt, mean over prompts (t 95%): "
                + "; ".join(f"{eos_controls.KL_LABELS[k]} {e}" for k, e in overall.items()))


def kv_ablation(study: EOSStudy) -> KVAblation:
    """The pipeline conditioned on A, the cross-attention keys and/or values computed from the switched prompt
    (:mod:`helpers.hooks.kv`; sweeps ``"K only"``, ``"V only"``); the keys-only run also measures the KL between
    the attention distributions over tokens with A's and with the switched keys, per step
    (:func:`helpers.analysis.eos_controls.generate_substituted_by_step`)."""
    from ..hooks.kv import generate_substituted

    study._require_references()
    n = study.settings.n_ablation
    A, S = study.A[:n], study.S[:n]
    kv_tables = {"K+V (switched)": study.table_of("switched")}
    kv_args = dict(seed=study.seed, num_inference_steps=study.settings.steps, guidance_scale=study.settings.guidance,
                   batch_size=study.batch_size)
    sweep = study.sweep_dir or (lambda name: None)
    images_K, kl, kl_steps = eos_controls.generate_substituted_by_step(study.pipe, A, keys=S, out_dir=sweep("K only"),
                                                                       desc="K only", **kv_args)
    kv_tables["K only"] = study.score(images_K)
    images_V, _ = generate_substituted(study.pipe, A, values=S, out_dir=sweep("V only"), desc="V only", **kv_args)
    kv_tables["V only"] = study.score(images_V)
    kv_tables["none (A)"] = study.table_of("A")
    return KVAblation(kv_tables, kl, kl_steps, kl_steps.table())


# ------------------------------------------------------------------------------ 4d: one class only
@dataclasses.dataclass
class ClassOnly:
    """[SOS]-only and [EOS]-only conditionings of the ablation pairs' A (:func:`class_only`)."""

    tables_by_condition: dict[str, pd.DataFrame]
    images_eos: np.ndarray
    images_sos: np.ndarray | None

    @property
    def summary(self) -> pd.DataFrame:
        return alignment.summarize_conditions(self.tables_by_condition)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {"ablation_class_only": self.summary}


def class_only(study: EOSStudy) -> ClassOnly:
    """The conditioning cut down to the prompt's [SOS] embedding alone or its [EOS] class alone (sweeps
    ``"[SOS] only"``, ``"[EOS] only"``); no [SOS]-only images where the tokenizer has no [SOS]."""
    study._require_references()
    n = study.settings.n_ablation
    A = study.A[:n]
    if A[0].sos:
        images_sos = study.gen([surgery.sos_only(a) for a in A], "[SOS] only")
    else:
        images_sos = None
        print("This model's tokenizer has no [SOS]: no [SOS]-only images.")
    images_eos = study.gen([surgery.eos_only(a) for a in A], "[EOS] only")
    class_tables = {"full prompt A": study.table_of("A"), "[EOS] only": study.score(images_eos)}
    if images_sos is not None:
        class_tables["[SOS] only"] = study.score(images_sos)
    return ClassOnly(class_tables, images_eos, images_sos)


# ------------------------------------------------------------------------------ controls
@dataclasses.dataclass
class Controls:
    """Every switch and replacement condition of the ablation pairs, with its follow rates (:func:`controls`)."""

    tables_by_condition: dict[str, pd.DataFrame]
    rates: pd.DataFrame  # eos_controls.follow_rates

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {"controls": self.rates.set_index(["condition", "comparison"])}

    def text(self, comparison: str | None = None) -> str:
        """The headline controls on one line (``comparison``: ``"images"`` with the evaluator, else ``"clip"``)."""
        comparison = comparison or ("images" if "images" in set(self.rates["comparison"]) else "clip")
        return eos_controls.rates_text(self.rates, comparison, ["[EOS] class (all)", "real [EOS] only", "padding only"])


def controls(study: EOSStudy, k: KAblation, switched: Replacement, source: Replacement,
             attribute: str = "shape") -> Controls:
    """Which part of the [EOS] class carries B's object, on the ablation pairs (same seeds as everything else).

    Conditions: prompt A; the whole [EOS] class switched; only the real [EOS] (``switch_eos(part="eos")``,
    the same embeddings as the first k = 1); only the padding (``part="padding"``, sweep ``"padding only"``);
    each k in each order (``k``); the zero / random replacements on A (``source``) and on the switched prompts
    (``switched``). Rates of following B / staying A with Wilson intervals
    (:func:`helpers.analysis.eos_controls.follow_rates`).
    """
    n = study.settings.n_ablation
    A, B = study.A[:n], study.B[:n]
    tables = {"A (nothing switched)": study.table_of("A"), "[EOS] class (all)": study.table_of("switched"),
              "real [EOS] only": study.condition([surgery.switch_eos(a, b, part="eos") for a, b in zip(A, B)],
                                                 "real [EOS] only"),
              "padding only": study.condition([surgery.switch_eos(a, b, part="padding") for a, b in zip(A, B)],
                                              "padding only")}
    for (order, kk), df in k.orders.items():
        if kk not in ("0", "all"):
            tables[f"{order} k={kk}"] = df
    for rep, prefix in ((source, "A"), (switched, "switched")):
        for name, df in list(rep.tables_by_condition.items())[1:]:
            tables[f"{prefix}: {name}"] = df
    return Controls(tables, eos_controls.follow_rates(tables, attribute))
