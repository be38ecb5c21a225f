"""Notebook 03's study, built on :mod:`helpers.analysis.mass`: who the pixels attend to (the paper's Fig. 3).

* :func:`record_mass` -> :class:`MassRun`: one generation per prompt with the per-step attention mass of
  every token (bounded memory: the mean map over steps, no per-step maps), its class table and class means;
* :func:`class_mass_by_resolution`, :func:`describe_classes`: the same mass by map size, and its range;
* :func:`padding_offsets`, :func:`eos_share`: the [EOS] class split between the real [EOS] and the padding;
* :func:`encoder_probes`: the linear probes of :func:`helpers.analysis.encoder.probe_accuracy` per attribute;
* :func:`attention_statistics`: per-class statistics and the query entropy of :mod:`helpers.analysis.influence`;
* :func:`mass_summary`, :func:`summary_text`: the saved summary and its printed sentence.

>>> run = record_mass(pipe, prompts, seed=0, num_inference_steps=50)
>>> run.by_class                      # mean mass per step (rows) and class (columns)
>>> verdicts.sos_sink(run.mass)       # the paper's rule, per step, prompt and token
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from .. import stats
from ..generation import generate
from ..hooks import attention
from ..text.tokens import TokenClasses, pipeline_token_classes
from .encoder import probe_accuracy
from .influence import query_entropy, token_statistics
from .mass import MASS_CLASSES, class_mass_table

#: The paper's "[SOS] above 0.9 at every step" (the figure's line and the summary's count).
SOS_LEVEL = 0.9
#: Attributes the encoder's linear probes read, and the prompts each needs.
PROBE_ATTRIBUTES = ("shape", "color", "position")
MIN_PROBE_PROMPTS = 8


@dataclasses.dataclass
class MassRun:
    """Attention mass of one recorded generation per prompt (:func:`record_mass`)."""

    prompts: list[str]
    classes: list[TokenClasses]  # the token classes of each prompt
    rec: attention.AttentionRecorder  # per_step=False: the mean maps over steps and the per-step token mass
    images: np.ndarray  # (prompts, H, W, 3)
    mass: np.ndarray  # (steps, prompts, tokens): each row sums to 1
    table: pd.DataFrame  # class_mass_table, steps 1-based
    by_class: pd.DataFrame  # mean mass over prompts, index step (1-based), one column per class (``class_mass_by_step``)
    num_steps: int

    def __str__(self) -> str:
        return (f"{len(self.prompts)} prompts, {self.num_steps} steps; padding is [EOS]: {self.classes[0].padding_is_eos}\n"
                f"token mass {self.mass.shape}, layer sizes {self.rec.sizes}; rows sum to 1: "
                f"{np.allclose(self.mass.sum(-1), 1, atol=1e-4)}")


def record_mass(pipe, prompts: Sequence[str], resolutions: Sequence[int] | None = None, seed: int = 0,
                num_inference_steps: int = 50, guidance_scale: float = 7.5) -> MassRun:
    """Generate every prompt once (:func:`helpers.generation.generate`, seeds ``seed + i``) recording the
    cross-attention of the layers of ``resolutions`` (``None``: every layer), conditional half only.

    Only the mean map over steps and the per-step token mass are kept (``per_step=False``: bounded memory).
    """
    prompts = list(prompts)
    classes = [pipeline_token_classes(pipe, p) for p in prompts]
    with attention.record_attention(pipe, resolutions=resolutions, per_step=False) as rec:
        images = generate(pipe, prompts, seed=seed, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale)
    mass = rec.token_mass().numpy()  # (steps, prompts, tokens)
    table = class_mass_table(rec, prompts)
    table["step"] += 1
    by_class = table.pivot_table(index="step", columns="class", values="mass", aggfunc="mean")
    return MassRun(prompts=prompts, classes=classes, rec=rec, images=images, mass=mass, table=table,
                   by_class=by_class, num_steps=num_inference_steps)


def describe_classes(by_class: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max over the steps of each class's mean mass (:attr:`MassRun.by_class`)."""
    return by_class[list(MASS_CLASSES)].describe().loc[["mean", "min", "max"]]


def class_mass_by_resolution(rec, prompts: Sequence[str]) -> pd.DataFrame:
    """Mean mass per class (columns) over prompts and steps for the layers of each recorded map size (rows)."""
    per_size = pd.DataFrame({f"{h}x{w}": class_mass_table(rec, prompts, resolution=(h, w))
                             .groupby("class").mass.mean() for h, w in rec.sizes}).T
    return per_size[list(MASS_CLASSES)]


def padding_offsets(mass: np.ndarray, classes: Sequence[TokenClasses]) -> pd.DataFrame:
    """Mass of each padding position (mean over steps) by its distance after the real [EOS]: columns
    ``offset, mass``, one row per prompt and padding position."""
    offsets = []
    for i, c in enumerate(classes):
        for pos in c.padding:
            offsets.append((pos - c.eos[0], float(mass[:, i, pos].mean())))
    return pd.DataFrame(offsets, columns=["offset", "mass"])


def eos_share(by_class: pd.DataFrame) -> pd.Series:
    """Per step, the real [EOS]'s share of the [EOS]-class mass (NaN where the class has none)."""
    return by_class["eos"] / by_class["eos_class"].where(by_class["eos_class"] > 0)


def eos_share_text(by_class: pd.DataFrame) -> str:
    """The printed line of :func:`eos_share`: mean, min and max over the steps."""
    share = eos_share(by_class)
    return (f"real [EOS] share of the [EOS]-class mass: mean {share.mean():.3f} (min {share.min():.3f}, "
            f"max {share.max():.3f})")


def encoder_probes(pipe, records: Sequence, seed: int = 0, attributes: Sequence[str] = PROBE_ATTRIBUTES,
                   min_prompts: int = MIN_PROBE_PROMPTS) -> pd.DataFrame | None:
    """Held-out accuracy of a linear probe of each attribute (rows) from each token class (columns, and
    ``chance``): :func:`helpers.analysis.encoder.probe_accuracy`. Attributes named by fewer than
    ``min_prompts`` records are skipped; ``None`` with fewer than ``min_prompts`` records."""
    if len(records) < min_prompts:
        return None
    return pd.DataFrame({a: probe_accuracy(pipe, records, a, seed=seed)
                         for a in attributes if sum(a in r.attributes for r in records) >= min_prompts}).T


def attention_statistics(run: MassRun) -> tuple[pd.DataFrame, stats.Estimate]:
    """Per class (:func:`helpers.analysis.influence.token_statistics`: mass, one token's mass vs uniform, spatial
    entropy) from the run's mass and its mean maps over steps (every recorded size), and how spread each pixel's
    attention is over the tokens (:func:`helpers.analysis.influence.query_entropy`)."""
    mean_maps = run.rec.mean_maps().numpy()  # (prompts, tokens, h, w), every recorded size, mean over steps
    return token_statistics(run.mass, run.classes, mean_maps), query_entropy(mean_maps)


def mass_summary(run: MassRun, sos_level: float = SOS_LEVEL) -> dict:
    """The saved ``summary``: steps, prompts, recorded sizes, [SOS]'s min and mean mass, each class's mean, and the
    number of steps at which [SOS] is at least ``sos_level`` (means over prompts)."""
    by_class = run.by_class
    sos = by_class["sos"]
    return {"steps": run.num_steps, "prompts": len(run.prompts), "resolutions": str(run.rec.sizes),
            "sos_min": float(sos.min()), "sos_mean": float(sos.mean()),
            "semantic_mean": float(by_class["semantic"].mean()), "eos_class_mean": float(by_class["eos_class"].mean()),
            "real_eos_mean": float(by_class["eos"].mean()), "padding_mean": float(by_class["padding"].mean()),
            "steps_with_sos_ge_level": int((sos >= sos_level).sum())}


def summary_text(summary: dict, sos_level: float = SOS_LEVEL) -> str:
    """The printed sentence of :func:`mass_summary`."""
    return (f"[SOS] {summary['sos_mean']:.2f} of the mass on average (min {summary['sos_min']:.2f}; above the paper's "
            f"{sos_level} at {summary['steps_with_sos_ge_level']} of {summary['steps']} steps), semantic "
            f"{summary['semantic_mean']:.2f}, [EOS] class {summary['eos_class_mean']:.2f} (real [EOS] "
            f"{summary['real_eos_mean']:.3f}, padding {summary['padding_mean']:.3f})")
