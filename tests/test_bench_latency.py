"""Issue 24 in the benchmark: denoiser timing at B and 2B, limit_hw and gap columns, monotonicity, extra
rounds for the focus methods, DeepCache composed with the paper's method, the model fingerprint."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import guidance
from helpers.bench import acceleration as acc
from helpers.bench import latency, summaries, timing
from helpers.bench.peers import halve_cached

PROMPTS = ["a red circle", "a blue star"]
N = 4


def _no_hooks_left(pipe) -> bool:
    net = pipe.unet
    return (not net._forward_hooks and not net._forward_pre_hooks and "step" not in pipe.scheduler.__dict__
            and "decode" not in pipe.vae.__dict__
            and not pipe.text_encoder._forward_hooks and not pipe.text_encoder._forward_pre_hooks)


def test_timed_parts_sees_batch_B_after_the_text_is_dropped_and_restores_everything(tiny_pipe):
    with latency.timed_parts(tiny_pipe) as log:
        guidance.sample(tiny_pipe, PROMPTS, guidance.TextWindow(1, "uncond"), num_inference_steps=N, batch_size=2,
                        record=False)
    assert [r for r, _ in log["calls"]] == [4, 2, 2, 2]  # 2B rows for step 0, then B
    assert all(s > 0 for _, s in log["calls"]) and log["text_encoder"] > 0 and log["vae_decode"] > 0
    assert log["scheduler"] > 0 and _no_hooks_left(tiny_pipe)
    row = latency.run_parts(log, total=10.0, batch=2)
    assert row["denoiser_calls"] == 4 and row["t_B"] > 0 and row["t_2B"] == log["calls"][0][1]
    assert row["other"] == pytest.approx(10.0 - row["denoiser_s"] - sum(row[p] for p in latency.PARTS))
    with pytest.raises(RuntimeError, match="inside"):
        with latency.timed_parts(tiny_pipe):
            raise RuntimeError("inside")
    assert _no_hooks_left(tiny_pipe)


def _synthetic(rounds: int = 4):
    """One block: full CFG (T=10 s, t_2B=0.2), text off after k=2 and k=3 (a=2, 1; t_B=0.15), DeepCache."""
    times, parts = [], []
    for r in range(rounds):
        jitter = 1 + 0.01 * r
        for method, secs, t_B in (("full CFG", 10.0, np.nan), ("k2", 9.0, 0.15), ("k3", 9.5, 0.15),
                                  ("DeepCache", 5.0, 0.01)):  # DeepCache's B-row calls are partial: ignored
            times.append({"round": r, "method": method, "seconds": secs * jitter})
            parts.append({"round": r, "method": method, "seconds": secs * jitter, "t_B": t_B * jitter,
                          "t_2B": 0.2 * jitter})
    table = pd.DataFrame({"method": ["full CFG", "k2", "k3", "DeepCache"],
                          "kind": ["baseline", "uncond", "uncond", "deepcache"], "k": [4, 2, 3, 4], "a": [0, 2, 1, 0],
                          "evals_per_image": [8, 6, 7, 8]})
    key = {"sampler": "ddim", "steps": 4}
    return table.assign(**key), pd.DataFrame(times).assign(**key), pd.DataFrame(parts).assign(**key)


def test_timing_columns_limits_gap_and_monotonicity():
    table, times, parts = _synthetic()
    out = latency.timing_columns(table, times, parts).set_index("method")
    # a (t_2B - t_B) / T_full = 2 * 0.05 / 10 = 1%, saved 10% -> gap -9 points; k=3: 0.5%, saved 5%
    assert out.loc["k2", "limit_hw"] == pytest.approx(1.0) and out.loc["k2", "gap"] == pytest.approx(-9.0)
    assert out.loc["k3", "limit_hw"] == pytest.approx(0.5) and out.loc["k3", "gap"] == pytest.approx(-4.5)
    assert out.loc["k2", "limit"] == pytest.approx(25.0) and np.isnan(out.loc["DeepCache", "limit"])
    assert np.isnan(out.loc["DeepCache", "limit_hw"]) and np.isnan(out.loc["full CFG", "limit_hw"])
    assert out.loc["k2", "saved_latency"] == pytest.approx(10.0) and out.loc["k2", "n_rounds"] == 4
    assert out.loc["k2", "saved_lo"] <= 10.0 <= out.loc["k2", "saved_hi"]
    assert set(out["monotone"]) == {"ok", "n/a"} and out.loc["k3", "monotone"] == "ok"
    # a saving that grows with k is flagged
    times.loc[times["method"] == "k3", "seconds"] = times.loc[times["method"] == "k3", "seconds"] * 0.5
    flagged = latency.timing_columns(table, times, parts).set_index("method")
    assert flagged.loc["k3", "monotone"] == "VIOLATION"
    assert (latency.timing_columns(table, times)["limit_hw"].isna()).all()  # no parts: no hardware limit


def test_recompute_rebuilds_the_columns_from_the_raw_files(tmp_path):
    table, times, parts = _synthetic()
    table.assign(saved_latency=0.0).to_csv(tmp_path / "bench.csv", index=False)
    times.to_csv(tmp_path / "times.csv", index=False)
    parts.to_csv(tmp_path / "parts.csv", index=False)
    (tmp_path / "bench.md").write_text("Measured somewhere.\n\n| old | table |\n|---|---|\n")
    out = latency.recompute(tmp_path).set_index("method")
    assert out.loc["k2", "limit_hw"] == pytest.approx(1.0) and out.loc["k2", "saved_latency"] == pytest.approx(10.0)
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("Measured somewhere.\n\n| sampler |") and "old" not in md


def test_profile_table_splits_the_baseline_run():
    parts = pd.DataFrame([{"sampler": "ddim", "steps": 4, "round": r, "method": "full CFG", "seconds": 10.0,
                           "denoiser_s": 8.0, "text_encoder": 0.5, "vae_decode": 1.0, "scheduler": 0.2, "other": 0.3}
                          for r in range(3)])
    prof = latency.profile_table(parts)
    assert prof.loc[0, "denoiser_s %"] == pytest.approx(80.0) and prof.loc[0, "other %"] == pytest.approx(3.0)


def test_focus_methods_and_extra_rounds(tiny_pipe):
    rule = {"sampler": "ddim", "n_steps": 4, "k_fraction": 0.5, "variant": "uncond"}
    labels, kinds, ks = ["full", "t1", "t2", "dc", "dc+t2"], ["baseline", "uncond", "uncond", "deepcache",
                                                            "deepcache+uncond"], [4, 1, 2, None, 2]
    assert latency.focus_methods(labels, kinds, ks, "ddim", 4, rule) == ["full", "t2", "dc", "dc+t2"]
    assert latency.focus_methods(labels, kinds, ks, "dpm", 4, rule) == ["full", "dc", "dc+t2"]
    methods = [acc.Method("full CFG", "baseline", N), acc.Method("t2", "uncond", 2), acc.Method("t1", "uncond", 1)]
    times, parts = acc.time_methods(tiny_pipe, methods, PROMPTS, N, 7.5, 0, 1, focus=["full CFG", "t2"],
                                    focus_repeats=3)
    counts = times.groupby("method")["round"].nunique()
    assert counts.to_dict() == {"full CFG": 3, "t1": 1, "t2": 3}
    first = [m for r, m in zip(times["round"], times["method"]) if r == 0]
    assert first == [methods[i].label for _, i in timing.interleaved_order([0, 1, 2], 1, 0)]
    assert (parts.loc[parts["method"] == "t2", "t_B"] > 0).all() and parts.loc[parts["method"] == "full CFG", "t_B"].isna().all()


def test_halve_cached_takes_the_kept_half_inside_nested_outputs():
    t = torch.arange(8.0).reshape(4, 2)
    value = (t, (t * 2, torch.zeros(3)), [t], {"sample": t})
    u = halve_cached(value, 2, "uncond")
    c = halve_cached(value, 2, "cond")
    assert torch.equal(u[0], t[:2]) and torch.equal(c[0], t[2:]) and torch.equal(u[1][0], 2 * t[:2])
    assert u[1][1].shape == (3,) and torch.equal(u[2][0], t[:2]) and torch.equal(c[3]["sample"], t[2:])
    assert halve_cached(t, 4, "uncond") is t  # the batch did not shrink: unchanged


def _deepcache_or_skip(pipe):
    reason = acc.peer_status(pipe)["deepcache"]
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("variant", ["uncond", "cond"])
def test_composition_with_interval_1_equals_the_text_window_without_cache(tiny_pipe, variant):
    _deepcache_or_skip(tiny_pipe)
    alone, _ = acc.run_method(tiny_pipe, acc.Method("w", variant, 2), PROMPTS, N)
    composed, ks = acc.run_method(tiny_pipe, acc.Method("c", f"deepcache+{variant}", 2, cache_interval=1), PROMPTS, N)
    assert np.array_equal(alone, composed) and list(ks) == [2, 2]


def test_composition_reuses_the_kept_half_of_the_cache(tiny_pipe):
    _deepcache_or_skip(tiny_pipe)
    deepcache, _ = acc.run_method(tiny_pipe, acc.Method("d", "deepcache", cache_interval=2), PROMPTS, N)
    never, _ = acc.run_method(tiny_pipe, acc.Method("c", "deepcache+uncond", N, cache_interval=2), PROMPTS, N)
    assert np.array_equal(deepcache, never)  # k = N: the text is never dropped, DeepCache alone
    # k = 1, interval 2: step 1 is a cached step right after the batch fell to B (needs the halved cache)
    with acc.count_evaluations(tiny_pipe) as evals:
        composed, _ = acc.run_method(tiny_pipe, acc.Method("c", "deepcache+uncond", 1, cache_interval=2), PROMPTS, N)
    window, _ = acc.run_method(tiny_pipe, acc.Method("w", "uncond", 1), PROMPTS, N)
    assert np.isfinite(composed).all() and evals[0] == 2 * (2 + 3) and not np.array_equal(composed, window)
    assert not any("forward" in m.__dict__ for m in tiny_pipe.unet.modules())
    assert not tiny_pipe.unet._forward_pre_hooks


def test_methods_for_adds_the_compositions():
    config = dataclasses.replace(acc.PROFILES["quick"], compose_fractions=(0.5,), deepcache_intervals=(3,))
    ms = acc.methods_for(20, config, {}, {"tgate": None, "deepcache": None})
    composed = [m for m in ms if m.kind.startswith("deepcache+")]
    assert [(m.kind, m.text_steps, m.cache_interval) for m in composed] == [("deepcache+uncond", 10, 3),
                                                                              ("deepcache+cond", 10, 3)]
    assert not [m for m in acc.methods_for(20, config, {}, {"tgate": None, "deepcache": "none"})
                if m.kind.startswith("deepcache")]


def test_finished_run_refuses_results_of_another_model(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_RESULTS_DIR", str(tmp_path))
    full = acc.results_dir("full", "some/model")
    full.mkdir(parents=True)
    (full / "bench.csv").write_text("x\n1\n")
    (full / "meta.json").write_text(json.dumps({"model_fingerprint": "some/model"}))
    lines = []
    assert summaries.finished_run("some/model", log=lines.append) == (full, True)
    (full / "meta.json").write_text(json.dumps({}))
    assert summaries.finished_run("some/model", log=lines.append) == (full, True) and "WARNING" in lines[-1]
    (full / "meta.json").write_text(json.dumps({"model_fingerprint": "sha256:0123"}))
    monkeypatch.setattr(acc, "run_benchmark", lambda config, model_id: tmp_path / "quick")
    assert summaries.finished_run("some/model", log=lines.append) == (tmp_path / "quick", False)
    assert "another model" in lines[-2]


def test_model_fingerprint_of_the_embedded_model_is_stable():
    a = summaries.model_fingerprint(None)
    assert a.startswith("sha256:") and a == summaries.model_fingerprint(None)
    assert summaries.model_fingerprint("org/name") == "org/name"


def test_latency_table_and_composition_summary():
    table, times, parts = _synthetic()
    table = pd.concat([table, pd.DataFrame({"method": ["DeepCache + text off after k=2 (uncond)"],
                                            "kind": ["deepcache+uncond"], "k": [2], "a": [2], "evals_per_image": [6],
                                            "sampler": ["ddim"], "steps": [4]})], ignore_index=True)
    extra = times[times["method"] == "DeepCache"].assign(method=table["method"].iloc[-1])
    extra["seconds"] *= 0.8
    out = latency.timing_columns(table, pd.concat([times, extra]), parts)
    out["attribute_accuracy"] = [90.0, 88.0, 89.0, 89.5, 87.0]
    lt = summaries.latency_table(out)
    row = lt.set_index("method").loc["k2"]
    assert row["limit_hw % [95%]"].startswith("1.0 [") and row["gap pts [95%]"].startswith("-9.0 [")
    assert lt.set_index("method").loc["DeepCache", "limit_hw % [95%]"] == "–"
    (line,) = summaries.composition_summary(out)
    assert "saves 60.0 [" in line and "DeepCache alone 50.0 [" in line and ": ahead (intervals disjoint)" in line
    assert "87.0 vs 89.5 (DeepCache) and 90.0 (full CFG)" in line


def test_readme_block_without_the_measurement(tmp_path, monkeypatch):
    from conftest import load_script

    script = load_script("update_readme_results")
    monkeypatch.setattr(script, "RESULTS", tmp_path)
    assert script.bench_focus().startswith("Not measured yet")


def test_real_latency_measure_on_a_tiny_pipeline(tiny_pipe):
    from helpers.bench import real_latency as rl

    table = rl.measure(tiny_pipe, "tiny", steps=2, batch_sizes=(1, 2), repeats=2)
    deepcache = acc.peer_status(tiny_pipe)["deepcache"] is None
    assert len(table) == 2 * (4 if deepcache else 2) and set(rl.COLUMNS) <= set(table.columns)
    window = table[table["kind"] == "uncond"]
    assert (window["limit"] == 25.0).all() and window["limit_hw"].notna().all()
    assert (table.loc[table["kind"] == "baseline", "saved_latency"] == 0).all()
    assert tiny_pipe.unet.config.sample_size == table["latent"].iloc[0]  # the native size, restored
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        rl.measure(tiny_pipe, "tiny", steps=1)
