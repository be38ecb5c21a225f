#!/usr/bin/env python
"""Copy a trained model folder with its weights stored in float16 (half the bytes in git).

    python scripts/store_fp16.py .cache/v4_model data/models/tiny-shapes-sd

Every ``*.safetensors`` of the pipeline's parts (unet, text_encoder, vae, clip) gets its float32
tensors rounded to float16; the attribute evaluator (``evaluator/``, the ruler every model version
is measured with) is copied bit for bit. Loading is unchanged (``load_pipeline`` upcasts to float32
on the CPU). The model's numbers must be measured on the stored copy, never on the float32 original.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

KEEP_FP32 = ("evaluator",)


def store_fp16(src: Path, dst: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    if not (src / "model_index.json").exists():
        raise SystemExit(f"{src} is not a pipeline folder (no model_index.json)")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for path in dst.rglob("*.safetensors"):
        if path.relative_to(dst).parts[0] in KEEP_FP32:
            continue
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        tensors = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in load_file(path).items()}
        save_file(tensors, path, metadata=metadata)
    return dst


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    out = store_fp16(args.src, args.dst)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"{out}: {size:.1f} MiB")
    return out


if __name__ == "__main__":
    main()
