"""Figures of the acceleration benchmark: the speed/quality front and example images per method."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..bench.acceleration import KINDS
from ..bench.summaries import COLUMNS, pareto_front


def plot_pareto(table: pd.DataFrame):
    """Saved latency vs attribute accuracy (or Image-CLIPScore) and vs L1, per (sampler, N), with the
    latency's 95% interval as horizontal bars where the table has one; returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    quality_col = "attribute_accuracy" if table.get("attribute_accuracy", pd.Series(dtype=float)).notna().any() \
        else ("image_clip_score" if "image_clip_score" in table else None)
    panels = [(quality_col, True), ("l1", False)] if quality_col else [("l1", False)]
    blocks = list(table.groupby(["sampler", "steps"]))
    fig, axes = plt.subplots(len(blocks), len(panels), figsize=(5.5 * len(panels), 3.6 * len(blocks)), squeeze=False)
    palette = dict(zip(KINDS, sns.color_palette("tab10", len(KINDS))))
    for r, ((sampler, steps), block) in enumerate(blocks):
        for c, (col, higher) in enumerate(panels):
            ax = axes[r, c]
            for kind, part in block.groupby("kind"):
                ax.scatter(part["saved_latency"], part[col], label=kind, color=palette[kind], s=36,
                           marker="D" if "+" in kind else "o")  # diamonds: compositions with DeepCache
                if {"saved_lo", "saved_hi"} <= set(part.columns):  # the latency's 95% interval over rounds
                    x = part["saved_latency"].to_numpy(float)
                    err = np.abs(np.vstack([x - part["saved_lo"].to_numpy(float), part["saved_hi"].to_numpy(float) - x]))
                    ax.errorbar(x, part[col], xerr=np.nan_to_num(err), fmt="none", ecolor=palette[kind], lw=0.8)
                if kind in ("uncond", "cond"):
                    for _, p in part.iterrows():
                        ax.annotate(f"k={p['k']:.0f}", (p["saved_latency"], p[col]), fontsize=6,
                                    xytext=(2, 2), textcoords="offset points")
            front = pareto_front(block, "saved_latency", col, higher)
            ax.plot(front["saved_latency"], front[col], color="gray", lw=1, ls="--", zorder=0, label="Pareto front")
            ax.set_xlabel("saved latency vs full CFG (%)")
            ax.set_ylabel(COLUMNS[col])
            ax.set_title(f"{sampler.upper()}, N={steps}", fontsize=9)
            if r == 0 and c == len(panels) - 1:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_examples(images: dict[str, np.ndarray], prompts: Sequence[str], title: str | None = None, n: int = 4):
    """Image rows per method (first ``n`` prompts); returns the figure."""
    from .grids import image_grid

    n = min(n, len(prompts))
    labels = list(images)
    grid = [images[m][i] for m in labels for i in range(n)]
    titles = [prompts[i] for i in range(n)] + [""] * (len(grid) - n)
    fig = image_grid(grid, titles=titles, ncols=n, size=1.3, suptitle=title,
                     row_labels=[label.replace(" (", "\n(") for label in labels])
    for ax in fig.axes:
        ax.yaxis.label.set_size(6)
    return fig


def plot_image_file(path: str | Path, pixels_per_inch: float = 110):
    """A saved image (the benchmark's ``examples_<sampler>_<N>.png``) as a figure without axes, sized
    ``pixels_per_inch`` image pixels per inch; returns the figure."""
    import matplotlib.pyplot as plt

    image = plt.imread(path)
    fig, ax = plt.subplots(figsize=(image.shape[1] / pixels_per_inch, image.shape[0] / pixels_per_inch))
    ax.imshow(image)
    ax.axis("off")
    return fig
