"""Figures of notebook 03 beyond Fig 3: per-token statistics by class, and attention mass beside causal influence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.influence import CLASS_LABELS, CLASSES

#: One colour per token class, shared by every panel.
CLASS_COLORS = {"sos": "C3", "semantic": "C0", "eos": "C2", "padding": "C7", "eos_class": "C1"}


def _bars(ax, table: pd.DataFrame, column: str, classes, log: bool = False) -> None:
    """Bars of ``column`` per class with the ``_lo`` / ``_hi`` interval as error bars."""
    rows = [c for c in classes if c in table.index and np.isfinite(table.loc[c, column])]
    values = table.loc[rows, column].to_numpy(float)
    lo = table.loc[rows, f"{column}_lo"].to_numpy(float) if f"{column}_lo" in table else values
    hi = table.loc[rows, f"{column}_hi"].to_numpy(float) if f"{column}_hi" in table else values
    err = np.vstack([np.nan_to_num(values - lo), np.nan_to_num(hi - values)])
    ax.bar(range(len(rows)), values, yerr=err, capsize=3, color=[CLASS_COLORS[c] for c in rows])
    ax.set_xticks(range(len(rows)), [CLASS_LABELS[c] for c in rows], rotation=20, fontsize=8)
    ax.grid(axis="x", visible=False)
    if log:
        ax.set_yscale("log")


def plot_token_statistics(stats_table: pd.DataFrame, norms: pd.DataFrame | None = None, title: str | None = None):
    """Per token class: one token's mass relative to uniform, spatial entropy, and (with ``norms``) the encoder's side.

    ``stats_table``: :func:`helpers.analysis.influence.token_statistics` (bars: mean over prompts, error
    bars: 95% t interval; dashed: uniform). ``norms``: :func:`helpers.analysis.encoder.class_norms` (bars:
    mean, error bars: s.d. over prompts): the norm of the hidden state the denoiser reads and of its
    cross-attention key, and the cosine of each class's states to the real [EOS]. Returns the figure.
    """
    import matplotlib.pyplot as plt

    panels = 2 + (2 if norms is not None else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.1 * panels, 3.6), squeeze=False)
    axes = axes[0]
    n = int(stats_table["n"].max())
    _bars(axes[0], stats_table, "per_token_vs_uniform", CLASSES[:4], log=True)
    axes[0].axhline(1.0, color="gray", ls="--", lw=1)
    axes[0].set(ylabel="mass of one token / uniform", title=f"Per-token mass vs uniform (n={n} prompts)")
    _bars(axes[1], stats_table, "entropy", CLASSES[:4])
    axes[1].axhline(1.0, color="gray", ls="--", lw=1)
    axes[1].set(ylabel="spatial entropy / log(pixels)", ylim=(0, 1.05), title="How spread a token's map is")
    if norms is not None:
        rows = [c for c in CLASSES if c in norms.index]
        x = np.arange(len(rows))
        for offset, (column, label) in zip((-0.2, 0.2), (("embedding_norm", "hidden state"), ("key_norm", "key"))):
            axes[2].bar(x + offset, norms.loc[rows, f"{column}_mean"], width=0.4, yerr=norms.loc[rows, f"{column}_std"],
                        capsize=3, label=label, color="C0" if column == "embedding_norm" else "C1")
        axes[2].set_xticks(x, [CLASS_LABELS[c] for c in rows], rotation=20, fontsize=8)
        axes[2].set(ylabel="norm (mean ± s.d.)", title="What the denoiser reads")
        axes[2].legend(fontsize=7)
        cos = norms.loc[rows, "cosine_to_eos_mean"].to_numpy(float)
        axes[3].bar(x, cos, yerr=norms.loc[rows, "cosine_to_eos_std"].to_numpy(float), capsize=3,
                    color=[CLASS_COLORS[c] for c in rows])
        axes[3].set_xticks(x, [CLASS_LABELS[c] for c in rows], rotation=20, fontsize=8)
        axes[3].set(ylabel="cosine to the real [EOS]", ylim=(min(0.0, float(np.nanmin(cos)) - 0.05), 1.05),
                    title="Hidden states vs the real [EOS]")
    for ax in axes:
        ax.grid(axis="x", visible=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_mass_vs_influence(stats_table: pd.DataFrame, influence: pd.DataFrame, attribute: str = "shape",
                           title: str | None = None):
    """Mass is not influence: each class's attention mass beside what switching or zeroing it does.

    Left: the class's share of the attention mass (``token_statistics``; 95% t interval). Right, per class:
    the share of pairs whose ``attribute`` follows B when the class is switched to B's, and the share whose
    ``attribute`` changes from A's own image when the class is zeroed (``influence_table``; Wilson 95%); with
    no reader, the L1 distance to A's image instead (t interval). Returns the figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    _bars(axes[0], stats_table, "mass", CLASSES)
    axes[0].set(ylabel="share of the attention mass", ylim=(0, 1.02),
                title=f"Attention mass (n={int(stats_table['n'].max())} prompts)")
    measures = {"switch": f"{attribute} follows B", "zero": f"{attribute} changed"}
    if not influence["measure"].isin(measures.values()).any():
        measures = {"switch": "L1 to A's image", "zero": "L1 to A's image"}
    x = np.arange(len(CLASSES))
    for offset, (test, measure) in zip((-0.2, 0.2), measures.items()):
        block = influence[(influence["test"] == test) & (influence["measure"] == measure)].set_index("class")
        block = block.reindex(list(CLASSES))
        values = block["value"].to_numpy(float)
        err = np.vstack([np.nan_to_num(values - block["lo"].to_numpy(float)),
                         np.nan_to_num(block["hi"].to_numpy(float) - values)])
        n = block["n"].dropna()
        label = f"{test}ed: {measure}" + (f" (n={int(n.max())})" if len(n) else "")
        ok = np.isfinite(values)  # classes without this test (no switch of [SOS] or of the words) get no bar
        axes[1].bar(x[ok] + offset, values[ok], width=0.4, yerr=err[:, ok], capsize=3, label=label,
                    color="C1" if test == "switch" else "C4", alpha=0.85)
    axes[1].set_xticks(x, [CLASS_LABELS[c] for c in CLASSES], rotation=20, fontsize=8)
    axes[1].grid(axis="x", visible=False)
    is_rate = "L1" not in measures["zero"]
    axes[1].set(ylabel="share of pairs" if is_rate else "L1 to A's image", title="Causal influence of the class",
                ylim=(0, 1.02) if is_rate else None)
    axes[1].legend(fontsize=7)
    fig.suptitle(title or "Mass is not influence: attention a class receives vs what changing it does")
    fig.tight_layout()
    return fig
