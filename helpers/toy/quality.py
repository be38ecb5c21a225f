"""The embedded model's quality bar, measured with the attribute evaluator.

* captions of new scenes (seen shape x colour pairs), every attribute named, DDIM,
  guidance 7.5 and 1.0 -> attribute-evaluator accuracy per attribute;
* captions of held-out shape x colour pairs -> shape and colour accuracy;
* the evaluator itself on fresh clean and augmented (noised) renders;
* :func:`reconstruction_accuracy`: the evaluator on a VAE's reconstructions of renders, the
  ceiling a UNet trained in that VAE's latent space can reach.

Used by ``scripts/evaluate_tiny_model.py`` and notebook 00.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..analysis.metrics import Scorer
from ..generation import generate
from ..loading import load_pipeline
from . import world as toyworld
from .evaluator import accuracy, augment, to_tensor

BAR = {"shape": 0.95, "color": 0.90, "size": 0.90, "position": 0.90, "pattern": 0.70}
BAR_HELD_OUT = {"shape": 0.80, "color": 0.80}


def captions_for(n: int, seed: int, held_out: str) -> tuple[list[str], list[dict]]:
    """``n`` full captions of new scenes and the attributes each names."""
    rng = np.random.default_rng(seed)
    prompts, truths = [], []
    for i in range(n):
        scene = toyworld.sample_scene(rng, held_out=held_out)
        template = toyworld.FULL_TEMPLATES[i % len(toyworld.FULL_TEMPLATES)]
        prompts.append(toyworld.caption(scene, template=template))
        truths.append({k: v for k, v in scene.attributes().items() if k != "background" or "{background}" in template})
    return prompts, truths


def fresh_renders(n: int, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """``n`` ground-truth renders of new scenes (any shape x colour pair) and their attributes."""
    rng = np.random.default_rng(seed)
    scenes = [toyworld.sample_scene(rng, held_out="any") for _ in range(n)]
    return to_tensor(toyworld.render_batch(scenes)), [s.attributes() for s in scenes]


def evaluate(n: int = 200, n_held: int = 100, steps: int = 50, model_id: str | None = None, seed: int = 10_000,
             device: str | None = None, dtype: torch.dtype | None = None,
             evaluator_path: str | Path | None = None) -> dict:
    """Measure the quality bar (defaults: the model card's settings). Returns a JSON-able report.

    ``device``/``dtype`` go to :func:`~helpers.loading.load_pipeline` (default: CUDA + float16
    when there is a GPU, else CPU + float32). ``evaluator_path``: the attribute evaluator that
    reads the images (default: the shipped one, so that two models are measured with one ruler).
    """
    pipe = load_pipeline(model_id, device=device, dtype=dtype)
    scorer = Scorer(evaluator_path=evaluator_path)
    report: dict = {"n_prompts": n, "n_held_out_prompts": n_held, "steps": steps, "sampler": "DDIM", "seed": seed,
                    "model_id": str(model_id or "embedded"), "evaluator": str(scorer.evaluator_path)}
    t0 = time.time()
    prompts, truths = captions_for(n, seed, "exclude")
    for w in (7.5, 1.0):
        images = generate(pipe, prompts, seed=seed, num_inference_steps=steps, guidance_scale=w, batch_size=50)
        report[f"guidance_{w}"] = accuracy(scorer.attributes(images), truths, names=list(BAR))
    held_prompts, held_truths = captions_for(n_held, seed + 1, "only")
    images = generate(pipe, held_prompts, seed=seed + 1, num_inference_steps=steps, guidance_scale=7.5, batch_size=50)
    report["held_out_pairs_guidance_7.5"] = accuracy(scorer.attributes(images), held_truths, names=list(BAR))
    # the evaluator on ground truth: clean and with the generator's typical artefacts
    renders, truth = fresh_renders(max(200, n * 5), seed + 2)
    report["evaluator_clean"] = accuracy(scorer.attributes(renders), truth)
    noisy = augment(renders, torch.Generator().manual_seed(seed))
    report["evaluator_augmented"] = accuracy(scorer.attributes(noisy), truth)
    report["seconds"] = round(time.time() - t0, 1)
    report["bar"] = {"seen_pairs": BAR, "held_out_pairs": BAR_HELD_OUT, "evaluator": 0.98}
    report["passes"] = {
        "seen_pairs": all(report["guidance_7.5"][k] >= v for k, v in BAR.items()),
        "held_out_pairs": all(report["held_out_pairs_guidance_7.5"][k] >= v for k, v in BAR_HELD_OUT.items()),
        "guidance_1_lower": float(np.mean(list(report["guidance_1.0"].values())))
        < float(np.mean(list(report["guidance_7.5"].values()))),
        "evaluator": min(report["evaluator_clean"].values()) >= 0.98,
    }
    return report


def to_markdown(report: dict) -> str:
    """The report as two markdown tables."""
    names = list(BAR)
    rows = [
        ("seen pairs, guidance 7.5", report["guidance_7.5"]),
        ("seen pairs, guidance 1.0", report["guidance_1.0"]),
        ("held-out shape x colour pairs, guidance 7.5", report["held_out_pairs_guidance_7.5"]),
        ("bar (seen pairs)", BAR),
        ("bar (held-out pairs)", BAR_HELD_OUT),
    ]
    lines = ["| images | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, acc in rows:
        lines.append(f"| {label} | " + " | ".join(f"{acc[k]:.1%}" if k in acc else "-" for k in names) + " |")
    ev = ["| evaluator on renders | " + " | ".join(names + ["background"]) + " |", "|---|" + "---|" * (len(names) + 1)]
    for label in ("evaluator_clean", "evaluator_augmented"):
        ev.append(f"| {label.split('_')[1]} | " + " | ".join(f"{report[label][k]:.1%}" for k in names + ["background"]) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(ev) + (
        f"\n\n{report['n_prompts']} prompts of seen pairs and {report['n_held_out_prompts']} of held-out pairs, "
        f"{report['steps']} {report['sampler']} steps; passes: {report['passes']}\n"
    )


CONDITIONS = {
    "seen pairs, guidance 7.5": ("guidance_7.5", "n_prompts"),
    "seen pairs, guidance 1.0": ("guidance_1.0", "n_prompts"),
    "held-out pairs, guidance 7.5": ("held_out_pairs_guidance_7.5", "n_held_out_prompts"),
}


def standard_error(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` independent images."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def compare_markdown(reports: Mapping[str, dict]) -> str:
    """Reports of :func:`evaluate` side by side (e.g. the shipped model and a fresh retraining).

    One row per condition and attribute: each accuracy with its standard error; with exactly two
    reports also their difference (second minus first) with the standard error of a difference of
    independent measurements (conservative when both models saw the same prompts and noise), and
    whether it exceeds two of those. Then each report's bar verdicts.
    """
    labels = list(reports)
    pair = len(labels) == 2
    head = "| images | attribute | " + " | ".join(labels) + (" | difference | beyond 2 SE? |" if pair else "")
    lines = [head, "|---|---|" + "---|" * (len(labels) + 2 * pair)]
    for condition, (key, n_key) in CONDITIONS.items():
        for name in BAR:
            cells, values = [], []
            for label in labels:
                rep = reports[label]
                p, se = rep[key][name], standard_error(rep[key][name], rep[n_key])
                cells.append(f"{p:.1%} ± {se:.1%}")
                values.append((p, se))
            row = f"| {condition} | {name} | " + " | ".join(cells)
            if pair:
                (p0, se0), (p1, se1) = values
                diff, se = p1 - p0, math.hypot(se0, se1)
                row += f" | {100 * diff:+.1f} ± {100 * se:.1f} pts | {'yes' if abs(diff) > 2 * se else 'no'}"
            lines.append(row + " |")
    lines.append("")
    for label in labels:
        rep = reports[label]
        lines.append(f"- {label}: {rep['n_prompts']} + {rep['n_held_out_prompts']} prompts, seed {rep.get('seed', '?')}, "
                     f"{rep['steps']} {rep['sampler']} steps; passes: {rep['passes']}")
    return "\n".join(lines) + "\n"


def reconstruction_accuracy(vae, n: int = 400, seed: int = 10_003, batch_size: int = 100) -> dict:
    """The attribute evaluator on ``vae``'s encode -> mode -> decode of ``n`` fresh renders.

    Returns ``{"renders": acc, "reconstructions": acc, "psnr_db": float}``: if the evaluator cannot
    read an attribute off the reconstructions, no UNet trained in this latent space can draw it.
    """
    renders, truth = fresh_renders(n, seed)
    device = next(vae.parameters()).device
    with torch.no_grad():
        recs = torch.cat([vae.decode(vae.encode(x.to(device) * 2 - 1).latent_dist.mode()).sample.float().cpu()
                          for x in renders.split(batch_size)]).clamp(-1, 1) / 2 + 0.5
    scorer = Scorer()
    return {"renders": accuracy(scorer.attributes(renders), truth),
            "reconstructions": accuracy(scorer.attributes(recs), truth),
            "psnr_db": float(10 * torch.log10(1 / torch.mean((recs - renders) ** 2)))}
