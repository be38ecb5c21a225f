#!/usr/bin/env python
"""Expected runtimes of the full-profile notebooks on real models, from measured work counts.

Every notebook's context counts the denoiser evaluations it makes (``run_summary.json``,
written by ``ctx.verdict``). The full-profile run on the embedded model (``make notebooks``)
measures those counts; on a real model the notebooks make about as many (same profile sizes,
the natural prompt set instead of the toy one). Multiplying by an *assumed* time per
evaluation of one latent gives the expected runtime. The per-evaluation times below are
rough public figures for fp16 inference at each model's native resolution, not measurements
of ours (no machine of this project has a GPU with the weights): read the table as an order
of magnitude, and replace them with your own (``--ms``) once you have timed one call.

    python scripts/runtime_estimates.py            # reads results/embedded/full/*/run_summary.json
    python scripts/runtime_estimates.py --ms sd15=12 sdxl=60
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"

#: model key -> (model id, resolution, assumed ms per denoiser evaluation of one latent on an A100, on a T4)
MODELS: dict[str, tuple[str, int, float, float]] = {
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", 512, 20.0, 75.0),
    "sd21": ("stabilityai/stable-diffusion-2-1-base", 512, 20.0, 75.0),
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", 1024, 80.0, 450.0),
    "pixart": ("PixArt-alpha/PixArt-XL-2-512x512", 512, 30.0, 130.0),
}


def load_counts(folder: Path) -> dict[str, dict]:
    """``run_summary.json`` of every notebook of one (model, profile) results folder."""
    out = {}
    for path in sorted(folder.glob("*/run_summary.json")):
        out[path.parent.name] = json.loads(path.read_text())
    if not out:
        raise SystemExit(f"no run_summary.json under {folder}: run `make notebooks` first")
    return out


def minutes(evaluations: int, ms: float) -> str:
    m = evaluations * ms / 1000 / 60
    return f"{m:.0f} min" if m >= 1 else "<1 min"


def table(counts: dict[str, dict], models: dict[str, tuple[str, int, float, float]]) -> str:
    """Markdown: per notebook, measured evaluations and CPU time, expected GPU minutes per model."""
    head = ["notebook", "denoiser evaluations (measured)", "embedded model, 2 CPU cores (measured)"]
    head += [f"{k} A100 / T4 (expected)" for k in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = 0
    for name, c in counts.items():
        n = int(c.get("denoiser_evaluations") or 0)
        total += n
        cells = [name, f"{n:,}", f"{c['seconds'] / 60:.1f} min"]
        if n == 0:  # e.g. notebook 06: the benchmark loads its own pipeline (see its own table)
            cells[1] = "0 (work done by a script's own pipeline: not counted)"
        cells += [f"{minutes(n, a)} / {minutes(n, t)}" for _, _, a, t in models.values()]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**all**", f"**{total:,}**", f"{sum(c['seconds'] for c in counts.values()) / 60:.1f} min"]
    cells += [f"{minutes(total, a)} / {minutes(total, t)}" for _, _, a, t in models.values()]
    lines.append("| " + " | ".join(cells) + " |")
    notes = "\n".join(f"- {k}: `{mid}` at {res}x{res}, assumed {a:g} ms (A100) / {t:g} ms (T4) per evaluation"
                      for k, (mid, res, a, t) in models.items())
    return "\n".join(lines) + "\n\n" + notes + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "embedded" / "full")
    parser.add_argument("--ms", nargs="*", default=[], metavar="MODEL=MS",
                        help="replace the assumed A100 ms per evaluation of a model (e.g. sd15=12)")
    parser.add_argument("--out", type=Path, default=RESULTS / "real_model_runtime_estimates.md")
    args = parser.parse_args(argv)
    models = dict(MODELS)
    for item in args.ms:
        key, _, value = item.partition("=")
        if key not in models or not value:
            raise SystemExit(f"--ms takes MODEL=MS with MODEL among {', '.join(models)}, not {item!r}")
        mid, res, _, t4 = models[key]
        models[key] = (mid, res, float(value), t4)
    text = table(load_counts(args.results), models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
