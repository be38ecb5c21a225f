"""The controls of the switched-[EOS] experiment (notebook 04): which positions, which prompts, which steps.

The paper switches the whole [EOS] class (the real [EOS] and every padding copy) and reads the image.
These measurements separate the explanations (EVIDENCE.md §4):

* **which positions** -- :func:`switch_slots` takes B's [EOS]-class embeddings at any set of slots
  (slot 0 = the real [EOS], slots 1.. = padding), with the alignment rule of
  :func:`helpers.text.surgery.switch_eos`; :func:`order_slots` picks ``k`` slots in the ``"first"``,
  ``"last"`` or ``"random"`` order, :func:`k_order_prompts` for a list of pairs (random slots drawn per
  pair from ``(seed, pair, k)``). Padding-only and real-[EOS]-only are ``switch_eos(a, b, part=...)``.
* **how often the image follows B or stays A** -- :func:`follow_rates`: per condition, the rate of
  images whose attribute follows B and stays A, against the same-seed A/B images, the prompts' ground
  truth and CLIPScore, each with a Wilson 95% interval, and the L1 distance to A's image (t interval).
* **KL per step** -- :class:`StepwiseKL`, an :class:`helpers.hooks.kv.AttentionKL` that also keeps the KL
  sums per step and prompt (the same aggregate, bit for bit); :func:`generate_substituted_by_step`, the K/V
  run with it (same images and batches, resumable); :meth:`KLSteps.table`: mean over prompts per step
  (t interval), beside the KL of each distribution to the uniform one.
* **maps per step against chance** -- :func:`map_f1_by_step`: per step, the F1 between a token's
  binarised map and the image's object mask, beside :func:`chance_f1`, the exact expected F1 of a
  uniformly random mask of the same area.

>>> prompts = k_order_prompts(A, B, k=4, order="random", seed=0)
>>> images, kl, steps = generate_substituted_by_step(pipe, A, keys=S, seed=0, num_inference_steps=50)
>>> steps.table()                     # step, timestep, measure, value, lo, hi, n
>>> follow_rates({"padding only": table_pad, "real [EOS] only": table_eos})
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .. import stats
from ..hooks.kv import AttentionKL, kv_substitution
from ..hooks.steps import denoiser_inputs
from ..loading import denoiser
from ..text.conditioning import EncodedPrompt
from .follow import COMPARISONS, follow_masks  # noqa: F401  (COMPARISONS: the comparisons of follow_rates)

#: The orders in which :func:`order_slots` picks ``k`` of A's [EOS]-class slots.
ORDERS = ("first", "last", "random")
#: What :meth:`KLSteps.table` reports, by :attr:`AttentionKL.KEYS` key.
KL_LABELS = {"kl_substituted": "KL(p_A || p_switched keys)", "kl_uniform": "KL(p_A || uniform)",
             "kl_uniform_substituted": "KL(p_switched keys || uniform)"}


# ------------------------------------------------------------------------------ which positions
def switch_slots(source: EncodedPrompt, target: EncodedPrompt, slots: Sequence[int],
                 pooled_from: str = "target") -> EncodedPrompt:
    """A's prompt with B's [EOS]-class embeddings at the chosen slots of A's [EOS] class only.

    Args:
        source: prompt A (keeps everything outside ``slots``).
        target: prompt B (its [EOS]-class embeddings, aligned as :func:`helpers.text.surgery.switch_eos`
            aligns them: B's real [EOS] on A's, then B's padding in order).
        slots: indices into A's [EOS] class (0 = the real [EOS], 1.. = the padding after it).
        pooled_from: SDXL only: ``"target"`` takes B's pooled embedding when slot 0 (the real [EOS],
            whose projection the pooled embedding is) is switched; ``"source"`` always keeps A's.

    ``slots = range(k)`` gives :func:`~helpers.text.surgery.switch_eos` ``(k=k)``; ``[0]`` its ``part="eos"``.

    Raises:
        ValueError: a slot is not an integer in ``[0, number of A's [EOS]-class positions)`` or repeats.
    """
    from ..text.surgery import switch_eos

    return switch_eos(source, target, pooled_from=pooled_from, slots=slots)


def order_slots(order: str, k: int, n_slots: int, rng: np.random.Generator | None = None) -> list[int]:
    """``k`` of ``n_slots`` [EOS]-class slots: the ``"first"`` k (the real [EOS] and the padding right after
    it), the ``"last"`` k (the padding farthest from the words) or ``k`` drawn without replacement with
    ``rng`` (``"random"``), sorted.

    Raises:
        ValueError: an unknown order, ``k`` outside ``[0, n_slots]``, or ``"random"`` without ``rng``.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if not isinstance(n_slots, (int, np.integer)) or n_slots < 0:
        raise ValueError(f"n_slots must be a non-negative integer, not {n_slots!r}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k <= n_slots:
        raise ValueError(f"k must be an integer between 0 and the {n_slots} [EOS]-class slots, not {k!r}")
    if order == "first":
        return list(range(k))
    if order == "last":
        return list(range(n_slots - k, n_slots))
    if rng is None:
        raise ValueError("the 'random' order needs a numpy Generator (rng=np.random.default_rng(...))")
    return sorted(int(i) for i in rng.choice(n_slots, size=k, replace=False))


def k_order_prompts(sources: Sequence[EncodedPrompt], targets: Sequence[EncodedPrompt], k: int, order: str,
                    seed: int = 0) -> list[EncodedPrompt]:
    """Pair ``i``'s prompt with ``min(k, slots)`` of B's [EOS]-class embeddings in ``order`` (:func:`order_slots`).

    The random slots of pair ``i`` come from ``np.random.default_rng([seed, i, k])``: the same pair gets the
    same slots whatever else runs. ``order="first"`` gives the embeddings of ``switch_eos(a, b, k=...)``.

    Raises:
        ValueError: ``sources`` and ``targets`` differ in length, or ``k`` is negative.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} source prompts but {len(targets)} target prompts: give one B per A")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be a non-negative integer, not {k!r}")
    out = []
    for i, (a, b) in enumerate(zip(sources, targets)):
        n = len(a.eos_class)
        rng = np.random.default_rng([int(seed), i, int(k)]) if order == "random" else None
        out.append(switch_slots(a, b, order_slots(order, min(int(k), n), n, rng)))
    return out


# ------------------------------------------------------------------------------ follow rates
def _wilson_or_nan(hits: int, n: int, level: float) -> tuple[float, float, float]:
    if n == 0:
        return np.nan, np.nan, np.nan
    e = stats.wilson(int(hits), int(n), level)
    return e.value, e.lo, e.hi


def follow_rates(tables: Mapping[str, pd.DataFrame], attribute: str = "shape", level: float = 0.95) -> pd.DataFrame:
    """Per condition, how often the image follows B and stays A, with Wilson 95% intervals.

    Args:
        tables: condition -> one row per image, as :func:`helpers.analysis.alignment.score_source_target`
            writes it (with reference images for the ``"images"`` comparison).
        attribute: the evaluator's attribute (``"shape"``: the object).

    Rows: per condition, each comparison present -- ``"images"`` (the reading equals that of the same-seed
    A / B image; pairs where those agree left out), ``"prompts"`` (ground truth; pairs where A and B agree
    left out), ``"clip"`` (CLIPScore higher for B's text than for A's, and the reverse). Columns:
    ``condition, comparison, follows_B(_lo, _hi), stays_A(_lo, _hi), n, method, l1_to_A(_lo, _hi)`` (mean
    L1 distance to A's same-seed image, t interval; NaN without references). An empty comparison gives NaN.

    Raises:
        ValueError: ``tables`` is empty or a table has no column for any comparison.
    """
    if not tables:
        raise ValueError("follow_rates needs at least one condition's table")
    rows = []
    for name, df in tables.items():
        l1 = stats.mean_ci_or_nan(df["l1_source"], level)[:3] if "l1_source" in df else (np.nan,) * 3
        found = 0
        for comparison in COMPARISONS:
            masks = follow_masks(df, comparison, attribute)
            if masks is None:
                continue
            (b, a), n = masks, len(masks[0])
            found += 1
            rows.append({"condition": name, "comparison": comparison,
                         **dict(zip(("follows_B", "follows_B_lo", "follows_B_hi"), _wilson_or_nan(b.sum(), n, level))),
                         **dict(zip(("stays_A", "stays_A_lo", "stays_A_hi"), _wilson_or_nan(a.sum(), n, level))),
                         "n": n, "method": "Wilson",
                         **dict(zip(("l1_to_A", "l1_to_A_lo", "l1_to_A_hi"), l1))})
        if not found:
            raise ValueError(f"the table of condition {name!r} has no evaluator ({attribute!r}) or CLIPScore columns")
    return pd.DataFrame(rows)


def rates_text(rates: pd.DataFrame, comparison: str = "images", conditions: Sequence[str] | None = None) -> str:
    """One line: each condition's rate of following B (and of staying A) for one comparison, with n and interval."""
    block = rates[rates["comparison"] == comparison]
    if conditions is not None:
        block = block.set_index("condition").reindex([c for c in conditions if c in set(block["condition"])]).reset_index()
    parts = [f"{r.condition}: B {r.follows_B:.2f} [{r.follows_B_lo:.2f}, {r.follows_B_hi:.2f}], "
             f"A {r.stays_A:.2f} [{r.stays_A_lo:.2f}, {r.stays_A_hi:.2f}] (n={r.n})" for r in block.itertuples()]
    return f"follows B / stays A ({comparison}, Wilson 95%): " + "; ".join(parts)


# ------------------------------------------------------------------------------ KL per step
class StepwiseKL(AttentionKL):
    """:class:`~helpers.hooks.kv.AttentionKL` that also keeps the KL sums per denoising step and per prompt.

    The running means (``result()``, ``layer_table()``, the ``log``) are exactly those of ``AttentionKL``.
    Call :meth:`begin_step` before each denoiser call (:func:`generate_substituted_by_step` does it with a
    forward pre-hook); logits are ``(prompts, heads, queries, tokens)`` as the K/V processor passes them.
    """

    def __init__(self, log: list | None = None) -> None:
        super().__init__(log)
        self.timesteps: list[float] = []
        self._sums: list[np.ndarray] = []  # per step: (3, prompts) sums in KEYS order
        self._counts: list[np.ndarray] = []  # per step: (prompts,) values summed

    def begin_step(self, timestep: float) -> None:
        """Open the next denoising step (its KL additions are kept apart from the others')."""
        self.timesteps.append(float(timestep))
        self._sums.append(None)
        self._counts.append(None)

    def update(self, layer: str, logits_orig: torch.Tensor, logits_sub: torch.Tensor, valid: torch.Tensor) -> None:
        """:meth:`AttentionKL.update`, plus the per-prompt sums of the open step."""
        if not self.timesteps:
            raise ValueError("StepwiseKL.update was called before begin_step: open a step for each denoiser call")
        values = self.values(logits_orig, logits_sub, valid)
        self.add(layer, [float(values[k].sum()) for k in self.KEYS], values["kl_substituted"].numel())
        per = np.stack([values[k].reshape(values[k].shape[0], -1).double().sum(-1).cpu().numpy() for k in self.KEYS])
        count = np.full(per.shape[1], values["kl_substituted"][0].numel(), dtype=np.float64)
        if self._sums[-1] is None:
            self._sums[-1], self._counts[-1] = per, count
        else:
            self._sums[-1] = self._sums[-1] + per
            self._counts[-1] = self._counts[-1] + count

    def by_step(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sums (steps, 3, prompts), counts (steps, prompts))`` of the steps where KL was measured."""
        kept = [(s, c) for s, c in zip(self._sums, self._counts) if s is not None]
        if not kept:
            return np.zeros((0, len(self.KEYS), 0)), np.zeros((0, 0))
        return np.stack([s for s, _ in kept]), np.stack([c for _, c in kept])

    @property
    def measured_timesteps(self) -> list[float]:
        """Timesteps of the steps where KL was measured (those of :meth:`by_step`)."""
        return [t for t, s in zip(self.timesteps, self._sums) if s is not None]


@dataclasses.dataclass
class KLSteps:
    """KL sums per step and prompt of a run (:func:`generate_substituted_by_step`).

    Attributes:
        sums: ``(steps, 3, prompts)`` in :attr:`AttentionKL.KEYS` order.
        counts: ``(steps, prompts)``: queries x heads x layers summed per step and prompt.
        timesteps: the scheduler's timestep of each step.
    """

    sums: np.ndarray
    counts: np.ndarray
    timesteps: list[float]

    def per_prompt(self) -> np.ndarray:
        """``(steps, 3, prompts)``: the mean KL of each prompt at each step."""
        return self.sums / self.counts[:, None, :]

    def overall(self, level: float = 0.95) -> dict[str, stats.Estimate]:
        """Each KL over every step, layer, head and query of a prompt, then mean over prompts (t interval;
        NaN bounds with fewer than two prompts)."""
        per = self.sums.sum(0) / self.counts.sum(0)[None, :]  # (3, prompts)
        return {k: stats.Estimate(*stats.mean_ci_or_nan(per[j], level), method="t", level=level)
                for j, k in enumerate(AttentionKL.KEYS)}

    def table(self, level: float = 0.95) -> pd.DataFrame:
        """Long table: ``step`` (1-based), ``timestep``, ``measure`` (:data:`KL_LABELS`), ``value`` (mean over
        prompts), ``lo``, ``hi`` (t interval), ``n`` (prompts)."""
        per = self.per_prompt()
        rows = []
        for s in range(per.shape[0]):
            for j, key in enumerate(AttentionKL.KEYS):
                m, lo, hi, n = stats.mean_ci_or_nan(per[s, j], level)
                rows.append({"step": s + 1, "timestep": self.timesteps[s], "measure": KL_LABELS[key],
                             "value": m, "lo": lo, "hi": hi, "n": n})
        return pd.DataFrame(rows, columns=["step", "timestep", "measure", "value", "lo", "hi", "n"])


def generate_substituted_by_step(
    pipe,
    prompts: Sequence[EncodedPrompt],
    keys: Sequence[EncodedPrompt],
    values: Sequence[EncodedPrompt] | None = None,
    out_dir: str | Path | None = None,
    **kwargs,
) -> tuple[np.ndarray, AttentionKL, KLSteps]:
    """:func:`helpers.hooks.kv.generate_substituted` ``(measure_kl=True)`` that also keeps the KL per step.

    The same pipeline calls in the same batches (so the same images and the same aggregate
    :class:`AttentionKL`, bit for bit, resumed or not); each batch also saves its per-step, per-prompt KL
    sums (:class:`StepwiseKL`). Returns ``(images, aggregate AttentionKL, KLSteps)``.

    Raises:
        ValueError: ``keys`` (or ``values``) do not give one prompt per prompt.
    """
    from ..text.surgery import generate_batches

    prompts = list(prompts)
    if keys is None or len(keys) != len(prompts):
        raise ValueError(f"per-step KL needs one substituted key prompt per prompt ({len(prompts)})")
    if values is not None and len(values) != len(prompts):
        raise ValueError(f"{len(values)} values for {len(prompts)} prompts")
    model = denoiser(pipe)

    @contextmanager
    def context(idx: list[int]):
        kl, record = StepwiseKL(log=[]), {}
        handle = model.register_forward_pre_hook(lambda m, a, kw: kl.begin_step(denoiser_inputs(a, kw)[1]),
                                                 with_kwargs=True)
        try:
            with kv_substitution(pipe, keys=[keys[i] for i in idx],
                                 values=None if values is None else [values[i] for i in idx], kl=kl):
                yield record
        finally:
            handle.remove()
        sums, counts = kl.by_step()
        record.update(log=kl.log, sums=sums, counts=counts, timesteps=kl.measured_timesteps)

    item_keys = [(keys[i], None if values is None else values[i], True) for i in range(len(prompts))]
    images, batches = generate_batches(pipe, prompts, chunk_context=context, item_keys=item_keys, out_dir=out_dir,
                                       **kwargs)
    aggregate = AttentionKL()
    for batch in batches:
        aggregate.replay(batch["log"])
    steps = {len(b["timesteps"]) for b in batches}
    if len(steps) != 1:
        raise ValueError(f"the batches measured KL at different numbers of steps {sorted(steps)}")
    per_step = KLSteps(sums=np.concatenate([np.asarray(b["sums"]) for b in batches], axis=-1),
                       counts=np.concatenate([np.asarray(b["counts"]) for b in batches], axis=-1),
                       timesteps=list(batches[0]["timesteps"]))
    return images, aggregate, per_step


# ------------------------------------------------------------------------------ maps per step vs chance
def chance_f1(reference: np.ndarray, area: int) -> float:
    """Expected F1 of a mask of ``area`` pixels placed uniformly at random against ``reference``.

    With N pixels and a reference of R, the overlap is hypergeometric (mean ``area·R/N``) and F1 = 2·overlap /
    (area + R) is linear in it: exactly ``2·area·R / (N·(area + R))`` (:func:`helpers.stats.random_mask_f1`
    draws masks for the same number). NaN when both are empty.

    Raises:
        ValueError: ``area`` is negative or larger than the mask.
    """
    ref = np.asarray(reference, dtype=bool)
    total, r = ref.size, int(ref.sum())
    if not 0 <= int(area) <= total:
        raise ValueError(f"area must be between 0 and the mask's {total} pixels, got {area}")
    if area + r == 0:
        return float("nan")
    return 2.0 * area * r / (total * (area + r))


@dataclasses.dataclass
class MapSteps:
    """F1 per step of token maps with the image's object mask, beside chance (:func:`map_f1_by_step`).

    Attributes:
        per_pair: long table ``pair, step, map, f1, chance, area`` (area: the binarised map's share of pixels).
        examples: for the first pairs, ``{map name: {"image": the run's final image, "heat": (steps, h, w) map}}``.
        timesteps: the scheduler's timestep of each step.
    """

    per_pair: pd.DataFrame
    examples: list[dict]
    timesteps: list[float]

    def table(self, level: float = 0.95) -> pd.DataFrame:
        """Per step and map: mean F1 and mean chance over pairs (t intervals), and the paired difference
        F1 - chance (paired t over pairs); columns ``step, timestep, map, f1, f1_lo, f1_hi, chance, chance_lo,
        chance_hi, above_chance, above_chance_lo, above_chance_hi, n``."""
        rows = []
        for (name, step), block in self.per_pair.groupby(["map", "step"], sort=False):
            row = {"step": step, "timestep": self.timesteps[step - 1], "map": name}
            for col, values in (("above_chance", block["f1"] - block["chance"]), ("chance", block["chance"]),
                                ("f1", block["f1"])):
                m, lo, hi, n = stats.mean_ci_or_nan(values.to_numpy(float), level)
                row |= {col: m, f"{col}_lo": lo, f"{col}_hi": hi}
            rows.append(row | {"n": n})  # pairs with an F1 (NaN where map and object are both empty)
        columns = ["step", "timestep", "map"] + [f"{c}{s}" for c in ("f1", "chance", "above_chance")
                                                  for s in ("", "_lo", "_hi")] + ["n"]
        return pd.DataFrame(rows, columns=columns)


def map_f1_by_step(
    pipe,
    runs: Mapping[str, tuple[Sequence[EncodedPrompt], Sequence[Sequence[int]]]],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int | None = None,
    resolutions: Sequence[int] | None = (8,),
    threshold: str | float = "mean",
    n_examples: int = 2,
) -> MapSteps:
    """Generate each run with per-step attention recording and score its token maps against its own images.

    Args:
        pipe: the pipeline.
        runs: map name -> ``(prompts, positions)``: prompt ``i`` is generated from the noise of ``seed + i``
            and the map of its token positions ``positions[i]`` (e.g. A's object word) is read at every step.
            Runs with the same prompts (by identity) share one generation.
        resolutions: attention map sizes recorded (:func:`helpers.hooks.attention.record_attention`).
        threshold: how a map is binarised (:func:`helpers.analysis.masks.binarize`).
        n_examples: pairs whose per-step maps are kept for the figure.

    Per step and pair: F1 of the binarised map (upsampled to the image) with the final image's object
    (foreground) mask, and :func:`chance_f1` of a random mask of the same area. Prompts are generated
    ``batch_size`` at a time (default 16) and only the scores are kept, so memory stays bounded.

    Raises:
        ValueError: ``runs`` is empty or a run's prompts and positions differ in length.
    """
    from ..hooks.attention import record_attention
    from ..text.surgery import BATCH_SIZE, generate_from_embeddings
    from .mass import token_map
    from .masks import binarize, f1_score, foreground_mask, upsample

    if not runs:
        raise ValueError("map_f1_by_step needs at least one run")
    for name, (prompts, positions) in runs.items():
        if len(prompts) != len(positions):
            raise ValueError(f"run {name!r} has {len(prompts)} prompts but {len(positions)} position lists")
    size = BATCH_SIZE if batch_size is None else int(batch_size)
    groups: dict[int, list[str]] = {}
    for name, (prompts, _) in runs.items():
        groups.setdefault(id(prompts), []).append(name)
    rows, examples, timesteps = [], {}, None
    for names in groups.values():
        prompts = list(runs[names[0]][0])
        for start in range(0, len(prompts), size):
            idx = list(range(start, min(len(prompts), start + size)))
            with record_attention(pipe, resolutions=resolutions, per_step=True) as rec:
                images = generate_from_embeddings(pipe, [prompts[i] for i in idx], seeds=[seed + i for i in idx],
                                                  num_inference_steps=num_inference_steps,
                                                  guidance_scale=guidance_scale, batch_size=size, progress=False)
            maps = rec.maps()  # (steps, samples, tokens, h, w)
            timesteps = timesteps or list(rec.timesteps)
            for j, i in enumerate(idx):
                mask = foreground_mask(images[j])
                for name in names:
                    heat = token_map(maps[:, j], runs[name][1][i]).numpy()  # (steps, h, w)
                    for s, h in enumerate(upsample(heat, mask.shape)):
                        b = binarize(h, threshold)
                        rows.append({"pair": i, "step": s + 1, "map": name, "f1": f1_score(b, mask),
                                     "chance": chance_f1(mask, int(b.sum())), "area": float(b.mean())})
                    if i < n_examples:
                        examples.setdefault(i, {})[name] = {"image": images[j], "heat": heat}
    per_pair = pd.DataFrame(rows, columns=["pair", "step", "map", "f1", "chance", "area"])
    return MapSteps(per_pair=per_pair, examples=[{name: examples[i][name] for name in runs if name in examples[i]}
                                                 for i in sorted(examples)], timesteps=timesteps or [])
