"""When each attribute is decided: read x̂0 at every step with a classifier (issue: the measurements).

The attention maps of notebook 01 say *where* an object token looks; these say *when* the image
commits to each attribute: decode the predicted clean image x̂0(t) at every step, read shape, colour,
size, position and pattern with the attribute evaluator (or any classifier: on real models e.g. CLIP
zero-shot over the prompt's object words), and find the first step after which the reading equals the
final image's and stays.

* :func:`decision_steps` -- the pure rule on readings (tested on synthetic sequences);
* :func:`read_steps` / :func:`read_trajectory` -- readings of x̂0 at every step (decoded images, or a
  recorded trajectory), then of the final image;
* :func:`blur_control` -- the reader's accuracy on blurred renders of known scenes, so that an early
  "undecided" is not just the evaluator failing on a blurry x̂0; :func:`readable_sigma` -- the largest
  blur each attribute is still read at;
* :func:`x0_blur` -- how blurred x̂0 is at each step: the blur of the final image nearest to it;
* :func:`measure_decisions` -> :class:`DecisionResult` -- all of the above for one set of images, and
  :meth:`DecisionResult.summary`, the per-attribute table (mean and 95% interval over prompts, n).

The reader is any callable ``images -> [{attribute: value}]``: the toy world's attribute evaluator
(``Scorer.attributes``) or, on real models, a classifier of one's own (e.g. CLIP zero-shot over the
prompt set's object words); these functions never load one themselves.

>>> result = measure_decisions(x0_images, images, scorer.attributes, renders, truths, ATTRIBUTES)
>>> result.summary()          # per attribute: decision step, readable blur, x̂0 readable from step
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import stats

Reader = Callable[[np.ndarray], list]
#: Gaussian blur levels (pixels, on the 64x64 toy images) of the reader's control.
SIGMAS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def decision_steps(readings: Sequence[Sequence[Mapping[str, str]]], attributes: Sequence[str]) -> pd.DataFrame:
    """Per sample and attribute, the first step from which the reading equals the last step's and stays.

    Args:
        readings: ``readings[step][sample]`` -> ``{attribute: value}`` (the last step is the final image).
        attributes: which attributes to decide.

    Returns:
        One row per (sample, attribute): ``decided_at`` (0-based step; the last step when only the final
        reading matches), ``fraction`` = ``decided_at / (steps - 1)``, ``final`` (the final reading).
    """
    steps = len(readings)
    if steps < 2:
        raise ValueError(f"need readings of at least 2 steps, got {steps}")
    n = len(readings[0])
    if any(len(r) != n for r in readings):
        raise ValueError("every step needs one reading per sample")
    rows = []
    for i in range(n):
        for a in attributes:
            final = readings[-1][i].get(a)
            decided = steps - 1
            for s in range(steps - 2, -1, -1):
                if readings[s][i].get(a) != final:
                    break
                decided = s
            rows.append({"sample": i, "attribute": a, "decided_at": decided, "fraction": decided / (steps - 1),
                         "final": final})
    return pd.DataFrame(rows)


def read_steps(step_images: np.ndarray, final_images: np.ndarray | None, read: Reader) -> list[list[dict]]:
    """``read`` on already decoded x̂0 images ``(steps, samples, H, W, 3)``, one step at a time, then on the final images.

    Returns ``readings[step][sample]``; the last entry reads ``final_images`` (left out when ``None``).
    """
    step_images = np.asarray(step_images)
    if step_images.ndim != 5:
        raise ValueError(f"step images must be (steps, samples, H, W, 3), got shape {step_images.shape}")
    if final_images is not None and len(final_images) != step_images.shape[1]:
        raise ValueError(f"{step_images.shape[1]} trajectories but {len(final_images)} final images")
    readings = [list(read(step_images[j])) for j in range(step_images.shape[0])]
    if final_images is not None:
        readings.append(list(read(np.asarray(final_images))))
    return readings


def read_trajectory(pipe, traj, read: Reader, steps: Sequence[int] | None = None,
                    batch_size: int = 16) -> list[list[dict]]:
    """``read`` (e.g. ``Scorer.attributes``) on the decoded x̂0 of every step (or of ``steps``), then the final image.

    Returns ``readings[step][sample]``; the last entry reads the generated image (the decoded final latent).
    """
    chosen = list(range(traj.num_steps)) if steps is None else list(steps)
    images = traj.decode(pipe, "x0", steps=chosen, batch_size=batch_size)  # (len(chosen), samples, H, W, 3)
    return read_steps(images, traj.images, read)


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``(n, H, W, 3)`` images over the two spatial axes (``sigma`` 0: unchanged)."""
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, dtype=np.float32)
    if sigma == 0:
        return images
    return np.stack([gaussian_filter(im, sigma=(sigma, sigma, 0)) for im in images])


def _as_unit_float(images) -> np.ndarray:
    images = np.asarray(images)
    return images.astype(np.float32) / 255 if images.dtype == np.uint8 else images.astype(np.float32)


def blur_control(read: Reader, images: np.ndarray, truths: Sequence[Mapping[str, str]],
                 sigmas: Sequence[float] = SIGMAS[:5], attributes: Sequence[str] | None = None,
                 batch_size: int = 64) -> pd.DataFrame:
    """The reader's accuracy per attribute on Gaussian-blurred images of known scenes (one row per sigma).

    ``images`` are ``(n, H, W, 3)`` (floats in [0, 1] or uint8; e.g. toy-world renders), ``truths`` their
    attributes. Columns: one accuracy per attribute, and ``n`` (images read at each sigma; an attribute's
    accuracy is out of the images whose truth names it). ``read`` is called on at most ``batch_size``
    images at a time.
    """
    images = _as_unit_float(images)
    if len(images) != len(truths):
        raise ValueError(f"{len(images)} images but {len(truths)} truths")
    attributes = list(attributes or sorted({a for t in truths for a in t}))
    rows = []
    for sigma in sigmas:
        blurred = np.clip(_blur(images, float(sigma)), 0, 1)
        predicted = [p for i in range(0, len(blurred), batch_size) for p in read(blurred[i:i + batch_size])]
        row = {"sigma": float(sigma)}
        for a in attributes:
            hits = [p.get(a) == t[a] for p, t in zip(predicted, truths) if a in t]
            row[a] = float(np.mean(hits)) if hits else np.nan
        row["n"] = len(images)
        rows.append(row)
    return pd.DataFrame(rows).set_index("sigma")


def readable_sigma(control: pd.DataFrame, min_accuracy: float = 0.9) -> dict[str, float | None]:
    """Per attribute, the largest sigma of :func:`blur_control` up to which the accuracy stays ``>= min_accuracy``.

    ``None`` when the reader misses the bar already at the smallest sigma (e.g. unblurred renders).
    """
    control = control.sort_index()
    out: dict[str, float | None] = {}
    for a in [c for c in control.columns if c != "n"]:
        below = np.nonzero(~(control[a].to_numpy(float) >= min_accuracy))[0]
        last = len(control) if not below.size else int(below[0])
        out[a] = float(control.index[last - 1]) if last else None
    return out


def x0_blur(step_images: np.ndarray, final_images: np.ndarray, sigmas: Sequence[float] = SIGMAS) -> np.ndarray:
    """How blurred x̂0 is: per step and sample, the sigma whose Gaussian blur of the final image is nearest to x̂0.

    ``step_images`` ``(steps, samples, H, W, 3)``, ``final_images`` ``(samples, H, W, 3)``; nearest by mean
    squared pixel difference. Returns ``(steps, samples)`` sigmas from ``sigmas``. An approximation: an early
    x̂0 is not only blurred but also off in colour and place; it then gets the largest sigma of the grid.
    """
    steps = _as_unit_float(step_images)
    final = _as_unit_float(final_images)
    if steps.ndim != 5 or steps.shape[1:] != final.shape:
        raise ValueError(f"step images {steps.shape} do not match final images {final.shape}")
    sigmas = [float(s) for s in sigmas]
    flat = steps.reshape(*steps.shape[:2], -1)  # (steps, samples, pixels)
    dist = np.stack([((flat - _blur(final, s).reshape(len(final), -1)[None]) ** 2).mean(-1) for s in sigmas])
    return np.asarray(sigmas)[dist.argmin(axis=0)]  # (steps, samples)


@dataclasses.dataclass(frozen=True)
class DecisionResult:
    """Decision steps of one set of trajectories with the reader's blur control.

    Attributes:
        decisions: :func:`decision_steps` table (one row per sample and attribute; ``decided_at`` 0-based).
        control: :func:`blur_control` table (``None`` without control images).
        blur: :func:`x0_blur` of every step, ``(steps, samples)`` (``None`` without control images).
        num_steps: sampling steps N (readings are x̂0 of steps 1..N, then the final image).
        attributes: the attributes decided.
    """

    decisions: pd.DataFrame
    control: pd.DataFrame | None
    blur: np.ndarray | None
    num_steps: int
    attributes: tuple[str, ...]

    def summary(self, min_accuracy: float = 0.9, level: float = 0.95) -> pd.DataFrame:
        """Per attribute: the decision step and, beside it, when the reader can read x̂0.

        Columns: ``n`` (prompts); ``decided_step`` with ``_lo`` / ``_hi`` (1-based step from which the
        reading equals the final image's and stays, N + 1 when only the final image does; mean and t
        interval over prompts); ``decided_fraction`` (the mean step over N); ``decided_early`` with Wilson
        ``_lo`` / ``_hi`` (share of prompts decided within the first ceil(N/5) steps); ``readable_sigma``
        (:func:`readable_sigma` of the control at ``min_accuracy``); ``readable_from_step`` (mean over
        prompts of the first step from which x̂0's blur stays within it); ``reader_bound`` with Wilson
        ``_lo`` / ``_hi`` (share of prompts decided after step 1 but no later than x̂0 became readable:
        only there can the decision step be the reader's limit rather than the image's).
        """
        n_steps, rows = self.num_steps, []
        early = max(1, math.ceil(n_steps / 5))
        readable = readable_sigma(self.control, min_accuracy) if self.control is not None else {}
        for a in self.attributes:
            d = self.decisions[self.decisions["attribute"] == a].sort_values("sample")
            step = d["decided_at"].to_numpy() + 1
            n = len(step)
            m, lo, hi, _ = stats.mean_ci_or_nan(step, level)
            k = int((step <= early).sum())
            w = stats.wilson(k, n, level) if n else None
            row = {"attribute": a, "n": n, "decided_step": m, "decided_step_lo": lo, "decided_step_hi": hi,
                   "decided_fraction": m / n_steps, "decided_early": k / n if n else math.nan,
                   "decided_early_lo": w.lo if w else math.nan, "decided_early_hi": w.hi if w else math.nan,
                   "early_steps": early, "readable_sigma": readable.get(a, math.nan)}
            sigma = readable.get(a)
            if self.blur is not None and sigma is not None:
                ok = self.blur[:, d["sample"].to_numpy()] <= sigma + 1e-9  # (steps, n)
                from_step = np.array([_settled(ok[:, j]) for j in range(ok.shape[1])], dtype=float)
                row["readable_from_step"] = float(np.nanmean(from_step)) if np.isfinite(from_step).any() else math.nan
                bound = [1 < s <= f for s, f in zip(step, from_step) if np.isfinite(f)]
                if bound:
                    e = stats.wilson(int(sum(bound)), len(bound), level)
                    row |= {"reader_bound": e.value, "reader_bound_lo": e.lo, "reader_bound_hi": e.hi}
            rows.append(row)
        return pd.DataFrame(rows).set_index("attribute")


def _settled(flags: np.ndarray) -> float:
    """1-based index from which every flag is True (NaN if the last one is False)."""
    false = np.nonzero(~flags)[0]
    if not false.size:
        return 1.0
    return float(false[-1] + 2) if false[-1] + 1 < len(flags) else math.nan


def measure_decisions(step_images: np.ndarray, final_images: np.ndarray, read: Reader,
                      control_images: np.ndarray | None = None,
                      control_truths: Sequence[Mapping[str, str]] | None = None,
                      attributes: Sequence[str] = ("shape", "color", "size", "position", "pattern"),
                      sigmas: Sequence[float] = SIGMAS) -> DecisionResult:
    """Decision step per sample and attribute from x̂0 of every step, with the reader's blur control.

    Args:
        step_images: decoded x̂0 of every step, ``(steps, samples, H, W, 3)`` in [0, 1]
            (``Trajectory.decode(pipe, "x0")``).
        final_images: the generated images ``(samples, H, W, 3)``.
        read: the classifier, ``images -> [{attribute: value}]`` (e.g. ``Scorer.attributes``).
        control_images, control_truths: images of known scenes and their attributes for
            :func:`blur_control` (``None``: no control, e.g. a real model without renders).
        attributes: which attributes to decide.
        sigmas: blur levels of the control and of :func:`x0_blur`.
    """
    readings = read_steps(step_images, final_images, read)
    decisions = decision_steps(readings, attributes)
    control = blur = None
    if control_images is not None:
        if control_truths is None:
            raise ValueError("control images need their truths (control_truths)")
        control = blur_control(read, control_images, control_truths, sigmas, attributes)
        blur = x0_blur(step_images, final_images, sigmas)
    return DecisionResult(decisions, control, blur, int(np.asarray(step_images).shape[0]), tuple(attributes))
