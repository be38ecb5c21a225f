"""How much each token class matters: what the attention reads beside what changes the image.

Mass is not influence. A class can take most of the cross-attention mass and still decide nothing (an
attention sink: [SOS] is the same for every prompt, so whatever it receives cannot tell prompts apart),
or take little mass and decide the object. So, per token class ([SOS], words, real [EOS], padding, the
whole [EOS] class):

* the attention side -- :func:`token_statistics`: the class's mass, the mass of one of its tokens
  relative to uniform attention (1/77 on CLIP), the spatial entropy of its maps relative to uniform
  (1 = spread evenly over the image); :func:`query_entropy`: how spread each pixel's attention is over
  the tokens;
* the causal side -- :func:`run_conditions` generates, on S-PromptSet pairs (A, B) whose object
  differs (:func:`differing_pairs`), A with one class switched to B's (:func:`helpers.text.surgery.switch_eos`)
  or zeroed (:func:`helpers.text.surgery.replace_tokens`), from the same seeds as A's own image;
  :func:`influence_table` reads how often the image's attribute changes from A's own image, follows B or
  stays A (Wilson 95% intervals), and the L1 distance to A's image (t interval), which needs no reader.

>>> pairs = differing_pairs("toy", n=40)
>>> run = run_conditions(pipe, pairs, read=scorer.attributes, num_inference_steps=50)
>>> influence_table(run, attributes=("shape", "color"))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import stats

#: Token classes in display order (``eos_class`` = real [EOS] + padding, the paper's [EOS]).
CLASSES = ("sos", "semantic", "eos", "padding", "eos_class")
CLASS_LABELS = {"sos": "[SOS]", "semantic": "words", "eos": "real [EOS]", "padding": "padding",
                "eos_class": "[EOS] class"}
#: Condition -> (class, test). "switch": A's prompt with B's embeddings at the class's positions;
#: "zero": A's prompt with zero vectors there; "reference": A's and B's own prompts.
CONDITIONS: Mapping[str, tuple[str, str]] = {
    "A": ("", "reference"), "B": ("", "reference"),
    "switch [EOS] class": ("eos_class", "switch"), "switch real [EOS]": ("eos", "switch"),
    "switch padding": ("padding", "switch"),
    "zero [SOS]": ("sos", "zero"), "zero words": ("semantic", "zero"), "zero [EOS] class": ("eos_class", "zero"),
    "zero real [EOS]": ("eos", "zero"), "zero padding": ("padding", "zero"),
}
Reader = Callable[[np.ndarray], list]


# ------------------------------------------------------------------------------ attention side
def _class_positions(classes) -> dict[str, tuple[int, ...]]:
    return {"sos": classes.sos, "semantic": classes.semantic, "eos": classes.eos, "padding": classes.padding,
            "eos_class": classes.eos_class}


def _spatial_entropy(maps: np.ndarray) -> np.ndarray:
    """Entropy of each ``(..., h, w)`` map normalised over its pixels, over log(h·w) (1 = uniform)."""
    flat = np.clip(np.asarray(maps, dtype=np.float64).reshape(*maps.shape[:-2], -1), 0, None)
    total = flat.sum(-1, keepdims=True)
    p = np.divide(flat, total, out=np.full_like(flat, 1.0 / flat.shape[-1]), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return h / math.log(flat.shape[-1])


def token_statistics(mass: np.ndarray, classes: Sequence, maps: np.ndarray | None = None,
                     level: float = 0.95) -> pd.DataFrame:
    """Attention statistics per token class, mean over prompts with a t interval (n = prompts).

    Args:
        mass: ``rec.token_mass()`` as an array ``(steps, prompts, tokens)`` (each row sums to 1).
        classes: one :class:`helpers.text.tokens.TokenClasses` per prompt.
        maps: optional ``rec.mean_maps()`` ``(prompts, tokens, h, w)`` for the spatial entropy.

    Rows: :data:`CLASSES`. Columns: ``positions`` (mean count per prompt); ``mass`` (the class's total,
    mean over steps); ``per_token_vs_uniform`` (the mass of one of its tokens, averaged over them, times
    the number of tokens: 1 = what uniform attention gives each token); ``entropy`` (spatial entropy of
    its tokens' maps over log(h·w), averaged over them); each with ``_lo``, ``_hi``; ``n``.
    """
    mass = np.asarray(mass, dtype=np.float64)
    if mass.ndim != 3 or mass.shape[1] != len(classes):
        raise ValueError(f"mass must be (steps, {len(classes)} prompts, tokens), got shape {mass.shape}")
    length = mass.shape[2]
    per_prompt = mass.mean(axis=0)  # (prompts, tokens)
    entropy = _spatial_entropy(maps) if maps is not None else None  # (prompts, tokens)
    rows = []
    for name in CLASSES:
        counts, total, relative, ent = [], [], [], []
        for i, c in enumerate(classes):
            pos = list(_class_positions(c)[name])
            counts.append(len(pos))
            if not pos:
                continue
            total.append(per_prompt[i, pos].sum())
            relative.append(per_prompt[i, pos].mean() * length)
            if entropy is not None:
                ent.append(entropy[i, pos].mean())
        row = {"class": name, "label": CLASS_LABELS[name], "positions": float(np.mean(counts))}
        for key, values in (("mass", total), ("per_token_vs_uniform", relative), ("entropy", ent)):
            m, lo, hi, n = stats.mean_ci_or_nan(values, level)
            row |= {key: m, f"{key}_lo": lo, f"{key}_hi": hi}
        row["n"] = len(total)
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def query_entropy(maps: np.ndarray, level: float = 0.95) -> stats.Estimate:
    """How spread each pixel's attention is over the tokens: entropy over log(tokens) (1 = uniform over them).

    ``maps``: ``(prompts, tokens, h, w)`` (head-, layer- and step-averaged probabilities: the entropy of an
    average is at least the average entropy, so this is an upper bound on the per-head value). Mean over
    pixels per prompt, then over prompts with a t interval.
    """
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    if maps.ndim != 4 or maps.shape[0] < 2:
        raise ValueError(f"maps must be (prompts >= 2, tokens, h, w), got shape {maps.shape}")
    per_pixel = _spatial_entropy(np.moveaxis(maps, 1, -1)[..., None, :])  # (prompts, h, w): over the tokens
    return stats.mean_ci(per_pixel.reshape(len(maps), -1).mean(-1), level)


# ------------------------------------------------------------------------------ causal side
def differing_pairs(name: str = "toy", n: int | None = None, attribute: str | None = None) -> list:
    """The first ``n`` S-PromptSet pairs whose A and B both name ``attribute`` and differ in it.

    ``attribute`` defaults to ``"shape"`` on the toy set and ``"objects"`` on the natural one.
    """
    from .alignment import load_s_prompt_set

    attribute = attribute or ("shape" if name == "toy" else "objects")
    pairs = [p for p in load_s_prompt_set(name) if p.source.attributes.get(attribute)
             and p.target.attributes.get(attribute) and p.source.attributes[attribute] != p.target.attributes[attribute]]
    return pairs[:n] if n is not None else pairs


def condition_prompt(name: str, a, b):
    """The :class:`~helpers.text.conditioning.EncodedPrompt` of condition ``name`` (:data:`CONDITIONS`) for A and B."""
    from ..text.surgery import replace_tokens, switch_eos

    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; choose from {list(CONDITIONS)}")
    if name in ("A", "B"):
        return a if name == "A" else b
    cls, test = CONDITIONS[name]
    part = {"eos_class": "all", "eos": "eos", "padding": "padding"}.get(cls)
    if test == "switch":
        return switch_eos(a, b, part=part)
    if cls in ("sos", "semantic"):
        return replace_tokens(a, cls, "zero")
    zeroed = replace_tokens(a, "eos", "zero")  # A with its whole [EOS] class zeroed ...
    return zeroed if part == "all" else switch_eos(a, zeroed, part=part)  # ... or only the chosen part of it


@dataclasses.dataclass
class InfluenceRun:
    """Readings of every condition's images, same seeds across conditions (pair ``i`` from seed + i).

    Attributes:
        pairs: the S-PromptSet pairs (A = ``source``, B = ``target``).
        readings: condition -> the reader's output per pair (``None`` without a reader).
        l1_to_a: condition -> L1 distance of each image to A's own image (pixels in [0, 1]).
        examples: condition -> the images of the first ``n_show`` pairs.
        settings: steps, guidance and seed of the run.
    """

    pairs: list
    readings: dict[str, list[dict]] | None
    l1_to_a: dict[str, np.ndarray]
    examples: dict[str, np.ndarray]
    settings: dict

    @property
    def conditions(self) -> list[str]:
        return list(self.l1_to_a)


def run_conditions(pipe, pairs: Sequence, read: Reader | None = None, conditions: Sequence[str] = tuple(CONDITIONS),
                   seed: int = 0, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                   batch_size: int | None = 16, n_show: int = 0) -> InfluenceRun:
    """Generate every condition on every pair (A's own images first) and read the images.

    ``read`` is any classifier ``images -> [{attribute: value}]`` (the toy world's ``Scorer.attributes``);
    without one only the L1 distance to A's image is kept. Images are not kept beyond the first
    ``n_show`` pairs (bounded memory on large models). ``batch_size`` goes to
    :func:`helpers.text.surgery.generate_from_embeddings`; pair ``i`` starts from the noise of ``seed + i``
    in every condition.
    """
    from ..text.surgery import encode, generate_from_embeddings
    from .metrics import l1_distance

    if not pairs:
        raise ValueError("no pairs to run")
    conditions = ["A"] + [c for c in dict.fromkeys(conditions) if c != "A"]
    a = [encode(pipe, p.source.prompt) for p in pairs]
    b = [encode(pipe, p.target.prompt) for p in pairs]
    readings: dict[str, list[dict]] | None = {} if read is not None else None
    l1, examples, images_a = {}, {}, None
    for name in conditions:
        prompts = [condition_prompt(name, x, y) for x, y in zip(a, b)]
        images = generate_from_embeddings(pipe, prompts, seed=seed, num_inference_steps=num_inference_steps,
                                          guidance_scale=guidance_scale, batch_size=batch_size)
        images_a = images if name == "A" else images_a
        l1[name] = l1_distance(images, images_a)
        if readings is not None:
            readings[name] = list(read(images))
        if n_show:
            examples[name] = images[:n_show]
    settings = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "seed": seed,
                "n_pairs": len(pairs)}
    return InfluenceRun(list(pairs), readings, l1, examples, settings)


def _rate(hits: Sequence[bool], level: float) -> dict:
    e = stats.wilson(int(sum(hits)), len(hits), level)
    return {"value": e.value, "lo": e.lo, "hi": e.hi, "n": e.n, "method": "Wilson"}


def influence_table(run: InfluenceRun, attributes: Sequence[str] = ("shape",), level: float = 0.95) -> pd.DataFrame:
    """Per condition, how much the image moves away from A's own: long table with 95% intervals.

    Measures: ``L1 to A's image`` (mean, t interval over pairs); with readings, per attribute
    ``<a> changed`` (the reading differs from the one of A's own same-seed image), ``<a> follows B`` and
    ``<a> stays A`` (the reading equals B's / A's value as the prompts name it, over the pairs where the two
    differ), all Wilson. Columns: ``condition, class, test, measure, value, lo, hi, n, method``.
    """
    rows = []
    for name in run.conditions:
        cls, test = CONDITIONS.get(name, ("", "other"))
        base = {"condition": name, "class": cls, "test": test}
        m, lo, hi, n = stats.mean_ci_or_nan(run.l1_to_a[name], level)
        rows.append(base | {"measure": "L1 to A's image", "value": m, "lo": lo, "hi": hi, "n": n, "method": "t"})
        if run.readings is None:
            continue
        reading, reading_a = run.readings[name], run.readings["A"]
        for attr in attributes:
            rows.append(base | {"measure": f"{attr} changed"} |
                        _rate([r.get(attr) != r0.get(attr) for r, r0 in zip(reading, reading_a)], level))
            truth = [(p.source.attributes.get(attr), p.target.attributes.get(attr)) for p in run.pairs]
            usable = [(r, sa, sb) for r, (sa, sb) in zip(reading, truth) if sa is not None and sb is not None and sa != sb]
            if usable:
                rows.append(base | {"measure": f"{attr} follows B"} | _rate([r.get(attr) == sb for r, _, sb in usable], level))
                rows.append(base | {"measure": f"{attr} stays A"} | _rate([r.get(attr) == sa for r, sa, _ in usable], level))
    return pd.DataFrame(rows, columns=["condition", "class", "test", "measure", "value", "lo", "hi", "n", "method"])
