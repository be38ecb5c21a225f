"""Binary maps, object masks and the relative F1 of attention maps (the paper's Fig. 1b).

* :func:`binarize`, :func:`otsu_threshold`, :func:`f1_score` -- heat map -> mask -> F1 (Dice).
* :func:`foreground_mask`, :func:`iou_curve`, :func:`iou_table` -- object masks of toy-world images
  by their difference from the plain background colour, and IoU curves of x̂0 along a trajectory.
* :func:`relative_f1_table` -- F1 of each object token's binarised map against the final object
  region, per step, as a long table.
* :func:`auroc`, :func:`auroc_table`, :func:`random_map_auroc`, :func:`auroc_chance`, :func:`auroc_by_step` --
  the threshold-free counterpart: the AUROC of each map (object token, real [EOS], [EOS] class) against
  the object mask (:func:`reference_masks`), per step, with the chance level of random maps;
  :func:`renormalize_over_words` divides every map by the words' total at each pixel (as DAAM does)
  before it is scored.

>>> refs = reference_masks(rec, records, [foreground_mask(im) for im in images])
>>> by_step = auroc_by_step(auroc_table(rec, records, refs), auroc_chance(refs, (8, 8)))
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import stats
from ..text.tokens import TokenClasses, pipeline_token_classes
from .mass import Size, token_map

#: Maps scored by :func:`auroc_table` besides each object token's.
AUROC_KINDS = ("object", "real [EOS]", "[EOS] class")
#: Map normalisations of :func:`auroc_table`: raw attention, or renormalised over the word tokens.
NORMALIZATIONS = ("none", "words")


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


# ------------------------------------------------------------------ threshold-free: AUROC of maps
def _auroc_rows(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores`` ``(k, pixels)`` against one boolean ``mask`` ``(pixels,)`` (ties: half)."""
    from scipy.stats import rankdata

    mask = np.asarray(mask, bool).ravel()
    n_pos = int(mask.sum())
    n_neg = mask.size - n_pos
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, mask.size)
    if n_pos == 0 or n_neg == 0:
        return np.full(len(scores), np.nan)
    ranks = rankdata(scores, axis=1)  # average ranks of ties
    return (ranks[:, mask].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(heat: np.ndarray | torch.Tensor, mask: np.ndarray) -> float:
    """Area under the ROC curve of a heat map as a pixel classifier of ``mask`` (threshold-free).

    The probability that a random object pixel scores higher than a random background pixel (ties count
    half): 0.5 for a map unrelated to the object, 1 for a perfect outline. The map is upsampled bilinearly
    to the mask's size. NaN when the mask is empty or full.
    """
    mask = np.asarray(mask, bool)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != mask.shape:
        heat = upsample(heat, tuple(mask.shape))
    return float(_auroc_rows(heat[None], mask)[0])


def renormalize_over_words(maps: torch.Tensor, classes: TokenClasses, eps: float = 1e-8) -> torch.Tensor:
    """``maps[..., tokens, h, w]`` divided at each pixel by the sum of the word tokens' maps (DAAM's normalisation).

    A word's renormalised map is its share of the attention the words get at that pixel; other tokens'
    maps are divided by the same total. With a single word token its map becomes constant.
    """
    if not classes.semantic:
        raise MaskError(f"{classes.prompt!r} has no word tokens to renormalise over")
    maps = maps.float()
    total = maps[..., list(classes.semantic), :, :].sum(dim=-3, keepdim=True)
    return maps / (total + eps)


def _kind_positions(classes: TokenClasses, word: str) -> dict[str, Sequence[int]]:
    return {"object": classes.positions_of(word), "real [EOS]": classes.eos[:1], "[EOS] class": classes.eos_class}


def reference_masks(rec, records: Sequence, references: Sequence[np.ndarray] | None = None,
                    threshold: str | float = "mean", resolution: int | Size | None = None) -> list[np.ndarray]:
    """The object mask of each sample that :func:`auroc_table` scores against (and its chance level uses).

    ``references`` as given (one boolean mask per sample), or, when ``None``, the first object word's
    raw map at the last step binarised by ``threshold``, at the map's own size.
    """
    maps = rec.maps(resolution)
    if maps.shape[1] != len(records):
        raise MaskError(f"{maps.shape[1]} samples were recorded but {len(records)} prompt records were given")
    if references is not None:
        if len(references) != len(records):
            raise MaskError(f"{len(references)} reference masks for {len(records)} samples")
        return [np.asarray(r, bool) for r in references]
    out = []
    for i, record in enumerate(records):
        classes = pipeline_token_classes(rec.pipe, record.prompt)
        word = object_words(record.attributes)[0]
        out.append(binarize(token_map(maps[-1, i], classes.positions_of(word)).numpy(), threshold))
    return out


def auroc_table(
    rec,
    records: Sequence,
    references: Sequence[np.ndarray] | None = None,
    threshold: str | float = "mean",
    resolution: int | Size | None = None,
    normalizations: Sequence[str] = NORMALIZATIONS,
    kinds: Sequence[str] = AUROC_KINDS,
):
    """AUROC per step of each object token's map, and of the [EOS] maps beside it, against the object mask.

    Args:
        rec: a per-step :class:`helpers.hooks.attention.AttentionRecorder` of ``len(records)`` samples.
        records: prompt records (their object words, :func:`object_words`).
        references: one boolean object mask per sample (e.g. :func:`foreground_mask` of the final
            image). ``None``: the first object token's binarised (``threshold``) raw map at the last step,
            at the map's own size (for real images without a segmenter; then the object token's last-step
            AUROC is near 1 by construction and only the [EOS] maps and earlier steps are informative).
        resolution: which maps (``None``: all recorded sizes averaged).
        normalizations: ``"none"`` (the recorded attention) and/or ``"words"`` (:func:`renormalize_over_words`).
        kinds: ``"object"`` (each object word's map; one row per word), ``"real [EOS]"``, ``"[EOS] class"``
            (the sum of the real [EOS]'s and the padding's maps; one row per sample).

    Columns: ``sample, prompt, kind, word, normalization, step, auroc`` (NaN where the mask is empty or full).
    """
    import pandas as pd

    bad = [n for n in normalizations if n not in NORMALIZATIONS] + [k for k in kinds if k not in AUROC_KINDS]
    if bad:
        raise MaskError(f"unknown normalization or kind {bad}: choose from {NORMALIZATIONS} and {AUROC_KINDS}")
    maps = rec.maps(resolution)
    refs = reference_masks(rec, records, references, threshold, resolution)
    rows = []
    for i, (record, ref) in enumerate(zip(records, refs)):
        classes = pipeline_token_classes(rec.pipe, record.prompt)
        words = list(dict.fromkeys(object_words(record.attributes)))
        for norm in normalizations:
            sample = maps[:, i] if norm == "none" else renormalize_over_words(maps[:, i], classes)
            for kind in kinds:
                for word in (words if kind == "object" else [None]):
                    positions = _kind_positions(classes, word or words[0])[kind]
                    if not positions:
                        continue
                    heat = upsample(token_map(sample, positions).numpy(), tuple(ref.shape))  # (steps, H, W)
                    values = _auroc_rows(heat.reshape(len(heat), -1), ref)
                    rows += [(i, record.prompt, kind, word, norm, s, float(v)) for s, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["sample", "prompt", "kind", "word", "normalization", "step", "auroc"])


def random_map_auroc(reference: np.ndarray, map_size: Size, n_draws: int = 200, seed: int = 0) -> np.ndarray:
    """Chance AUROC: of ``n_draws`` random maps against ``reference``, one value per draw.

    Each random map has i.i.d. uniform cells at the attention's own ``map_size`` and is upsampled
    bilinearly like a real map, so its spread reflects how coarse the maps are and how large the
    object is. Its expectation is 0.5 exactly; the draws give the interval a single map falls in
    by chance (numpy ``default_rng(seed)``).
    """
    ref = np.asarray(reference, bool)
    if not ref.any() or ref.all():
        raise MaskError("the reference mask is empty or full: the AUROC of any map is undefined")
    rng = np.random.default_rng(seed)
    draws = rng.random((n_draws, *map_size), dtype=np.float32)
    return _auroc_rows(upsample(draws, tuple(ref.shape)).reshape(n_draws, -1), ref)


def auroc_chance(references: Sequence[np.ndarray], map_size: Size, n_draws: int = 200, seed: int = 0,
                 level: float = 0.95):
    """Per sample, the chance AUROC of :func:`random_map_auroc`: its mean and the central ``level`` range of the draws.

    Columns ``sample, chance, lo, hi`` (NaN for an empty or full reference). The mean over samples with a t
    interval (:func:`helpers.stats.mean_ci`) is the chance level beside a mean AUROC, as the chance F1 of
    random masks is for the F1 (``helpers.verdicts.shape_first``).
    """
    import pandas as pd

    rows = []
    for i, ref in enumerate(references):
        ref = np.asarray(ref, bool)
        if not ref.any() or ref.all():
            rows.append((i, np.nan, np.nan, np.nan))
            continue
        draws = random_map_auroc(ref, map_size, n_draws, seed + i)
        lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2])
        rows.append((i, float(draws.mean()), float(lo), float(hi)))
    return pd.DataFrame(rows, columns=["sample", "chance", "lo", "hi"])


def auroc_by_step(table, chance=None, level: float = 0.95):
    """Mean AUROC per ``normalization, kind, step`` with a t interval over maps (n = maps scored).

    ``chance`` (an :func:`auroc_chance` table) adds the rows of kind ``"chance"``: the mean of the
    per-sample chance AUROCs with its t interval (the same at every step), and ``single_lo`` /
    ``single_hi``, the mean central range of one random map.
    """
    import pandas as pd

    rows = []
    for (norm, kind, step), g in table.groupby(["normalization", "kind", "step"], sort=True):
        m, lo, hi, n = stats.mean_ci_or_nan(g["auroc"], level)
        rows.append({"normalization": norm, "kind": kind, "step": int(step), "mean": m, "lo": lo, "hi": hi, "n": n})
    if chance is not None and len(table):
        m, lo, hi, n = stats.mean_ci_or_nan(chance["chance"], level)
        single = chance[["lo", "hi"]].mean()
        for norm in table["normalization"].unique():
            rows += [{"normalization": norm, "kind": "chance", "step": int(s), "mean": m, "lo": lo, "hi": hi, "n": n,
                      "single_lo": float(single["lo"]), "single_hi": float(single["hi"])}
                     for s in sorted(table["step"].unique())]
    return pd.DataFrame(rows)
