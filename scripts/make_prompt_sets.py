#!/usr/bin/env python
"""Write ``data/prompts/toy_prompts.json``: prompts of the synthetic world with ground truth.

Two blocks of 120 prompts, each from its own fixed seed, every attribute named (full caption
templates): 100 whose shape x colour pair was seen in training and 20 whose pair was held out of
training. The first block (seed 1234) is the set of model versions 1-3's notebooks, unchanged, so
earlier numbers stay comparable; the second (seed 5678) brings the set to 240 prompts, enough for
the pre-registered rules' sample sizes (issue: verdict rules).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.toy import world as toyworld
from helpers.promptsets import PROMPT_DIR


def block(seed: int, n_seen: int = 100, n_held: int = 20) -> list[dict]:
    """``n_seen`` seen-pair then ``n_held`` held-out-pair prompt records from ``seed``."""
    rng = np.random.default_rng(seed)
    records = []
    for held, n in ((False, n_seen), (True, n_held)):
        for _ in range(n):
            scene = toyworld.sample_scene(rng, held_out="only" if held else "exclude")
            template = toyworld.FULL_TEMPLATES[rng.integers(len(toyworld.FULL_TEMPLATES))]
            named = {k: v for k, v in scene.attributes().items() if k != "background" or "{background}" in template}
            records.append({"prompt": toyworld.caption(scene, template=template), "attributes": named, "held_out": held})
    return records


def main(seeds: tuple[int, ...] = (1234, 5678), out: Path | None = None) -> Path:
    records = [r for seed in seeds for r in block(seed)]
    path = out or PROMPT_DIR / "toy_prompts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"description": "Synthetic-world prompts; attributes are those the prompt names (ground truth)",
                                "seed": seeds[0], "seeds": list(seeds), "prompts": records}, indent=1))
    return path


if __name__ == "__main__":
    print(main())
