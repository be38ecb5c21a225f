#!/usr/bin/env python
"""Quality reports of ``scripts/evaluate_tiny_model.py`` side by side, with standard errors.

Used to check that retraining reproduces the shipped model: evaluate both with the same
evaluator, prompts and seed, then::

    python scripts/compare_quality.py shipped=results/shipped.json fresh=results/fresh.json \\
        --out results/reproducibility.md

With two reports the table gives their difference and whether it exceeds two standard errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.toy.quality import compare_markdown


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", metavar="LABEL=REPORT.json")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    reports = {}
    for item in args.reports:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            parser.error(f"expected LABEL=REPORT.json, got {item!r}")
        if not Path(path).is_file():
            parser.error(f"no report at {path} (write one with scripts/evaluate_tiny_model.py)")
        reports[label] = json.loads(Path(path).read_text())
    text = compare_markdown(reports)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
