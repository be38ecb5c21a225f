#!/usr/bin/env python
"""Write ``data/models/tiny-shapes-sd/README.md`` from the training log and the quality report.

Run after ``scripts/train_tiny_model.py`` and ``scripts/evaluate_tiny_model.py``; every number
in the card is read from their output files, none is typed by hand.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.toy import model as tiny_model
from helpers.toy import world as toyworld
from helpers.toy.quality import to_markdown

ROOT = Path(__file__).resolve().parent.parent


def folder_size_mb(folder: Path) -> dict[str, float]:
    sizes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        sizes[sub.name] = round(sum(f.stat().st_size for f in sub.rglob("*") if f.is_file()) / 2**20, 2)
    return sizes


CLIP_OBJECTIVES = {
    "clip": ("the contrastive loss at the pooled real [EOS] only, as SD's CLIP text tower is trained: padding "
             "positions get no loss and word positions no target of their own (so nothing in training targets "
             "which positions the UNet later reads)"),
    "identity": ("the contrastive loss plus an identity head (training only, not exported): every non-padding "
                 "position ([SOS], words, the real [EOS]) predicts its own token id; no loss at padding "
                 "(a text-encoder control, not SD's objective)"),
    "eos_head": ("the contrastive loss plus two auxiliary heads (training only, not exported): each word token "
                 "predicts its own token id, and each [EOS]-class position ([EOS] and its padding) predicts the "
                 "attributes the caption names (model version 3; a control: this head builds notebook 04's "
                 "[EOS] result into the encoder, so it is never the default)"),
}


def clip_text(cfg: dict, log: dict) -> str:
    """The CLIP stage's objective and captions, from the run's own configuration (never typed by hand)."""
    objective = cfg.get("clip_objective", "eos_head")  # runs before the setting existed used the eos_head
    filler = float(cfg.get("caption_filler", 0) or 0)
    stage = log.get("stages", {}).get("clip", {})
    text = (f"CLIP ({cfg.get('clip_steps')} steps, batch {cfg.get('clip_batch')}): text-tower objective "
            f"`{objective}`: {CLIP_OBJECTIVES.get(objective, objective)}. Prompts are padded with [EOS] to 77 "
            "positions (SD 1.x). ")
    if filler > 0:
        text += (f"{filler:.0%} of the training captions (CLIP and UNet) are lengthened with filler words that name "
                 "no attribute (`helpers.toy.world.lengthen`), so that the real [EOS] lands anywhere up to position "
                 "76 and every position embedding is trained through caption lengths, as a large-scale CLIP's are. ")
    hard = float(cfg.get("clip_hard_negatives", 0) or 0)
    if hard > 0:
        text += (f"{hard:.0%} of each CLIP batch comes in hard-negative groups: up to 4 scenes equal in every "
                 "attribute but one (position 40% of the groups, shape 20%, colour and pattern 15% each, size 10%), "
                 "captioned with one full template, so the same contrastive loss can tell them apart only by that "
                 "attribute (a data choice, not an objective: random batches of 128 are told apart by colour and "
                 "shape long before position). ")
    if stage.get("final_loss") is not None:
        text += f"Final contrastive loss {stage['final_loss']:.3f}"
        if stage.get("final_aux_loss") is not None:
            text += f", auxiliary loss {stage['final_aux_loss']:.3f}"
        text += "."
    return text


def main() -> Path:
    model_dir = tiny_model.default_model_dir()
    log = json.loads((model_dir / "training_log.json").read_text())
    quality_path = ROOT / "results" / "model_quality.json"
    quality = json.loads(quality_path.read_text()) if quality_path.exists() else None
    from helpers.loading import describe, load_pipeline

    info = describe(load_pipeline())
    sizes = folder_size_mb(model_dir)
    stage_rows = "\n".join(f"| {name} | {s['seconds'] / 60:.1f} | "
                           + ", ".join(f"{k}={v}" for k, v in s.items() if k != "seconds") + " |"
                           for name, s in log["stages"].items())
    cfg = dict(log["config"])
    cfg["_stem"] = json.loads((model_dir / "clip" / "config.json").read_text()).get("vision_config", {}).get("conv_stem")
    card = f"""# tiny-shapes-sd: the embedded default model

A tiny text-to-image latent diffusion model packaged as a genuine diffusers
`StableDiffusionPipeline`, trained from nothing by `scripts/train_tiny_model.py` (seed {log['seed']})
on a synthetic world of captioned shapes. It exists so that every notebook of this repository
runs offline on a CPU in minutes; it is not a general image model.

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("data/models/tiny-shapes-sd")   # or helpers.load_pipeline()
image = pipe("a photo of a large red striped circle on the left", num_inference_steps=50).images[0]
```

## Architecture
| component | class | parameters |
|---|---|---|
""" + "\n".join(f"| {k} | {v_cls} | {info['parameters'].get(k, 0) / 1e6:.2f} M |" for k, v_cls in [
        ("text_encoder", "CLIPTextModel (hidden 128, 3 layers, causal, pooled at [EOS])"),
        ("vae", "AutoencoderKL (64x64x3 <-> 16x16x4, no attention)"),
        ("unet", "UNet2DConditionModel (32, 64, 128), cross-attention at 8x8, 4x4 and mid"),
    ]) + f"""
| tokenizer | CLIPTokenizer, one token per world word, byte fallback; [SOS] `<|startoftext|>`, [EOS] `<|endoftext|>`, padded with [EOS] to 77 | - |
| scheduler | DDIMScheduler, scaled-linear betas 0.00085-0.012 over 1000 steps, epsilon prediction | - |

Beside the pipeline: `clip/` is the whole contrastive `CLIPModel` (text tower = the pipeline's text
encoder, a ViT image tower, {"a stem of " + str(len(cfg["_stem"]) + 1) + " stride-2 3x3 convolutions (widths " + ", ".join(map(str, cfg["_stem"])) + ") to an 8x8 token grid" if cfg.get("_stem") else "linear 8-pixel patches"}; load it with `helpers.toy.model.load_clip`) with its `CLIPProcessor`: our offline CLIPScore model.
`evaluator/` is the attribute evaluator (a CNN trained on ground-truth renders only, no weights shared
with the generator). Files on disk (MB): {json.dumps(sizes)}; total {sum(sizes.values()):.1f} MB.

## Data
Procedural 64x64 renders (`helpers/toy/world.py`): one object on a plain background; shape
({', '.join(toyworld.SHAPES)}), colour ({', '.join(toyworld.COLORS)}), size (small, large), position
(left, right, top, bottom, center), surface pattern (plain, striped, dotted: a real high-frequency
detail), background (white, black, gray). Captions from {len(toyworld.FULL_TEMPLATES)} full and
{len(toyworld.SHORT_TEMPLATES)} short templates with filler words. {cfg['n_images']} training images;
the shape x colour pairs {sorted(toyworld.HELD_OUT_PAIRS)} ({len(toyworld.HELD_OUT_PAIRS)} of 48) never
appear in the training of the CLIP, the VAE or the UNet (the evaluator sees them).

## Training
Stages (`scripts/train_tiny_model.py`, resumable from checkpoints; every random draw comes from the seed
and the step number). Measured on: {log.get('device', 'cpu')}, {log.get('threads')} torch threads,
torch {log.get('torch')}, {platform.machine()}.

| stage | minutes | notes |
|---|---|---|
{stage_rows}

**Total: {log['total_seconds'] / 60:.1f} minutes.** Configuration: {json.dumps(cfg)}.
{clip_text(cfg, log)}
VAE: channels {tuple(cfg.get('vae_channels', (16, 32, 64)))}, L1 + MSE + colour (4x4 average) + image-gradient loss, KL
1e-6, the pixel terms weighted {1 + cfg.get('vae_edge_weight', 0):g}x near edges (outlines, corners and pattern marks:
a few percent of the pixels that carry shape and pattern; `vae_edge_weight` {cfg.get('vae_edge_weight', 0):g}); then a
decoder-only fine-tuning at full size ({cfg.get('decoder_steps', 0)} steps, same loss; the encoder, hence the latents,
unchanged).
UNet: AdamW lr 5e-4 with warm-up and cosine decay, EMA (decay up to 0.999), 10% empty-prompt dropout
(classifier-free guidance), batch {cfg['unet_batch']} for {cfg['unet_steps']} steps, low-frequency offset
noise {cfg.get('unet_offset_noise', 0)} in training (a per-channel constant plus a smooth 2x2 field added to
the noise, so that the prompt, not the initial noise, decides the background and the object's side;
sampling is the stock pipeline), and Min-SNR-gamma loss weights (Hang et al. 2023; gamma
{cfg.get('unet_min_snr_gamma', 0)}, 0 = plain MSE): the low-noise steps, which only sharpen details, weigh
less, so more of the gradient goes to the high-noise steps that decide shape, colour and position.

## Quality
"""
    if quality:
        card += ("Measured by `scripts/evaluate_tiny_model.py` with the attribute evaluator (DDIM, "
                 f"{quality['steps']} steps):\n\n" + to_markdown(quality))
    else:
        card += "Not measured yet: run `scripts/evaluate_tiny_model.py`.\n"
    repro = ROOT / "results" / "reproducibility"
    if (repro / "quality.md").exists():
        card += ("\n## Reproducibility: a fresh run of the training script\n"
                 "`scripts/compare_quality.py`: the shipped model and a fresh from-nothing run of "
                 "`scripts/train_tiny_model.py`, measured with the same (shipped) evaluator, prompts and seeds "
                 "(accuracy ± standard error):\n\n" + (repro / "quality.md").read_text())
    if (repro / "fresh_bar.json").exists():
        card += ("\nThe fresh run on the quality bar's own measurement (`scripts/evaluate_tiny_model.py "
                 "--model-id FRESH_MODEL`):\n\n" + to_markdown(json.loads((repro / "fresh_bar.json").read_text())))
    if (repro / "stages.md").exists():
        card += ("\n`scripts/compare_runs.py`: each stage's final checkpoint of the fresh run against the run "
                 "that made the shipped model:\n\n" + (repro / "stages.md").read_text())
    notes = model_dir / "TRAINING_NOTES.md"
    if notes.exists():
        card += "\n" + notes.read_text()
    objective = cfg.get("clip_objective", "eos_head")
    reproduce_flags = ("" if objective == "clip" else
                       "--set clip_objective=eos_head --set caption_filler=0 --set clip_steps=800 --set clip_hard_negatives=0 --set clip_image_stem=patch"
                       if objective == "eos_head" else f"--set clip_objective={objective}")
    total_min = f"about {sum(st['seconds'] for st in log['stages'].values()) / 60:.0f} minutes"
    card += f"""\n## Reproduce
```bash
python scripts/train_tiny_model.py {reproduce_flags}           # {total_min} on 2 CPU cores (this run's stages); uses CUDA when present
# or in pieces: `--stop-after vae` stops there, the same command without it goes on (checkpoints)
python scripts/probe_tiny_model.py --unet      # during training: quick probe of the UNet checkpoint's EMA weights
python scripts/evaluate_tiny_model.py         # writes results/model_quality.{{json,md}}
python scripts/write_model_card.py            # this file
```
Checking a retrained model against the shipped one: `scripts/evaluate_tiny_model.py --model-id FOLDER`
with a larger sample (`--n`, `--n-held`, `--seed`, `--stem`) for both models, then
`scripts/compare_quality.py` (their difference with standard errors) and `scripts/compare_runs.py`
(stage checkpoints, tensor by tensor).
"""
    path = model_dir / "README.md"
    path.write_text(card)
    return path


if __name__ == "__main__":
    print(main())
