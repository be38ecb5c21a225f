"""Acceleration benchmark: methods, evaluation counts, peers restored, latency bookkeeping, the script."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from helpers.bench import acceleration as acc
from helpers.bench import timing
from helpers.generation import generate
from helpers.loading import load_pipeline
from helpers.bench.summaries import at_paper_a, best_tradeoff, paper_table, pareto_front, to_markdown
from helpers.plots.bench import plot_pareto

from conftest import load_script

PROMPTS = ["a red circle", "a blue star"]
N = 4


def test_methods_cover_every_kind_with_the_right_k():
    config = acc.PROFILES["quick"]
    ms = acc.methods_for(20, config, {4: 0.1, 6: 0.05}, {"tgate": None, "deepcache": None})
    kinds = [m.kind for m in ms]
    assert kinds[0] == "baseline" and set(kinds) == set(acc.KINDS)
    assert [m.text_steps for m in ms if m.kind == "uncond"] == sorted({round(f * 20) for f in config.uncond_fractions})
    assert [m.threshold for m in ms if m.kind == "adaptive"] == [0.1, 0.05]
    assert len({m.label for m in ms}) == len(ms)
    missing = acc.methods_for(20, config, {}, {"tgate": "not installed", "deepcache": "no UNet"})
    assert not {"tgate", "deepcache", "adaptive"} & {m.kind for m in missing}


@pytest.mark.parametrize("kind,k,expected", [
    ("baseline", N, 2 * N), ("uncond", 1, N + 1), ("cond", 2, N + 2), ("tgate", 2, N + 2), ("deepcache", None, 2 * N),
])
def test_denoiser_evaluations_per_method(tiny_pipe, kind, k, expected):
    if kind in ("tgate", "deepcache") and acc.peer_status(tiny_pipe)[kind]:
        pytest.skip(acc.peer_status(tiny_pipe)[kind])
    method = acc.Method(kind, kind, k, cache_interval=2 if kind == "deepcache" else None)
    with acc.count_evaluations(tiny_pipe) as evals:
        images, ks = acc.run_method(tiny_pipe, method, PROMPTS, N)
    assert images.shape == (2, 64, 64, 3) and np.isfinite(images).all()
    assert evals[0] / len(PROMPTS) == expected


def test_peers_leave_the_pipeline_as_it_was(tiny_pipe):
    before = generate(tiny_pipe, PROMPTS, num_inference_steps=N, progress=False)
    block = tiny_pipe.unet.down_blocks[1]
    original = block.forward
    block.forward = wrapper = lambda *a, **k: original(*a, **k)  # like an accelerate offload hook
    try:
        for kind, status in acc.peer_status(tiny_pipe).items():
            if status is None:
                acc.run_method(tiny_pipe, acc.Method(kind, kind, 2, cache_interval=2), PROMPTS, N)
        assert block.__dict__["forward"] is wrapper
        assert [m for m in tiny_pipe.unet.modules() if "forward" in m.__dict__] == [block]
    finally:
        del block.forward
    assert not any("cache" in m.__dict__ for m in tiny_pipe.unet.modules())
    assert not hasattr(tiny_pipe, "tgate")
    assert np.array_equal(generate(tiny_pipe, PROMPTS, num_inference_steps=N, progress=False), before)


def test_calibrated_threshold_stops_the_median_prompt_at_the_target(tiny_pipe):
    prompts = ["a red circle", "a blue star", "a green heart", "a small pink cross", "a yellow square"]
    thresholds = acc.calibrate_thresholds(tiny_pipe, prompts, 6, [2, 3], 7.5, seed=0, batch_size=5)
    for k, t in thresholds.items():
        _, ks = acc.run_method(tiny_pipe, acc.Method("a", "adaptive", k, threshold=t), prompts, 6)
        assert abs(np.median(ks) - k) <= 1


def test_saved_latency_is_the_median_same_round_ratio():
    times = pd.DataFrame({
        "round": [0, 0, 1, 1, 2, 2],
        "method": ["full CFG", "x"] * 3,
        "seconds": [2.0, 1.0, 4.0, 3.0, 2.0, 1.5],
    })
    out = timing.ratio_table(times, by=()).set_index("method")  # the benchmark's latency columns
    assert out.loc["full CFG", "saved_latency"] == 0
    assert out.loc["x", "saved_latency"] == pytest.approx(25.0)  # ratios 0.5, 0.75, 0.75
    assert out.loc["x", "median_s"] == 1.5


def test_pareto_front_and_best_tradeoff():
    table = pd.DataFrame({
        "sampler": "ddim", "steps": 10, "kind": ["baseline", "uncond", "uncond", "cond"],
        "saved_latency": [0.0, 20.0, 40.0, 30.0], "attribute_accuracy": [90.0, 89.0, 70.0, 60.0],
    })
    front = pareto_front(table, "saved_latency", "attribute_accuracy")
    assert list(front["saved_latency"]) == [0.0, 20.0, 40.0]
    best = best_tradeoff(table)
    assert list(best["saved_latency"]) == [20.0]


def test_block_and_markdown(tiny_pipe):
    config = dataclasses.replace(acc.PROFILES["quick"], repeats=1, batch_size=2, uncond_fractions=(0.5,),
                                 cond_fractions=(), adaptive_fractions=(0.5,), deepcache_intervals=())
    scheduler = tiny_pipe.scheduler
    try:
        block = acc.run_block(tiny_pipe, "dpm", N, config, PROMPTS, None, ["a green heart", "a pink cross"],
                              scorer=None, log=lambda _: None)
    finally:
        tiny_pipe.scheduler = scheduler  # the session's shared pipeline
    t = block.table.set_index("method")
    assert t.loc["full CFG", "saved_latency"] == 0 and t.loc["full CFG", "l1"] == 0
    assert t.loc["text off after k=2 (uncond)", "limit"] == pytest.approx(25.0)
    assert set(block.times["method"]) == set(t.index)
    md = to_markdown(paper_table(block.table))
    assert md.count("\n") == len(t) + 1 and "saved latency %" in md
    assert not at_paper_a(block.table).empty
    fig = plot_pareto(block.table)
    assert len(fig.axes) >= 1


def test_script_writes_its_results(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_MODEL_ID", "random-tiny")
    script = load_script("bench_acceleration")
    out = script.main(["--samplers", "ddim", "--steps", "3", "--n-prompts", "2", "--repeats", "1",
                       "--no-metrics", "--out", str(tmp_path)])
    for name in ("bench.csv", "bench.md", "times.csv", "pareto.png", "meta.json", "examples_ddim_3.png"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "bench.csv")
    assert (table["kind"] == "baseline").sum() == 1 and table["saved_latency"].notna().all()


@pytest.mark.parametrize("kind", ["sd21", "sdxl", "pixart"])
def test_peers_on_every_architecture(kind):
    from helpers.toy.random_pipelines import random_pipeline

    pipe = random_pipeline(kind)
    status = acc.peer_status(pipe)
    assert (status["deepcache"] is not None) == (kind == "pixart")  # no UNet skip branches in PixArt
    for peer, reason in status.items():
        if reason is None:
            with acc.count_evaluations(pipe) as evals:
                images, _ = acc.run_method(pipe, acc.Method(peer, peer, 1, cache_interval=2), PROMPTS[:1], 2)
            assert np.isfinite(images).all() and evals[0] == (3 if peer == "tgate" else 4)


def test_rule_table_of_the_pre_registered_setting(tmp_path):
    """--rule-only writes the shared rule's per-prompt table (full CFG and k = N/2), which the rule accepts."""
    import dataclasses

    from helpers import verdicts

    config = dataclasses.replace(acc.PROFILES["quick"], samplers=("ddim",), steps=(50,), rule_prompts=3, batch_size=2)
    out = acc.run_rule_only(config, "random-tiny", tmp_path)
    table = pd.read_csv(out / "rule_per_prompt.csv")
    assert sorted(table["k"].unique()) == [25, 50] and len(table) == 6
    v = verdicts.text_removal_keeps_quality(table)
    assert v.estimate.n == 3
    if (out / "compose_per_prompt.csv").exists() or acc.peer_status(load_pipeline("random-tiny"))["deepcache"] is None:
        composed = pd.read_csv(out / "compose_per_prompt.csv")
        assert set(composed["kind"]) == {"deepcache", "deepcache+uncond", "deepcache+cond"} and len(composed) == 9
        from helpers.bench import summaries

        eq = summaries.composition_equivalence(out)
        assert len(eq) == 3 and (eq["n"] == 3).all()
