"""Figures of notebook 01 (the paper's Fig. 1): x̂0 / x_t strips, per-token maps, relative F1, and the explorer.

Each takes a :class:`helpers.analysis.shape_first.ShapeFirstRun` (or its :class:`~helpers.analysis.shape_first.RelativeF1`)
and returns the figure; :func:`explore` draws the interactive map explorer.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from ..analysis.masks import object_words
from ..analysis.mass import word_maps
from ..analysis.shape_first import ShapeFirstRun
from .grids import explorer, image_grid, overlay


def plot_strips(pipe, run: ShapeFirstRun, n: int = 3):
    """x̂0 and x_t of the first ``n`` prompts at the shown steps (x_t decoded with ``pipe``), one row each."""
    xt_images = run.trajectory.decode(pipe, "xt", steps=run.shown)
    panels, titles, rows = [], [], []
    for i in range(n):
        panels += [run.x0(s, i) for s in run.shown] + list(xt_images[:, i])
        titles += [f"step {s + 1}" for s in run.shown] + [""] * len(run.shown)
        rows += [f"x̂0 #{i}", f"x_t #{i}"]
    return image_grid(panels, titles, ncols=len(run.shown), size=1.3, row_labels=rows,
                      suptitle="x̂0 (predicted clean image) and x_t over the steps")


def plot_token_maps(run: ShapeFirstRun, resolution: int | None, n: int = 3):
    """Fig. 1a: each token's map (mean over steps, heads and the layers of ``resolution``; colour scaled per panel)
    over the final image, for the first ``n`` prompts; ``padding (mean)`` is the padding positions' mean map."""
    import matplotlib.pyplot as plt

    mean_maps = run.rec.mean_maps(resolution)  # (prompts, tokens, h, w)
    labelled = [word_maps(mean_maps[i], run.classes[i]) for i in range(n)]
    ncols = 1 + max(len(m) for m in labelled)
    fig, axes = plt.subplots(n, ncols, figsize=(1.5 * ncols, 1.7 * n), squeeze=False)
    for i, maps in enumerate(labelled):
        axes[i, 0].imshow(run.images[i])
        axes[i, 0].set_title(f"#{i} final image", fontsize=7)
        for j, (label, heat) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(overlay(run.images[i], heat.numpy()))
            axes[i, j].set_title(label, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Cross-attention per token, mean over steps")
    fig.tight_layout()
    return fig


def plot_relative_f1(curves: Mapping[str, pd.DataFrame], level: float = 0.9):
    """Fig. 1b: one panel per curve (:attr:`helpers.analysis.shape_first.RelativeF1.curves`): mean (solid), median
    (dotted) and the 25-75th percentile band over prompts per step; dashed: ``level``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.4), squeeze=False)
    for ax, (title, c) in zip(axes[0], curves.items()):
        ax.fill_between(c.index, c.q25, c.q75, alpha=0.25)
        ax.plot(c.index, c["mean"], marker="o", markersize=3, label="mean")
        ax.plot(c.index, c["median"], ls=":", label="median")
        ax.axhline(level, color="gray", ls="--", lw=1)
        ax.set(title=title, xlabel="denoising step", ylim=(0, max(1.15, float(c.q75.max()) + 0.05)))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def explore(run: ShapeFirstRun):
    """Pick a prompt, a step and a token: the token's map at that step next to x̂0 at that step.

    The first view is drawn now (a static view where ipywidgets is missing); in Jupyter or Colab the widgets
    (sliders redraw on release) redraw it. Returns the widget box or ``None``.
    """
    import matplotlib.pyplot as plt

    records, prompts, steps = run.records, run.prompts, run.x0_steps
    labels_of = [list(word_maps(run.step_maps[0, i], run.classes[i])) for i in range(len(prompts))]
    first = steps[min(2, len(steps) - 1)]

    def show(sample: int = 0, step: int = 0, token: str | None = None) -> None:
        """Token map at one step next to x̂0 at that step."""
        maps = word_maps(run.step_maps[step, sample], run.classes[sample])
        token = token if token in maps else object_words(records[sample].attributes)[0]
        fig, axes = plt.subplots(1, 3, figsize=(7.2, 2.6))
        x0 = run.x0(step, sample)
        axes[0].imshow(x0)
        axes[0].set_title(f"x̂0, step {step + 1}/{run.num_steps}", fontsize=8)
        axes[1].imshow(maps[token].numpy(), cmap="magma")
        axes[1].set_title(f"map of {token!r}", fontsize=8)
        axes[2].imshow(overlay(x0, maps[token].numpy()))
        axes[2].set_title(prompts[sample][:40], fontsize=7)
        for ax in axes:
            ax.axis("off")
        plt.show()

    try:
        import ipywidgets as widgets
    except ImportError:
        show(0, first)
        print("ipywidgets is not installed: only the static view above is shown.")
        return None
    prompt_w = widgets.Dropdown(options=[(p[:48], i) for i, p in enumerate(prompts)], description="prompt")
    step_w = widgets.SelectionSlider(options=[(str(s + 1), s) for s in steps], description="step", value=first,
                                     continuous_update=False)
    token_w = widgets.Dropdown(options=labels_of[0], value=object_words(records[0].attributes)[0], description="token")
    prompt_w.observe(lambda change: setattr(token_w, "options", labels_of[change["new"]]), names="value")
    return explorer(show, sample=prompt_w, step=step_w, token=token_w)  # first view drawn now; redraws on change

