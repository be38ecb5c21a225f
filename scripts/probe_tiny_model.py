#!/usr/bin/env python
"""Quick quality probes of a training run in progress (for experiments on the embedded model).

    python scripts/probe_tiny_model.py --work-dir .cache/train_tiny --unet       # EMA weights of unet.ckpt
    python scripts/probe_tiny_model.py --work-dir .cache/train_tiny --vae        # the VAE's ceiling

``--unet`` assembles a pipeline from the work folder (its tokenizer, CLIP text tower, VAE and the
EMA weights of the latest UNet checkpoint) and measures the quality bar on few captions and steps
(default 40 captions, 20 DDIM steps: a probe, not the bar). ``--vae`` measures the attribute
evaluator on the VAE's reconstructions of fresh renders (``helpers.toy.quality.reconstruction_accuracy``).
Both print one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.toy import model as tm
from helpers.toy.quality import evaluate, reconstruction_accuracy


def unet_probe(work: Path, n: int, steps: int) -> dict:
    from diffusers import AutoencoderKL
    from diffusers.training_utils import EMAModel
    from transformers import CLIPTokenizer

    ckpt = work / "unet.ckpt"
    if not ckpt.exists():
        raise SystemExit(f"no UNet checkpoint in {work} (the unet stage writes unet.ckpt)")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    unet = tm.unet_model()
    ema = EMAModel(unet.parameters())
    ema.load_state_dict(state["ema"])
    ema.copy_to(unet.parameters())
    pipe = tm.assemble_pipeline(CLIPTokenizer.from_pretrained(work / "tokenizer"),
                                tm.load_clip(work / "clip").text_model,
                                AutoencoderKL.from_pretrained(work / "vae"), unet)
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        report = evaluate(n=n, n_held=n // 2, steps=steps, model_id=folder)
    keys = ("guidance_7.5", "guidance_1.0", "held_out_pairs_guidance_7.5")
    return {"unet_step": int(state["step"]), "captions": n, "steps": steps,
            **{k: {a: round(v, 3) for a, v in report[k].items()} for k in keys}}


def vae_probe(work: Path, n: int) -> dict:
    from diffusers import AutoencoderKL

    result = reconstruction_accuracy(AutoencoderKL.from_pretrained(work / "vae").eval(), n=n)
    return {"n_renders": n, "psnr_db": round(result["psnr_db"], 2),
            **{k: {a: round(v, 3) for a, v in result[k].items()} for k in ("renders", "reconstructions")}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path(".cache/train_tiny"))
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--unet", action="store_true", help="probe the EMA weights of the UNet checkpoint")
    what.add_argument("--vae", action="store_true", help="the evaluator on the VAE's reconstructions")
    parser.add_argument("--n", type=int, default=None, help="captions (--unet, default 40) or renders (--vae, 400)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (--unet)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = unet_probe(args.work_dir, args.n or 40, args.steps) if args.unet else vae_probe(args.work_dir, args.n or 400)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
