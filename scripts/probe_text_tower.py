#!/usr/bin/env python
"""Probe a CLIP stage's text tower before spending the UNet stage on it (about a minute on 2 cores).

Reads the ``clip/`` CLIPModel and ``tokenizer/`` of a training work directory
(``scripts/train_tiny_model.py --stop-after clip``) and writes, to ``--out`` (JSON):

* ``probes``: held-out accuracy of a linear probe of shape, colour and position from each token
  class ([SOS], words, [EOS], padding) on ``--n`` random full captions (half fit, half scored;
  ``helpers.analysis.encoder.probe_accuracy``, the probe of notebook 03 and the model card);
* ``retrieval``: zero-shot accuracy of the CLIP pair itself on held-out renders, choosing among
  captions that differ in one attribute only (chance 1 / number of values): whether the
  contrastive stage learned the attribute at all, on the image side as well as the text side;
* ``held_out_transfer``: the probe fit on seen shape x colour pairs and scored on held-out pairs
  (does the tower factorise shape and colour, as held-out prompts need); ``retrieval_held_out_pairs``:
  the retrieval on renders of held-out pairs only.

Usage::

    python scripts/probe_text_tower.py --work-dir .cache/v4b --out results/model_v4/probe_clip_stage.json
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import loading  # noqa: E402
from helpers.analysis import encoder  # noqa: E402
from helpers.toy import world  # noqa: E402

ATTRS = ("shape", "color", "position", "size", "pattern")


def records(n: int, seed: int, held_out: str = "exclude") -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = world.sample_scene(rng, held_out=held_out)
        text = world.caption(scene, template=world.FULL_TEMPLATES[rng.integers(len(world.FULL_TEMPLATES))])
        out.append(types.SimpleNamespace(prompt=text, attributes=world.named_attributes(text)))
    return out


@torch.no_grad()
def retrieval(model, tokenizer, n: int, seed: int, held_out: str = "any") -> dict[str, float]:
    """Zero-shot accuracy of choosing the true value of each attribute among captions differing only in it."""
    rng = np.random.default_rng(seed + 1)
    scenes = [world.sample_scene(rng, held_out=held_out) for _ in range(n)]
    pixels = (torch.from_numpy(world.render_batch(scenes)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    image = model.get_image_features(pixel_values=pixels)
    image = getattr(image, "pooler_output", image)
    image = image / image.norm(dim=-1, keepdim=True)
    out = {}
    for attr in ATTRS:
        hits = []
        for k, scene in enumerate(scenes):
            values = world.ATTRIBUTES[attr]
            texts = [world.caption(world.Scene(**{**scene.__dict__, attr: v}), template=world.FULL_TEMPLATES[0]) for v in values]
            ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            text = model.get_text_features(input_ids=ids)
            text = getattr(text, "pooler_output", text)
            text = text / text.norm(dim=-1, keepdim=True)
            hits.append(int((text @ image[k]).argmax()) == values.index(getattr(scene, attr)))
        out[attr] = float(np.mean(hits))
        out[f"{attr}_chance"] = 1.0 / len(world.ATTRIBUTES[attr])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import CLIPTokenizer

    from helpers.toy import model as tm

    model = tm.load_clip(args.work_dir / "clip").eval()
    tokenizer = CLIPTokenizer.from_pretrained(args.work_dir / "tokenizer")
    pipe = loading.load_pipeline(None)  # the shipped pipeline, its text side replaced
    pipe.text_encoder, pipe.tokenizer = model.text_model.eval(), tokenizer  # transformers 5: a CLIPTextModel, as export uses
    recs = records(args.n, args.seed)
    probes = {a: encoder.probe_accuracy(pipe, recs, a, seed=args.seed) for a in ("shape", "color", "position")}
    held = records(args.n // 2, args.seed + 2, held_out="only")
    # fit on seen shape x colour pairs, scored on held-out pairs: does the tower factorise them?
    transfer = {a: encoder.probe_accuracy(pipe, recs, a, score_records=held) for a in ("shape", "color")}
    result = {"work_dir": str(args.work_dir), "n": args.n, "probes": probes,
              "held_out_transfer": transfer,
              "retrieval": retrieval(model, tokenizer, 200, args.seed),
              "retrieval_held_out_pairs": retrieval(model, tokenizer, 200, args.seed, held_out="only")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
