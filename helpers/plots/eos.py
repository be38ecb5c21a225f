"""Figures of notebook 04 (switched [EOS]): Fig 4, Fig 12 (also per step against chance), Table 1, the ablations
and the controls. Each function takes what :mod:`helpers.analysis.eos_study` returns and returns the figure."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..analysis.eos_controls import ORDERS
from .grids import image_grid, overlay

#: Metrics of the k-ablation panels, those present.
K_METRICS = ("CLIPScore", "image-CLIPScore", "evaluator: shape", "evaluator vs images: shape")
#: One colour per order of the k ablation.
ORDER_COLORS = {"first": "C0", "last": "C1", "random": "C2"}


def switched_grid(study):
    """Fig 4: rows are the first ``n_fig`` pairs; columns A's image, B's image, the switched prompt's image."""
    grid, titles = [], []
    images_A, images_B, images_S = (study.images[k] for k in ("A", "B", "switched"))
    for i in range(study.settings.n_fig):
        grid += [images_A[i], images_B[i], images_S[i]]
        titles += [f"A: {study.pairs[i].source.prompt}", f"B: {study.pairs[i].target.prompt}",
                   "switched: A's words + B's [EOS]"]
    return image_grid(grid, titles, ncols=3, size=2.2, suptitle="A / B / switched prompt, same seed per row")


def switched_attention(maps):
    """Fig 12: per pair, A's word in A's image, B's word in B's image, the switched image and, under the switched
    prompt, the maps of A's object word, A's attribute word and the [EOS] (which holds B's)."""
    panels, titles = [], []
    for row in maps.rows:
        image_a, image_b, image_s = row["images"]
        word_a, attr_a, word_b = row["words"]
        panels += [overlay(image_a, row["heat_a"]), overlay(image_b, row["heat_b"]), image_s,
                   overlay(image_s, row["heat_s"]), overlay(image_s, row["heat_attr"]), overlay(image_s, row["heat_eos"])]
        titles += [f"A: '{word_a}'", f"B: '{word_b}'", "switched image",
                   f"switched: '{word_a}' (A)", f"switched: '{attr_a}' (A)",
                   "switched: [EOS] (B's)"]
    return image_grid(panels, titles, ncols=6, size=1.9, suptitle="Cross-attention of A's words under the switched prompt")


def maps_by_step(steps, table: pd.DataFrame | None = None, n_shown: int = 6):
    """Fig 12 per step: the examples' maps (A's object word under the switched prompt, over the switched image) at
    ``n_shown`` steps, and below, per map, the F1 with the image's object mask per step (mean over pairs, 95% t
    band) beside the F1 of a random mask of the same area (dashed). ``steps``: an
    :class:`helpers.analysis.eos_controls.MapSteps`; ``table``: its ``table()`` (computed if omitted)."""
    import matplotlib.pyplot as plt

    table = steps.table() if table is None else table
    examples = steps.examples
    n_steps = int(table["step"].max())
    shown = sorted({int(round(x)) for x in np.linspace(0, n_steps - 1, min(n_shown, n_steps))})
    name = next(iter(examples[0])) if examples else None
    fig = plt.figure(figsize=(1.5 * max(len(shown), 4), 1.5 * len(examples) + 3.2))
    grid = fig.add_gridspec(len(examples) + 1, len(shown), height_ratios=[1] * len(examples) + [2.2])
    for r, example in enumerate(examples):
        for c, s in enumerate(shown):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(overlay(example[name]["image"], example[name]["heat"][s]))
            ax.set(xticks=[], yticks=[])
            ax.grid(False)
            if r == 0:
                ax.set_title(f"step {s + 1}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"pair {r}", fontsize=8)
    ax = fig.add_subplot(grid[len(examples), :])
    for j, (label, block) in enumerate(table.groupby("map", sort=False)):
        color = f"C{j}"
        ax.plot(block["step"], block["f1"], color=color, marker="o", ms=3, label=f"{label} (n={int(block['n'].max())})")
        ax.fill_between(block["step"], block["f1_lo"], block["f1_hi"], color=color, alpha=0.2)
        ax.plot(block["step"], block["chance"], color=color, ls="--", lw=1)
    ax.plot([], [], color="gray", ls="--", lw=1, label="chance: random mask of the same area")
    ax.set(xlabel="denoising step", ylabel="F1 with the object mask", ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Maps per step: '{name}' over the switched image; F1 vs chance (95% t band)" if name else
                 "F1 per step vs chance")
    fig.tight_layout()
    return fig


def table1_bars(table1: pd.DataFrame):
    """Table 1 as bars: the evaluator against the prompts and against the same-seed images, and CLIPScore
    (against A's and B's text, and image-CLIPScore against their images); mean ± s.e."""
    import matplotlib.pyplot as plt

    panels = [("evaluator: ", "vs the prompts' ground truth"), ("evaluator vs images: ", "vs the same-seed A / B images")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), gridspec_kw={"width_ratios": [3, 3, 2]})
    for ax, (prefix, title) in zip(axes[:2], panels):
        rows = [m for m in table1.index if m.startswith(prefix)]
        x = np.arange(len(rows))
        for j, (col, label) in enumerate((("source", "A (semantic tokens)"), ("target", "B ([EOS] class)"))):
            ax.bar(x + (j - 0.5) * 0.38, table1.loc[rows, col], 0.38, yerr=table1.loc[rows, f"{col}_se"], capsize=3,
                   label=label, color=f"C{j}")
        ax.set_xticks(x, [r.replace(prefix, "") for r in rows])
        ax.set(ylim=(0, 1), ylabel="fraction of switched images", title=f"Evaluator {title}")
    rows = [m for m in ("CLIPScore", "image-CLIPScore") if m in table1.index]
    x = np.arange(len(rows))
    for j, (col, label) in enumerate((("source", "A"), ("target", "B"))):
        axes[2].bar(x + (j - 0.5) * 0.38, table1.loc[rows, col], 0.38, yerr=table1.loc[rows, f"{col}_se"], capsize=3,
                    label=label, color=f"C{j}")
    axes[2].set_xticks(x, [{"CLIPScore": "vs prompt\ntext", "image-CLIPScore": "vs same-seed\nimage"}[r] for r in rows])
    axes[2].set(ylabel="CLIPScore", title="CLIP similarity to A and B")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def k_ablation(orders_summary: pd.DataFrame, metrics: Sequence[str] = K_METRICS):
    """The k ablation: per metric, alignment with B (solid) and A (dashed) against k for each order of the
    switched slots (first, last, random); mean ± s.e. ``orders_summary``: ``KAblation.orders_summary``."""
    import matplotlib.pyplot as plt

    rows = orders_summary.reset_index()
    metrics = [m for m in metrics if m in set(rows["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for j, order in enumerate(o for o in ORDERS if o in set(rows["order"])):
            r = rows[(rows["metric"] == metric) & (rows["order"] == order)]
            x = np.arange(len(r)) + (j - 1) * 0.06
            color = ORDER_COLORS[order]
            ax.errorbar(x, r["target"], yerr=r["target_se"], marker="o", ms=4, capsize=2, color=color,
                        label=f"{order}-k: B")
            ax.errorbar(x, r["source"], yerr=r["source_se"], marker="s", ms=3, capsize=2, color=color, ls="--",
                        label=f"{order}-k: A")
            ax.set_xticks(np.arange(len(r)), r["k"])
        ax.set(xlabel="k switched [EOS] embeddings", title=metric)
    fig.tight_layout()
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncols=6, fontsize=7,
               bbox_to_anchor=(0.5, 1.0), frameon=False)
    return fig


def kl_keys(kl_result: dict, by_step: pd.DataFrame):
    """KL of the attention over tokens when the keys come from the switched prompt: the overall means (left)
    and per step, mean over prompts with a 95% t band (right), beside the KL of each distribution to uniform."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.0), gridspec_kw={"width_ratios": [2, 3]})
    axes[0].barh(["A vs switched keys", "A vs uniform", "switched keys vs uniform"],
                 [kl_result["kl_substituted"], kl_result["kl_uniform"], kl_result["kl_uniform_substituted"]], color="C0")
    axes[0].set(xlabel="KL divergence (nats), mean over\npixels, heads, layers, steps", title="Attention over tokens")
    for j, (label, block) in enumerate(by_step.groupby("measure", sort=False)):
        axes[1].plot(block["step"], block["value"], color=f"C{j}", marker="o", ms=3, label=label)
        axes[1].fill_between(block["step"], block["lo"], block["hi"], color=f"C{j}", alpha=0.2)
    n = int(by_step["n"].max()) if len(by_step) else 0
    axes[1].set(xlabel="denoising step", ylabel="KL (nats)", title=f"Per step (mean over n={n} prompts, 95% t)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def controls(rates: pd.DataFrame, comparison: str | None = None):
    """The controls as a forest plot: per condition, the rate of following B and of staying A with Wilson 95%
    intervals (``rates``: :func:`helpers.analysis.eos_controls.follow_rates`; ``comparison``: ``"images"`` when
    present, else ``"clip"``)."""
    import matplotlib.pyplot as plt

    comparison = comparison or ("images" if "images" in set(rates["comparison"]) else "clip")
    block = rates[rates["comparison"] == comparison].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(block) + 1.2))
    y = np.arange(len(block))[::-1]
    for offset, (col, label, color) in zip((0.15, -0.15), (("follows_B", "follows B", "C1"),
                                                          ("stays_A", "stays A", "C0"))):
        values = block[col].to_numpy(float)
        err = np.vstack([np.nan_to_num(values - block[f"{col}_lo"]), np.nan_to_num(block[f"{col}_hi"] - values)])
        ax.errorbar(values, y + offset, xerr=err, fmt="o", ms=4, capsize=2, color=color, label=label)
    ax.set_yticks(y, [f"{c} (n={n})" for c, n in zip(block["condition"], block["n"])], fontsize=8)
    ax.set(xlim=(-0.02, 1.02), xlabel=f"fraction of images ({comparison}; Wilson 95%)",
           title="Which positions carry B's object")
    ax.axvline(0.5, color="gray", ls=":", lw=1)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def class_only_grid(study, result):
    """Single-class conditionings: per ablation pair, A's image, the [EOS]-only image and (with an [SOS]) the
    [SOS]-only image. ``result``: :func:`helpers.analysis.eos_study.class_only`."""
    images_A, images_eos, images_sos = study.images["A"], result.images_eos, result.images_sos
    n_show = min(study.settings.n_fig, study.settings.n_ablation)
    grid, titles = [], []
    for i in range(n_show):
        grid += [images_A[i], images_eos[i]] + ([images_sos[i]] if images_sos is not None else [])
        titles += [f"A: {study.pairs[i].source.prompt}", "[EOS] only"] + (["[SOS] only"] if images_sos is not None else [])
    return image_grid(grid, titles, ncols=3 if images_sos is not None else 2, size=2.0,
                      suptitle="Single-class conditionings")
