"""Chance-calibrated attention-map figures (notebook 01): AUROC of token maps against the object mask over steps."""

from __future__ import annotations

import pandas as pd

#: Line colours of the map kinds of :func:`helpers.analysis.masks.auroc_table`.
KIND_COLORS = {"object": "C0", "real [EOS]": "C2", "[EOS] class": "C1"}
_NORM_TITLES = {"none": "raw attention", "words": "renormalised over the word tokens (DAAM)"}


def plot_auroc(by_step: pd.DataFrame, title: str | None = None):
    """AUROC per step of the object token's map and of the [EOS] maps, with the chance level of random maps.

    ``by_step``: :func:`helpers.analysis.masks.auroc_by_step` (with chance rows). One panel per
    normalisation; lines: mean over maps with the 95% t band (legend gives n); grey band: the chance
    level (mean of the per-sample chance AUROC with its t interval); dotted: the central 95% range of
    a single random map. Returns the figure.
    """
    import matplotlib.pyplot as plt

    norms = list(dict.fromkeys(by_step["normalization"]))
    fig, axes = plt.subplots(1, len(norms), figsize=(5.6 * len(norms), 3.6), squeeze=False, sharey=True)
    for ax, norm in zip(axes[0], norms):
        block = by_step[by_step["normalization"] == norm]
        chance = block[block["kind"] == "chance"].sort_values("step")
        if len(chance):
            x = chance["step"] + 1
            ax.fill_between(x, chance["lo"], chance["hi"], color="gray", alpha=0.35,
                            label=f"chance, random maps (n={int(chance['n'].iloc[0])})")
            ax.plot(x, chance["single_lo"], color="gray", ls=":", lw=1, label="one random map, 95% range")
            ax.plot(x, chance["single_hi"], color="gray", ls=":", lw=1)
        for kind, color in KIND_COLORS.items():
            k = block[block["kind"] == kind].sort_values("step")
            if not len(k):
                continue
            x = k["step"] + 1
            ax.plot(x, k["mean"], color=color, marker="o", markersize=2.5, label=f"{kind} (n={int(k['n'].max())})")
            ax.fill_between(x, k["lo"], k["hi"], color=color, alpha=0.2)
        ax.axhline(0.5, color="k", lw=0.6)
        ax.set(xlabel="denoising step", ylabel="AUROC against the object mask", ylim=(0, 1.02),
               title=_NORM_TITLES.get(norm, norm))
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
