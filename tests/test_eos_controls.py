"""Notebook 04's controls (helpers.analysis.eos_controls) and study (helpers.analysis.eos_study).

Synthetic embeddings and tables for the positional switches, the follow rates, the per-step KL and chance;
the random-tiny pipeline (2 steps) for the generation paths and one end-to-end run of every section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import stats
from helpers.analysis import eos_controls as ec
from helpers.hooks.kv import AttentionKL, generate_substituted
from helpers.text import surgery
from helpers.text.conditioning import EncodedPrompt

DIM = 4


def prompt(n_words: int, length: int = 10, seed: int = 0, family: str = "sd", pooled: bool = False) -> EncodedPrompt:
    g = torch.Generator().manual_seed(seed)
    return EncodedPrompt(embeds=torch.randn(length, DIM, generator=g), sos=(0,), semantic=tuple(range(1, 1 + n_words)),
                         eos_class=tuple(range(1 + n_words, length)), family=family, label=f"p{seed}",
                         pooled=torch.randn(3, generator=g) if pooled else None)


# ------------------------------------------------------------------------------ positional switches
@pytest.mark.parametrize("n_words_b", [1, 3, 5])  # B shorter than, as long as and longer than A
def test_first_k_slots_equal_switch_eos_k_and_the_parts(n_words_b):
    a, b = prompt(3, seed=1), prompt(n_words_b, seed=2)
    n = len(a.eos_class)
    for k in (0, 1, 3, n):
        torch.testing.assert_close(ec.switch_slots(a, b, range(k)).embeds, surgery.switch_eos(a, b, k=k).embeds,
                                   rtol=0, atol=0)
    torch.testing.assert_close(ec.switch_slots(a, b, [0]).embeds, surgery.switch_eos(a, b, part="eos").embeds,
                               rtol=0, atol=0)
    torch.testing.assert_close(ec.switch_slots(a, b, range(1, n)).embeds,
                               surgery.switch_eos(a, b, part="padding").embeds, rtol=0, atol=0)


def test_last_k_writes_only_the_last_slots_with_the_aligned_embeddings():
    a, b = prompt(3, seed=1), prompt(1, seed=2)
    full = surgery.switch_eos(a, b)
    out = ec.switch_slots(a, b, ec.order_slots("last", 2, len(a.eos_class))).embeds
    last = list(a.eos_class[-2:])
    rest = [i for i in range(a.length) if i not in last]
    torch.testing.assert_close(out[last], full.embeds[last], rtol=0, atol=0)
    torch.testing.assert_close(out[rest], a.embeds[rest], rtol=0, atol=0)


def test_pooled_embedding_follows_the_real_eos():
    a, b = prompt(3, seed=1, family="sdxl", pooled=True), prompt(3, seed=2, family="sdxl", pooled=True)
    assert torch.equal(ec.switch_slots(a, b, [0, 4]).pooled, b.pooled)
    assert torch.equal(ec.switch_slots(a, b, [4]).pooled, a.pooled)
    assert torch.equal(ec.switch_slots(a, b, [0], pooled_from="source").pooled, a.pooled)


def test_switch_slots_bad_input():
    a, b = prompt(3, seed=1), prompt(3, seed=2)
    n = len(a.eos_class)
    with pytest.raises(ValueError, match="slots replaces k and part"):
        surgery.switch_eos(a, b, k=1, slots=[0])
    with pytest.raises(ValueError, match="slots replaces k and part"):
        surgery.switch_eos(a, b, part="eos", slots=[0])
    with pytest.raises(ValueError, match="slots must be integers"):
        ec.switch_slots(a, b, [n])
    with pytest.raises(ValueError, match="slots must be integers"):
        ec.switch_slots(a, b, [-1])
    with pytest.raises(ValueError, match="slots must be integers"):
        ec.switch_slots(a, b, [True])
    with pytest.raises(ValueError, match="must not repeat"):
        ec.switch_slots(a, b, [1, 1])
    with pytest.raises(ValueError, match="pooled_from"):
        ec.switch_slots(a, b, [0], pooled_from="B")


def test_order_slots():
    assert ec.order_slots("first", 3, 10) == [0, 1, 2]
    assert ec.order_slots("last", 3, 10) == [7, 8, 9]
    assert ec.order_slots("last", 0, 10) == []
    drawn = ec.order_slots("random", 4, 10, np.random.default_rng(3))
    assert drawn == sorted(set(drawn)) and len(drawn) == 4 and all(0 <= i < 10 for i in drawn)
    assert drawn == ec.order_slots("random", 4, 10, np.random.default_rng(3))
    assert ec.order_slots("random", 10, 10, np.random.default_rng(0)) == list(range(10))
    with pytest.raises(ValueError, match="order must be one of"):
        ec.order_slots("middle", 1, 10)
    with pytest.raises(ValueError, match="k must be an integer between 0"):
        ec.order_slots("first", 11, 10)
    with pytest.raises(ValueError, match="k must be an integer between 0"):
        ec.order_slots("first", -1, 10)
    with pytest.raises(ValueError, match="needs a numpy Generator"):
        ec.order_slots("random", 1, 10)
    with pytest.raises(ValueError, match="n_slots"):
        ec.order_slots("first", 0, -1)


def test_k_order_prompts_random_slots_per_pair_do_not_depend_on_the_list():
    A = [prompt(3, seed=s) for s in range(3)]
    B = [prompt(2, seed=10 + s) for s in range(3)]
    three = ec.k_order_prompts(A, B, 3, "random", seed=7)
    two = ec.k_order_prompts(A[:2], B[:2], 3, "random", seed=7)
    for x, y in zip(three, two):
        assert torch.equal(x.embeds, y.embeds)
    changed = [(p.embeds != a.embeds).any(-1).sum().item() for p, a in zip(three, A)]
    assert all(c <= 3 for c in changed)
    clamped = ec.k_order_prompts(A, B, 99, "last")  # k larger than the slots: all of them
    assert torch.equal(clamped[0].embeds, surgery.switch_eos(A[0], B[0]).embeds)
    with pytest.raises(ValueError, match="one B per A"):
        ec.k_order_prompts(A, B[:2], 1, "first")
    with pytest.raises(ValueError, match="non-negative integer"):
        ec.k_order_prompts(A, B, -1, "first")


# ------------------------------------------------------------------------------ follow rates
def _table(target_img, source_img, clip_t=None, clip_s=None):
    df = pd.DataFrame({"target_img_shape": target_img, "source_img_shape": source_img,
                       "l1_source": np.linspace(0.1, 0.2, len(target_img))})
    if clip_t is not None:
        df["clip_target"], df["clip_source"] = clip_t, clip_s
    return df


def test_follow_rates_counts_and_wilson_intervals():
    nan = np.nan
    switched = _table([1, 1, 1, 0, nan], [0, 0, 0, 1, nan], clip_t=[30, 30, 30, 10, 30], clip_s=[10, 10, 10, 30, 10])
    rates = ec.follow_rates({"switched": switched, "A": _table([0, 0], [1, 1])}).set_index(["condition", "comparison"])
    row = rates.loc[("switched", "images")]
    expected = stats.wilson(3, 4)
    assert row["n"] == 4 and row["follows_B"] == 0.75 and row["stays_A"] == 0.25
    assert (row["follows_B_lo"], row["follows_B_hi"]) == pytest.approx((expected.lo, expected.hi))
    assert rates.loc[("switched", "clip"), "follows_B"] == 0.8 and rates.loc[("switched", "clip"), "n"] == 5
    assert ("A", "clip") not in rates.index and rates.loc[("A", "images"), "stays_A"] == 1.0
    assert rates.loc[("switched", "images"), "l1_to_A"] == pytest.approx(0.15)
    empty = ec.follow_rates({"none usable": _table([nan, nan], [nan, nan])})
    assert empty.loc[0, "n"] == 0 and np.isnan(empty.loc[0, "follows_B"])
    text = ec.rates_text(rates.reset_index(), "images", ["switched", "missing"])
    assert "switched: B 0.75" in text and "missing" not in text


def test_follow_rates_bad_input():
    with pytest.raises(ValueError, match="at least one condition"):
        ec.follow_rates({})
    with pytest.raises(ValueError, match="no evaluator"):
        ec.follow_rates({"x": pd.DataFrame({"l1_source": [0.1]})})


# ------------------------------------------------------------------------------ KL per step
def _logits(seed, n=3, heads=2, queries=5, tokens=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, heads, queries, tokens, generator=g) * 2


def test_stepwise_kl_keeps_the_aggregate_bit_for_bit_and_splits_it_by_step_and_prompt():
    plain, stepwise = AttentionKL(), ec.StepwiseKL(log=[])
    valid = torch.ones(3, 2, 5, 7, dtype=torch.bool)
    for step in range(3):
        stepwise.begin_step(900.0 - 100 * step)
        for layer in ("down", "up"):
            x, y = _logits(10 * step + len(layer)), _logits(100 + 10 * step + len(layer))
            plain.update(layer, x, y, valid)
            stepwise.update(layer, x, y, valid)
    assert stepwise.result() == plain.result() and stepwise.count == plain.count
    assert stepwise.layer_table().equals(plain.layer_table())
    replayed = AttentionKL()
    replayed.replay(stepwise.log)
    assert replayed.result() == plain.result()
    sums, counts = stepwise.by_step()
    assert sums.shape == (3, 3, 3) and counts.shape == (3, 3)
    np.testing.assert_allclose(sums.sum(axis=(0, 2)), [plain.sums[k] for k in AttentionKL.KEYS], rtol=1e-5)
    assert counts.sum() == plain.count
    # prompt 1 at step 0, by hand: KL(p || q) per query, mean over heads, queries and both layers
    x0, y0 = _logits(4), _logits(104)
    x1, y1 = _logits(2), _logits(102)
    by_hand = []
    for x, y in ((x0, y0), (x1, y1)):
        p, q = x[1].softmax(-1), y[1].softmax(-1)
        by_hand.append((p * (p.log() - q.log())).sum(-1).flatten())
    steps = ec.KLSteps(sums, counts, stepwise.measured_timesteps)
    assert steps.per_prompt()[0, 0, 1] == pytest.approx(float(torch.cat(by_hand).mean()), rel=1e-5)
    table = steps.table()
    assert len(table) == 9 and set(table["n"]) == {3} and list(table["timestep"][:3]) == [900.0] * 3
    assert (table["lo"] <= table["value"]).all() and (table["value"] <= table["hi"]).all()
    assert steps.overall()["kl_substituted"].n == 3


def test_stepwise_kl_needs_a_step():
    with pytest.raises(ValueError, match="before begin_step"):
        ec.StepwiseKL().update("x", _logits(0), _logits(1), torch.ones(3, 2, 5, 7, dtype=torch.bool))


@pytest.fixture(scope="module")
def encoded(tiny_pipe):
    a, b = surgery.encode(tiny_pipe, "a red striped circle"), surgery.encode(tiny_pipe, "a blue plain star")
    return a, b, surgery.switch_eos(a, b)


def test_generate_substituted_by_step_equals_the_stock_run(tiny_pipe, encoded, tmp_path):
    a, b, s = encoded
    args = dict(num_inference_steps=2, batch_size=2, seed=3)
    stock, stock_kl = generate_substituted(tiny_pipe, [a, b, a], keys=[s, s, b], measure_kl=True, **args)
    images, kl, steps = ec.generate_substituted_by_step(tiny_pipe, [a, b, a], keys=[s, s, b], **args)
    np.testing.assert_array_equal(images, stock)
    assert kl.result() == stock_kl.result()
    assert steps.sums.shape == (2, 3, 3) and len(steps.timesteps) == 2
    assert steps.per_prompt()[:, 0, 2].min() > 0  # B's keys for A: the attention moves
    resumed = [ec.generate_substituted_by_step(tiny_pipe, [a, b, a], keys=[s, s, b], out_dir=tmp_path / "k", **args)
               for _ in range(2)]
    for images_r, kl_r, steps_r in resumed:  # computed, then read back from the chunks
        np.testing.assert_array_equal(images_r, stock)
        assert kl_r.result() == stock_kl.result()
        np.testing.assert_array_equal(steps_r.sums, steps.sums)
    _, _, own = ec.generate_substituted_by_step(tiny_pipe, [a], keys=[a], num_inference_steps=2)
    np.testing.assert_allclose(own.per_prompt()[:, 0], 0, atol=1e-6)  # the prompt's own keys: no change
    with pytest.raises(ValueError, match="one substituted key prompt per prompt"):
        ec.generate_substituted_by_step(tiny_pipe, [a, b], keys=[s], num_inference_steps=1)
    with pytest.raises(ValueError, match="values for"):
        ec.generate_substituted_by_step(tiny_pipe, [a], keys=[s], values=[s, s], num_inference_steps=1)


# ------------------------------------------------------------------------------ maps per step vs chance
def test_chance_f1_is_the_expectation_of_random_masks():
    ref = np.zeros((12, 12), bool)
    ref[2:7, 3:9] = True
    for area in (5, 30, 100):
        exact = ec.chance_f1(ref, area)
        assert exact == pytest.approx(stats.random_mask_f1(ref, area, n_draws=3000, seed=1), abs=0.01)
    assert ec.chance_f1(ref, 30) == pytest.approx(2 * 30 * 30 / (144 * 60))
    assert ec.chance_f1(ref, 0) == 0.0
    assert ec.chance_f1(np.zeros((4, 4), bool), 3) == 0.0
    assert np.isnan(ec.chance_f1(np.zeros((4, 4), bool), 0))
    with pytest.raises(ValueError, match="area must be between"):
        ec.chance_f1(ref, 145)
    with pytest.raises(ValueError, match="area must be between"):
        ec.chance_f1(ref, -1)


def test_map_steps_table_on_synthetic_scores():
    per_pair = pd.DataFrame({"pair": [0, 0, 1, 1], "step": [1, 2, 1, 2], "map": ["w"] * 4,
                             "f1": [0.5, 0.7, 0.3, 0.9], "chance": [0.2, 0.2, 0.1, 0.3], "area": [0.2] * 4})
    table = ec.MapSteps(per_pair, [], [900.0, 500.0]).table()
    assert list(table["step"]) == [1, 2] and list(table["timestep"]) == [900.0, 500.0]
    assert table.loc[0, "f1"] == pytest.approx(0.4) and table.loc[1, "above_chance"] == pytest.approx(0.55)
    assert (table["n"] == 2).all() and table.loc[0, "f1_lo"] < 0.4 < table.loc[0, "f1_hi"]


def test_map_f1_by_step_on_random_tiny(tiny_pipe, encoded):
    from helpers.text.tokens import pipeline_token_classes

    a, b, s = encoded
    classes = pipeline_token_classes(tiny_pipe, "a red striped circle")
    word = [classes.positions_of("circle")] * 2
    runs = {"word, switched": ([s, s], word), "[EOS], switched": ([s, s], [classes.eos] * 2), "word, A": ([a, a], word)}
    runs["[EOS], switched"] = (runs["word, switched"][0], runs["[EOS], switched"][1])  # same prompts: one generation
    result = ec.map_f1_by_step(tiny_pipe, runs, num_inference_steps=2, batch_size=1, resolutions=None, n_examples=1)
    assert len(result.per_pair) == 3 * 2 * 2 and len(result.timesteps) == 2
    assert result.per_pair["chance"].between(0, 1).all() and result.per_pair["area"].between(0, 1).all()
    assert list(result.examples[0]) == list(runs) and result.examples[0]["word, A"]["heat"].shape[0] == 2
    table = result.table()
    assert set(table["map"]) == set(runs) and table["n"].between(1, 2).all()
    with pytest.raises(ValueError, match="at least one run"):
        ec.map_f1_by_step(tiny_pipe, {})
    with pytest.raises(ValueError, match="position lists"):
        ec.map_f1_by_step(tiny_pipe, {"x": ([s], [])})


# ------------------------------------------------------------------------------ the study, end to end
def test_settings_defaults_and_bad_input():
    from helpers.analysis.eos_study import Settings
    from helpers.profile import PROFILES

    quick = Settings.for_run(None, PROFILES["quick"])
    assert (quick.n_pairs, quick.n_ablation, quick.n_fig, quick.n_map_pairs, quick.k_values) == (8, 4, 2, 2, (1, 8))
    assert quick.use_evaluator and quick.attn_resolutions == (8,) and quick.pair_set == "toy"
    assert Settings.for_run(None, PROFILES["quick"], n_pairs=3, n_ablation=10).n_ablation == 3
    for bad in ({"n_pairs": 0}, {"n_ablation": 2.5}, {"n_map_pairs": True}, {"k_values": (1, -2)}, {"k_values": ()}):
        with pytest.raises(ValueError, match="must be"):
            Settings.for_run(None, PROFILES["quick"], **bad)


def test_every_section_on_random_tiny(tiny_pipe, tmp_path):
    import matplotlib.pyplot as plt

    from helpers.analysis import eos_ablations as ablations, eos_study as eos
    from helpers.plots import eos as figures
    from helpers.profile import Profile

    profile = Profile("quick", num_inference_steps=2, guidance_scale=7.5, n_prompts=4, n_seeds=1)
    study = eos.EOSStudy.build(tiny_pipe, "random-tiny", profile, seed=0, sweep_dir=lambda name: tmp_path / name,
                               n_pairs=2, n_ablation=2, k_values=(1,), n_map_pairs=1)
    assert "2 pairs" in str(study)
    with pytest.raises(ValueError, match="generate_references"):
        study.condition(study.A[:2], "early")
    study.generate_references()
    with pytest.raises(ValueError, match="which must be"):
        study.table_of("B")
    t1 = eos.table1(study)
    maps = eos.attention_maps(study)
    steps = eos.maps_by_step(study)
    k = ablations.k_ablation(study)
    with pytest.raises(ValueError, match="orders must be among"):
        ablations.k_ablation(study, orders=("middle",))
    rep_s, rep_a = ablations.replacement(study, "switched"), ablations.replacement(study, "source")
    with pytest.raises(ValueError, match="on must be"):
        ablations.replacement(study, "B")
    kv = ablations.kv_ablation(study)
    single = ablations.class_only(study)
    ctrl = ablations.controls(study, k, rep_s, rep_a)
    saved = {}
    for part in (t1, maps, k, rep_s, rep_a, kv, single, ctrl):
        eos.save(part.tables, lambda table, stem: saved.setdefault(stem, table))
    assert {"table1_switched", "ablation_k", "ablation_k_orders", "ablation_replacement", "ablation_replacement_source",
            "kl_keys_by_step", "controls", "fig12_object_map_f1"} <= set(saved)
    # conditions with the same embeddings share one table: the real [EOS] only is the first k = 1 ...
    assert ctrl.tables_by_condition["real [EOS] only"] is k.first["1"]
    # ... and A with its [EOS] class zeroed is the switched prompt with its [EOS] class zeroed
    assert rep_a.tables_by_condition["[EOS] class -> zero"] is rep_s.tables_by_condition["[EOS] class -> zero"]
    assert k.orders[("last", "0")] is k.first["0"] and k.orders[("random", "all")] is k.first["all"]
    assert set(k.orders_summary["order"]) == {"first", "last", "random"}
    assert set(saved["kl_keys_by_step"]["step"]) == {1, 2}
    assert set(ctrl.rates["comparison"]) >= {"images", "clip"} and "padding only" in ctrl.text()
    summary = eos.summary(study, t1, kv, maps, "random-tiny", seconds=1.0)
    assert summary["pairs"] == 2 and "kl_keys" in summary and isinstance(eos.summary_text(study, t1, summary), str)
    figs = [figures.switched_grid(study), figures.switched_attention(maps), figures.maps_by_step(steps),
            figures.table1_bars(t1.table1), figures.k_ablation(k.orders_summary),
            figures.kl_keys(kv.kl_result, kv.kl_by_step), figures.controls(ctrl.rates),
            figures.class_only_grid(study, single)]
    assert all(f.axes for f in figs)
    plt.close("all")
