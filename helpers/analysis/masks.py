"""Binary maps, object masks and the relative F1 of attention maps (the paper's Fig. 1b).

* :func:`binarize`, :func:`otsu_threshold`, :func:`f1_score` -- heat map -> mask -> F1 (Dice).
* :func:`foreground_mask`, :func:`iou_curve`, :func:`iou_table` -- object masks of toy-world images
  by their difference from the plain background colour, and IoU curves of x̂0 along a trajectory.
* :func:`relative_f1_table` -- F1 of each object token's binarised map against the final object
  region, per step, as a long table.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..text.tokens import pipeline_token_classes
from .mass import Size, token_map


class MaskError(ValueError):
    """A mask or map cannot be computed as asked (message says why)."""


def binarize(heat: np.ndarray | torch.Tensor, threshold: str | float = "mean") -> np.ndarray:
    """Boolean mask of a heat map: ``"mean"`` (above its mean), ``"otsu"``, or a fraction of its max."""
    heat = np.asarray(heat, dtype=np.float64)
    if threshold == "mean":
        return heat > heat.mean()
    if threshold == "otsu":
        return heat > otsu_threshold(heat)
    if isinstance(threshold, (int, float)) and 0 <= threshold <= 1:
        return heat > threshold * heat.max()
    raise ValueError(f"threshold must be 'mean', 'otsu' or a fraction in [0, 1], not {threshold!r}")


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = values.min(), values.max()
    if hi <= lo:
        return float(lo)
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    w1 = 1 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return float(edges[1:][int(np.argmax(between))])


def f1_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """F1 (Dice) of two boolean masks; NaN when both are empty."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = pred.sum() + ref.sum()
    return float(2 * (pred & ref).sum() / total) if total else float("nan")


def background_color(image: np.ndarray, border: int = 2) -> np.ndarray:
    """Median RGB of the image's outer ``border`` pixels (the toy world's plain background)."""
    image = _as_float(image)
    edge = np.concatenate([image[:border].reshape(-1, 3), image[-border:].reshape(-1, 3),
                           image[:, :border].reshape(-1, 3), image[:, -border:].reshape(-1, 3)])
    return np.median(edge, axis=0)


def foreground_mask(image: np.ndarray, tolerance: float = 0.2, border: int = 2) -> np.ndarray:
    """Boolean object mask: pixels farther than ``tolerance`` (RGB distance, [0, 1] units) from the background colour."""
    image = _as_float(image)
    return np.linalg.norm(image - background_color(image, border), axis=-1) > tolerance


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def iou_curve(step_images: np.ndarray, final_image: np.ndarray, tolerance: float = 0.2) -> np.ndarray:
    """IoU of each step image's object mask (e.g. decoded x̂0) with the final image's."""
    final = foreground_mask(final_image, tolerance)
    return np.array([mask_iou(foreground_mask(im, tolerance), final) for im in step_images])


def iou_table(step_images: np.ndarray, final_images: np.ndarray, tolerance: float = 0.2):
    """Long pandas table ``sample, step, iou`` of :func:`iou_curve` for ``(steps, samples, H, W, 3)`` images."""
    import pandas as pd

    step_images = np.asarray(step_images)
    if step_images.shape[1] != len(final_images):
        raise MaskError(f"{step_images.shape[1]} trajectories but {len(final_images)} final images")
    rows = [(i, s, v) for i in range(len(final_images))
            for s, v in enumerate(iou_curve(step_images[:, i], final_images[i], tolerance))]
    return pd.DataFrame(rows, columns=["sample", "step", "iou"])


def _as_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise MaskError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)


def object_words(attributes: dict) -> list[str]:
    """The object nouns of a prompt record: ``objects`` (natural set) or ``shape`` (toy set)."""
    if attributes.get("objects"):
        return list(attributes["objects"])
    if attributes.get("shape"):
        return [attributes["shape"]]
    raise MaskError(f"prompt record names no object (no 'objects' or 'shape' in {sorted(attributes)})")


def upsample(heat: np.ndarray | torch.Tensor, size: Size) -> np.ndarray:
    """Bilinear upsampling of ``(..., h, w)`` maps to ``size``."""
    t = torch.as_tensor(np.asarray(heat, dtype=np.float32))
    lead = t.shape[:-2]
    out = F.interpolate(t.reshape(-1, 1, *t.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size).numpy()


def f1_curve(step_maps: np.ndarray | torch.Tensor, reference: np.ndarray, threshold: str | float = "mean") -> np.ndarray:
    """F1 per step between a token's binarised map ``(steps, h, w)`` (upsampled) and a reference mask."""
    heat = upsample(step_maps, tuple(reference.shape))
    return np.array([f1_score(binarize(h, threshold), reference) for h in heat])


def relative_f1_table(
    rec,
    records: Sequence,
    references: Sequence[np.ndarray] | None = None,
    threshold: str | float = "mean",
    resolution: int | Size | None = None,
    min_final_f1: float = 0.0,
):
    """Relative F1 (F1_t / F1_last) of each object token of each prompt, as a long pandas table.

    Args:
        rec: a per-step :class:`helpers.hooks.attention.AttentionRecorder` of ``len(records)`` samples.
        records: :class:`helpers.promptsets.PromptRecord` s (their object words, see :func:`object_words`).
        references: one boolean object mask per sample (e.g. the final image segmented from its
            background, :func:`foreground_mask`). ``None`` uses each token's binarised map at the
            last step (for real images without a segmenter): then F1_last = 1.
        threshold: how to binarise maps, see :func:`binarize`.
        resolution: which maps (``None``: all recorded sizes averaged).
        min_final_f1: tokens whose last-step F1 is below this get NaN relative F1 (a ratio to a
            near-zero F1 is noise that dominates a mean).

    Columns: ``sample, prompt, word, step, timestep, f1, relative_f1`` (NaN where F1_last = 0
    or below ``min_final_f1``).
    """
    import pandas as pd

    maps = rec.maps(resolution)
    if maps.shape[1] != len(records):
        raise MaskError(f"{maps.shape[1]} samples were recorded but {len(records)} prompt records were given")
    timesteps, rows = rec.timesteps, []
    for i, record in enumerate(records):
        classes = pipeline_token_classes(rec.pipe, record.prompt)
        for word in dict.fromkeys(object_words(record.attributes)):
            heat = token_map(maps[:, i], classes.positions_of(word)).numpy()
            ref = binarize(heat[-1], threshold) if references is None else np.asarray(references[i], bool)
            f1 = f1_curve(heat, ref, threshold)
            rel = f1 / f1[-1] if f1[-1] > 0 and f1[-1] >= min_final_f1 else np.full_like(f1, np.nan)
            rows += [(i, record.prompt, word, s, timesteps[s], f1[s], rel[s]) for s in range(len(f1))]
    return pd.DataFrame(rows, columns=["sample", "prompt", "word", "step", "timestep", "f1", "relative_f1"])


def first_step_above(curve: Sequence[float], level: float = 0.9) -> int | None:
    """Index of the first value ``>= level`` (``None`` if never)."""
    hits = np.nonzero(np.asarray(curve, dtype=np.float64) >= level)[0]
    return int(hits[0]) if hits.size else None


def settled_step(curve: Sequence[float], level: float = 0.9) -> int | None:
    """Index from which every later value is ``>= level`` (``None`` if the last one is below)."""
    below = np.nonzero(~(np.asarray(curve, dtype=np.float64) >= level))[0]
    if not below.size:
        return 0
    return int(below[-1]) + 1 if below[-1] + 1 < len(curve) else None
