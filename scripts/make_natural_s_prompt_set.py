#!/usr/bin/env python
"""Write ``data/prompts/natural_s_prompt_set.json``: a natural-language S-PromptSet for real SD models.

The paper's example pair is A = "a leather chair" (source: its [SOS] and semantic tokens are kept)
and B = "a painting" (target: it gives its [EOS] class); the switched prompt draws B's object, with
A's "leather". Here every pair is built the same way from the word lists below:

* A names one object with a modifier of its own kind (material, colour, age, ...): "a leather chair";
* B names one object of another category (so the objects differ in kind, not just in name), bare
  in half the pairs ("a painting"), with its own modifier in the other half;
* each prompt is a bare noun phrase or a short photographic template around it;
* no word of A's object appears in B's prompt and vice versa.

Objects are single words (so ``TokenClasses.positions_of(object)`` finds them). ``attributes`` follow
``natural_prompts.json``: ``objects`` (the nouns as written), ``modifiers`` (object -> its modifier
words), plus ``category``; ``differs`` lists every attribute whose values differ (always ``objects``).
Every prompt is checked against the real SD 1.x and 2.x tokenizers (``helpers.text.sd_tokenizer``):
at most 77 tokens and its object found by ``positions_of``. Deterministic (seeded); pairs are in random
order, so the first ``n`` pairs are a random subset. No torch is imported.

Usage::

    python scripts/make_natural_s_prompt_set.py            # -> data/prompts/natural_s_prompt_set.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers import resources  # noqa: E402
from helpers.text.sd_tokenizer import sd_tokenizer  # noqa: E402
from helpers.text.tokens import token_classes  # noqa: E402

FILE_NAME = "natural_s_prompt_set.json"
N_PAIRS = 120  # as many as the toy S-PromptSet
SEED = 2024

#: Category -> (single-word objects, modifiers that fit every object of the category).
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "furniture": (("chair", "sofa", "bed", "desk", "stool", "bench", "cabinet", "armchair"),
                  ("leather", "wooden", "velvet", "metal", "wicker", "antique", "red", "white")),
    "decor": (("painting", "vase", "clock", "mirror", "sculpture", "candle", "lantern", "globe"),
              ("golden", "ceramic", "marble", "glass", "old", "blue", "small", "large")),
    "animal": (("dog", "cat", "horse", "rabbit", "owl", "fox", "elephant", "parrot", "tiger", "sheep"),
               ("fluffy", "brown", "white", "black", "spotted", "small", "sleeping", "young")),
    "vehicle": (("car", "bicycle", "truck", "boat", "train", "bus", "motorcycle", "airplane"),
                ("red", "yellow", "vintage", "rusty", "blue", "silver", "old", "green")),
    "food": (("apple", "cake", "pizza", "burger", "donut", "pumpkin", "sandwich", "pie"),
             ("fresh", "delicious", "large", "small", "homemade", "tasty")),
    "building": (("house", "castle", "lighthouse", "church", "cottage", "tower", "barn", "windmill"),
                 ("stone", "wooden", "old", "white", "red", "abandoned", "small", "tall")),
    "instrument": (("guitar", "piano", "violin", "drum", "trumpet", "harp", "accordion", "cello"),
                   ("wooden", "old", "black", "red", "golden", "shiny", "antique", "white")),
    "kitchenware": (("teapot", "cup", "bowl", "kettle", "bottle", "jar", "mug", "pitcher"),
                    ("ceramic", "glass", "metal", "white", "blue", "porcelain", "copper", "green")),
    "accessory": (("umbrella", "backpack", "hat", "boot", "handbag", "suitcase", "scarf", "watch"),
                  ("red", "yellow", "black", "blue", "old", "vintage", "striped", "brown")),
}
#: Templates around the noun phrase ``{np}`` ("a leather chair"); no template word is an object word.
TEMPLATES = (
    "{np}",
    "{np}",
    "a photo of {np}",
    "a picture of {np}",
    "a detailed photo of {np}",
    "{np} at sunset",
    "{np} on a white background",
    "a photograph of {np} in soft light",
)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(obj: str, modifier: str | None) -> str:
    words = f"{modifier} {obj}" if modifier else obj
    return f"{article(words)} {words}"


def template_for(rng: np.random.Generator, modifier: str | None) -> str:
    """A random template that does not repeat the modifier ("a white cup on a white background")."""
    fitting = [t for t in TEMPLATES if modifier not in t.split()]
    return str(fitting[int(rng.integers(len(fitting)))])


def record(obj: str, category: str, modifier: str | None, template: str) -> dict:
    return {
        "prompt": template.format(np=noun_phrase(obj, modifier)),
        "attributes": {"objects": [obj], "modifiers": {obj: [modifier]} if modifier else {}, "category": category},
    }


def make_pairs(seed: int = SEED, n: int = N_PAIRS) -> list[dict]:
    """``n`` pairs (A, B): A an object with a modifier, B an object of another category (bare in half)."""
    rng = np.random.default_rng(seed)
    objects = [(obj, cat) for cat, (objs, _) in CATEGORIES.items() for obj in objs]
    sources = []
    while len(sources) < n:  # every object is a source about equally often
        sources += [objects[i] for i in rng.permutation(len(objects))]
    sources = sources[:n]
    used_as_target = {obj: 0 for obj, _ in objects}
    bare = rng.permutation([True] * (n // 2) + [False] * (n - n // 2))
    pairs, seen = [], set()
    for (a_obj, a_cat), b_bare in zip(sources, bare):
        while True:
            a_mod = str(rng.choice(CATEGORIES[a_cat][1]))
            a = record(a_obj, a_cat, a_mod, template_for(rng, a_mod))
            if a["prompt"] not in seen:
                break
        candidates = [(o, c) for o, c in objects if c != a_cat and o not in a["prompt"].split()]
        fewest = min(used_as_target[o] for o, _ in candidates)  # balance the targets
        least = [oc for oc in candidates if used_as_target[oc[0]] == fewest]
        b_obj, b_cat = least[int(rng.integers(len(least)))]
        while True:
            b_mod = None if b_bare else str(rng.choice([m for m in CATEGORIES[b_cat][1] if m != a_obj]))
            b = record(b_obj, b_cat, b_mod, template_for(rng, b_mod))
            if a_obj not in b["prompt"].split() and b["prompt"] not in seen:
                break
        used_as_target[b_obj] += 1
        seen.update((a["prompt"], b["prompt"]))
        differs = sorted(k for k in a["attributes"] if a["attributes"][k] != b["attributes"][k])
        pairs.append({"source": a, "target": b, "differs": differs})
    return pairs


def check(pairs: list[dict]) -> None:
    """Every prompt fits the real SD 1.x and 2.x tokenizers and its object words are found in it."""
    for version in ("1.x", "2.x"):
        tokenizer = sd_tokenizer(version)
        for pair in pairs:
            for side in ("source", "target"):
                r = pair[side]
                classes = token_classes(tokenizer, r["prompt"])  # raises PromptTooLongError
                for obj in r["attributes"]["objects"]:
                    classes.positions_of(obj)  # raises ValueError


def main(seed: int = SEED) -> Path:
    pairs = make_pairs(seed)
    check(pairs)
    path = resources.prompt_dir() / FILE_NAME
    path.write_text(json.dumps({
        "description": "Natural S-PromptSet: pairs (A, B) of natural-language prompts whose objects differ "
                       "(A: an object with a modifier, e.g. 'a leather chair'; B: an object of another category, "
                       "bare in half the pairs, e.g. 'a painting'); the switched prompt keeps A's [SOS] + semantic "
                       "tokens and takes B's [EOS] class. Made by scripts/make_natural_s_prompt_set.py; every "
                       "prompt fits 77 tokens of the real SD 1.x / 2.x CLIP tokenizers.",
        "seed": seed,
        "source_set": "natural",
        "must_differ": ["objects"],
        "pairs": pairs,
    }, indent=1) + "\n")
    return path


if __name__ == "__main__":
    print(main())
