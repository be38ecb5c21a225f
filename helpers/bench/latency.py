"""Where a benchmark run's time goes, measured inside the run, and the columns built from it (issue 24).

:func:`timed_parts` times every denoiser call (with its batch rows) and the time spent in the text
encoder(s), the VAE decode and the scheduler's step while a block runs; :func:`run_parts` condenses one
timed pipeline call into a row (``t_B`` / ``t_2B``: median seconds of a denoiser call at the timed batch B
and at 2B rows). :func:`timing_columns` then turns the benchmark's ``times.csv`` and these rows into the
table's latency columns: the median same-round ratio with its interval, the measured hardware limit
``limit_hw = a · (t_2B − t_B) / T_full`` beside the call-count limit, its ``gap``, and a monotonicity flag
across k. :func:`profile_table` is the small table of where the rest of the full-CFG run goes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..hooks.steps import denoiser_sample
from ..loading import denoiser
from . import timing

PARTS = ("text_encoder", "vae_decode", "scheduler")
#: The kinds whose hardware limit is a · (t_2B − t_B): the text pass dropped for the last a steps, nothing
#: else changed. DeepCache, T-GATE and their compositions change the work per call (no limit_hw), and the
#: adaptive stop drops rows prompt by prompt (its batch is neither B nor 2B on most steps).
WINDOW_KINDS = ("uncond", "cond")


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA), so that wall-clock times are the work's."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


@contextlib.contextmanager
def timed_parts(pipe) -> Iterator[dict]:
    """While the block runs: ``log["calls"]``, ``(rows, seconds)`` of every denoiser call, and
    ``log[part]`` seconds for each of :data:`PARTS`. Forward hooks on the denoiser and the text encoders,
    instance wrappers of ``vae.decode`` and ``scheduler.step``; all removed on exit, also after an
    exception. Composes with DeepCache (it replaces ``unet.forward``; module hooks still wrap the call)."""
    net = denoiser(pipe)
    param = next(net.parameters(), None)
    sync = synchronizer(param.device if param is not None else torch.device("cpu"))
    log: dict = {"calls": [], **{p: 0.0 for p in PARTS}}
    handles, patched, start = [], [], []

    def pre(module, args, kwargs):
        sync()
        start.append((int(denoiser_sample(args, kwargs).shape[0]), time.perf_counter()))

    def post(module, args, kwargs, output):
        sync()
        rows, t0 = start.pop()
        log["calls"].append((rows, time.perf_counter() - t0))

    def part_hooks(module: torch.nn.Module, name: str) -> None:
        begun = []

        def began(m, a) -> None:  # a pre-hook's return value would replace the inputs: return nothing
            sync()
            begun.append(time.perf_counter())
        handles.append(module.register_forward_pre_hook(began))

        def done(m, a, out):
            sync()
            log[name] += time.perf_counter() - begun.pop()
        handles.append(module.register_forward_hook(done))

    def wrap(obj, attr: str, name: str) -> None:
        inner = getattr(obj, attr)
        had = attr in obj.__dict__

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                log[name] += time.perf_counter() - t0
        setattr(obj, attr, timed)
        patched.append((obj, attr, inner, had))

    try:
        handles.append(net.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(net.register_forward_hook(post, with_kwargs=True))
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                part_hooks(getattr(pipe, name), "text_encoder")
        if getattr(pipe, "vae", None) is not None:
            wrap(pipe.vae, "decode", "vae_decode")
        wrap(pipe.scheduler, "step", "scheduler")
        yield log
    finally:
        for h in handles:
            h.remove()
        for obj, attr, inner, had in reversed(patched):
            if had:
                setattr(obj, attr, inner)
            else:
                obj.__dict__.pop(attr, None)


def run_parts(log: dict, total: float, batch: int) -> dict[str, float]:
    """One timed pipeline call as a row: total seconds, denoiser seconds and calls, ``t_B`` and ``t_2B``
    (median seconds per call with ``batch`` and ``2 * batch`` rows; NaN where there was none), the
    :data:`PARTS` and ``other`` (the rest: Python, latents, post-processing)."""
    rows = np.array([r for r, _ in log["calls"]], dtype=int)
    secs = np.array([s for _, s in log["calls"]], dtype=float)

    def at(n: int) -> float:
        return float(np.median(secs[rows == n])) if (rows == n).any() else float("nan")

    denoise = float(secs.sum())
    out = {"seconds": total, "denoiser_s": denoise, "denoiser_calls": int(len(secs)), "t_B": at(batch),
           "t_2B": at(2 * batch), **{p: float(log[p]) for p in PARTS}}
    out["other"] = total - denoise - sum(out[p] for p in PARTS)
    return out


def _per_round(parts: pd.DataFrame, baseline: str, windows: set) -> pd.DataFrame:
    """Per (sampler, steps, round): t_B (median over the round's runs of the text windows ``windows``, whose
    B-row calls are whole passes: DeepCache's are partial, the adaptive stop's batches mixed), t_2B (full
    CFG's) and T_full."""
    rows = []
    for (sampler, steps, rnd), block in parts.groupby(["sampler", "steps", "round"]):
        base = block[block["method"] == baseline]
        if base.empty:
            continue
        t_B = block.loc[block["method"].isin(windows), "t_B"].dropna()
        rows.append({"sampler": sampler, "steps": steps, "round": rnd, "t_B": float(t_B.median()) if len(t_B) else np.nan,
                     "t_2B": float(base["t_2B"].iloc[0]), "T_full": float(base["seconds"].iloc[0])})
    return pd.DataFrame(rows)


def timing_columns(table: pd.DataFrame, times: pd.DataFrame, parts: pd.DataFrame | None = None,
                   baseline: str = "full CFG", interval: str = "bootstrap") -> pd.DataFrame:
    """``table`` (one row per sampler, steps and method, with ``kind``, ``k``, ``a`` and ``evals_per_image``)
    with the latency columns: ``median_s``, ``ratio`` / ``saved_latency`` with ``_lo`` / ``_hi`` (median
    same-round ratio, :func:`helpers.bench.timing.ratio_table`), ``n_rounds``, ``limit`` (call count, 1 −
    evals / 2N; NaN for DeepCache), and with ``parts`` (rows of :func:`run_parts` with ``sampler, steps,
    round, method``) ``limit_hw`` and ``gap`` with their intervals for the :data:`WINDOW_KINDS`;
    ``monotone`` flags each text-window row against the previous k of its kind (saving must not grow with k).
    """
    ratios = timing.ratio_table(times, baseline, interval=interval)
    out = table.drop(columns=[c for c in ratios.columns if c in table.columns and c not in ("sampler", "steps", "method")])
    out = out.merge(ratios, on=["sampler", "steps", "method"], how="left")
    out["limit"] = [np.nan if str(kind).startswith("deepcache") else timing.limit_calls(e, int(n))
                    for kind, e, n in zip(out["kind"], out["evals_per_image"], out["steps"])]
    for col in ("limit_hw", "limit_hw_lo", "limit_hw_hi", "gap", "gap_lo", "gap_hi"):
        out[col] = np.nan
    windows = set(out.loc[out["kind"].isin(WINDOW_KINDS), "method"])
    per_round = _per_round(parts, baseline, windows) if parts is not None and len(parts) else pd.DataFrame()
    for i, row in out.iterrows():
        if row["kind"] not in WINDOW_KINDS or per_round.empty:
            continue
        rounds = per_round[(per_round["sampler"] == row["sampler"]) & (per_round["steps"] == row["steps"])]
        method = parts[(parts["sampler"] == row["sampler"]) & (parts["steps"] == row["steps"])
                       & (parts["method"] == row["method"])][["round", "seconds"]]
        both = rounds.merge(method, on="round").dropna(subset=["t_B", "t_2B"])
        if both.empty:
            continue
        args = (both["t_B"], both["t_2B"], float(row["a"]), both["T_full"])
        hw, g = timing.limit_hw(*args, interval=interval), timing.gap(*args, both["seconds"], interval=interval)
        out.loc[i, ["limit_hw", "limit_hw_lo", "limit_hw_hi", "gap", "gap_lo", "gap_hi"]] = [
            hw.value, hw.lo, hw.hi, g.value, g.lo, g.hi]
    return monotone(out)


def monotone(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``monotone``: :func:`helpers.bench.timing.monotonicity_flags` of ``saved_latency``
    over k within each (sampler, N, kind) of the text windows; ``"n/a"`` elsewhere and where a row has
    no interval (one round)."""
    out = table.assign(monotone="n/a")
    ok = out["kind"].isin(WINDOW_KINDS) & np.isfinite(out[["saved_lo", "saved_hi"]].astype(float)).all(axis=1)
    if ok.any():
        flagged = timing.monotonicity_flags(out[ok], ["sampler", "steps", "kind"], "k", "saved_latency",
                                            "saved_lo", "saved_hi", increasing=False)
        out.loc[ok, "monotone"] = flagged["monotone"]
    return out


def profile_table(parts: pd.DataFrame, method: str = "full CFG") -> pd.DataFrame:
    """Per (sampler, N): median seconds over rounds of one method's run split into denoiser, text
    encoder, VAE decode, scheduler and other, and each part's share of the run in %."""
    cols = ["seconds", "denoiser_s", *PARTS, "other"]
    med = parts[parts["method"] == method].groupby(["sampler", "steps"])[cols].median()
    share = med[cols[1:]].div(med["seconds"], axis=0).mul(100).add_suffix(" %")
    return pd.concat([med, share], axis=1).reset_index()


def focus_methods(labels: Sequence[str], kinds: Sequence[str], ks: Sequence, sampler: str, steps: int,
                  rule: dict) -> list[str]:
    """The methods that get the extra timing rounds (``BenchConfig.focus_repeats``): full CFG, the
    pre-registered setting of ``rule`` (its sampler, N and k = k_fraction · N, its variant) where this
    block is it, DeepCache alone and every composition with it."""
    k_rule = int(round(rule["k_fraction"] * rule["n_steps"]))
    is_rule = sampler == rule["sampler"] and steps == rule["n_steps"]
    return [m for m, kind, k in zip(labels, kinds, ks)
            if kind == "baseline" or str(kind).startswith("deepcache")
            or (is_rule and kind == rule["variant"] and k == k_rule)]


def recompute(folder) -> pd.DataFrame:
    """Rebuild a finished run's latency columns from its raw files (``times.csv``, ``parts.csv``) into
    ``bench.csv`` and the table of ``bench.md`` (its header kept): for runs measured before a change of
    :func:`timing_columns`; the measurements themselves are not touched. Returns the new table."""
    from pathlib import Path

    from .summaries import paper_table, to_markdown

    folder = Path(folder)
    table = pd.read_csv(folder / "bench.csv")
    out = timing_columns(table, pd.read_csv(folder / "times.csv"), pd.read_csv(folder / "parts.csv"))
    out.to_csv(folder / "bench.csv", index=False)
    md = folder / "bench.md"
    if md.exists():
        head = md.read_text().split("\n| ")[0]
        md.write_text(head.rstrip("\n") + "\n\n" + to_markdown(paper_table(out)) + "\n")
    return out
