#!/usr/bin/env python
"""GPU memory ESTIMATES per family and setting, computed from the CPU dry runs (no GPU measured them).

Reads ``results/dry_runs/cpu/<family>.json`` (``scripts/dry_run_real_architectures.py``) and writes
``results/dry_runs/memory_estimates.md``, which the README shows. The model, stated in the table:

* weights in fp16 = the dry run's fp32 weight bytes / 2 (PixArt: with the full 24-layer T5, from the
  dry run's own extrapolation);
* activations per prompt in fp16 = (peak RSS of the CPU run - its fp32 weights - 1 GiB for Python,
  torch and the build) / 2, measured with one prompt (a CFG batch of 2 rows) at native resolution,
  and taken to grow linearly with the batch;
* offload ``"model"``: only the largest component's weights on the GPU at a time; ``"sequential"``:
  weights streamed layer by layer (taken as 1 GiB on the GPU);
* a card "fits" when the estimate is below 90% of its memory.

A GPU run of the dry-run script (``--device cuda --dtype float16``) measures instead; when its JSONs
exist in ``results/dry_runs/cuda/`` they should replace these estimates.

    python scripts/memory_estimates.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
CARDS = (16, 24, 80)
BATCHES = (1, 8)
BASELINE = 1 * GIB  # Python, torch and the build in the CPU process's peak RSS
USABLE = 0.9


def family_numbers(d: dict) -> dict:
    weights32 = d["weight_bytes"]
    peak = max(p.get("peak_memory_bytes") or 0 for p in d["paths"].values())
    largest32 = max(d["parameters"].values()) * 4
    t5 = d.get("t5_extrapolation")
    if t5:  # the full T5 encoder's weights, from the dry run's extrapolation
        weights32 += t5["missing_weight_bytes_estimate"]
        largest32 = max(largest32, t5["params_real_estimate"] * 4)
    activations32 = max(peak - d["weight_bytes"] - BASELINE, 0)
    return {"weights16": weights32 / 2, "largest16": largest32 / 2, "act16": activations32 / 2}


def estimate(n: dict, offload: str | None, batch: int) -> float:
    on_gpu = {None: n["weights16"], "model": n["largest16"], "sequential": 1 * GIB}[offload]
    return (on_gpu + batch * n["act16"]) / GIB


def table(runs: dict[str, dict]) -> str:
    head = ("| family (image px) | setting | batch | estimated GiB | "
            + " | ".join(f"{c} GB" for c in CARDS) + " |")
    rows = [head, "|" + "---|" * (4 + len(CARDS))]
    for fam, d in runs.items():
        n = family_numbers(d)
        for offload in (None, "model", "sequential"):
            for batch in BATCHES:
                gib = estimate(n, offload, batch)
                fits = ["fits" if gib < USABLE * c * 1e9 / GIB else "no" for c in CARDS]
                rows.append(f"| {fam} ({d['image_size']}) | fp16, offload {offload or 'none'} | {batch} | "
                            f"{gib:.1f} | " + " | ".join(fits) + " |")
    notes = [
        "",
        "ESTIMATES from the CPU dry runs (fp32, random weights, one prompt at native resolution), not GPU "
        "measurements: weights in fp16 = fp32 bytes / 2; activations per prompt = (peak RSS - fp32 weights - 1 GiB) / 2, "
        "linear in the batch; offload \"model\" keeps the largest component on the GPU, \"sequential\" about 1 GiB; "
        "fits = below 90% of the card. PixArt with its full 24-layer T5 (the dry run built 4 layers at the real width). "
        "`scripts/memory_estimates.py`.",
    ]
    missing = [f for f in ("sd15", "sd21", "sdxl", "pixart") if f not in runs]
    if missing:
        notes.append(f"No dry run yet for: {', '.join(missing)}.")
    return "\n".join(rows + notes)


def main() -> int:
    folder = ROOT / "results" / "dry_runs" / "cpu"
    runs = {}
    for fam in ("sd15", "sd21", "sdxl", "pixart"):
        path = folder / f"{fam}.json"
        if path.exists():
            runs[fam] = json.loads(path.read_text())
    if not runs:
        print(f"no dry runs in {folder}: run scripts/dry_run_real_architectures.py first", file=sys.stderr)
        return 1
    out = ROOT / "results" / "dry_runs" / "memory_estimates.md"
    out.write_text(table(runs) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
