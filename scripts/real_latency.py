#!/usr/bin/env python
"""Saved latency of the paper's method, DeepCache and their composition on the real architectures.

Full-size random-weight builds (``helpers.bench.real_architectures.build``: latency does not depend on
the weights' values), one family at a time; per batch size full CFG, text off after k = N/2, DeepCache
(interval 3) and DeepCache + text off (``helpers.bench.real_latency``). Offline.

    python scripts/real_latency.py                         # CPU: 256 px, 4 steps, batch 1, 3 rounds (~15 min, 2 cores)
    python scripts/real_latency.py --families sd15 --pixels 128 --steps 2 --repeats 2   # a quick look
    python scripts/real_latency.py --device cuda           # GPU: native size, fp16, batch 1 and 8, 50 steps

Writes ``results/real_latency/<device-slug>.csv`` and ``.md`` (the machine named in both); families already
in that CSV are kept unless given again.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", default=["sd15", "sd21", "sdxl", "pixart"],
                   choices=["sd15", "sd21", "sdxl", "pixart"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--pixels", type=int, default=None, help="square image side (default: 256 on CPU, native on GPU)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: 4 on CPU, 50 on GPU)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1 on CPU, 1 and 8 on GPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--t5-layers", type=int, default=1, help="PixArt's T5 layers built (24: the full encoder)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    import pandas as pd
    import torch

    from helpers.bench import real_latency as rl
    from helpers.bench.real_architectures import build
    from helpers.bench.summaries import to_markdown

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    pixels = args.pixels or (None if gpu else 256)
    if pixels is not None and (pixels < 64 or pixels % 64):
        raise SystemExit(f"--pixels must be a multiple of 64 (at least 64), got {pixels}")
    steps, sizes = args.steps or (50 if gpu else 4), args.batch_sizes or ([1, 8] if gpu else [1])
    slug = re.sub(r"[^A-Za-z0-9]+", "-", rl.device_name(device)).strip("-").lower()
    out = args.out or ROOT / "results" / "real_latency" / f"{slug}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    old = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["family"])
    tables = [old[~old["family"].isin(args.families)]] if len(old) else []
    for family in args.families:
        t0 = time.time()
        dtype = torch.float16 if gpu else torch.float32
        pipe = build(family, dtype=torch.bfloat16 if gpu and family == "pixart" else dtype, device=device,
                     t5_layers=args.t5_layers if family == "pixart" else None)
        table = rl.measure(pipe, family, steps, sizes, args.repeats, None if pixels is None else pixels // 8)
        tables.append(table[rl.COLUMNS])
        print(f"{family}: {time.time() - t0:.0f} s", flush=True)
        pd.concat(tables, ignore_index=True).to_csv(out, index=False)  # written per family: nothing lost
        del pipe
        gc.collect()
    result = pd.concat(tables, ignore_index=True)
    result.to_csv(out, index=False)
    note = ("Random-weight builds at the published sizes (latency does not depend on the weights' values); "
            f"device {rl.device_name(device)}; interval over rounds: {result['interval_method'].iloc[0]}. "
            "PixArt: DeepCache does not apply (no UNet skip branches); its T5 built with "
            f"{args.t5_layers} of 24 layers (text encoding is a small part of a call).\n\n")
    out.with_suffix(".md").write_text(note + to_markdown(result.drop(columns=["interval_method"]).round(3)) + "\n")
    print(out.with_suffix(".md").read_text())
    return out


if __name__ == "__main__":
    main()
