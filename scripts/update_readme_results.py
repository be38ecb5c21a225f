#!/usr/bin/env python
"""Rewrite the README's generated blocks from the result files (no number typed by hand).

Blocks, between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers:

- ``verdicts``: the closing verdict of each notebook (``results/embedded/full/*/verdict.txt``)
- ``quality``: the embedded model's quality table (``results/model_quality.md``)
- ``bench``: the acceleration benchmark table (``results/acceleration/full/bench.md`` when the
  full profile was run, else the quick one, saying which)
- ``objectives``: the text-encoder objectives compared (``results/text_encoder_objectives.md``, from
  ``scripts/text_encoder_objectives.py``)
- ``runtimes``: expected runtimes on real models (``results/real_model_runtime_estimates.md``,
  from ``scripts/runtime_estimates.py``)

Run after ``make notebooks`` (and the benchmark): ``python scripts/update_readme_results.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def verdicts() -> str:
    rows = ["| notebook | verdict |", "|---|---|"]
    for path in sorted((RESULTS / "embedded" / "full").glob("*/verdict.txt")):
        for line in path.read_text().strip().splitlines():
            rows.append(f"| `{path.parent.name}` | {line.replace('|', '/')} |")
    return "\n".join(rows)


def quality() -> str:
    return (RESULTS / "model_quality.md").read_text().strip()


def bench() -> str:
    full = RESULTS / "acceleration" / "full" / "bench.md"
    if full.exists():
        return "Full profile (`--profile full`):\n\n" + full.read_text().strip()
    quick = RESULTS / "acceleration" / "quick" / "bench.md"
    return ("The full profile (`--profile full`, about 30 minutes on 2 cores) has not been run on the current "
            "model; this is the quick profile as notebook 06 ran it:\n\n" + quick.read_text().strip())


def objectives() -> str:
    return (RESULTS / "text_encoder_objectives.md").read_text().strip()


def runtimes() -> str:
    return (RESULTS / "real_model_runtime_estimates.md").read_text().strip()


BLOCKS = {"verdicts": verdicts, "quality": quality, "objectives": objectives, "bench": bench, "runtimes": runtimes}


def update(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            continue
        try:
            body = make()
        except FileNotFoundError as err:
            print(f"{name}: left as it was ({err.filename} is missing)")
            continue
        text = pattern.sub(lambda m: m.group(1) + "\n" + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    readme = ROOT / "README.md"
    readme.write_text(update(readme.read_text()))
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
