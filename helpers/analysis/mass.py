"""Attention mass by token class, and token / word maps (from an attention recorder's tensors).

>>> class_mass(rec.token_mass()[:, 0], pipeline_token_classes(pipe, prompt))   # per class, per step
>>> class_mass_table(rec, prompts)                                             # long pandas table
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..hooks.processors import AttentionRecordError
from ..text.tokens import TokenClasses, pipeline_token_classes

if TYPE_CHECKING:
    from ..hooks.attention import AttentionRecorder

Size = tuple[int, int]
#: Token classes reported by :func:`class_mass` (``eos_class`` = real [EOS] + padding, the paper's [EOS]).
MASS_CLASSES = ("sos", "semantic", "eos_class", "eos", "padding")


def class_mass(mass: torch.Tensor | np.ndarray, classes: TokenClasses) -> dict[str, np.ndarray]:
    """Sum a ``(..., tokens)`` mass over the positions of each class of :data:`MASS_CLASSES`."""
    mass = np.asarray(mass, dtype=np.float64)
    if mass.shape[-1] != classes.max_length:
        raise AttentionRecordError(f"mass has {mass.shape[-1]} tokens but the prompt is padded to {classes.max_length}")
    groups = {"sos": classes.sos, "semantic": classes.semantic, "eos_class": classes.eos_class,
              "eos": classes.eos, "padding": classes.padding}
    return {name: mass[..., list(pos)].sum(-1) if pos else np.zeros(mass.shape[:-1]) for name, pos in groups.items()}


def class_mass_table(rec: AttentionRecorder, prompts: Sequence[str], resolution: int | Size | None = None):
    """Long table (pandas) of attention mass per sample, step and token class.

    Columns: ``sample, prompt, step, timestep, class, mass``; ``prompts[i]`` is sample ``i``.
    ``resolution`` restricts the mass to the layers of one map size (default: all recorded).
    """
    import pandas as pd

    mass = rec.token_mass(resolution).numpy()
    if mass.shape[1] != len(prompts):
        raise AttentionRecordError(f"{mass.shape[1]} samples were recorded but {len(prompts)} prompts were given")
    timesteps = rec.timesteps
    rows = []
    for i, prompt in enumerate(prompts):
        per_class = class_mass(mass[:, i], pipeline_token_classes(rec.pipe, prompt))
        for name, values in per_class.items():
            rows += [(i, prompt, s, timesteps[s], name, float(v)) for s, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["sample", "prompt", "step", "timestep", "class", "mass"])


def token_map(maps: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """The map of a word: sum over its token positions of ``maps[..., tokens, h, w]``."""
    if not positions:
        raise AttentionRecordError("a word needs at least one token position")
    return maps[..., list(positions), :, :].float().sum(dim=-3)


def word_maps(maps: torch.Tensor, classes: TokenClasses) -> dict[str, torch.Tensor]:
    """Label -> map for one sample's ``(tokens, h, w)`` maps: ``[SOS]``, each word, ``[EOS]``, mean padding."""
    out = {"[SOS]": maps[classes.sos[0]].float()} if classes.has_sos else {}
    for word, positions in classes.words():
        out.setdefault(word, token_map(maps, positions))
    out["[EOS]"] = maps[classes.eos[0]].float()
    if classes.padding:
        out["padding (mean)"] = maps[list(classes.padding)].float().mean(dim=0)
    return out
