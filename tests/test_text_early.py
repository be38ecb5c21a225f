"""Notebook 05's study: the causal switch test's tables on synthetic readings, the x̂0 scale, the settings,
and every section with its figures on random-tiny (mechanics only)."""

from __future__ import annotations

import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.analysis import switch_test as sw  # noqa: E402
from helpers.profile import PROFILES, Profile  # noqa: E402

TRUTH_A = [{"shape": "circle", "color": "red"}, {"shape": "star", "color": "blue"}]
TRUTH_B = [{"shape": "star", "color": "red"}, {"shape": "square", "color": "green"}]


def _readings(mid_a_to_b, mid_b_to_a, steps=10, k=2):
    """Pure A / pure B read as their prompts, one switch step k per order."""
    return {("A->B", steps): TRUTH_A, ("A->B", 0): TRUTH_B, ("A->B", k): mid_a_to_b, ("B->A", k): mid_b_to_a}


# ------------------------------------------------------------------------ switch_test on synthetic readings
def test_readings_table_follows_early_and_late_in_both_orders():
    early_ab = [{"shape": "circle", "color": "red"}, {"shape": "star", "color": "green"}]   # A->B: A's shapes
    late_ba = [{"shape": "circle", "color": "red"}, {"shape": "triangle", "color": "blue"}]  # B->A: A (late), neither
    t = sw.readings_table(_readings(early_ab, late_ba), TRUTH_A, TRUTH_B, steps=10)
    assert list(t.columns) == list(sw.COLUMNS) and set(t["against"]) == {"prompts", "images"}
    shape = t[(t["attribute"] == "shape") & (t["against"] == "prompts")].set_index(["order", "k", "pair"])
    assert shape.loc[("A->B", 2, 0), ["early", "late"]].tolist() == [1.0, 0.0]
    assert shape.loc[("A->B", 2, 1), ["early", "late"]].tolist() == [1.0, 0.0]
    assert shape.loc[("B->A", 2, 0), ["early", "late"]].tolist() == [0.0, 1.0]   # early is B there
    assert shape.loc[("B->A", 2, 1), ["early", "late"]].tolist() == [0.0, 0.0]   # neither
    assert shape.loc[("A->B", 10, 0), "early"] == 1.0 and shape.loc[("A->B", 0, 0), "late"] == 1.0
    color = t[t["attribute"] == "color"]
    assert set(color["pair"]) == {1}  # pair 0: A and B are both red, so colour cannot tell early from late
    # against the images: the references are what A alone and B alone were read as
    images = t[(t["against"] == "images") & (t["attribute"] == "shape")]
    pd.testing.assert_frame_equal(images[["pair", "order", "k", "early", "late"]].reset_index(drop=True),
                                  shape.reset_index()[["pair", "order", "k", "early", "late"]])


def test_readings_table_against_images_uses_the_models_own_drawings():
    pure_a = [{"shape": "square"}, {"shape": "star"}]     # the model draws pair 0's A as a square
    readings = {("A->B", 4): pure_a, ("A->B", 0): [{"shape": "star"}, {"shape": "star"}],
                ("A->B", 2): [{"shape": "square"}, {"shape": "star"}]}
    t = sw.readings_table(readings, TRUTH_A, TRUTH_B, steps=4)
    img = t[(t["against"] == "images") & (t["k"] == 2)]
    assert img["pair"].tolist() == [0] and img["early"].tolist() == [1.0]  # pair 1: A and B images agree: left out
    prompts = t[(t["against"] == "prompts") & (t["k"] == 2)].set_index("pair")
    assert prompts.loc[0, "early"] == 0.0 and prompts.loc[1, "early"] == 1.0


@pytest.mark.parametrize("readings, steps, match", [
    ({("C->D", 2): TRUTH_A}, 10, "order"),
    ({("A->B", 11): TRUTH_A}, 10, "0 <= k"),
    ({("A->B", 10): TRUTH_A, ("A->B", 0): TRUTH_B[:1]}, 10, "one entry per pair"),
    ({("A->B", 10): TRUTH_A, ("A->B", 5): TRUTH_B}, 10, "B alone"),
    ({("A->B", 10): TRUTH_A}, 0, "positive integer"),
])
def test_readings_table_bad_input(readings, steps, match):
    with pytest.raises(ValueError, match=match):
        sw.readings_table(readings, TRUTH_A, TRUTH_B, steps=steps)


def _table(early_rates, n=40, steps=50, order_rates=None):
    """Synthetic rule table: at each k, the first round(rate * n) pairs follow the early prompt, the rest the late."""
    rows = []
    for k, rate in early_rates.items():
        for order in sw.ORDERS:
            r = (order_rates or {}).get((order, k), rate)
            hits = int(round(r * n))
            rows += [(i, order, k, steps, "shape", "images", float(i < hits), float(i >= hits)) for i in range(n)]
    return pd.DataFrame(rows, columns=list(sw.COLUMNS))


def test_rate_curve_and_crossover():
    t = _table({0: 0.0, 2: 0.2, 5: 0.4, 10: 0.8, 50: 1.0})
    curve = sw.rate_curve(t)
    both = curve[curve["order"] == sw.BOTH].set_index("k")
    assert both.loc[5, "early"] == pytest.approx(0.4) and both.loc[5, "late"] == pytest.approx(0.6)
    assert both.loc[5, "n"] == 80 and both.loc[5, "early_lo"] < 0.4 < both.loc[5, "early_hi"]
    assert set(curve["order"]) == {"A->B", "B->A", sw.BOTH}
    c = sw.crossover(t, "shape", "images", n_boot=500)
    assert c.value == 10 and c.lo <= 10 <= c.hi and c.n == 40 and c.method == "pair bootstrap"
    assert sw.crossover(t, n_boot=500).hi == c.hi  # seeded
    never = sw.crossover(_table({0: 0.0, 10: 0.3, 50: 0.45}), n_boot=200)
    assert never.value == np.inf
    tab = sw.crossover_table(t, n_boot=200)
    assert tab.loc[0, "crossover_k"] == 10 and list(tab.columns) == ["attribute", "against", "crossover_k", "lo",
                                                                     "hi", "n", "method"]
    with pytest.raises(ValueError, match="no usable rows"):
        sw.crossover(t, "color")
    with pytest.raises(ValueError, match="lacks the columns"):
        sw.rate_curve(t.drop(columns="late"))


def test_crossover_bootstrap_resamples_pairs():
    # only 3 of 40 pairs push k=5 over one half: the interval must reach beyond 5
    t = _table({0: 0.0, 5: 0.525, 10: 0.9, 50: 1.0})
    c = sw.crossover(t, n_boot=2000)
    assert c.value == 5 and c.lo == 5 and c.hi == 10


# ------------------------------------------------------------------------------------------- settings
def test_settings_per_profile_and_the_rule_step_on_the_grid():
    from helpers import verdicts
    from helpers.analysis.text_early import Settings

    quick, full = Settings.for_run(None, PROFILES["quick"]), Settings.for_run(None, PROFILES["full"])
    assert (quick.n_switch_pairs, full.n_switch_pairs) == (4, 60)
    assert (quick.n_pairs, full.n_pairs, quick.n_prompts, full.n_prompts) == (4, 8, 8, 24)
    assert full.causal_ks == (0, 2, 5, 10, 15, 25, 35, 45, 50) and quick.causal_ks == (0, 1, 2, 3, 5, 7, 9, 10)
    assert full.remove_ks == (0, 5, 10, 15, 25, 35, 50) and full.switch_ks == (0, 5, 10, 20, 35, 50)
    frac = verdicts.RULES["text_early"]["early_fraction"]
    for s in (quick, full):
        assert int(round(frac * s.steps)) in s.causal_ks
    # the full profile's added cost: 60 pairs x (7 switch steps x 2 orders + pure A, pure B) x 50 steps x 2 rows
    assert full.n_switch_pairs * (2 * (len(full.causal_ks) - 2) + 2) * full.steps * 2 == 96_000
    assert Settings.for_run("some/hub-model", PROFILES["quick"]).pair_set == "natural"
    assert "causal switch test k" in str(full)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_switch_pairs": 0}, "N_SWITCH_PAIRS"), ({"n_pairs": 2.5}, "N_PAIRS"),
    ({"causal_fractions": (0.2, 1.5)}, "causal fractions"), ({"remove_fractions": ()}, "remove fractions"),
])
def test_settings_bad_input(kwargs, match):
    from helpers.analysis.text_early import Settings

    with pytest.raises(ValueError, match=match):
        Settings.for_run(None, PROFILES["quick"], **kwargs)


# -------------------------------------------------------------------------------------------- x0 space
def test_x0_norms_scale_the_recorded_norms():
    from diffusers import DDIMScheduler

    from helpers.analysis.text_early import x0_norms, x0_scale
    from helpers.guidance import GuidanceRun

    pipe = types.SimpleNamespace(scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                          beta_end=0.012))
    before = pipe.scheduler.timesteps.clone()
    abar, scale = x0_scale(pipe, 5)
    assert np.array_equal(pipe.scheduler.timesteps, before)  # the pipeline's scheduler is not set up again
    t = np.array([800, 600, 400, 200, 0])
    expected = pipe.scheduler.alphas_cumprod.numpy()[t].astype(float)
    np.testing.assert_allclose(abar, expected, rtol=1e-6)
    np.testing.assert_allclose(scale, np.sqrt((1 - expected) / expected), rtol=1e-6)
    assert np.all(np.diff(scale) < 0)  # noise first: the guidance term weighs most on x̂0 early
    diff = np.tile([[1.0, 1.0, 1.0, np.nan, 1.0]], (3, 1))
    run = GuidanceRun(np.zeros((3, 2, 2, 3)), 2 * diff, 3 * diff, diff, np.full(3, 5), 0, 0, 5)
    table = x0_norms(run, pipe)
    g = table[table["quantity"] == "||eps_c - eps_u|| in x0 space"].set_index("step")
    assert list(g.index) == [0, 1, 2, 4] and (g["n"] == 3).all()  # NaN (CFG off) steps are left out
    np.testing.assert_allclose(g["mean"], scale[[0, 1, 2, 4]], rtol=1e-6)
    u = table[table["quantity"] == "||eps_u|| in x0 space"].set_index("step")
    np.testing.assert_allclose(u["mean"], 2 * scale[[0, 1, 2, 4]], rtol=1e-6)


# ------------------------------------------------------------------------- the sections on random-tiny
TINY = Profile("quick", num_inference_steps=4, guidance_scale=7.5, n_prompts=2, n_seeds=1)


@pytest.fixture(scope="module")
def study(tiny_pipe, tmp_path_factory):
    from helpers.analysis.text_early import TextEarlyStudy

    root = tmp_path_factory.mktemp("sweeps")
    return TextEarlyStudy.build(tiny_pipe, "random-tiny", TINY, seed=0, batch_size=2, sweep_dir=lambda n: root / n,
                                n_prompts=2, n_pairs=2, n_switch_pairs=2, causal_fractions=(0.5,))


def test_causal_switch_on_random_tiny(study, tiny_pipe):
    from helpers import guidance
    from helpers.analysis import text_early

    test = text_early.causal_switch(study)
    assert test.ks == (0, 2, 4) and test.k_rule == 1 and len(test.pairs) == 2
    assert all(p.source.attributes["shape"] != p.target.attributes["shape"] for p in test.pairs)
    assert len(test.readings) == 2 * 2 * 3 and set(test.readings["order"]) == set(sw.ORDERS)
    assert set(test.tables()) == {"switch_test_readings", "switch_test_curve", "switch_test_crossover"}
    if len(test.table):
        assert set(test.table["steps"]) == {4}
        pure = test.table[(test.table["against"] == "images") & (test.table["order"] == "A->B")]
        assert (pure.loc[pure["k"] == 4, "early"] == 1).all() and (pure.loc[pure["k"] == 0, "late"] == 1).all()
    first, second = [p.source.prompt for p in test.pairs], [p.target.prompt for p in test.pairs]
    direct = guidance.sample(tiny_pipe, first, guidance.Switch(2, second), num_inference_steps=4, seed=0,
                             batch_size=2, record=False)
    assert np.array_equal(test.examples["A->B", 2], direct.images)  # A for the first 2 steps, then B
    pure_b = guidance.sample(tiny_pipe, second, None, num_inference_steps=4, seed=0, batch_size=2, record=False)
    assert np.array_equal(test.examples["A->B", 0], pure_b.images)
    assert np.array_equal(test.examples["B->A", 4], pure_b.images)
    again = text_early.causal_switch(study)  # resumed from the saved chunks: the same readings
    pd.testing.assert_frame_equal(again.readings, test.readings)


def test_every_section_and_figure_on_random_tiny(study, tiny_pipe):
    from helpers import guidance, verdicts
    from helpers.analysis import text_early
    from helpers.plots import text_early as figures

    switch = text_early.eos_switch(study)
    assert set(switch.images) == {(o, k) for o in text_early.EOS_ORDERS for k in study.settings.switch_ks}
    assert {"order", "k", "metric", "A (source)", "B (target)"} <= set(switch.table.columns)
    removal = text_early.text_removal(study)
    assert removal.full is removal.runs["uncond", 4] and removal.align == "attribute accuracy %"
    norms, x0 = guidance.norm_summary(removal.full), text_early.x0_norms(removal.full, tiny_pipe)
    assert set(x0["quantity"]) == {"||eps_u|| in x0 space", "||eps_c - eps_u|| in x0 space"}
    assert "x0 space" in text_early.norms_text(norms, x0)
    summary = text_early.summary(study, removal, switch, norms, 2.0, 0.5, "random-tiny", 0.0)
    assert summary["steps"] == 4 and summary["pairs"] == 2 and summary["k at the claim"] == 2
    rule_table, rule_args, caveats = text_early.removal_rule_table(study, removal)
    assert rule_args == {"n_steps": 4} and "quick profile" in caveats[0] and len(rule_table) == len(removal.table)
    test = text_early.causal_switch(study)
    v, why = text_early.verdict(study, test, rule_table, rule_args, caveats, random_weights=True)
    assert v is None and why.startswith("Random weights") or isinstance(v, verdicts.Verdict) and "quick" in why
    for fig in (figures.plot_eos_switch(switch, 4), figures.plot_eos_switch_strip(switch, study.settings.switch_ks, 4),
                figures.plot_removal(removal, 4), figures.plot_removal_strip(removal, study.settings.remove_ks, 4),
                figures.plot_removal_by_attribute(removal, 4), figures.plot_norms(norms, x0, 4),
                figures.plot_switch_test_strip(test, 4)):
        assert fig is not None
        plt.close(fig)
    figures.removal_explorer(tiny_pipe, removal, 4, 7.5, seed=0)
    plt.close("all")


def test_the_switch_figure_and_the_verdict_with_its_second_measurement():
    from helpers import verdicts
    from helpers.analysis import text_early
    from helpers.plots import text_early as figures

    table = _table({0: 0.0, 2: 0.3, 5: 0.6, 10: 0.9, 15: 0.95, 25: 1.0, 35: 1.0, 45: 1.0, 50: 1.0}, n=60)
    fig = figures.plot_switch_test(sw.rate_curve(table), 50, k_rule=10)
    plt.close(fig)
    with pytest.raises(ValueError, match="no rows against"):
        figures.plot_switch_test(sw.rate_curve(table), 50, against="prompts")
    settings = text_early.Settings.for_run(None, PROFILES["full"])
    study = types.SimpleNamespace(settings=settings)
    test = text_early.CausalSwitch([None] * 60, settings.causal_ks, 50, table, pd.DataFrame(), {})
    base = np.linspace(80, 100, 200)
    rows = [("ddim", 50, k, "uncond", i, b - (0.5 if k == 25 else 0)) for k in (25, 50) for i, b in enumerate(base)]
    rule_table = pd.DataFrame(rows, columns=["sampler", "steps", "k", "variant", "prompt", "attribute accuracy %"])
    v, why = text_early.verdict(study, test, rule_table, {}, [])
    assert v.verdict == verdicts.SUPPORTED and why is None and v.details["k"] == 10
    assert len(v.related) == 1 and v.related[0].claim.startswith("Removing the text")
    assert "second measurement" in text_early.related_text(v)
    quick = types.SimpleNamespace(settings=text_early.Settings.for_run(None, PROFILES["quick"]))
    _, why = text_early.verdict(quick, test, rule_table, {}, ["quick profile (exploratory)"])
    assert "quick profile" in why
    with pytest.raises(ValueError):  # a broken rule table is an error, not a silent skip, on a trained model
        text_early.verdict(study, test, rule_table.drop(columns="sampler"), {}, [])
