"""Figures of notebook 03's attention mass (the paper's Fig. 3): mass per class over the steps, every token of one
prompt, and the [EOS] class split between the real [EOS] and the padding copies.

Inputs come from :mod:`helpers.analysis.token_study` (:class:`~helpers.analysis.token_study.MassRun`); each function
returns the figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..text.tokens import TokenClasses

#: Bar colours of the per-token chart, by position kind.
TOKEN_PALETTE = {"sos": "C3", "semantic": "C0", "eos": "C2", "padding": "C7"}


def plot_class_mass(table: pd.DataFrame, sos_level: float = 0.9):
    """Fig. 3: attention mass of [SOS], the words and the [EOS] class (real [EOS] + padding) per step, mean over
    prompts ± s.d. (``table``: :attr:`helpers.analysis.token_study.MassRun.table`); dashed: ``sos_level``."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    main = table[table["class"].isin(["sos", "semantic", "eos_class"])].replace(
        {"class": {"sos": "[SOS]", "semantic": "semantic", "eos_class": "[EOS] + padding"}})
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    sns.lineplot(data=main, x="step", y="mass", hue="class", estimator="mean", errorbar="sd", marker="o", markersize=3,
                 ax=ax)
    ax.axhline(sos_level, color="gray", ls="--", lw=1)
    ax.set(xlabel="denoising step", ylabel="attention mass\n(mean over prompts ± sd)", ylim=(0, 1.02),
           title="Cross-attention mass per token class")
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def token_kinds(classes: TokenClasses) -> np.ndarray:
    """``"sos"``, ``"semantic"``, ``"eos"`` or ``"padding"`` for every position of the padded prompt."""
    kind = np.array(["padding"] * classes.max_length, dtype=object)
    for name in ("sos", "semantic", "eos"):
        kind[list(getattr(classes, name))] = name
    return kind


def token_labels(classes: TokenClasses) -> list[str]:
    """Tick label of every position: ``[SOS]``, the word piece, ``[EOS]``; empty for padding."""
    names = {"sos": "[SOS]", "eos": "[EOS]"}
    return [names.get(k, t.replace("</w>", "").replace("▁", "")) if k != "padding" else ""
            for t, k in zip(classes.tokens, token_kinds(classes))]


def plot_tokens_one_prompt(mass: np.ndarray, classes: TokenClasses, title: str | None = None):
    """Mass of each position of one prompt averaged over the steps (``mass``: ``(steps, tokens)``, e.g.
    ``run.mass[:, i]``), coloured by kind, log scale ([SOS] dwarfs the rest); title: the prompt."""
    import matplotlib.pyplot as plt

    per_token = np.asarray(mass).mean(axis=0)
    kind = token_kinds(classes)
    labels = token_labels(classes)
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ax.bar(np.arange(classes.max_length), per_token, color=[TOKEN_PALETTE[k] for k in kind], width=0.85)
    ax.set_yscale("log")
    ax.grid(axis="x", visible=False)
    shown = [i for i, lab in enumerate(labels) if lab]
    ax.set_xticks(shown, [labels[i] for i in shown], rotation=60, fontsize=7)
    ax.set(xlabel="token position (unlabelled: padding)", ylabel="mean attention mass",
           title=classes.prompt if title is None else title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in TOKEN_PALETTE.values()]
    ax.legend(handles, ["[SOS]", "semantic", "[EOS]", "padding"], ncols=4, fontsize=8)
    fig.tight_layout()
    return fig


def plot_eos_split(table: pd.DataFrame, offsets: pd.DataFrame):
    """The [EOS] class: left, the mass of the real [EOS] and of all padding positions per step (mean over prompts
    ± s.d.; ``table`` as :func:`plot_class_mass`); right, the mass of one padding position by its distance after
    the real [EOS] (``offsets``: :func:`helpers.analysis.token_study.padding_offsets`; mean and the 25-75% range over
    prompts and steps)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    split = table[table["class"].isin(["eos", "padding"])].replace(
        {"class": {"eos": "real [EOS]", "padding": "padding (all)"}})
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.4))
    sns.lineplot(data=split, x="step", y="mass", hue="class", errorbar="sd", ax=axes[0], marker="o", markersize=3)
    axes[0].set(xlabel="denoising step", ylabel="attention mass", title="[EOS] class split")
    axes[0].legend(title=None)
    sns.lineplot(data=offsets, x="offset", y="mass", errorbar=("pi", 50), ax=axes[1])
    axes[1].set(xlabel="positions after the real [EOS]", ylabel="mass of one padding token", title="Padding copies")
    fig.tight_layout()
    return fig

