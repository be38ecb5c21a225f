"""Compare two work folders of ``scripts/train_tiny_model.py`` stage by stage.

Each stage's final checkpoint (and the rendered data and encoded latents) is loaded from both
folders and compared tensor by tensor: ``identical`` means bit for bit, otherwise the largest
absolute difference is given. Same seed, same script, same hardware and thread count should give
identical stages; a stage whose settings differ between the runs (e.g. the UNet's step count,
which sets its learning-rate schedule) will not be, and neither will any stage after it that
depends on it::

    python scripts/compare_runs.py .cache/train_tiny .cache/fresh --labels shipped fresh \
        --out results/reproducibility/stages.md
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

FILES = ("data.npz", "clip.ckpt", "vae.ckpt", "evaluator.ckpt", "latents.pt", "unet.ckpt", "decoder.ckpt")


def _tensors(obj, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor (or number) inside nested dicts/lists, with a dotted name."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, np.ndarray):
        yield prefix, torch.from_numpy(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}.{i}")
    elif isinstance(obj, (int, float, bool)):
        yield prefix, torch.tensor(obj)


def _load(path: Path):
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    return torch.load(path, map_location="cpu", weights_only=False)


def compare_files(a: Path, b: Path) -> dict:
    """``{"tensors": n, "identical": bool, "max_abs_diff": float, "differing": [names]}`` for one file pair."""
    ta, tb = dict(_tensors(_load(a))), dict(_tensors(_load(b)))
    differing, max_diff = sorted(set(ta) ^ set(tb)), 0.0
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            differing.append(name)
        elif not torch.equal(x, y):
            differing.append(name)
            if x.is_floating_point():
                max_diff = max(max_diff, float((x.double() - y.double()).abs().max()))
            else:
                max_diff = max(max_diff, float((x.long() - y.long()).abs().max()))
    return {"tensors": len(ta), "identical": not differing, "max_abs_diff": max_diff, "differing": differing}


def compare_runs(a: Path, b: Path, labels: tuple[str, str] | None = None) -> str:
    """A markdown table: one row per stage file found in both work folders."""
    first, second = labels or (a.name, b.name)
    lines = [f"| file | tensors | {first} vs {second} |", "|---|---|---|"]
    for name in FILES:
        if not ((a / name).exists() and (b / name).exists()):
            continue
        result = compare_files(a / name, b / name)
        verdict = "identical (bit for bit)" if result["identical"] else (
            f"differs: {len(result['differing'])} tensors, max abs diff {result['max_abs_diff']:.3g}")
        lines.append(f"| {name} | {result['tensors']} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    parser.add_argument("--labels", nargs=2, default=None, metavar=("FIRST", "SECOND"),
                        help="names of the two runs in the table (default: the folder names)")
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not folder.is_dir():
            parser.error(f"no work folder at {folder}")
    torch.set_num_threads(1)
    text = compare_runs(args.first, args.second, tuple(args.labels) if args.labels else None)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
