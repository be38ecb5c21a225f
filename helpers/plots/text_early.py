"""Figures of notebook 05 (:mod:`helpers.analysis.text_early`): the causal switch test, the [EOS] switch
(Figs 5-6), the text removed after step k (Figs 7-8a/c), the norms in ε and x̂0 space (Fig 8b), the explorer.

Every function returns its figure (``ctx.show(fig, name)`` saves and shows it); each plot of k also shows
the paper's a = N − k on a top axis.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis import switch_test
from ..analysis.text_early import EOS_ORDERS, CausalSwitch, EOSSwitch, Removal
from .grids import image_grid


def add_a_axis(ax, steps: int, what: str = "final steps without text") -> None:
    """A top axis with the paper's a = N - k."""
    top = ax.secondary_xaxis("top", functions=(lambda k: steps - k, lambda a: steps - a))
    top.set_xlabel(f"paper's a = N − k ({what})", fontsize=8)


def plot_switch_test(curve: pd.DataFrame, steps: int, k_rule: int | None = None, against: str = "images",
                     attributes: Sequence[str] | None = None, threshold: float = 0.5):
    """The causal switch test: per attribute, the rate of following the early prompt (solid) and the late one
    (dashed) against k, per order and both pooled, with Wilson 95% bands; the rule's k* and threshold marked.

    ``curve``: :func:`helpers.analysis.switch_test.rate_curve` (or the verdict's ``exploration``).
    """
    pooled = switch_test.BOTH
    part = curve[curve["against"] == against]
    attributes = [a for a in (attributes or part["attribute"].unique()) if a in set(part["attribute"])]
    if not attributes:
        raise ValueError(f"the curve has no rows against the {against}.")
    fig, axes = plt.subplots(1, len(attributes), figsize=(3.6 * len(attributes), 3.4), squeeze=False)
    for ax, attr in zip(axes[0], attributes):
        for order, color in zip(switch_test.ORDERS + (pooled,), ("C0", "C1", "k")):
            d = part[(part["attribute"] == attr) & (part["order"] == order)].sort_values("k")
            ax.plot(d["k"], d["early"], "o-", color=color, lw=2 if order == pooled else 1, ms=3, label=f"{order}: early")
            ax.plot(d["k"], d["late"], "x--", color=color, lw=1, ms=3, alpha=0.6,
                    label=f"{order}: late" if order == pooled else None)
            if order == pooled:
                ax.fill_between(d["k"], d["early_lo"], d["early_hi"], color=color, alpha=0.15)
        ax.axhline(threshold, color="gray", ls=":", lw=1)
        if k_rule is not None:
            ax.axvline(k_rule, color="red", ls=":", lw=1, label=f"rule's k*={k_rule}")
        n = int(part[(part["attribute"] == attr) & (part["order"] == pooled)]["n"].max())
        ax.set_title(f"{attr} (vs the {against}, ≤{n} images per k)", fontsize=9, pad=28)
        ax.set_xlabel("k = steps with the early prompt")
        ax.set_ylim(-0.03, 1.03)
        add_a_axis(ax, steps, "steps with the late prompt")
    axes[0, 0].set_ylabel("fraction of images following")
    axes[0, 0].legend(fontsize=6, loc="center right")
    fig.tight_layout()
    return fig


def plot_switch_test_strip(test: CausalSwitch, steps: int, n_show: int = 2):
    """Images of the causal switch test for the first pairs: rows pair × order, columns k."""
    n_show = min(n_show, len(test.pairs), len(next(iter(test.examples.values()))))
    grid, titles, labels = [], [], []
    for i in range(n_show):
        for order in switch_test.ORDERS:
            labels.append(f"pair {i} · {order}")
            for k in test.ks:
                grid.append(test.examples[order, k][i])
                titles.append(f"k={k}, a={steps - k}")
    return image_grid(grid, titles, ncols=len(test.ks), size=1.4, row_labels=labels,
                      suptitle="\n".join(f"pair {i}: A = {test.pairs[i].source.prompt!r}, "
                                         f"B = {test.pairs[i].target.prompt!r}" for i in range(n_show)))


def plot_eos_switch(switch: EOSSwitch, steps: int):
    """Fig 6: alignment with A and with B against k, per order and metric."""
    switch_table, metrics_shown = switch.table, switch.metrics_shown
    fig, axes = plt.subplots(len(metrics_shown), 2, figsize=(10, 3.3 * len(metrics_shown)), squeeze=False)
    for r, metric in enumerate(metrics_shown):
        for c, order in enumerate(EOS_ORDERS.values()):
            ax = axes[r, c]
            part = switch_table[(switch_table["metric"] == metric) & (switch_table["order"] == order)]
            ax.plot(part["k"], part["A (source)"], "o-", label="alignment with A (source)")
            ax.plot(part["k"], part["B (target)"], "s-", label="alignment with B ([EOS] donor)")
            ax.set_xlabel("k = steps before the switch")
            ax.set_ylabel(metric)
            ax.set_title(order, fontsize=9, pad=28)
            add_a_axis(ax, steps, "final steps after the switch")
            if r == 0 and c == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_eos_switch_strip(switch: EOSSwitch, ks: Sequence[int], steps: int, n_show: int = 2):
    """Fig 5: images for the first pairs, columns k, rows the two orders."""
    pairs, switch_images = switch.pairs, switch.images
    n_show = min(n_show, len(pairs))
    grid, titles, labels = [], [], []
    for i in range(n_show):
        for order, name in EOS_ORDERS.items():
            labels.append(f"pair {i} · {name.split(' (')[0]}")
            for k in ks:
                grid.append(switch_images[order, k][i])
                titles.append(f"k={k}, a={steps - k}")
    return image_grid(grid, titles, ncols=len(ks), size=1.6, row_labels=labels,
                      suptitle="\n".join(f"pair {i}: A = {pairs[i].source.prompt!r}, B = {pairs[i].target.prompt!r}"
                                         for i in range(n_show)))


def plot_removal(removal: Removal, steps: int):
    """Fig 8a: L1 to the full-CFG image and alignment against k, per variant (full CFG dashed)."""
    import seaborn as sns

    data, align = removal.table, removal.align
    panels = ["L1 to full CFG", align] + (["CLIPScore"] if align != "CLIPScore" else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6))
    for ax, col in zip(np.atleast_1d(axes), panels):
        sns.lineplot(data, x="k", y=col, hue="variant", style="variant", markers=True, errorbar="se", ax=ax)
        ax.axhline(data.loc[data["k"] == steps, col].mean(), color="gray", ls="--", lw=1, label="full CFG")
        ax.set_xlabel("k = initial steps with text")
        add_a_axis(ax, steps)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_removal_strip(removal: Removal, ks: Sequence[int], steps: int, variants: Sequence[str] = ("uncond", "cond"),
                       n_show: int = 2):
    """Fig 7: for the first prompts, each variant across k (the last column, k = N, is full CFG)."""
    prompts, runs = removal.prompts, removal.runs
    grid, titles, labels = [], [], []
    for i in range(min(n_show, len(prompts))):
        for variant in variants:
            labels.append(f"prompt {i} · {variant}")
            for k in ks:
                grid.append(runs[variant, k].images[i])
                titles.append(f"k={k}, a={steps - k}")
    return image_grid(grid, titles, ncols=len(ks), size=1.5, row_labels=labels,
                      suptitle="Text removed after step k (k = N: full CFG)\n"
                      + "\n".join(f"prompt {i}: {prompts[i]}" for i in range(min(n_show, len(prompts)))))


def plot_removal_by_attribute(removal: Removal, steps: int):
    """Fig 8c: per attribute, the evaluator's accuracy (uncond) against k; ``None`` without ground truth."""
    import seaborn as sns

    if not removal.attribute_columns:
        return None
    data = removal.table
    by_attribute = (data[data["variant"] == "uncond"]
                    .melt(id_vars=["k", "prompt"], value_vars=removal.attribute_columns, var_name="attribute",
                          value_name="accuracy %")
                    .dropna())
    by_attribute["attribute"] = by_attribute["attribute"].str.removesuffix(" %")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.lineplot(by_attribute, x="k", y="accuracy %", hue="attribute", style="attribute", markers=True, errorbar=None,
                 ax=ax)
    ax.set_xlabel("k = initial steps with text (uncond after)")
    add_a_axis(ax, steps)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_norms(norms: pd.DataFrame, x0: pd.DataFrame, steps: int):
    """Fig 8b: ||ε_u||, ||ε_c − ε_u|| (log scale) and their ratio per step, and both in x̂0 space (mean ± std)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    panels = (("||eps_u||", norms, axes[0]), ("||eps_c - eps_u||", norms, axes[0]),
              ("||eps_c - eps_u|| / ||eps_u||", norms, axes[1]),
              ("||eps_u|| in x0 space", x0, axes[2]), ("||eps_c - eps_u|| in x0 space", x0, axes[2]))
    for name, table, ax in panels:
        part = table[table["quantity"] == name]
        ax.plot(part["step"], part["mean"], label=name)
        ax.fill_between(part["step"], part["mean"] - part["std"], part["mean"] + part["std"], alpha=0.25)
    for ax, label in zip(axes, ("L2 norm (ε space)", "ratio", "L2 norm × sqrt((1 − ᾱ_t)/ᾱ_t) (x̂0 space)")):
        ax.set_xlabel("step (0 = pure noise)")
        ax.set_ylabel(label)
        add_a_axis(ax, steps, "steps left")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    fig.tight_layout()
    return fig


def removal_explorer(pipe, removal: Removal, steps: int, guidance_scale: float, seed: int = 0):
    """Pick a prompt, k and the variant: the text-window image beside the full-CFG one of the same seed.

    The first view is drawn now; in Jupyter or Colab each change runs one generation (sliders act on release).
    Returns the widget box, or ``None`` (static view only) without ipywidgets.
    """
    from .. import guidance
    from ..analysis import metrics
    from .grids import explorer

    prompts, full = removal.prompts, removal.full

    def show(index=0, k=steps // 5, variant="uncond"):
        """The text-window image beside the full-CFG one."""
        run = guidance.sample(pipe, [prompts[index]], guidance.TextWindow(int(k), variant), record=False,
                              num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed + index)
        l1 = float(metrics.l1_distance(run.images, full.images[index:index + 1])[0])
        fig = image_grid([run.images[0], full.images[index]],
                         [f"{variant}, k={k}, a={steps - k} (L1 {l1:.3f})", "full CFG"], ncols=2, size=2.4,
                         suptitle=prompts[index][:60])
        plt.show()
        plt.close(fig)

    try:
        import ipywidgets as widgets
    except ImportError:
        show()
        print("ipywidgets is not installed: only the static view above is shown.")
        return None
    return explorer(show,
                    index=widgets.Dropdown(options=[(p[:48], i) for i, p in enumerate(prompts)], description="prompt"),
                    k=widgets.IntSlider(value=steps // 5, min=0, max=steps, description="k", continuous_update=False),
                    variant=widgets.ToggleButtons(options=list(guidance.VARIANTS), description="variant"))
