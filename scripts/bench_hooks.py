#!/usr/bin/env python
"""Slowdown of generation with cross-attention recording on vs off, measured side by side.

Every repeat times each condition once, in turn (the order rotates between repeats), after
warm-up calls, so that background load affects all conditions alike. The slowdown is the
median over repeats of the paired ratio on/off (and, more robust on a loaded machine, the
ratio of the fastest runs). Target: at most 10% when one resolution is recorded.

Writes ``results/bench_hooks.md`` and ``results/bench_hooks.csv``.

    OMP_NUM_THREADS=1 python scripts/bench_hooks.py --steps 50 --repeats 5
    python scripts/bench_hooks.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --resolution 16  # GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.toy import model as tiny_model
from helpers.hooks.attention import record_attention
from helpers.generation import generate
from helpers.loading import denoiser, load_pipeline

RESULTS = Path(__file__).resolve().parent.parent / "results"
TARGET = 0.10
PROMPTS = ["a photo of a small red circle on the left", "a large blue striped star at the top",
           "a green dotted heart in the center", "a yellow plain square at the bottom"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model id (default: embedded model, else random-tiny)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4, help="prompts per pipeline call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=None,
                        help="map height of the one-resolution condition (default: the largest cross-attention map)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_hooks")
    return parser.parse_args(argv)


def _default_model() -> str | None:
    return None if (tiny_model.default_model_dir() / "unet").exists() else "random-tiny"


def _largest_resolution(pipe) -> int:
    """Height of the largest cross-attention map (found with one short recorded call)."""
    with record_attention(pipe, resolutions=None, per_step=False) as rec:
        generate(pipe, PROMPTS[:1], num_inference_steps=2, progress=False)
    return rec.sizes[0][0]


def main(argv=None) -> Path:
    args = parse_args(argv)
    model_id = args.model if args.model is not None else _default_model()
    pipe = load_pipeline(model_id)
    resolution = args.resolution or _largest_resolution(pipe)
    prompts = (PROMPTS * args.batch)[: args.batch]
    conditions = {
        "off": lambda: nullcontext(),
        f"on: {resolution}x{resolution}, per step": lambda: record_attention(pipe, resolutions=(resolution,)),
        f"on: {resolution}x{resolution}, step mean": lambda: record_attention(pipe, resolutions=(resolution,),
                                                                             per_step=False),
        "on: all resolutions, per step": lambda: record_attention(pipe, resolutions=None),
    }

    def run(name: str) -> float:
        sync = torch.cuda.synchronize if denoiser(pipe).device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        with conditions[name]():
            generate(pipe, prompts, num_inference_steps=args.steps, progress=False)
        sync()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in conditions:
            run(name)
    names = list(conditions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order every repeat
            times[name].append(run(name))

    off = np.array(times["off"])
    rows = []
    for name, ts in times.items():
        ts = np.array(ts)
        rows.append({"condition": name, "median_s": float(np.median(ts)), "min_s": float(ts.min()),
                     "max_s": float(ts.max()), "slowdown": float(np.median(ts / off) - 1),
                     "slowdown_min": float(ts.min() / off.min() - 1)})
    device = str(denoiser(pipe).device)
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name()})"
    header = (f"model={model_id or 'embedded'} | device={device} | torch threads={torch.get_num_threads()} | "
              f"steps={args.steps} | batch={args.batch} | repeats={args.repeats} (+{args.warmup} warm-up), "
              f"interleaved | {platform.processor() or platform.machine()}")
    one = rows[1]["slowdown"]
    verdict = (f"Recording one resolution ({resolution}x{resolution}, per step) costs {one:+.1%} "
               f"({'within' if one <= TARGET else 'above'} the {TARGET:.0%} target).")
    lines = ["# Cross-attention recording: generation time with hooks on vs off", "", header, "",
             "Slowdown: median over repeats of (time on / time off of the same repeat) - 1; "
             "'of minima': fastest on / fastest off - 1 (robust to background load).", "",
             "| condition | median s | min s | max s | slowdown vs off | slowdown of minima |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['condition']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {r['slowdown']:+.1%} "
              f"| {r['slowdown_min']:+.1%} |" for r in rows]
    lines += ["", verdict, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md = args.out.with_suffix(".md")
    md.write_text("\n".join(lines))
    with open(args.out.with_suffix(".csv"), "w") as fh:
        fh.write("condition,median_s,min_s,max_s,slowdown,slowdown_min\n")
        for r in rows:
            fh.write(f"{r['condition']},{r['median_s']:.4f},{r['min_s']:.4f},{r['max_s']:.4f},"
                     f"{r['slowdown']:.4f},{r['slowdown_min']:.4f}\n")
    print("\n".join(lines))
    return md


if __name__ == "__main__":
    main()
