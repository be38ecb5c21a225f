#!/usr/bin/env python
"""Where the UNet stage of ``scripts/train_tiny_model.py`` spends its time, and what speed options buy (issue 19).

The stage's own step (``unet_loss`` / ``unet_update`` of the training script: batch 64 of 16x16x4 latents,
captions through the shipped text encoder, Min-SNR weighting, AdamW, gradient clipping, EMA) is timed in
parts -- text encoder, forward, backward, update (clip + AdamW + LR schedule), EMA -- for a few variants
run side by side, interleaved in a shuffled order every round, each from the same initial weights:

- ``baseline``: the script as it is;
- ``channels_last``: UNet weights and inputs in ``torch.channels_last``;
- ``text_cached``: the text encoder's output reused (what precomputing the caption embeddings could save at
  most; the script draws a new caption per image and step, so this is an upper bound, not an option);
- ``compile``: ``torch.compile(unet)`` (its compile time is reported apart and left out of the ratios).

Each round runs ``--steps`` steps of every variant; per variant the median seconds per step and the
median same-round ratio to ``baseline`` with a 95% bootstrap interval (``helpers.bench.timing``). The
projection multiplies by the profile's 6000 steps (at ``--batch``; 64 is the profile's). Captions are
tokenised outside the timed step (the script tokenises per step too: small). Run it alone (two torch jobs on 2 cores slow each other
about tenfold). Writes ``results/training_profile/<machine>.{csv,md}``.

    python scripts/profile_unet_training.py                 # 5 rounds of 4 steps per variant
    python scripts/profile_unet_training.py --variants baseline channels_last --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

VARIANTS = ("baseline", "channels_last", "text_cached", "compile")
PARTS = ("text_s", "forward_s", "backward_s", "update_s", "ema_s")


class Variant:
    """One variant's UNet, optimizer, schedule and EMA, built from the same initial weights."""

    def __init__(self, name: str, unet0) -> None:
        from diffusers.training_utils import EMAModel

        self.name, self.cond = name, None
        self.unet = copy.deepcopy(unet0)
        if name == "channels_last":
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self.ema = EMAModel(self.unet.parameters(), decay=0.999, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=5e-4, weight_decay=0.01)
        steps = 6000  # the full profile's schedule (warm-up, then cosine to half), as in stage_unet
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / 200) * (0.5 + 0.5 * np.cos(np.pi * s / steps)))
        self.model = torch.compile(self.unet) if name == "compile" else self.unet


def run_step(v: Variant, ttm, text_encoder, ids: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
             t: torch.Tensor, noise_sched, gamma: float) -> dict[str, float]:
    """One training step of ``v``, its parts in seconds."""
    clock = time.perf_counter
    t0 = clock()
    if v.name == "text_cached" and v.cond is not None:
        cond = v.cond
    else:
        with torch.no_grad():
            cond = text_encoder(ids).last_hidden_state
        v.cond = cond
    t1 = clock()
    if v.name == "channels_last":
        x0, noise = x0.contiguous(memory_format=torch.channels_last), noise.contiguous(memory_format=torch.channels_last)
    loss = ttm.unet_loss(v.model, noise_sched, x0, noise, t, cond, gamma)
    t2 = clock()
    v.opt.zero_grad(set_to_none=True)
    loss.backward()
    t3 = clock()
    torch.nn.utils.clip_grad_norm_(v.unet.parameters(), 1.0)
    v.opt.step()
    v.sched.step()
    t4 = clock()
    v.ema.step(v.unet.parameters())
    t5 = clock()
    return {"text_s": t1 - t0, "forward_s": t2 - t1, "backward_s": t3 - t2, "update_s": t4 - t3, "ema_s": t5 - t4,
            "seconds": t5 - t0, "loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> Path:
    import train_tiny_model as ttm

    from helpers.bench import timing
    from helpers.loading import load_pipeline
    from helpers.toy import model as tm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    p.add_argument("--batch", type=int, default=ttm.PROFILES["full"]["unet_batch"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "training_profile")
    args = p.parse_args(argv)
    if "baseline" not in args.variants:
        raise SystemExit("--variants must include baseline (every ratio is to it)")
    if args.rounds < 2 or args.steps < 1:
        raise SystemExit("--rounds must be >= 2 and --steps >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ttm.PROFILES["full"]
    pipe = load_pipeline(None)
    text_encoder = pipe.text_encoder.eval().requires_grad_(False)
    prompts = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle")]
    torch.manual_seed(0)
    unet0 = tm.unet_model()
    noise_sched = tm.scheduler()
    variants = {name: Variant(name, unet0) for name in args.variants}
    gen = torch.Generator().manual_seed(0)

    def batch():
        ids = ttm.tokenize(pipe.tokenizer, [prompts[i % len(prompts)] for i in range(args.batch)])
        x0 = torch.randn(args.batch, 4, 16, 16, generator=gen)
        noise = ttm.training_noise(x0.shape, gen, cfg["unet_offset_noise"])
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (args.batch,), generator=gen)
        return ids, x0, noise, t

    warm = {}
    for name, v in variants.items():  # warm-up: 2 steps each (torch.compile compiles here)
        start = time.perf_counter()
        for _ in range(2):
            run_step(v, ttm, text_encoder, *batch(), noise_sched, cfg["unet_min_snr_gamma"])
        warm[name] = time.perf_counter() - start
        print(f"warm-up {name}: {warm[name]:.1f} s", flush=True)
    rows = []
    order = timing.interleaved_order(list(variants), args.rounds, seed=0)
    for r, name in order:
        steps = [run_step(variants[name], ttm, text_encoder, *batch(), noise_sched, cfg["unet_min_snr_gamma"])
                 for _ in range(args.steps)]
        rows.append({"round": r, "method": name, **{k: float(np.mean([s[k] for s in steps]))
                                                     for k in (*PARTS, "seconds")}})
        print(f"round {r} {name}: {rows[-1]['seconds']:.3f} s/step", flush=True)
    times = pd.DataFrame(rows)
    ratios = timing.ratio_table(times.assign(sampler="-", steps=0), baseline="baseline").set_index("method")
    table = times.groupby("method")[[*PARTS, "seconds"]].median()
    table["ratio"], table["ratio_lo"], table["ratio_hi"] = ratios["ratio"], ratios["ratio_lo"], ratios["ratio_hi"]
    table["stage_min_6000_steps"] = table["seconds"] * cfg["unet_steps"] / 60
    table["warmup_s"] = pd.Series(warm)
    table = table.loc[list(variants)].reset_index()
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
               f"AVX-512 {'yes' if _has_avx512() else 'no'}, torch {torch.__version__}")
    slug = f"cpu-{platform.machine()}-{os.cpu_count()}-cores-{torch.get_num_threads()}-threads".replace("_", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / f"{slug}.csv", index=False)
    times.to_csv(args.out / f"{slug}_rounds.csv", index=False)
    from helpers.bench.summaries import to_markdown

    share = table.set_index("method").loc["baseline", list(PARTS)] / table.set_index("method").loc["baseline", "seconds"]
    text = (f"UNet stage step (batch {args.batch}) on {machine}; {args.rounds} interleaved rounds of {args.steps} "
            f"steps per variant; ratio = median same-round seconds per step / baseline's (95% bootstrap interval). "
            f"Baseline's step: " + ", ".join(f"{k.removesuffix('_s')} {100 * v:.0f}%" for k, v in share.items())
            + ".\n\n" + to_markdown(table.round(4)) + "\n")
    (args.out / f"{slug}.md").write_text(text)
    print(text)
    return args.out / f"{slug}.md"


def _has_avx512() -> bool:
    try:
        return "avx512" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    main()
