#!/usr/bin/env python
"""Measure the embedded model against the quality bar of its model card.

Writes ``results/model_quality.json`` and ``results/model_quality.md`` (used by the model
card). ``--quick`` uses few images and steps (a smoke check, not the bar's measurement).
The logic lives in ``helpers/toy/quality.py`` (notebook 00 calls it too).

Checking a retrained model against the shipped one (same evaluator, larger sample)::

    python scripts/evaluate_tiny_model.py --model-id .cache/fresh_model --n 1000 --n-held 300 --seed 20000 \
        --out .cache/fresh_eval --stem fresh
    python scripts/evaluate_tiny_model.py --n 1000 --n-held 300 --seed 20000 --out .cache/fresh_eval --stem shipped
    python scripts/compare_quality.py shipped=.cache/fresh_eval/shipped.json fresh=.cache/fresh_eval/fresh.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.toy.quality import evaluate, to_markdown

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few images and steps (smoke test)")
    parser.add_argument("--model-id", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default=None, help="default: cuda when there is a GPU, else cpu")
    parser.add_argument("--float32", action="store_true", help="sample in float32 on a GPU too (default there: float16)")
    parser.add_argument("--evaluator", default=None,
                        help="attribute evaluator folder (default: the shipped model's, one ruler for every model)")
    parser.add_argument("--n", type=int, default=200, help="prompts of seen shape x colour pairs (bar: 200)")
    parser.add_argument("--n-held", type=int, default=100, help="prompts of held-out pairs (default 100)")
    parser.add_argument("--seed", type=int, default=10_000, help="prompts and sampling noise (bar: 10000)")
    parser.add_argument("--stem", default=None, help="output file name without suffix (default: model_quality)")
    args = parser.parse_args(argv)
    options = dict(model_id=args.model_id, device=args.device, dtype=torch.float32 if args.float32 else None,
                   evaluator_path=args.evaluator, seed=args.seed)
    if args.quick:
        report = evaluate(n=8, n_held=4, steps=4, **options)
    else:
        report = evaluate(n=args.n, n_held=args.n_held, **options)
    stem = args.stem or ("model_quality_quick" if args.quick else "model_quality")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{stem}.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return report


if __name__ == "__main__":
    main()
