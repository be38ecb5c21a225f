"""When each attribute is decided: read x̂0 at every step with a classifier (issue: the measurements).

The attention maps of notebook 01 say *where* an object token looks; these say *when* the image
commits to each attribute: decode the predicted clean image x̂0(t) at every step, read shape, colour,
size, position and pattern with the attribute evaluator (or any classifier: on real models e.g. CLIP
zero-shot over the prompt's object words), and find the first step after which the reading equals the
final image's and stays.

* :func:`decision_steps` -- the pure rule on readings (tested on synthetic sequences);
* :func:`read_trajectory` -- readings of a recorded trajectory's x̂0 at every step;
* :func:`blur_control` -- the reader's accuracy on blurred renders of known scenes, so that an early
  "undecided" is not just the evaluator failing on a blurry x̂0.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd


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


def read_trajectory(pipe, traj, read: Callable[[np.ndarray], list[dict]], steps: Sequence[int] | None = None,
                    batch_size: int = 16) -> list[list[dict]]:
    """``read`` (e.g. ``Scorer.attributes``) on the decoded x̂0 of every step (or of ``steps``), then the final image.

    Returns ``readings[step][sample]``; the last entry reads the generated image (the decoded final latent).
    """
    chosen = list(range(traj.num_steps)) if steps is None else list(steps)
    images = traj.decode(pipe, "x0", steps=chosen, batch_size=batch_size)  # (len(chosen), samples, H, W, 3)
    readings = [read(images[j]) for j in range(len(chosen))]
    if traj.images is not None:
        readings.append(read(traj.images))
    return readings


def blur_control(read: Callable[[np.ndarray], list[dict]], images: np.ndarray, truths: Sequence[Mapping[str, str]],
                 sigmas: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 4.0), attributes: Sequence[str] | None = None
                 ) -> pd.DataFrame:
    """The reader's accuracy per attribute on Gaussian-blurred images of known scenes (one row per sigma).

    ``images`` are ``(n, H, W, 3)`` floats in [0, 1] (e.g. toy-world renders), ``truths`` their attributes.
    """
    from scipy.ndimage import gaussian_filter

    attributes = list(attributes or sorted({a for t in truths for a in t}))
    rows = []
    for sigma in sigmas:
        blurred = images if sigma == 0 else np.stack([gaussian_filter(im, sigma=(sigma, sigma, 0)) for im in images])
        predicted = read(np.clip(blurred, 0, 1))
        row = {"sigma": float(sigma)}
        for a in attributes:
            hits = [p.get(a) == t[a] for p, t in zip(predicted, truths) if a in t]
            row[a] = float(np.mean(hits)) if hits else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("sigma")
