"""The quick/full run profile that every notebook and benchmark reads.

One switch: the environment variable ``T2I_PROFILE`` (``quick`` or ``full``) or the
papermill parameter ``PROFILE`` in a notebook's parameter cell, which wins when set.

* ``quick``: few prompts, few steps, for CI (every notebook in a minute or two on CPU).
* ``full``: the paper's settings (50 DDIM steps, guidance 7.5) on the whole prompt set.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

ENV_VAR = "T2I_PROFILE"
MODEL_ENV_VAR = "T2I_MODEL_ID"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Settings shared by the notebooks; each notebook may scale them further."""

    name: str
    num_inference_steps: int
    guidance_scale: float
    n_prompts: int
    n_seeds: int

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", num_inference_steps=10, guidance_scale=7.5, n_prompts=4, n_seeds=1),
    "full": Profile("full", num_inference_steps=50, guidance_scale=7.5, n_prompts=100, n_seeds=1),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile named ``name``, else ``$T2I_PROFILE``, else ``full``.

    Raises:
        ValueError: for a name other than ``quick`` or ``full``.
    """
    chosen = (name or os.environ.get(ENV_VAR) or "full").strip().lower()
    if chosen not in PROFILES:
        raise ValueError(f"unknown profile {chosen!r}: use 'quick' or 'full' (parameter PROFILE or ${ENV_VAR})")
    return PROFILES[chosen]


def count_setting(value: Any, name: str, default: int | None = None) -> int | None:
    """A notebook's size parameter (``N_PAIRS`` ...): a positive integer, or ``default`` when ``None``.

    Raises:
        ValueError: anything else (one sentence naming the parameter).
    """
    if value is None:
        return default
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return int(value)


def get_model_id(model_id: str | None = None) -> str | None:
    """The model id from the argument, else ``$T2I_MODEL_ID``; ``None`` means the embedded model."""
    chosen = model_id or os.environ.get(MODEL_ENV_VAR) or None
    return None if chosen in (None, "", "embedded", "default") else chosen
