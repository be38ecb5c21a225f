#!/usr/bin/env python
"""Compare two results folders number by number (e.g. before and after a refactor).

    python scripts/compare_results.py .cache/baseline/embedded/quick results/embedded/quick
    python scripts/compare_results.py OLD NEW --ignore run_summary --atol 0

Every ``.csv`` and ``.json`` present in either folder is compared: identical, numerically equal
within ``--atol`` (floats), different (the first differing cells are shown), or missing on one
side. ``verdict.txt`` files are compared as text. Figures are not compared (they are pictures of
these numbers). Exit code 1 when anything differs beyond ``--atol``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

#: Files that always differ between runs (wall-clock seconds).
DEFAULT_IGNORE = ("run_summary", "meta", "times")


def _flatten(value, prefix: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _close(a, b, atol: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= atol
    return a == b


def compare_file(a: Path, b: Path, atol: float) -> list[str]:
    """Differences between two result files (empty when equal)."""
    if a.suffix == ".json":
        fa, fb = dict(_flatten(json.loads(a.read_text()))), dict(_flatten(json.loads(b.read_text())))
        keys = sorted(set(fa) | set(fb))
        return [f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in keys if not _close(fa.get(k), fb.get(k), atol)]
    if a.suffix == ".csv":
        da, db = pd.read_csv(a), pd.read_csv(b)
        if da.shape != db.shape or list(da.columns) != list(db.columns):
            return [f"shape/columns {da.shape} {list(da.columns)[:6]} vs {db.shape} {list(db.columns)[:6]}"]
        out = []
        for col in da.columns:
            for i, (x, y) in enumerate(zip(da[col], db[col])):
                if not _close(x, y, atol) and not (pd.isna(x) and pd.isna(y)):
                    out.append(f"row {i} {col}: {x!r} vs {y!r}")
        return out
    ta, tb = a.read_text().splitlines(), b.read_text().splitlines()
    return [f"line {i}: {x!r} vs {y!r}" for i, (x, y) in enumerate(zip(ta, tb)) if x != y] + (
        [f"{len(ta)} vs {len(tb)} lines"] if len(ta) != len(tb) else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--atol", type=float, default=0.0, help="tolerance for floats (default 0: identical)")
    parser.add_argument("--ignore", nargs="*", default=list(DEFAULT_IGNORE), help="file stems to skip")
    args = parser.parse_args(argv)
    files = {p.relative_to(args.old) for p in args.old.rglob("*") if p.suffix in (".csv", ".json", ".txt")}
    files |= {p.relative_to(args.new) for p in args.new.rglob("*") if p.suffix in (".csv", ".json", ".txt")}
    bad = 0
    for rel in sorted(files):
        if rel.stem in args.ignore:
            continue
        a, b = args.old / rel, args.new / rel
        if not a.exists() or not b.exists():
            print(f"MISSING  {rel} ({'old' if not a.exists() else 'new'} side)")
            bad += 1
            continue
        diff = compare_file(a, b, args.atol)
        print(f"{'same    ' if not diff else 'DIFFERS '} {rel}" + (f"  ({len(diff)}: {diff[:3]})" if diff else ""))
        bad += bool(diff)
    print(f"{len(files)} files, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
