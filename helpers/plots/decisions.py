"""Figures of when each attribute is decided (notebook 01): decision steps beside the reader's blur control."""

from __future__ import annotations

import numpy as np

from .. import stats
from ..analysis.decisions import DecisionResult, readable_sigma


def _wilson_band(accuracy: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson 95% bounds of accuracies out of ``n`` images each (NaN where undefined)."""
    lo, hi = np.full(len(accuracy), np.nan), np.full(len(accuracy), np.nan)
    for j, (a, k) in enumerate(zip(accuracy, n)):
        if np.isfinite(a) and k > 0:
            e = stats.wilson(int(round(a * k)), int(k))
            lo[j], hi[j] = e.lo, e.hi
    return np.asarray(lo, float), np.asarray(hi, float)


def plot_decisions(result: DecisionResult, min_accuracy: float = 0.9, title: str | None = None):
    """Decision steps per attribute and, beside them, what the reader can read.

    Panels: (1) share of prompts whose reading of each attribute has settled on the final image's by
    step s (legend: mean step with its 95% t interval and n); with a blur control also (2) the reader's
    accuracy on blurred renders of known scenes per sigma (Wilson 95% bands; dashed: ``min_accuracy``) and
    (3) how blurred x̂0 is at each step (:func:`helpers.analysis.decisions.x0_blur`: mean and 10-90% band
    over prompts) with each attribute's readable sigma (dashed). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    with_control = result.control is not None and result.blur is not None
    fig, axes = plt.subplots(1, 3 if with_control else 1, figsize=(15.5 if with_control else 5.6, 3.8), squeeze=False)
    axes = axes[0]
    colors = dict(zip(result.attributes, sns.color_palette("tab10", len(result.attributes))))
    summary = result.summary(min_accuracy)
    n_steps = result.num_steps
    steps = np.arange(1, n_steps + 2)
    for a in result.attributes:
        decided = result.decisions.loc[result.decisions["attribute"] == a, "decided_at"].to_numpy() + 1
        share = [(decided <= s).mean() for s in steps]
        row = summary.loc[a]
        interval = "" if not np.isfinite(row["decided_step_lo"]) else \
            f" [{row['decided_step_lo']:.1f}, {row['decided_step_hi']:.1f}]"
        axes[0].step(steps, share, where="post", color=colors[a],
                     label=f"{a}: {row['decided_step']:.1f}{interval} (n={int(row['n'])})")
    axes[0].axvline(n_steps + 0.5, color="gray", lw=0.8, ls=":")
    axes[0].set(xlabel=f"denoising step (N = {n_steps}; N+1: only the final image)", ylabel="share of prompts decided",
                ylim=(0, 1.02), title="Reading of x̂0 equals the final image's from step s on")
    axes[0].legend(fontsize=7, title="mean decision step [95% t]", title_fontsize=7)
    if with_control:
        control = result.control.sort_index()
        sigmas = control.index.to_numpy(float)
        for a in result.attributes:
            acc = control[a].to_numpy(float)
            lo, hi = _wilson_band(acc, control["n"].to_numpy(float))
            axes[1].plot(sigmas, acc, marker="o", markersize=3, color=colors[a], label=a)
            axes[1].fill_between(sigmas, lo, hi, color=colors[a], alpha=0.15)
        axes[1].axhline(min_accuracy, color="gray", ls="--", lw=1)
        axes[1].set(xlabel="Gaussian blur sigma (pixels)", ylabel="reader's accuracy", ylim=(0, 1.02),
                    title=f"Reader on blurred renders (n={int(control['n'].iloc[0])})")
        axes[1].legend(fontsize=7)
        blur = result.blur
        x = np.arange(1, blur.shape[0] + 1)
        axes[2].plot(x, blur.mean(axis=1), color="k", label="x̂0 (mean)")
        axes[2].fill_between(x, np.quantile(blur, 0.1, axis=1), np.quantile(blur, 0.9, axis=1), color="k", alpha=0.15)
        for a, sigma in readable_sigma(control, min_accuracy).items():
            if sigma is not None and a in colors:
                axes[2].axhline(sigma, color=colors[a], ls="--", lw=1, label=f"{a} readable up to {sigma:g}")
        axes[2].set(xlabel="denoising step", ylabel="blur of the final image nearest to x̂0 (sigma)",
                    title="How blurred x̂0 is")
        axes[2].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
