#!/usr/bin/env python
"""Write ``data/prompts/toy_prompts.json``: prompts of the synthetic world with ground truth.

120 prompts from a fixed seed, every attribute named (full caption templates): 100 whose
shape x colour pair was seen in training and 20 whose pair was held out of training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.toy import world as toyworld
from helpers.promptsets import PROMPT_DIR


def main(seed: int = 1234, n_seen: int = 100, n_held: int = 20) -> Path:
    rng = np.random.default_rng(seed)
    records = []
    for held, n in ((False, n_seen), (True, n_held)):
        for _ in range(n):
            scene = toyworld.sample_scene(rng, held_out="only" if held else "exclude")
            template = toyworld.FULL_TEMPLATES[rng.integers(len(toyworld.FULL_TEMPLATES))]
            named = {k: v for k, v in scene.attributes().items() if k != "background" or "{background}" in template}
            records.append({"prompt": toyworld.caption(scene, template=template), "attributes": named, "held_out": held})
    path = PROMPT_DIR / "toy_prompts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"description": "Synthetic-world prompts; attributes are those the prompt names (ground truth)", "seed": seed, "prompts": records}, indent=1))
    return path


if __name__ == "__main__":
    print(main())
