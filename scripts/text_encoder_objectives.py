#!/usr/bin/env python
"""Which tokens the UNet reads, per text-encoder objective: the controlled comparison of issue "v4".

For each model folder (same data, VAE and UNet recipe; only ``clip_objective`` differs), on
S-PromptSet pairs whose shapes differ, with the attribute evaluator (Wilson 95% intervals):

* A's own images: shape / colour correct;
* switch the whole [EOS] class, only the real [EOS], only the padding: the shape follows B;
* zero A's words, zero A's [EOS] class: the shape is still A's;
* attention mass of [SOS] / words / [EOS] / padding on A's prompts (mean over steps, layers, prompts).

    python scripts/text_encoder_objectives.py clip=data/models/tiny-shapes-sd eos_head=.cache/tiny-shapes-sd-v3
    python scripts/text_encoder_objectives.py --quick clip=.cache/v4_model    # 8 pairs, 10 steps (smoke)

Results merge into ``results/text_encoder_objectives.json`` (one entry per label) and
``results/text_encoder_objectives.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import stats  # noqa: E402
from helpers.analysis.influence import differing_pairs, run_conditions  # noqa: E402
from helpers.analysis.mass import class_mass  # noqa: E402
from helpers.analysis.metrics import Scorer  # noqa: E402
from helpers.generation import generate  # noqa: E402
from helpers.hooks.attention import record_attention  # noqa: E402
from helpers.loading import load_pipeline  # noqa: E402
from helpers.text.tokens import pipeline_token_classes  # noqa: E402

#: This script's labels -> the conditions of helpers.analysis.influence (switch and zero tests of one class).
CONDITIONS = {"A": "A", "B": "B", "switch all": "switch [EOS] class", "switch real [EOS]": "switch real [EOS]",
              "switch padding": "switch padding", "zero words": "zero words", "zero [EOS] class": "zero [EOS] class"}


def measure(model: str, n_pairs: int = 60, steps: int = 30, seed: int = 0, guidance: float = 7.5,
            evaluator: Path | None = None) -> dict:
    """The table's numbers for one model folder."""
    t0 = time.time()
    pipe = load_pipeline(model)
    scorer = Scorer(evaluator_path=evaluator) if evaluator else Scorer()  # one ruler for every model
    pairs = differing_pairs("toy", n=n_pairs, attribute="shape")
    run = run_conditions(pipe, pairs, read=scorer.attributes, conditions=list(CONDITIONS.values()), seed=seed,
                         num_inference_steps=steps, guidance_scale=guidance)
    readings = {label: run.readings[name] for label, name in CONDITIONS.items()}
    shape_a = [p.source.attributes["shape"] for p in pairs]
    shape_b = [p.target.attributes["shape"] for p in pairs]
    color_a = [p.source.attributes.get("color") for p in pairs]

    def rate(name: str, truth: list) -> dict:
        hits = [r["shape"] == t for r, t in zip(readings[name], truth)]
        e = stats.wilson(int(sum(hits)), len(hits))
        return {"rate": e.value, "lo": e.lo, "hi": e.hi, "n": e.n}

    colour_hits = [r["color"] == c for r, c in zip(readings["A"], color_a) if c]
    out = {
        "model": str(model), "n_pairs": len(pairs), "steps": steps, "guidance": guidance, "seed": seed,
        "A shape correct": rate("A", shape_a),
        "A colour correct": (lambda e: {"rate": e.value, "lo": e.lo, "hi": e.hi, "n": e.n})(
            stats.wilson(int(sum(colour_hits)), len(colour_hits))),
        "B shape correct": rate("B", shape_b),
    }
    for name in ("switch all", "switch real [EOS]", "switch padding"):
        out[f"{name}: shape follows B"] = rate(name, shape_b)
        out[f"{name}: shape stays A"] = rate(name, shape_a)
    for name in ("zero words", "zero [EOS] class"):
        out[f"{name}: shape still A"] = rate(name, shape_a)
    # attention mass by class on A's prompts (all recorded layers, mean over steps and prompts)
    prompts = [p.source.prompt for p in pairs]
    with record_attention(pipe, resolutions=None, per_step=False) as rec:
        generate(pipe, prompts, seed=seed, num_inference_steps=steps, guidance_scale=guidance, progress=False)
    mass = rec.token_mass().numpy()  # (steps, prompts, tokens)
    per_class = {c: [] for c in ("sos", "semantic", "eos", "padding")}
    for i, prompt in enumerate(prompts):
        m = class_mass(mass[:, i], pipeline_token_classes(pipe, prompt))
        for c in per_class:
            per_class[c].append(float(np.mean(m[c])))
    out["attention mass"] = {c: {"mean": float(np.mean(v)), **{k: getattr(stats.mean_ci(v), k) for k in ("lo", "hi", "n")}}
                             for c, v in per_class.items()}
    out["seconds"] = round(time.time() - t0, 1)
    return out


def markdown(results: dict) -> str:
    labels = list(results)
    rows = ["A shape correct", "A colour correct", "switch all: shape follows B", "switch real [EOS]: shape follows B",
            "switch padding: shape follows B", "zero words: shape still A", "zero [EOS] class: shape still A"]

    def cell(d):
        return f"{100 * d['rate']:.1f}% [{100 * d['lo']:.1f}, {100 * d['hi']:.1f}]"

    lines = ["| measurement | " + " | ".join(f"`{x}`" for x in labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {r} | " + " | ".join(cell(results[x][r]) for x in labels) + " |" for r in rows]
    lines.append("| attention mass [SOS] / words / [EOS] / padding | " + " | ".join(
        " / ".join(f"{results[x]['attention mass'][c]['mean']:.3f}" for c in ("sos", "semantic", "eos", "padding"))
        for x in labels) + " |")
    n = {results[x]["n_pairs"] for x in labels}
    steps = {results[x]["steps"] for x in labels}
    return ("\n".join(lines) + f"\n\nS-PromptSet pairs whose shapes differ (n = {', '.join(map(str, sorted(n)))}), "
            f"DDIM {', '.join(map(str, sorted(steps)))} steps, guidance 7.5, the shipped attribute evaluator; "
            "Wilson 95% intervals. `scripts/text_encoder_objectives.py`.\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="LABEL=MODEL_DIR")
    parser.add_argument("--n-pairs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="8 pairs, 10 steps (a smoke run; not for results)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "text_encoder_objectives.json")
    args = parser.parse_args(argv)
    n_pairs, steps = (8, 10) if args.quick else (args.n_pairs, args.steps)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for item in args.models:
        label, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            parser.error(f"expected LABEL=MODEL_DIR with an existing folder, got {item!r}")
        results[label] = measure(folder, n_pairs=n_pairs, steps=steps)
        print(f"{label}: {json.dumps(results[label], default=float)[:300]}...")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
