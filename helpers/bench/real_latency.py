"""Saved latency on the real architectures (issue 24): the paper's method, DeepCache and their composition.

Latency does not depend on the weights' values, so the full-size random-weight builds of
:mod:`helpers.bench.real_architectures` (SD 1.5, SD 2.1, SDXL, PixArt-alpha) time what the real models
cost. Per family and batch size: full CFG, the text removed after k = N/2 (the paper's a = N/2),
DeepCache (interval 3) and DeepCache + text off after k = N/2 (not on PixArt: DeepCache caches UNet skip
branches, PixArt's transformer has none), timed in interleaved rounds
(:func:`helpers.bench.acceleration.time_methods`) with the denoiser timed at B and 2B rows, so the text
window also gets its measured hardware limit. On a GPU: native resolution, fp16; on the CPU: reduced
resolution, fp32 (say so beside the numbers)::

    table = measure(build("sd15"), "sd15", steps=4, batch_sizes=(1,), latent=32)
"""

from __future__ import annotations

import platform
from typing import Sequence

import pandas as pd
import torch

from ..hooks.steps import count_evaluations
from ..loading import denoiser, family as pipeline_family
from . import acceleration as acc
from . import latency, timing
from .peers import peer_status
from .real_architectures import latent_size

PROMPTS = ("a photograph of a red leather armchair in a bright room", "a watercolor painting of a lighthouse at dusk",
           "a blue ceramic teapot on a wooden table", "an astronaut riding a horse on the moon",
           "a bowl of ramen with chopsticks, studio lighting", "a small yellow bird on a snowy branch",
           "a futuristic city skyline at night, neon lights", "a golden retriever puppy playing in the grass")


def methods(steps: int, interval: int, deepcache: bool) -> list[acc.Method]:
    """Full CFG, text off after k = N/2 and, where DeepCache applies, DeepCache alone and composed."""
    k = max(1, steps // 2)
    out = [acc.Method("full CFG", "baseline", steps), acc.Method(f"text off after k={k} (uncond)", "uncond", k)]
    if deepcache:
        out += [acc.Method(f"DeepCache (interval {interval})", "deepcache", cache_interval=interval),
                acc.Method(f"DeepCache (interval {interval}) + text off after k={k} (uncond)", "deepcache+uncond", k,
                           cache_interval=interval)]
    return out


def device_name(device: torch.device) -> str:
    """The machine in words: the GPU's name, or the CPU's architecture and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"CPU {platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def measure(pipe, family: str, steps: int = 4, batch_sizes: Sequence[int] = (1,), repeats: int = 3,
            latent: int | None = None, interval: int = 3, seed: int = 0, guidance_scale: float = 7.5) -> pd.DataFrame:
    """One row per batch size and method: median seconds per call, saved latency with the order-statistic
    interval over ``repeats`` rounds (min/max for 3 rounds: coverage stated in ``interval_method``), the
    call-count limit, the measured hardware limit and gap (text window), plus family, device, dtype,
    resolution, steps. ``latent``: square latent side (None: native)."""
    if not (isinstance(steps, int) and steps >= 2):
        raise ValueError(f"steps must be an integer >= 2 (k = N/2 needs two steps), got {steps!r}")
    net = denoiser(pipe)
    p = next(net.parameters())
    ms = methods(steps, interval, peer_status(pipe)["deepcache"] is None)
    kw = {"use_resolution_binning": False} if pipeline_family(pipe) == "pixart" else {}  # any size, as built
    rows = []
    with latent_size(pipe, latent) as side:
        for b in batch_sizes:
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(int(b))]
            evals = {}
            for m in ms:  # warm-up, and the evaluation count
                with count_evaluations(pipe) as n:
                    acc.run_method(pipe, m, prompts, steps, guidance_scale, seed, **kw)
                evals[m.label] = n[0] / len(prompts)
            times, parts = acc.time_methods(pipe, ms, prompts, steps, guidance_scale, seed, repeats, **kw)
            key = {"sampler": "ddim", "steps": steps}
            table = pd.DataFrame([{"method": m.label, "kind": m.kind, "k": m.text_steps or steps,
                                   "a": steps - (m.text_steps or steps), "evals_per_image": evals[m.label], **key}
                                  for m in ms])
            out = latency.timing_columns(table, times.assign(**key), parts.assign(**key), interval="order")
            rows.append(out.assign(family=family, batch=int(b), latent=side, pixels=side * 8,
                                   device=device_name(p.device), dtype=str(p.dtype).removeprefix("torch."),
                                   interval_method=timing.median_interval([1.0] * repeats, interval="order").method))
    return pd.concat(rows, ignore_index=True)


COLUMNS = ["family", "device", "dtype", "pixels", "steps", "batch", "method", "median_s", "saved_latency", "saved_lo",
           "saved_hi", "limit", "limit_hw", "gap", "n_rounds", "interval_method"]
