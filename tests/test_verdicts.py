"""helpers.verdicts on synthetic tables: both sides of every threshold, the boundary, and the traps.

Boundaries, as the
rules state them: strict ``>`` for "exceeds" / "above" (chance, [SOS] level, B-rate threshold) and
for "inside the margin"; ``>=`` for "reaches" (relative F1 0.9) and for 00/02's bars.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent



from helpers import stats  # noqa: E402  (helpers/__init__ is lazy: no torch)
from helpers import verdicts as V  # noqa: E402
S, N, I = V.SUPPORTED, V.NOT_SUPPORTED, V.INCONCLUSIVE


# ------------------------------------------------------------------------------ module layout
def test_rules_import_without_torch():
    """The rules and intervals are pure numpy/scipy/pandas: importing them never loads torch."""
    import subprocess

    code = "import sys; import helpers.verdicts, helpers.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_default_comes_from_rules_and_rules_are_read_only():
    groups = {V.model_quality_bar: "model_quality", V.frequency_low_band_first: "frequency",
              V.shape_first: "shape_first", V.sos_sink: "sos", V.sos_most_attended: "sos",
              V.eos_switch_follows_b: "eos_switch", V.text_removal_keeps_quality: "text_removal"}
    for fn, group in groups.items():
        for name, p in inspect.signature(fn).parameters.items():
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty and name in V.RULES[group]:
                assert p.default == V.RULES[group][name], (fn.__name__, name)
    assert V.RULES["text_removal"]["margin"] == 3.0 and V.RULES["eos_switch"]["threshold"] == 0.5
    assert V.RULES["sos"]["threshold"] == 0.5 and V.RULES["shape_first"]["early_fraction"] == 0.2
    with pytest.raises(TypeError):
        V.RULES["text_removal"]["margin"] = 10.0


def _check_text(v):
    text = v.to_text()
    assert text.startswith(f"[{v.verdict}]") and f"n={v.estimate.n}" in text and "95%" in text
    assert "Rule:" in text and v.claim in text
    assert v.supported is {S: True, N: False, I: None}[v.verdict]


# ----------------------------------------------------------------------------------- 00 quality
def _report(**changes):
    r = {"n_prompts": 200, "n_held_out_prompts": 100,
         "guidance_7.5": {"shape": 0.955, "color": 0.95, "size": 0.975, "position": 0.99, "pattern": 0.765},
         "guidance_1.0": {"shape": 0.94, "color": 0.87, "size": 0.995, "position": 0.995, "pattern": 0.615},
         "held_out_pairs_guidance_7.5": {"shape": 0.96, "color": 0.94, "size": 1.0, "position": 1.0, "pattern": 0.7},
         "evaluator_clean": {"shape": 0.994, "color": 1.0}}
    for key, value in changes.items():
        r[key] = {**r[key], **value}
    return r


def test_model_quality_bar():
    ok = V.model_quality_bar(_report())
    assert ok.verdict == S and ok.estimate.n == 200 and ok.details["below_bar_at_lower_bound"] == ["shape"]
    _check_text(ok)
    assert V.model_quality_bar(_report(**{"guidance_7.5": {"shape": 0.95}})).verdict == S   # at the bar: >=
    assert V.model_quality_bar(_report(**{"guidance_7.5": {"shape": 0.945}})).verdict == N
    assert V.model_quality_bar(_report(**{"held_out_pairs_guidance_7.5": {"color": 0.79}})).verdict == N
    assert V.model_quality_bar(_report(**{"guidance_1.0": {"color": 1.0, "pattern": 0.9}})).verdict == N
    assert V.model_quality_bar(_report(evaluator_clean={"shape": 0.975})).verdict == N
    assert V.model_quality_bar(_report(**{"guidance_7.5": {"shape": 0.945}}), seen_bar={"shape": 0.9}).verdict == S
    with pytest.raises(ValueError, match="whole count"):
        V.model_quality_bar(_report(**{"guidance_7.5": {"shape": 0.9512}}))


# --------------------------------------------------------------------------------- 02 frequency
def _numbers(later=1.0, coverage=0.969, settled_low=0.52, low=723.0):
    return {"t_cross": {"generated latents": {"low": low, "high": 195.0},
                        "ground-truth latents": {"low": 719.0, "high": 152.0}},
            "samples_low_later": {"generated latents": later, "ground-truth latents": 1.0},
            "denoising_settled_fraction": {"low": settled_low, "high": 0.9},
            "prop1_min_coverage": coverage, "prop1_images_above_noise": 1.0}


def test_frequency_rule():
    n = dict(n_generated=20, n_ground_truth=128, n_noise=10000)
    ok = V.frequency_low_band_first(_numbers(), **n)
    assert ok.verdict == S and ok.estimate.n == 20
    _check_text(ok)
    assert V.frequency_low_band_first(_numbers(later=0.9), **n).verdict == S       # boundary: >= 0.9
    assert V.frequency_low_band_first(_numbers(later=0.85), **n).verdict == N
    assert V.frequency_low_band_first(_numbers(coverage=0.95), **n).verdict == S   # boundary: >= 1 - delta
    assert V.frequency_low_band_first(_numbers(coverage=0.9499), **n).verdict == N
    assert V.frequency_low_band_first(_numbers(settled_low=0.95), **n).verdict == N
    assert V.frequency_low_band_first(_numbers(low=195.0), **n).verdict == N       # equal crossing: not later


# ------------------------------------------------------------------------------ 01 shape first
def _f1_table(curves):
    """curves: one array of F1 over steps 1..len per token (one token per sample)."""
    rows = [(i, "shape", s + 1, float(v)) for i, c in enumerate(curves) for s, v in enumerate(c)]
    return pd.DataFrame(rows, columns=["sample", "word", "step", "f1"])


def _flat(early, last, n_tokens=8, steps=50):
    """F1 = early for steps 1..10, then a straight line to `last` at step 50."""
    c = np.concatenate([np.full(10, early), np.linspace(early, last, steps - 9)[1:]])
    return [c] * n_tokens


def test_shape_first_sides_of_every_threshold():
    chance = [0.25] * 8                                   # constant: its upper bound is exactly 0.25
    ok = V.shape_first(_f1_table(_flat(0.6, 0.6)), chance)
    assert ok.verdict == S and ok.estimate.value == pytest.approx(1.0) and ok.details["early_step"] == 10
    _check_text(ok)
    assert V.shape_first(_f1_table(_flat(0.3, 0.6)), chance).verdict == N          # ratio 0.5 < 0.9
    # ratio >= 0.9 but the early F1 is not above chance's upper bound
    assert V.shape_first(_f1_table(_flat(0.25, 0.26)), chance).verdict == N
    low = V.shape_first(_f1_table(_flat(0.6, 0.15)), chance)                          # last step below chance
    assert low.verdict == I and "relative_f1" not in low.details


def test_shape_first_boundaries():
    chance = [0.25] * 8
    assert V.shape_first(_f1_table(_flat(0.25, 0.25)), chance).verdict == I          # last == chance hi: <=
    assert V.shape_first(_f1_table(_flat(0.5625, 0.625)), chance).verdict == S       # ratio exactly 0.9: >=
    assert V.shape_first(_f1_table(_flat(0.5, 0.625)), chance).verdict == N          # ratio 0.8


def test_shape_first_uses_all_tokens_not_a_selected_subset():
    good = _flat(0.6, 0.6, n_tokens=4)                    # high last-step F1, settled early
    bad = _flat(0.05, 0.5, n_tokens=28)                   # late-settling tokens
    table = _f1_table(good + bad)
    # the notebook's min_final_f1 would leave the late tokens out through NaN relative F1: ignored here
    table["relative_f1"] = np.where(table["sample"] >= 4, np.nan, 1.0)
    chance = pd.Series(0.1, index=range(32))
    assert V.shape_first(_f1_table(good), chance.iloc[:4]).verdict == S              # the subset would pass
    v = V.shape_first(table, chance)
    assert v.verdict == N and v.details["tokens"] == 32


def test_shape_first_input_errors():
    table = _f1_table(_flat(0.6, 0.6))
    with pytest.raises(ValueError, match="chance"):
        V.shape_first(table, pd.Series(0.1, index=range(3)))
    with pytest.raises(ValueError, match="8 samples"):
        V.shape_first(table, [0.1] * 3)
    table.loc[5, "f1"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        V.shape_first(table, [0.1] * 8)


# ------------------------------------------------------------------------------------- 03 [SOS]
def _mass(sos, runner_up=0.05, steps=5, tokens=77):
    """(steps, prompts, tokens): [SOS] per prompt (list) or per step and prompt (2-D); one runner-up token."""
    sos = np.broadcast_to(np.asarray(sos, float), (steps, len(np.atleast_2d(sos)[0])))
    m = np.zeros((steps, sos.shape[1], tokens))
    m[:, :, 0] = sos
    m[:, :, 3] = runner_up
    m[:, :, 4:] = ((1 - sos - runner_up) / (tokens - 4))[..., None]
    return m


def test_sos_sink_both_sides_and_boundary():
    assert V.sos_sink(_mass([0.90, 0.92, 0.91, 0.93])).verdict == S
    v = V.sos_sink(_mass([0.12, 0.14, 0.13, 0.13]))
    assert v.verdict == N
    _check_text(v)
    assert V.sos_sink(_mass([0.5] * 4)).verdict == I                # exactly at the threshold: not > 0.5
    assert V.sos_sink(_mass([0.3, 0.7, 0.45, 0.65])).verdict == I  # interval straddles 0.5
    one_step_low = np.array([[0.9] * 4] * 4 + [[0.4, 0.41, 0.39, 0.4]])
    assert V.sos_sink(_mass(one_step_low)).verdict == N           # "at every step"
    assert V.sos_sink(_mass([0.6, 0.62, 0.61, 0.63]), threshold=0.9).verdict == N


def test_sos_most_attended_is_reported_beside_the_sink():
    v = V.sos_sink(_mass([0.12, 0.14, 0.13, 0.13], runner_up=0.05))
    most = v.related[0]
    assert (v.verdict, most.verdict) == (N, S)
    assert "most attended single token: SUPPORTED" in v.sentence
    assert most.details["times_uniform"].value == pytest.approx(0.13 * 77)
    assert V.sos_most_attended(_mass([0.12, 0.14, 0.13, 0.13], runner_up=0.3)).verdict == N
    assert V.sos_most_attended(_mass([0.2] * 4, runner_up=0.2)).verdict == I   # tie: margin 0, not > 0


# ------------------------------------------------------------------------------ 04 switched [EOS]
def _switch(n_b, n_a, n_other=0, n_agree=0):
    """Rows of a score table: follows B's image, A's image, neither, or A/B images agree (NaN)."""
    rows = ([(0.0, 1.0)] * n_b + [(1.0, 0.0)] * n_a + [(0.0, 0.0)] * n_other + [(np.nan, np.nan)] * n_agree)
    df = pd.DataFrame(rows, columns=["source_img_shape", "target_img_shape"])
    df["source_shape"], df["target_shape"] = df["source_img_shape"].fillna(0.0), df["target_img_shape"].fillna(1.0)
    return df


def test_eos_switch_sides_and_boundary():
    ok = V.eos_switch_follows_b(_switch(16, 2, 2, n_agree=3))
    assert ok.verdict == S and ok.estimate.n == 20                 # 16/20: Wilson [0.584, 0.919]
    a_rate = ok.details["rates"]["images"][1]
    assert a_rate.value == pytest.approx(0.1) and "A " in ok.sentence
    _check_text(ok)
    assert V.eos_switch_follows_b(_switch(14, 4, 2)).verdict == I  # 14/20: [0.481, 0.855] contains 0.5
    assert V.eos_switch_follows_b(_switch(4, 14, 2)).verdict == N  # 4/20: upper bound < 0.5
    lo = stats.wilson(16, 20).lo
    assert V.eos_switch_follows_b(_switch(16, 2, 2), threshold=lo).verdict == I   # lo == threshold: not >
    assert V.eos_switch_follows_b(_switch(16, 2, 2), threshold=lo - 1e-9).verdict == S


def test_eos_switch_primary_comparison():
    df = _switch(16, 2, 2, n_agree=3)                  # against the prompts all 23 rows count, 19 follow B
    v = V.eos_switch_follows_b(df, primary="prompts")
    assert v.estimate.n == 23 and v.estimate.value == pytest.approx(19 / 23)
    with pytest.raises(ValueError, match="clip"):
        V.eos_switch_follows_b(df, primary="clip")


# ------------------------------------------------------------------------ 05 / 06 text removal
RNG = np.random.default_rng(0)
BASE = RNG.uniform(80, 100, 24)


def _sweep(diffs, sampler="ddim", steps=50, kind_column="variant", baseline_label="uncond"):
    """Per-prompt rows: full CFG at k = steps, and full CFG minus diffs[k] at each k."""
    rows = [(sampler, steps, steps, i, baseline_label, b) for i, b in enumerate(BASE)]
    for k, d in diffs.items():
        d = np.broadcast_to(np.asarray(d, float), BASE.shape)
        rows += [(sampler, steps, k, i, "uncond", b - x) for i, (b, x) in enumerate(zip(BASE, d))]
    return pd.DataFrame(rows, columns=["sampler", "steps", "k", "prompt", kind_column, "attribute accuracy %"])


def _spread(mean, sd):
    z = np.tile([-1.0, 1.0], 12)                      # mean exactly `mean`, sample sd about `sd`
    return mean + sd * z


def test_text_removal_sides_and_boundary():
    ok = V.text_removal_keeps_quality(_sweep({25: _spread(0.5, 1.0)}))
    assert ok.verdict == S and ok.estimate.n == 24 and ok.details["k"] == 25
    _check_text(ok)
    assert V.text_removal_keeps_quality(_sweep({25: _spread(8.0, 2.0)})).verdict == N     # lo > +3
    assert V.text_removal_keeps_quality(_sweep({25: _spread(-8.0, 2.0)})).verdict == N    # hi < -3
    wide = V.text_removal_keeps_quality(_sweep({25: _spread(4.17, 9.6)}))
    assert wide.verdict == I and "too small" in wide.sentence
    assert V.text_removal_keeps_quality(_sweep({25: 3.0})).verdict == I     # interval [3, 3] on the margin: strict
    assert V.text_removal_keeps_quality(_sweep({25: 3.0}), margin=3.01).verdict == S


def test_text_removal_best_of_many_trap():
    sweep = pd.concat([_sweep({15: _spread(0.2, 1.0), 25: _spread(8.0, 2.0), 35: _spread(0.1, 1.0)}),
                       _sweep({25: _spread(0.0, 1.0)}, sampler="dpm"),
                       _sweep({10: _spread(0.0, 1.0)}, steps=20)])
    v = V.text_removal_keeps_quality(sweep)
    assert v.verdict == N                                # k=15, k=35, DPM and N=20 pass: exploration only
    ex = v.exploration.set_index(["sampler", "steps", "k"])
    assert len(ex) == 4 and ex["inside_margin"].all()
    assert "4 of 4 other settings" in v.sentence and "not the verdict" in v.sentence
    assert V.text_removal_keeps_quality(sweep, k=15).verdict == S   # only when the caller changes the rule


def test_text_removal_benchmark_table_with_latency():
    table = _sweep({25: _spread(0.5, 1.0), 15: _spread(9.0, 1.0)}, kind_column="kind", baseline_label="baseline")
    fast = stats.Estimate(30.0, 25.0, 35.0, 5, "t over rounds", 0.95, "%")
    slow = stats.Estimate(1.0, -2.0, 4.0, 5, "t over rounds", 0.95, "%")
    a = V.text_removal_keeps_quality(table, latency=fast)
    b = V.text_removal_keeps_quality(table, latency=slow)
    assert a.verdict == b.verdict == S                   # latency never changes the verdict
    assert "saved latency 30% [25, 35] (n=5" in a.sentence and a.details["latency"] is fast


def test_text_removal_errors():
    with pytest.raises(ValueError, match="pre-registered setting"):
        V.text_removal_keeps_quality(_sweep({15: 0.0, 35: 0.0}))        # k = N/2 missing
    with pytest.raises(ValueError, match="pre-registered setting"):
        V.text_removal_keeps_quality(_sweep({25: 0.0}, sampler="dpm"))  # DDIM missing
    with pytest.raises(ValueError, match="columns"):
        V.text_removal_keeps_quality(_sweep({25: 0.0}).drop(columns="sampler"))
    unpaired = _sweep({25: 0.0})
    unpaired = unpaired[~((unpaired["k"] == 25) & (unpaired["prompt"] == 3))]
    with pytest.raises(ValueError, match="paired"):
        V.text_removal_keeps_quality(unpaired)


# --------------------------------------------------------------------- 05 the causal switch test
def _early(rates, n=60, steps=50, against="images", attribute="shape"):
    """Rule rows: at each k, per order, the first round(rate * n) pairs follow the early prompt, the rest the late.

    ``rates``: k -> one rate for both orders, or a dict order -> rate."""
    rows = []
    for k, rate in rates.items():
        for order in ("A->B", "B->A"):
            r = rate[order] if isinstance(rate, dict) else rate
            hits = int(round(r * n))
            rows += [(i, order, k, steps, attribute, against, float(i < hits), float(i >= hits)) for i in range(n)]
    return pd.DataFrame(rows, columns=["pair", "order", "k", "steps", "attribute", "against", "early", "late"])


GRID = {0: 0.0, 2: 0.2, 5: 0.4, 15: 0.95, 25: 1.0, 50: 1.0}


def test_text_early_defaults_come_from_rules():
    for name, p in inspect.signature(V.text_conveyed_early).parameters.items():
        if p.kind is p.KEYWORD_ONLY:
            assert p.default == V.RULES["text_early"][name], name
    r = V.RULES["text_early"]
    assert (r["early_fraction"], r["threshold"], r["attribute"], r["against"]) == (0.2, 0.5, "shape", "images")


def test_text_early_sides_and_boundary():
    ok = V.text_conveyed_early(_early({**GRID, 10: 0.7}))           # 42/60 in both orders: Wilson [0.575, 0.80]
    assert ok.verdict == S and ok.estimate.n == 60 and ok.details["k"] == 10 and ok.details["steps"] == 50
    assert ok.estimate.lo > 0.5 and ok.estimate.value == pytest.approx(0.7)
    _check_text(ok)
    assert "crossover k" in ok.sentence and ok.details["crossover"]["shape"].value == 10
    assert V.text_conveyed_early(_early({**GRID, 10: 0.7}, n=20)).verdict == I     # 14/20: [0.481, 0.855]
    assert V.text_conveyed_early(_early({**GRID, 10: 0.85}, n=20)).verdict == S    # 17/20: [0.640, 0.948]
    late = V.text_conveyed_early(_early({**GRID, 10: {"A->B": 0.9, "B->A": 1 / 3}}))  # 20/60: upper 0.46
    assert late.verdict == N and "B->A" in late.sentence and late.estimate.value == pytest.approx(1 / 3)
    lo = stats.wilson(42, 60).lo
    assert V.text_conveyed_early(_early({**GRID, 10: 0.7}), threshold=lo).verdict == I   # lo == threshold: not >
    assert V.text_conveyed_early(_early({**GRID, 10: 0.7}), threshold=lo - 1e-9).verdict == S


def test_text_early_needs_both_orders_not_their_pool():
    # pooled, 90 of 120 follow the early prompt (lower bound 0.67): but B->A alone is 30/60, a coin flip
    v = V.text_conveyed_early(_early({**GRID, 10: {"A->B": 1.0, "B->A": 0.5}}))
    assert v.verdict == I and v.estimate.value == pytest.approx(0.5) and "B->A" in v.sentence


def test_text_early_only_the_registered_step_counts():
    # every other k passes (k=15 with 0.95), k* = 10 does not: exploration only
    v = V.text_conveyed_early(_early({**GRID, 10: 0.3}))
    assert v.verdict == N
    ex = v.exploration
    assert set(ex["k"]) == set(GRID) | {10} and {"A->B", "B->A", "both orders"} <= set(ex["order"])
    assert v.details["crossover"]["shape"].value == 15
    # and the reverse: a failure at another k never touches a pass at k*
    assert V.text_conveyed_early(_early({**GRID, 10: 0.9, 15: 0.1})).verdict == S
    # the prompts reference is reported, not read, unless the caller changes the rule
    both = pd.concat([_early({**GRID, 10: 0.9}), _early({**GRID, 10: 0.1}, against="prompts")])
    assert V.text_conveyed_early(both).verdict == S
    assert V.text_conveyed_early(both, against="prompts").verdict == N


def test_text_early_errors():
    with pytest.raises(ValueError, match="columns"):
        V.text_conveyed_early(_early(GRID).drop(columns="against"))
    with pytest.raises(ValueError, match="one N"):
        V.text_conveyed_early(pd.concat([_early({**GRID, 10: 0.9}), _early({2: 0.9}, steps=10)]))
    with pytest.raises(ValueError, match="k=10"):
        V.text_conveyed_early(_early(GRID))                              # k* = 10 is not a switch step of the table
    with pytest.raises(ValueError, match="both orders"):
        t = _early({**GRID, 10: 0.9})
        V.text_conveyed_early(t[~((t["k"] == 10) & (t["order"] == "B->A"))])
    with pytest.raises(ValueError, match="k=0"):
        V.text_conveyed_early(_early({**GRID, 10: 0.9}), early_fraction=0.0)   # k* must switch part-way
    with pytest.raises(ValueError, match="'color'"):
        V.text_conveyed_early(_early({**GRID, 10: 0.9}), attribute="color")
