"""Which switched images follow prompt B and which stay A: the one reading shared by notebook 04's verdict
(:func:`helpers.verdicts.eos_switch_follows_b`) and its controls (:func:`helpers.analysis.eos_controls.follow_rates`).
Pandas only."""

from __future__ import annotations

import pandas as pd

#: The comparisons: the evaluator against A's / B's same-seed images, against the prompts, CLIPScore.
COMPARISONS = ("images", "prompts", "clip")


def follow_masks(table: pd.DataFrame, against: str, attribute: str = "shape"
                 ) -> tuple[pd.Series, pd.Series] | None:
    """``(follows_B, stays_A)`` boolean per usable image of ``table`` (as
    :func:`helpers.analysis.alignment.score_source_target` writes it), or None when ``table`` has no
    column for the comparison ``against``.

    ``"images"``: the reading equals that of the same-seed B / A image (rows where those agree are NaN and
    left out); ``"prompts"``: against the prompts' ground truth; ``"clip"``: CLIPScore higher for B's text
    than for A's (and the reverse), rows without both scores left out.
    """
    if against not in COMPARISONS:
        raise ValueError(f"against must be one of {COMPARISONS}, not {against!r}")
    if against == "clip":
        if not {"clip_target", "clip_source"} <= set(table.columns):
            return None
        use = table[["clip_target", "clip_source"]].dropna()
        return use["clip_target"] > use["clip_source"], use["clip_source"] > use["clip_target"]
    tag = "img_" if against == "images" else ""
    src, tgt = f"source_{tag}{attribute}", f"target_{tag}{attribute}"
    if not {src, tgt} <= set(table.columns):
        return None
    use = table[table[src].notna()]
    return use[tgt] == 1, use[src] == 1
