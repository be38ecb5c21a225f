#!/usr/bin/env python
"""Write ``data/prompts/s_prompt_set.json``: the S-PromptSet of switched-[EOS] pairs (A, B).

Every prompt of the toy set (``load_prompt_set("toy")``, 120 prompts with ground truth)
is the source A of exactly one pair and the target B of exactly one other pair, and in
every pair A and B differ in object shape, colour and pattern (size, position and
background may or may not differ: ``differs`` lists every named attribute that does).
Pairs are in random order (fixed seed), so the first ``n`` pairs are a random subset.

Usage::

    python scripts/make_s_prompt_set.py            # -> data/prompts/s_prompt_set.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.promptsets import PROMPT_DIR, PromptRecord, load_prompt_set

MUST_DIFFER = ("shape", "color", "pattern")
FILE_NAME = "s_prompt_set.json"


def compatible(a: PromptRecord, b: PromptRecord) -> bool:
    """A and B may form a pair: every attribute of :data:`MUST_DIFFER` is named in both and differs."""
    return all(k in a.attributes and k in b.attributes and a.attributes[k] != b.attributes[k] for k in MUST_DIFFER)


def match(records: list[PromptRecord], rng: np.random.Generator, tries: int = 1000) -> list[int]:
    """A permutation ``target[i]`` with ``compatible(records[i], records[target[i]])`` for every i."""
    n = len(records)
    for _ in range(tries):
        target = list(rng.permutation(n))
        for _ in range(20 * n):  # repair conflicts by swapping with a random partner
            bad = [i for i in range(n) if not compatible(records[i], records[target[i]])]
            if not bad:
                return target
            i, j = bad[0], int(rng.integers(n))
            target[i], target[j] = target[j], target[i]
    raise RuntimeError("no pairing found; the prompt set is too uniform")


def record_dict(r: PromptRecord) -> dict:
    return {"prompt": r.prompt, "attributes": dict(r.attributes), "held_out": r.held_out}


def main(seed: int = 2024) -> Path:
    records = load_prompt_set("toy")
    rng = np.random.default_rng(seed)
    target = match(records, rng)
    order = rng.permutation(len(records))
    pairs = []
    for i in order:
        a, b = records[i], records[target[i]]
        differs = sorted(k for k in set(a.attributes) & set(b.attributes) if a.attributes[k] != b.attributes[k])
        pairs.append({"source": record_dict(a), "target": record_dict(b), "differs": differs})
    path = PROMPT_DIR / FILE_NAME
    path.write_text(json.dumps({
        "description": "S-PromptSet: pairs (A, B) of toy prompts whose shape, colour and pattern all differ; "
                       "the switched prompt keeps A's [SOS] + semantic tokens and takes B's [EOS] class",
        "seed": seed,
        "source_set": "toy",
        "must_differ": list(MUST_DIFFER),
        "pairs": pairs,
    }, indent=1))
    return path


if __name__ == "__main__":
    print(main())
