"""helpers.bench.timing (issue 24): interleaved order, same-round ratio intervals, the monotonicity check,
the hardware and call-count limits, machine load and the x̂0-space scale, on synthetic inputs (torch-free).

References typed as literals: the median's order-statistic interval at 95% is (x_(2), x_(9)) for n = 10
(coverage 1 − 2 · 11/1024 = 0.978516) and (x_(6), x_(15)) for n = 20 (1 − 2 · 21700/2^20 = 0.958611);
the issue's CPU numbers (t_B = 35.5 ms, t_2B = 55.4 ms, a = 25 of 50 steps, UNet 95% of the run) give a
hardware limit of 25 · 19.9 / (50 · 55.4 / 0.95) = 17.06%.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.bench import timing  # helpers/__init__ is lazy: no torch

ROOT = Path(__file__).resolve().parent.parent


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message.count(". ") <= 1, message
    return message


def bad(call, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        call()
    one_sentence(err)


# --- no torch -------------------------------------------------------------------------------------

def test_module_and_tests_do_not_import_torch():
    for path in (ROOT / "helpers/bench/timing.py", Path(__file__)):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "torch" not in names, path
    code = "import sys, helpers.bench.timing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- interleaved order ----------------------------------------------------------------------------

def test_every_round_runs_every_method_once_in_a_seeded_shuffle():
    methods = ["full CFG", "k=10", "k=25", "DeepCache"]
    order = timing.interleaved_order(methods, repeats=12, seed=3)
    assert len(order) == 48 and [r for r, _ in order] == sorted(r for r, _ in order)
    rounds = [[m for r, m in order if r == i] for i in range(12)]
    assert all(sorted(r) == sorted(methods) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled per round, not one fixed order
    assert timing.interleaved_order(methods, 12, seed=3) == order
    assert timing.interleaved_order(methods, 12, seed=4) != order


def test_order_is_the_one_the_benchmark_runs_today():
    """acceleration.time_methods draws rng.permutation(len(methods)) per round from default_rng(seed)."""
    rng = np.random.default_rng(0)
    expected = [(r, i) for r in range(5) for i in rng.permutation(3)]
    assert timing.interleaved_order([0, 1, 2], 5, seed=0) == expected


def test_interleaved_order_bad_input():
    bad(lambda: timing.interleaved_order([], 3), "at least one method")
    bad(lambda: timing.interleaved_order(["a", "b", "a"], 3), "distinct")
    for repeats in (0, -1, 2.5, True):
        bad(lambda: timing.interleaved_order(["a", "b"], repeats), "repeats must be a positive integer")


# --- median and ratio intervals -------------------------------------------------------------------

@pytest.mark.parametrize("n, j, cover", [(10, 2, 0.978516), (20, 6, 0.958611), (6, 1, 0.96875)])
def test_order_statistic_ranks(n, j, cover):
    rj, rk, c = timing._order_ranks(n, 0.95)
    assert (rj, rk) == (j, n + 1 - j) and c == pytest.approx(cover, abs=1e-6)


def test_order_interval_takes_the_right_order_statistics_and_warns_when_too_few_rounds():
    x = np.arange(10.0)[::-1]  # unsorted on purpose
    est = timing.median_interval(x, interval="order")
    assert (est.value, est.lo, est.hi, est.n) == (4.5, 1.0, 8.0, 10) and est.method == "order statistics"
    few = timing.median_interval([3.0, 1.0, 2.0, 5.0, 4.0], interval="order")
    assert (few.lo, few.hi) == (1.0, 5.0) and "coverage only 93.8%" in few.method


def test_order_interval_covers_the_true_median():
    rng = np.random.default_rng(1)
    draws = rng.lognormal(0.0, 0.5, size=(2000, 11))  # true median exp(0) = 1
    intervals = [timing.median_interval(d, interval="order") for d in draws]
    assert np.mean([e.lo <= 1.0 <= e.hi for e in intervals]) >= 0.94


def test_bootstrap_interval_is_seeded_and_brackets_the_median():
    x = np.random.default_rng(2).normal(1.0, 0.1, 15)
    a, b = timing.median_interval(x, seed=5), timing.median_interval(x, seed=5)
    assert a == b and a.lo <= a.value <= a.hi and a.method == "percentile bootstrap"
    value, lo, hi = a
    assert value == pytest.approx(np.median(x))
    one = timing.median_interval([2.0])
    assert one.value == 2.0 and np.isnan(one.lo) and np.isnan(one.hi) and one.n == 1


def test_ratios_are_paired_by_round_so_drift_cancels():
    baseline = np.linspace(1.0, 10.0, 12)  # the machine slows down tenfold over the run
    res = timing.ratio_interval(0.75 * baseline, baseline)
    assert (res.ratio.value, res.ratio.lo, res.ratio.hi) == pytest.approx((0.75, 0.75, 0.75))
    assert (res.saved.value, res.saved.lo, res.saved.hi) == pytest.approx((25.0, 25.0, 25.0))


@pytest.mark.parametrize("interval", ["bootstrap", "order"])
def test_saved_latency_is_one_minus_the_ratio_with_swapped_ends(interval):
    rng = np.random.default_rng(3)
    base = rng.uniform(2.9, 3.1, 10)
    method = base * rng.normal(0.82, 0.02, 10)
    res = timing.ratio_interval(method, base, interval=interval)
    assert res.ratio.value == pytest.approx(np.median(method / base))
    assert res.saved.value == pytest.approx(100 * (1 - res.ratio.value))
    assert res.saved.lo == pytest.approx(100 * (1 - res.ratio.hi))
    assert res.saved.hi == pytest.approx(100 * (1 - res.ratio.lo))
    assert res.saved.lo <= res.saved.value <= res.saved.hi
    assert set(res.row()) == {"ratio", "ratio_lo", "ratio_hi", "saved_latency", "saved_lo", "saved_hi", "n_rounds"}


def test_ratio_interval_bad_input():
    ok = [1.0, 1.1, 0.9]
    bad(lambda: timing.ratio_interval([1.0, 1.0], ok), "2 rounds but times_baseline has 3")
    bad(lambda: timing.ratio_interval([], []), "non-empty")
    bad(lambda: timing.ratio_interval([1.0, 0.0, 1.0], ok), "positive finite times")
    bad(lambda: timing.ratio_interval([1.0, -1.0, 1.0], ok), "positive finite times")
    bad(lambda: timing.ratio_interval([1.0, np.nan, 1.0], ok), "positive finite times")
    for level in (0, 1, 1.5, -0.1):
        bad(lambda: timing.ratio_interval(ok, ok, level=level), "level must lie strictly between 0 and 1")
    bad(lambda: timing.ratio_interval(ok, ok, n_boot=0), "n_boot must be a positive integer")
    bad(lambda: timing.ratio_interval(ok, ok, interval="t"), "interval must be one of")
    bad(lambda: timing.median_interval([]), "non-empty array of finite values")


def _times_table() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    rows = []
    for sampler in ("ddim", "dpm"):
        for r in range(10):
            base = rng.uniform(2.0, 4.0)
            for method, f in (("full CFG", 1.0), ("text off after k=25 (uncond)", 0.82), ("DeepCache", 0.42)):
                rows.append({"sampler": sampler, "steps": 50, "round": r, "method": method,
                             "seconds": base * f * rng.normal(1, 0.01)})
    return pd.DataFrame(rows)


def test_ratio_table_from_a_times_csv():
    times = _times_table()
    times = times.drop(times.index[(times["method"] == "DeepCache") & (times["round"] == 0)])  # a missing round
    table = timing.ratio_table(times).set_index(["sampler", "method"])
    assert len(table) == 6
    base = table.loc[("ddim", "full CFG")]
    assert (base["ratio"], base["saved_latency"], base["saved_lo"], base["saved_hi"]) == (1, 0, 0, 0)
    assert table.loc[("dpm", "DeepCache"), "n_rounds"] == 9
    block = times[times["sampler"] == "dpm"].pivot(index="round", columns="method", values="seconds")
    ref = timing.ratio_interval(block["text off after k=25 (uncond)"], block["full CFG"])
    assert table.loc[("dpm", "text off after k=25 (uncond)"), "saved_latency"] == pytest.approx(ref.saved.value)
    assert table.loc[("dpm", "text off after k=25 (uncond)"), "saved_lo"] == pytest.approx(ref.saved.lo)
    bad(lambda: timing.ratio_table(times.drop(columns="round")), "lacks the columns")
    bad(lambda: timing.ratio_table(times, baseline="none"), "no 'none' rounds")


# --- monotonicity across k ------------------------------------------------------------------------

def _sweep() -> pd.DataFrame:
    """Saved latency of text off after k: it must fall as k grows. DDIM shows the issue's case (k=4: 14.3%,
    k=6: 18.3%, disjoint intervals), DPM a wrong step within noise; rows deliberately out of k order."""
    return pd.DataFrame({
        "sampler": ["ddim", "ddim", "ddim", "ddim", "dpm", "dpm", "dpm"],
        "steps": [20] * 7, "kind": ["uncond"] * 7,
        "k": [6, 2, 4, 10, 2, 6, 4],
        "saved": [18.3, 22.0, 14.3, 9.0, 21.0, 15.5, 15.0],
        "lo": [17.9, 21.0, 13.9, 8.0, 20.0, 14.0, 14.0],
        "hi": [18.7, 23.0, 14.7, 10.0, 22.0, 17.0, 16.0],
    }, index=[10, 11, 12, 13, 14, 15, 16])


def test_a_wrong_step_is_a_violation_only_when_the_intervals_are_disjoint():
    out = timing.monotonicity_flags(_sweep(), ["sampler", "steps", "kind"], "k", "saved", "lo", "hi",
                                    increasing=False)
    flags = dict(zip(zip(out["sampler"], out["k"]), out["monotone"]))
    assert flags == {("ddim", 2): "ok", ("ddim", 4): "ok", ("ddim", 6): "VIOLATION", ("ddim", 10): "ok",
                     ("dpm", 2): "ok", ("dpm", 4): "ok", ("dpm", 6): "within noise"}
    assert list(out.index) == list(_sweep().index) and "monotone" not in _sweep()  # rows kept, input untouched


def test_increasing_flips_the_expected_direction_and_groups_are_separate():
    sweep = _sweep()
    out = timing.monotonicity_flags(sweep, ["sampler"], "k", "saved", "lo", "hi", increasing=True, flag_col="f")
    flags = dict(zip(zip(out["sampler"], out["k"]), out["f"]))
    assert flags[("ddim", 4)] == "VIOLATION" and flags[("ddim", 6)] == "ok" and flags[("ddim", 10)] == "VIOLATION"
    assert flags[("dpm", 2)] == "ok" and flags[("dpm", 4)] == "VIOLATION" and flags[("dpm", 6)] == "ok"
    flat = timing.monotonicity_flags(sweep[sweep["sampler"] == "ddim"], [], "k", "saved", "lo", "hi", False)
    assert (flat["monotone"] == "VIOLATION").sum() == 1


def test_monotonicity_bad_input():
    sweep = _sweep()
    args = (["sampler"], "k", "saved", "lo", "hi")
    bad(lambda: timing.monotonicity_flags(sweep.drop(columns="lo"), *args), r"lacks the columns \['lo'\]")
    bad(lambda: timing.monotonicity_flags(sweep.assign(saved=np.nan), *args), "must be finite in every row")
    bad(lambda: timing.monotonicity_flags(sweep.assign(lo=sweep["hi"] + 1), *args), "lo exceeds hi")
    bad(lambda: timing.monotonicity_flags(sweep.assign(k=1), *args), "repeated k values")


# --- the hardware limit, the call-count limit and the gap -----------------------------------------

def test_hardware_limit_of_the_issue_run():
    t_B, t_2B = 0.0355, 0.0554
    T_full = 50 * t_2B / 0.95
    est = timing.limit_hw(t_B, t_2B, 25, T_full)
    assert est.value == pytest.approx(17.06, abs=0.01) and est.n == 1 and np.isnan(est.lo) and np.isnan(est.hi)
    assert timing.limit_calls(75, 50) == pytest.approx(25.0)  # a = N/2: 2k + (N - k) = 1.5N evaluations


def test_hardware_limit_per_round_is_the_median_with_an_interval():
    rng = np.random.default_rng(5)
    t_B, t_2B, T_full = rng.normal(0.0355, 0.001, 10), rng.normal(0.0554, 0.001, 10), rng.normal(2.9, 0.05, 10)
    est = timing.limit_hw(t_B, t_2B, 25, T_full)
    assert est.value == pytest.approx(np.median(100 * 25 * (t_2B - t_B) / T_full))
    assert est.lo < est.value < est.hi and est.n == 10
    scalar_tB = timing.limit_hw(0.0355, t_2B, 25, T_full)  # a scalar broadcasts over the rounds
    assert scalar_tB.n == 10
    assert timing.limit_hw(0.05, 0.04, 10, 2.0).value == pytest.approx(-5.0)  # noise: reported, not clipped
    assert timing.limit_hw(0.03, 0.05, 0, 2.0).value == 0.0


def test_limit_calls():
    assert timing.limit_calls(100, 50) == 0.0
    assert timing.limit_calls(50, 50) == 50.0
    assert timing.limit_calls(np.float64(36.5), 20) == pytest.approx(8.75)


def test_gap_is_limit_minus_saved_paired_by_round():
    t_B, t_2B, T_full, T_m = 0.0355, 0.0554, 2.9158, 2.3910
    g = timing.gap(t_B, t_2B, 25, T_full, T_m)
    saved = timing.ratio_interval(T_m, T_full).saved.value
    assert g.value == pytest.approx(timing.limit_hw(t_B, t_2B, 25, T_full).value - saved)
    rng = np.random.default_rng(6)
    T_full = rng.normal(2.9, 0.1, 10)
    T_m = T_full * rng.normal(0.83, 0.01, 10)
    g = timing.gap(t_B, t_2B, 25, T_full, T_m, interval="order")
    per = 100 * 25 * (t_2B - t_B) / T_full - 100 * (1 - T_m / T_full)
    assert g.value == pytest.approx(np.median(per)) and g.lo <= g.value <= g.hi and g.n == 10


def test_limit_and_gap_bad_input():
    bad(lambda: timing.limit_hw([0.03, 0.03], [0.05, 0.05, 0.05], 25, 3.0), "same length, got t_B: 2, t_2B: 3")
    bad(lambda: timing.limit_hw(0.0, 0.05, 25, 3.0), "t_B must hold positive finite times")
    bad(lambda: timing.limit_hw(0.03, 0.05, 25, -3.0), "T_full must hold positive finite times")
    bad(lambda: timing.limit_hw(0.03, [], 25, 3.0), "t_2B must be a non-empty")
    bad(lambda: timing.limit_hw(0.03, 0.05, -1, 3.0), "a must be a finite number")
    bad(lambda: timing.limit_hw(0.03, 0.05, 25, 3.0, level=1.0), "level must lie strictly between 0 and 1")
    bad(lambda: timing.gap(0.03, 0.05, 25, [3.0, 3.1], [2.5, 2.6, 2.7]), "T_full: 2, T_method: 3")
    bad(lambda: timing.gap(0.03, 0.05, 25, 3.0, 0.0), "T_method must hold positive finite times")
    bad(lambda: timing.limit_calls(101, 50), "exceeds 2N = 100")
    bad(lambda: timing.limit_calls(-1, 50), "evals must be a finite number")
    for N in (0, 2.5, True):
        bad(lambda: timing.limit_calls(10, N), "N must be a positive integer")


# --- machine load ---------------------------------------------------------------------------------

def test_machine_load_for_the_metadata(monkeypatch):
    load = timing.machine_load()
    assert set(load) == {"load_1m", "load_5m", "load_15m", "cpu_count", "cpus_usable"}
    assert load["cpu_count"] >= 1 and load["cpus_usable"] >= 1
    assert all(load[k] is None or load[k] >= 0 for k in ("load_1m", "load_5m", "load_15m"))

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(timing.os, "getloadavg", unavailable)
    assert timing.machine_load()["load_1m"] is None


# --- the x̂0-space scale ---------------------------------------------------------------------------

def test_x0_scale_values_and_shapes():
    assert timing.x0_guidance_scale(0.5) == pytest.approx(1.0)
    assert timing.x0_guidance_scale(0.2) == pytest.approx(2.0)
    assert timing.x0_guidance_scale(1.0) == 0.0
    s = timing.x0_guidance_scale(np.array([[0.5, 0.2], [0.8, 0.1]]))
    assert s.shape == (2, 2) and s == pytest.approx(np.array([[1.0, 2.0], [0.5, 3.0]]))
    assert timing.x0_guidance_norm([2.0, 2.0], [0.5, 0.2]) == pytest.approx([2.0, 4.0])
    assert timing.x0_guidance_norm(3.0, 0.2) == pytest.approx(6.0)
    assert timing.x0_guidance_norm([1.0, 3.0], 0.5) == pytest.approx([1.0, 3.0])


def test_x0_norm_is_the_guidance_terms_effect_on_the_predicted_clean_image():
    rng = np.random.default_rng(7)
    x_t, eps_u, eps_c = rng.normal(size=(3, 64))
    for abar in (0.02, 0.3, 0.9):
        x0 = lambda eps: (x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar)  # noqa: E731
        moved = np.linalg.norm(x0(eps_c) - x0(eps_u))
        assert timing.x0_guidance_norm(np.linalg.norm(eps_c - eps_u), abar) == pytest.approx(moved)


def test_x0_bad_input():
    for abar in (0.0, -0.1, 1.5, np.nan, []):
        bad(lambda: timing.x0_guidance_scale(abar), "every ᾱ_t in")
    bad(lambda: timing.x0_guidance_norm([-1.0, 1.0], [0.5, 0.5]), "finite and ≥ 0")
    bad(lambda: timing.x0_guidance_norm([], 0.5), "must be non-empty")
    bad(lambda: timing.x0_guidance_norm([1.0, 2.0, 3.0], [0.5, 0.5]), r"shape \(3,\) but alphas_cumprod_t has \(2,\)")
    bad(lambda: timing.x0_guidance_norm(1.0, 0.0), "every ᾱ_t in")
