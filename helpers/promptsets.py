"""Prompt sets in ``data/prompts/``: the toy world's (with ground truth) and natural-language ones.

>>> records = load_prompt_set("toy", n=10)
>>> records[0].prompt, records[0].attributes["shape"]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import resources

PROMPT_SETS = {"toy": "toy_prompts.json", "natural": "natural_prompts.json"}


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """One prompt and whatever ground truth the set knows about it."""

    prompt: str
    attributes: dict = dataclasses.field(default_factory=dict)
    held_out: bool = False
    tags: tuple[str, ...] = ()


def load_prompt_set(name: str = "toy", n: int | None = None, include_held_out: bool = True) -> list[PromptRecord]:
    """Read a prompt set by name (``"toy"`` or ``"natural"``) or by JSON path; first ``n`` records."""
    path = Path(PROMPT_SETS.get(name, name))
    if not path.is_absolute() and not path.exists():
        path = resources.prompt_dir() / path
    if not path.exists():
        raise FileNotFoundError(f"no prompt set {name!r} (looked for {path}); known sets: {sorted(PROMPT_SETS)}")
    raw = json.loads(path.read_text())
    records = [
        PromptRecord(prompt=r["prompt"], attributes=r.get("attributes", {}), held_out=r.get("held_out", False),
                     tags=tuple(r.get("tags", ())))
        for r in raw["prompts"]
    ]
    if not include_held_out:
        records = [r for r in records if not r.held_out]
    return records[:n] if n is not None else records


def default_prompt_set_name(model_id: str | None) -> str:
    """The toy set for the embedded model (and ``"random-tiny"``), the natural-language set for real models."""
    from .loading import uses_toy_world

    return "toy" if uses_toy_world(model_id) else "natural"


def __getattr__(name: str):
    """``PROMPT_DIR``: the prompt-set folder (:func:`helpers.resources.prompt_dir`), resolved when first read."""
    if name == "PROMPT_DIR":
        return resources.prompt_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
