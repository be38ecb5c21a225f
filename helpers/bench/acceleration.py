"""Training-free acceleration by removing text guidance, measured against its peers.

One benchmark run generates the same prompts from the same seeds with every method,
per sampler (DDIM, DPM-Solver++) and step count ``N``:

* ``full CFG``: the stock pipeline (the baseline; the paper's ``a = 0``);
* ``text off after k (uncond)``: the paper's method, :class:`helpers.guidance.TextWindow`
  with ``variant="uncond"`` (``a = N - k`` final steps keep only eps(x_t, empty));
* ``guidance off after k (cond)``: the same window keeping eps(x_t, text);
* ``adaptive stop``: :class:`helpers.guidance.AdaptiveStop`, per prompt, never before
  ``adaptive_min_fraction * N`` text steps, on the criterion ``adaptive_criterion`` (``"x0"``: the
  guidance term's size on x̂0, the default; ``"ratio"``: ||eps_c - eps_u|| / ||eps_u||, small early only
  because ||eps_u|| is large early), with thresholds calibrated on separate prompts
  (the rule replayed on their recorded ratios) so that the median prompt stops nearest a
  target ``k``;
* peers, where their packages install beside our diffusers: **T-GATE** (``tgate``: caches
  cross-attention after a gate step and then drops CFG) and **DeepCache** (``DeepCache``:
  reuses deep UNet features between full steps). Nothing is re-implemented by hand: a
  peer that is missing or does not support the pipeline is reported with the reason;
* the paper's method **composed with DeepCache** (``deepcache+uncond`` / ``deepcache+cond``: the
  text window inside DeepCache; after k the batch is B and the cache's kept half is reused,
  :func:`helpers.bench.peers.deepcache_context`). T-GATE already drops CFG after its gate step, so a
  text window adds nothing to it; DeepCache has no PixArt support (no UNet skip branches).

Latency is the wall-clock time of one whole pipeline call (text encoding, sampling, VAE
decoding) on a fixed batch, with a warm-up and several repeats; methods run interleaved
in a shuffled order in every round (:func:`helpers.bench.timing.interleaved_order`) and each is
divided by the baseline of the same round (median over rounds with a 95% bootstrap interval).
The call-count *limit* is ``1 - evaluations / 2N`` (``a / 2N`` for a text window): the saving if
the denoiser were the only cost and scaled linearly with batch. The measured hardware limit
``limit_hw = a (t_2B - t_B) / T_full`` times the denoiser at the timed batch B and at 2B inside
the same rounds, and ``gap = limit_hw - saved`` (:mod:`helpers.bench.latency`).

Summaries of a finished run are :mod:`helpers.bench.summaries`, its figures :mod:`helpers.plots.bench`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import guidance
from ..analysis import metrics
from ..generation import for_each_batch
from ..hooks.steps import count_evaluations
from ..loading import scheduler_set
from . import latency, timing
from .peers import deepcache_context, tgate_context, peer_status



KINDS = ("baseline", "uncond", "cond", "adaptive", "tgate", "deepcache", "deepcache+uncond", "deepcache+cond")


#: Fraction of N without text that defines "the paper's a" in our summaries (unsure: the
#: paper's table does not pin it down; a = N/2 gives a UNet-time limit of exactly 25%).
PAPER_A_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the benchmark."""

    label: str
    kind: str
    text_steps: int | None = None  # k (uncond/cond, also composed); T-GATE's gate step; adaptive: calibration target
    threshold: float | None = None  # adaptive stop
    min_text_steps: int = 1  # adaptive stop: never before this many text steps
    criterion: str = "ratio"  # adaptive stop: "ratio" or "x0" (helpers.guidance.AdaptiveStop)
    cache_interval: int | None = None  # DeepCache


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What one benchmark profile measures."""

    name: str
    samplers: tuple[str, ...] = ("ddim", "dpm")
    steps: tuple[int, ...] = (50,)
    n_prompts: int = 8
    batch_size: int = 8
    repeats: int = 3
    uncond_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7)
    cond_fractions: tuple[float, ...] = (0.2, 0.5)
    adaptive_fractions: tuple[float, ...] = (0.2, 0.3, 0.5)
    adaptive_min_fraction: float = 0.1  # the adaptive stop keeps the text for at least this fraction of N
    adaptive_criterion: str = "x0"
    n_calibration: int = 8
    rule_prompts: int = 0  # prompts of the pre-registered setting of the shared rule (0: not measured)
    tgate_fraction: float = 0.4  # T-GATE's default gate step is 10 of 25 steps
    deepcache_intervals: tuple[int, ...] = (3,)
    compose_fractions: tuple[float, ...] = (0.5,)  # k / N of the text windows composed with DeepCache
    focus_repeats: int = 0  # timing rounds of full CFG, the rule's setting and DeepCache (+ compositions), if more
    guidance_scale: float = 7.5
    seed: int = 0


PROFILES: dict[str, BenchConfig] = {
    # about 2-3 minutes on 2 CPU cores with the embedded model
    "quick": BenchConfig("quick", steps=(20,), n_prompts=8, repeats=3, cond_fractions=(0.3,),
                         adaptive_fractions=(0.2, 0.4)),
    # the paper's settings (50 steps) plus 25 and 20; quality on 32 prompts, timing on 8 (~30 min on 2 cores)
    "full": BenchConfig("full", steps=(50, 25, 20), n_prompts=32, repeats=5,
                        uncond_fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8), cond_fractions=(0.2, 0.3, 0.5),
                        adaptive_fractions=(0.2, 0.3, 0.4, 0.5), n_calibration=16, rule_prompts=200,
                        compose_fractions=(0.3, 0.5), focus_repeats=10),
}


def methods_for(steps: int, config: BenchConfig, thresholds: dict[int, float], peers: dict[str, str | None]
                ) -> list[Method]:
    """The methods of one (sampler, N) block; ``thresholds`` maps a target k to its calibrated threshold."""
    def k_of(fraction: float) -> int:
        return int(round(fraction * steps))

    out = [Method("full CFG", "baseline", steps)]
    out += [Method(f"text off after k={k} (uncond)", "uncond", k)
            for k in sorted({k_of(f) for f in config.uncond_fractions})]
    out += [Method(f"guidance off after k={k} (cond)", "cond", k)
            for k in sorted({k_of(f) for f in config.cond_fractions})]
    min_k = max(1, k_of(config.adaptive_min_fraction))
    x0 = config.adaptive_criterion == "x0"
    out += [Method(f"adaptive stop{' x̂0' if x0 else ''} (target k={k}, τ={t:.3g})", "adaptive", k, threshold=t,
                   min_text_steps=min_k, criterion=config.adaptive_criterion) for k, t in sorted(thresholds.items())]
    if peers.get("tgate") is None:
        gate = max(1, k_of(config.tgate_fraction))
        out.append(Method(f"T-GATE (gate step {gate})", "tgate", gate))
    if peers.get("deepcache") is None:
        out += [Method(f"DeepCache (interval {i})", "deepcache", cache_interval=i) for i in config.deepcache_intervals]
        out += [Method(f"DeepCache (interval {i}) + {name} after k={k} ({variant})", f"deepcache+{variant}", k,
                       cache_interval=i) for i in config.deepcache_intervals
                for variant, name in (("uncond", "text off"), ("cond", "guidance off"))
                for k in sorted({k_of(f) for f in config.compose_fractions})]
    return out


def run_method(pipe, method: Method, prompts: Sequence[str], steps: int, guidance_scale: float = 7.5,
               seed: int = 0, record: bool = False, **pipe_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Images of one method for one batch of prompts, and the number of text steps per prompt."""
    prompts = list(prompts)
    n = len(prompts)
    if method.kind in ("baseline", "uncond", "cond", "adaptive", "deepcache+uncond", "deepcache+cond"):
        kind = method.kind.removeprefix("deepcache+")
        schedule = {
            "baseline": None,
            "uncond": guidance.TextWindow(method.text_steps, "uncond"),
            "cond": guidance.TextWindow(method.text_steps, "cond"),
            "adaptive": guidance.AdaptiveStop(method.threshold or 0.0, "uncond", method.min_text_steps, method.criterion),
        }[kind]
        composed = kind != method.kind
        with deepcache_context(pipe, method.cache_interval, keep=kind) if composed else contextlib.nullcontext():
            run = guidance.sample(pipe, prompts, schedule, num_inference_steps=steps, guidance_scale=guidance_scale,
                                  seed=seed, batch_size=n, record=record, **pipe_kwargs)
        return run.images, run.text_steps
    if method.kind not in KINDS:
        raise ValueError(f"unknown method kind {method.kind!r}; choose from {KINDS}")
    peer = tgate_context(pipe) if method.kind == "tgate" else deepcache_context(pipe, method.cache_interval)

    def call(idx: list[int], latents: torch.Tensor) -> np.ndarray:
        kwargs = dict(num_inference_steps=steps, guidance_scale=guidance_scale, latents=latents, output_type="np",
                      **pipe_kwargs)
        if method.kind == "tgate":
            return peer_call(prompt=prompts, gate_step=method.text_steps, **kwargs).images
        return peer_call(prompts, **kwargs).images

    with peer as peer_call:
        (images,) = for_each_batch(pipe, n, call, batch_size=max(n, 1), seed=seed)
    return images, np.full(n, method.text_steps if method.kind == "tgate" else steps)


def calibrate_thresholds(pipe, prompts: Sequence[str], steps: int, targets: Sequence[int], guidance_scale: float,
                         seed: int, batch_size: int, min_text_steps: int = 1, criterion: str = "ratio"
                         ) -> dict[int, float]:
    """Adaptive-stop thresholds whose median stop on the calibration prompts is nearest each target ``k``.

    One full-CFG run records the criterion (``"ratio"``: ``||eps_c - eps_u|| / ||eps_u||``, ``"x0"``:
    ``GuidanceRun.x0_guidance``; no extra cost); the rule is then replayed on the recorded values
    (:func:`helpers.guidance.adaptive_stop_steps`)
    for every candidate threshold. Where the ratio does not fall over the steps, no
    threshold may reach a target: the nearest median is taken.
    """
    run = guidance.sample(pipe, list(prompts), None, num_inference_steps=steps, guidance_scale=guidance_scale,
                          seed=seed, batch_size=batch_size, record=True)
    recorded = run.x0_guidance if criterion == "x0" else run.ratio
    values = np.unique(recorded[np.isfinite(recorded)])
    candidates = np.concatenate([values * (1 + 1e-6), [values.max() * 2]]) if values.size else np.array([1.0])
    medians = np.array([np.median(guidance.adaptive_stop_steps(recorded, t, min_text_steps)) for t in candidates])
    out = {}
    for k in targets:
        if 1 <= k <= steps:
            best = np.flatnonzero(np.abs(medians - k) == np.abs(medians - k).min())
            out[int(k)] = float(candidates[best[len(best) // 2]])
    return out


def time_methods(pipe, methods: Sequence[Method], prompts: Sequence[str], steps: int, guidance_scale: float,
                 seed: int, repeats: int, focus: Sequence[str] = (), focus_repeats: int = 0, **pipe_kwargs
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wall-clock seconds per method and round, and where each timed call's time went.

    Every method once per round in a shuffled order (:func:`helpers.bench.timing.interleaved_order` with
    ``seed``); then, up to ``focus_repeats`` rounds in all, further rounds of the ``focus`` labels only.
    Returns ``times`` (``round, method, seconds``) and ``parts`` (those columns plus
    :func:`helpers.bench.latency.run_parts`'s: denoiser calls at B and 2B rows, text encoder, VAE decode,
    scheduler, other).
    """
    order = timing.interleaved_order(list(methods), repeats, seed)
    chosen = [m for m in methods if m.label in set(focus)]
    if chosen and focus_repeats > repeats:
        extra = timing.interleaved_order(chosen, focus_repeats - repeats, seed + 1)
        order += [(repeats + r, m) for r, m in extra]
    rows = []
    for r, m in order:
        with latency.timed_parts(pipe) as log:
            start = time.perf_counter()
            run_method(pipe, m, prompts, steps, guidance_scale, seed, **pipe_kwargs)
            total = time.perf_counter() - start
        rows.append({"round": r, "method": m.label, **latency.run_parts(log, total, len(prompts))})
    parts = pd.DataFrame(rows)
    return parts[["round", "method", "seconds"]].copy(), parts


def quality(scorer, images: np.ndarray, reference: np.ndarray, prompts: Sequence[str],
            truths: Sequence[dict] | None) -> dict[str, float]:
    """L1 and Image-CLIPScore to the baseline images, CLIPScore, attribute accuracy, CLIP-FID."""
    out = {"l1": float(np.mean(metrics.l1_distance(images, reference)))}
    if scorer is None:
        return out
    out["image_clip_score"] = float(np.mean(scorer.image_clip_score(images, reference)))
    out["clip_score"] = float(np.mean(scorer.clip_score(images, list(prompts))))
    if truths and all(truths):
        predictions = scorer.attributes(images)
        out["attribute_accuracy"] = 100 * float(np.mean(metrics.attribute_alignment(predictions, truths)))
    out["clip_fid"] = max(0.0, scorer.clip_fid(images, reference))  # tiny negative values are round-off
    return out


def inception_fid(images: np.ndarray, reference: np.ndarray) -> float:
    """Inception FID (``torchmetrics``, 2048 features) of ``images`` against ``reference`` (needs its weights)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048)
    fid.update(metrics.images_to_uint8(reference), real=True)
    fid.update(metrics.images_to_uint8(images), real=False)
    return float(fid.compute())


@dataclasses.dataclass
class BlockResult:
    """Everything measured for one (sampler, N)."""

    table: pd.DataFrame
    images: dict[str, np.ndarray]
    times: pd.DataFrame
    thresholds: dict[int, float]
    parts: pd.DataFrame | None = None  # time_methods' per-call split (denoiser at B and 2B, text, VAE, scheduler)


def _generate_sharded(pipe, method: Method, prompts: Sequence[str], steps: int, guidance_scale: float, seed: int,
                      batch_size: int, **pipe_kwargs) -> tuple[np.ndarray, np.ndarray, int]:
    """One method's images for all prompts, batches shared among the ``accelerate`` processes.

    Batch ``start`` always uses seeds ``seed + start + i``, whichever process runs it, so a
    sharded run gathers exactly the images of a single-process run. Returns the images, the
    text steps per prompt and the number of denoiser evaluations (all processes together).
    """
    from . import sharding

    def one_batch(start: int):
        with count_evaluations(pipe) as evals:
            im, k = run_method(pipe, method, prompts[start:start + batch_size], steps, guidance_scale, seed + start,
                               **pipe_kwargs)
        return im, np.asarray(k), evals[0]

    parts = sharding.run_sharded(list(range(0, len(prompts), batch_size)), one_batch)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            int(sum(p[2] for p in parts)))


def run_block(pipe, sampler: str, steps: int, config: BenchConfig, prompts: Sequence[str],
              truths: Sequence[dict] | None, calibration: Sequence[str], scorer=None,
              with_inception: bool = False, log: Callable[[str], None] = print, **pipe_kwargs) -> BlockResult:
    """Quality pass over all prompts (it is also the warm-up), then the timing rounds on the first batch.

    The pipeline runs with ``sampler`` inside this call; its own scheduler is put back afterwards.
    """
    with scheduler_set(pipe, sampler):
        return _run_block(pipe, sampler, steps, config, prompts, truths, calibration, scorer, with_inception, log,
                          **pipe_kwargs)


def _run_block(pipe, sampler: str, steps: int, config: BenchConfig, prompts: Sequence[str],
               truths: Sequence[dict] | None, calibration: Sequence[str], scorer, with_inception: bool,
               log: Callable[[str], None], **pipe_kwargs) -> BlockResult:
    w, seed, bs = config.guidance_scale, config.seed, config.batch_size
    peers = peer_status(pipe)
    targets = sorted({int(round(f * steps)) for f in config.adaptive_fractions})
    min_k = max(1, int(round(config.adaptive_min_fraction * steps)))
    thresholds = (calibrate_thresholds(pipe, calibration, steps, targets, w, seed + 10_000, bs, min_k,
                                       config.adaptive_criterion) if calibration else {})
    methods = methods_for(steps, config, thresholds, peers)
    images: dict[str, np.ndarray] = {}
    rows = []
    for m in methods:
        im, ks, evals = _generate_sharded(pipe, m, prompts, steps, w, seed, bs, **pipe_kwargs)
        images[m.label] = im
        k_mean = float(np.mean(ks))
        rows.append({"sampler": sampler, "steps": steps, "method": m.label, "kind": m.kind,
                     "k": k_mean, "a": steps - k_mean, "evals_per_image": evals / len(prompts),
                     "cache_interval": m.cache_interval})
        log(f"  [{sampler} N={steps}] {m.label}: {evals / len(prompts):.1f} denoiser evaluations per image")
    from ..verdicts import RULES

    focus = latency.focus_methods([m.label for m in methods], [m.kind for m in methods],
                                  [m.text_steps for m in methods], sampler, steps, RULES["text_removal"])
    times, parts = time_methods(pipe, methods, prompts[:bs], steps, w, config.seed, config.repeats, focus,
                                config.focus_repeats, **pipe_kwargs)
    key = {"sampler": sampler, "steps": steps}
    times, parts = times.assign(**key), parts.assign(**key)
    table = latency.timing_columns(pd.DataFrame(rows), times, parts).set_index("method")  # limit: NaN for DeepCache
    reference = images["full CFG"]
    for m in methods:
        q = quality(scorer, images[m.label], reference, prompts, truths)
        if with_inception:
            q["inception_fid"] = inception_fid(images[m.label], reference)
        for name, value in q.items():
            table.loc[m.label, name] = value
    return BlockResult(table.reset_index(), images, times, thresholds, parts)


def results_dir(profile: str, model_id: str | None = None) -> Path:
    """``results/acceleration/<profile>/`` for the embedded model, ``results/acceleration/<model>/<profile>/`` else."""
    from ..resources import results_dir as results_root

    base = results_root() / "acceleration"
    base = base if model_id is None else base / model_id.replace("/", "--")
    return base / profile


def run_benchmark(config: BenchConfig, model_id: str | None = None, out: Path | None = None, scorer="auto",
                  with_inception: bool = False, log: Callable[[str], None] = print) -> Path:
    """Run every block of ``config`` and write the result files; returns their folder.

    Files: ``bench.csv`` (every number), ``bench.md`` (the table, with how it was measured),
    ``times.csv`` (every timed call), ``parts.csv`` / ``profile.csv`` (where the time went),
    ``rule_per_prompt.csv`` / ``compose_per_prompt.csv`` (per-prompt quality at the rule's setting, full profile), ``pareto.png``, ``examples_<sampler>_<N>.png`` and
    ``meta.json`` (machine, settings, peers, calibrated thresholds).

    Args:
        scorer: ``"auto"`` (:func:`helpers.analysis.alignment.scorer_for`), ``None`` (L1 and timing
            only) or a :class:`helpers.analysis.metrics.Scorer`.
    """
    import json
    import os
    import platform

    import matplotlib.pyplot as plt

    from .. import plots, promptsets
    from ..analysis import alignment
    from ..loading import describe, load_pipeline, uses_toy_world
    from ..plots.bench import plot_examples, plot_pareto
    from . import sharding
    from .summaries import model_fingerprint, paper_table, to_markdown

    if with_inception and importlib.util.find_spec("torch_fidelity") is None:
        raise ValueError("Inception FID needs the torch-fidelity package (pip install torch-fidelity)")
    started, load_before = time.time(), timing.machine_load()
    out = Path(out) if out is not None else results_dir(config.name, model_id)
    main = sharding.is_main_process()  # under `accelerate launch`, process 0 writes every file
    if main:
        out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(model_id, device=sharding.process_device() if sharding.state().num_processes > 1 else None)
    set_name = promptsets.default_prompt_set_name(model_id)
    records = promptsets.load_prompt_set(set_name)
    if len(records) < max(config.n_prompts, config.rule_prompts) + config.n_calibration:
        raise ValueError(f"prompt set {set_name!r} has {len(records)} prompts; the profile needs "
                         f"{config.n_prompts} + {config.n_calibration} for calibration")
    bench = records[:config.n_prompts]
    calibration = [r.prompt for r in records[-config.n_calibration:]]  # disjoint from the benchmark prompts
    prompts = [r.prompt for r in bench]
    toy = uses_toy_world(model_id)  # the attribute evaluator reads the toy world only
    truths = [r.attributes for r in bench] if toy and all(r.attributes for r in bench) else None
    scorer = alignment.scorer_for(model_id) if scorer == "auto" else scorer
    peers = peer_status(pipe)
    log(f"profile={config.name} model={model_id or 'embedded'} threads={torch.get_num_threads()} "
        f"prompts={len(prompts)} peers={ {k: v or 'ok' for k, v in peers.items()} }")
    plots.setup_style()
    blocks = []
    for sampler in config.samplers:
        for steps in config.steps:
            t0 = time.time()
            block = run_block(pipe, sampler, steps, config, prompts, truths, calibration, scorer, with_inception, log)
            blocks.append(block)
            log(f"[{sampler} N={steps}] done in {time.time() - t0:.0f} s")
            if not main:
                continue
            plot_examples(block.images, prompts, f"{sampler.upper()}, N={steps}").savefig(
                out / f"examples_{sampler}_{steps}.png", dpi=110, bbox_inches="tight")
            plt.close("all")
    # every process joins the rule's sharded generation (its gather waits for all); process 0 writes
    rule = rule_quality(pipe, config, records[:config.rule_prompts], toy, scorer, log)
    composed = (composition_quality(pipe, config, records[:config.rule_prompts], toy, scorer, log)
                if rule is not None else None)  # DeepCache alone and composed, paired with the rule's full CFG
    if not main:
        return out
    if rule is not None:
        rule.to_csv(out / "rule_per_prompt.csv", index=False)
    if composed is not None:
        composed.to_csv(out / "compose_per_prompt.csv", index=False)
    table = pd.concat([b.table for b in blocks], ignore_index=True)
    table.to_csv(out / "bench.csv", index=False)
    pd.concat([b.times for b in blocks]).to_csv(out / "times.csv", index=False)
    parts = pd.concat([b.parts for b in blocks])
    parts.to_csv(out / "parts.csv", index=False)
    latency.profile_table(parts).to_csv(out / "profile.csv", index=False)
    plot_pareto(table).savefig(out / "pareto.png", dpi=110, bbox_inches="tight")
    plt.close("all")
    info = describe(pipe)
    timed_batch = min(config.batch_size, len(prompts))
    header = (f"Measured on this machine ({platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
              f"torch threads, device {info['device']}), profile `{config.name}`, model "
              f"{model_id or 'embedded tiny model'}, guidance {config.guidance_scale}, {len(prompts)} prompts; "
              f"latency: one batch of {timed_batch} prompts, median of {config.repeats} same-round ratios to full CFG "
              f"after a warm-up (95% bootstrap interval over rounds; {max(config.focus_repeats, config.repeats)} rounds for full "
              f"CFG, the pre-registered setting and DeepCache). Limit: 1 − UNet evaluations / 2N; limit_hw: "
              f"a·(t_2B − t_B)/T_full, the denoiser timed at B and 2B rows in the same rounds; gap = limit_hw − "
              f"saved. CLIP-FID uses our CLIP's image features against "
              f"the full-CFG images: it is not Inception FID.\n\n")
    notes = "".join(f"- {k}: not run: {v}\n" for k, v in peers.items() if v)
    (out / "bench.md").write_text(header + (notes + "\n" if notes else "") + to_markdown(paper_table(table)) + "\n")
    meta = {
        "profile": config.name, "config": dataclasses.asdict(config), "model_id": model_id,
        "pipeline": info["pipeline"], "device": info["device"], "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "peers": {k: v or "ok" for k, v in peers.items()},
        "thresholds": {f"{b.table['sampler'][0]} N={b.table['steps'][0]}": b.thresholds for b in blocks},
        "seconds": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
        "scorer": None if scorer is None else scorer.clip_path, "torch": torch.__version__,
        "model_fingerprint": model_fingerprint(model_id),
        "machine_load": {"start": load_before, "end": timing.machine_load()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    log(f"wrote {out} in {meta['seconds']:.0f} s")
    return out


from .rule_run import composition_quality, rule_quality, run_rule_only  # noqa: E402,F401  (re-exported here)
