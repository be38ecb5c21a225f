"""Threshold-free map scores (helpers.analysis.masks): AUROC, its chance level, DAAM's word renormalisation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.analysis.masks import (MaskError, auroc, auroc_by_step, auroc_chance, auroc_table, random_map_auroc,
                                    renormalize_over_words)
from helpers.text.tokens import TokenClasses


def brute_force_auroc(scores, mask):
    pos, neg = scores[mask], scores[~mask]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return wins / (len(pos) * len(neg))


def test_auroc_is_the_pairwise_win_rate_with_ties_halved():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(12, 12)).astype(float)  # many ties
    mask = rng.random((12, 12)) > 0.6
    assert auroc(scores, mask) == pytest.approx(brute_force_auroc(scores.ravel(), mask.ravel()))


def test_auroc_extremes():
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    ramp = np.tile(np.arange(8, dtype=float)[::-1], (8, 1))  # high on the object's side
    assert auroc(ramp, mask) == 1.0 and auroc(-ramp, mask) == 0.0
    assert auroc(np.ones((8, 8)), mask) == 0.5
    assert np.isnan(auroc(ramp, np.zeros((8, 8), bool))) and np.isnan(auroc(ramp, np.ones((8, 8), bool)))
    # a coarse map is upsampled to the mask's size first
    assert auroc(np.array([[1.0, 0.0], [1.0, 0.0]]), np.repeat(np.repeat(mask, 4, 0), 4, 1)) > 0.95


def test_random_maps_score_one_half_and_coarse_maps_spread_wider():
    mask = np.zeros((32, 32), bool)
    mask[8:20, 6:18] = True
    fine, coarse = random_map_auroc(mask, (32, 32), 300, seed=1), random_map_auroc(mask, (2, 2), 300, seed=1)
    assert abs(fine.mean() - 0.5) < 0.02 and abs(coarse.mean() - 0.5) < 0.05
    assert coarse.std() > 2 * fine.std()
    with pytest.raises(MaskError, match="empty or full"):
        random_map_auroc(np.zeros((4, 4), bool), (2, 2))
    chance = auroc_chance([mask, np.zeros((32, 32), bool)], (8, 8), n_draws=100)
    assert list(chance.columns) == ["sample", "chance", "lo", "hi"]
    assert chance.loc[0, "lo"] < chance.loc[0, "chance"] < chance.loc[0, "hi"] and chance.loc[1].isna().sum() == 3


def classes_of(n_tokens=6):
    return TokenClasses(prompt="a red circle", ids=tuple(range(n_tokens)), tokens=("<s>", "a", "red", "circle", "</s>", "</s>"),
                        sos=(0,), semantic=(1, 2, 3), eos=(4,), padding=(5,), padding_is_eos=True, has_sos=True)


def test_renormalising_over_words_makes_the_words_sum_to_one():
    maps = torch.rand(3, 6, 4, 4)  # (steps, tokens, h, w)
    out = renormalize_over_words(maps, classes_of())
    torch.testing.assert_close(out[:, [1, 2, 3]].sum(1), torch.ones(3, 4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 0], maps[:, 0] / maps[:, [1, 2, 3]].sum(1), atol=1e-5, rtol=1e-5)
    bare = TokenClasses(prompt="", ids=(0, 1), tokens=("<s>", "</s>"), sos=(0,), semantic=(), eos=(1,), padding=(),
                        padding_is_eos=True, has_sos=True)
    with pytest.raises(MaskError, match="no word tokens"):
        renormalize_over_words(maps[:, :2], bare)


def test_auroc_by_step_puts_chance_beside_the_maps():
    table = pd.DataFrame({"sample": [0, 1, 0, 1], "kind": ["object"] * 4, "normalization": ["none"] * 4,
                          "step": [0, 0, 1, 1], "auroc": [0.6, 0.8, 0.9, np.nan]})
    chance = pd.DataFrame({"sample": [0, 1], "chance": [0.49, 0.51], "lo": [0.3, 0.35], "hi": [0.7, 0.65]})
    out = auroc_by_step(table, chance).set_index(["kind", "step"])
    assert out.loc[("object", 0), "mean"] == pytest.approx(0.7) and out.loc[("object", 0), "n"] == 2
    assert out.loc[("object", 0), "lo"] < 0.7 < out.loc[("object", 0), "hi"]
    assert out.loc[("object", 1), "n"] == 1 and np.isnan(out.loc[("object", 1), "lo"])  # NaN left out, n says so
    assert out.loc[("chance", 1), "mean"] == pytest.approx(0.5) and out.loc[("chance", 1), "single_lo"] == pytest.approx(0.325)


def test_auroc_table_on_a_recording(tiny_pipe):
    from helpers.generation import generate
    from helpers.hooks.attention import record_attention
    from helpers.promptsets import PromptRecord

    records = [PromptRecord("a red circle", {"shape": "circle"}), PromptRecord("a blue star", {"shape": "star"})]
    with record_attention(tiny_pipe, resolutions=None) as rec:
        generate(tiny_pipe, [r.prompt for r in records], num_inference_steps=3, progress=False)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    table = auroc_table(rec, records, [mask, mask])
    assert set(table["kind"]) == {"object", "real [EOS]", "[EOS] class"} and set(table["normalization"]) == {"none", "words"}
    assert len(table) == 2 * 3 * 2 * 3 and table["auroc"].between(0, 1).all()
    assert set(table.loc[table["kind"] == "object", "word"]) == {"circle", "star"}
    own = auroc_table(rec, records, None, normalizations=("none",), kinds=("object",))  # its own last-step map
    assert own.query("step == 2")["auroc"].gt(0.5).all()
    with pytest.raises(MaskError, match="unknown"):
        auroc_table(rec, records, [mask, mask], kinds=("[SOS]",))


def test_auroc_figure():
    import matplotlib.pyplot as plt

    from helpers.plots.maps import plot_auroc

    rows = [{"sample": s, "kind": k, "normalization": n, "step": t, "auroc": 0.5 + 0.1 * t + 0.01 * s}
            for s in range(3) for k in ("object", "[EOS] class") for n in ("none", "words") for t in range(4)]
    chance = pd.DataFrame({"sample": [0, 1, 2], "chance": [0.5, 0.5, 0.51], "lo": [0.4] * 3, "hi": [0.6] * 3})
    fig = plot_auroc(auroc_by_step(pd.DataFrame(rows), chance))
    assert len(fig.axes) == 2
    plt.close(fig)
