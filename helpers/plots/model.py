"""Figures of the model itself (notebook 00): the embedded model's attribute accuracy against its quality bar."""

from __future__ import annotations

from typing import Any, Mapping

#: The three image sets of the quality report, as (legend label, key of the report).
QUALITY_SETS = (("seen pairs, w=7.5", "guidance_7.5"), ("seen pairs, w=1.0", "guidance_1.0"),
                ("held-out pairs, w=7.5", "held_out_pairs_guidance_7.5"))


def plot_quality(report: Mapping[str, Any]):
    """Attribute-evaluator accuracy per attribute for each image set, the seen-pair bar dashed; returns the figure.

    ``report``: the JSON of ``helpers.toy.quality.evaluate`` (``guidance_7.5``, ``guidance_1.0``,
    ``held_out_pairs_guidance_7.5``: accuracy per attribute; ``bar.seen_pairs``; ``n_prompts``, ``steps``).
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = []
    for label, key in QUALITY_SETS:
        rows += [(label, attr, acc) for attr, acc in report[key].items()]
    df = pd.DataFrame(rows, columns=["images", "attribute", "accuracy"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(df, x="attribute", y="accuracy", hue="images", ax=ax)
    for attr, bar in report["bar"]["seen_pairs"].items():
        i = list(report["guidance_7.5"]).index(attr)
        ax.hlines(bar, i - 0.4, i + 0.4, color="k", ls="--", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"attribute-evaluator accuracy ({report['n_prompts']} prompts, {report['steps']} steps); dashes: bar")
    ax.legend(loc="lower left", fontsize=8)
    return fig
