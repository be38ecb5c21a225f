"""Why the denoiser reads the tokens it reads: diagnostics of the text encoder's output by token class.

Large pre-norm transformers put massive activations on the first token, which then acts as an
attention sink (SD 1.4 puts 0.9-0.99 of its cross-attention mass on [SOS]). These measure, per
class ([SOS], words, [EOS], padding):

* :func:`class_norms` -- the norm of each position's embedding (the text encoder's last hidden
  state, as the denoiser reads it) and of its cross-attention key (every cross-attention layer's
  ``to_k``, mean over layers), and the cosine of each padding state to the prompt's real [EOS];
* :func:`probe_accuracy` -- a linear probe (ridge-regularised least squares on one-hot labels,
  fitted on one half of the prompts, scored on the other) of the prompts' attributes from the
  embeddings of one class: which positions *carry* the caption, whether or not they are read.

>>> class_norms(pipe, prompts)                    # one row per class: norms and padding cosine
>>> probe_accuracy(pipe, records, "shape")        # accuracy per class
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..hooks.processors import cross_attention_layers
from ..loading import denoiser
from ..text.conditioning import encode

CLASSES = ("sos", "semantic", "eos", "padding")


def _class_positions(encoded) -> dict[str, list[int]]:
    eos = list(encoded.eos_class[:1])
    return {"sos": list(encoded.sos), "semantic": list(encoded.semantic), "eos": eos,
            "padding": list(encoded.eos_class[1:])}


@torch.no_grad()
def class_norms(pipe, prompts: Sequence[str]) -> pd.DataFrame:
    """Mean (and s.d. over prompts) embedding norm, key norm and padding-to-[EOS] cosine by token class."""
    model = denoiser(pipe)
    keys = [model.get_submodule(name).to_k for name in cross_attention_layers(model)]
    rows = []
    for prompt in prompts:
        enc = encode(pipe, prompt)
        states = enc.embeds.float()
        key_norm = torch.stack([k(enc.embeds.to(k.weight.dtype)).float().norm(dim=-1) for k in keys]).mean(0)
        positions = _class_positions(enc)
        eos_state = states[positions["eos"][0]]
        for name, pos in positions.items():
            if not pos:
                continue
            cos = torch.nn.functional.cosine_similarity(states[pos], eos_state[None], dim=-1)
            rows.append({"prompt": prompt, "class": name, "embedding_norm": float(states[pos].norm(dim=-1).mean()),
                         "key_norm": float(key_norm[pos].mean()), "cosine_to_eos": float(cos.mean())})
    table = pd.DataFrame(rows)
    summary = table.groupby("class")[["embedding_norm", "key_norm", "cosine_to_eos"]].agg(["mean", "std"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    summary["n_prompts"] = table.groupby("class").size()
    return summary.reindex([c for c in CLASSES if c in summary.index])


def _fit_ridge(x: np.ndarray, y: np.ndarray, n_classes: int, alpha: float) -> np.ndarray:
    x1 = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(n_classes)[y]
    return np.linalg.solve(x1.T @ x1 + alpha * np.eye(x1.shape[1]), x1.T @ onehot)


@torch.no_grad()
def probe_accuracy(pipe, records: Sequence, attribute: str, alpha: float = 1.0, seed: int = 0,
                   score_records: Sequence | None = None) -> dict[str, float]:
    """Held-out accuracy of a linear probe of ``attribute`` from the mean embedding of each token class.

    ``records`` are prompt records naming ``attribute`` (toy prompt sets); half of them (a seeded
    split) fit the probe, the other half score it. With ``score_records`` all of ``records`` fit it and
    ``score_records`` score it (e.g. fit on seen shape x colour pairs, score on held-out pairs).
    Chance is 1 / (number of values).
    """
    records = [r for r in records if attribute in getattr(r, "attributes", {})]
    scored = None if score_records is None else [r for r in score_records if attribute in getattr(r, "attributes", {})]
    if len(records) < 8:
        raise ValueError(f"a probe of {attribute!r} needs at least 8 prompts that name it, got {len(records)}")
    if scored is not None and not scored:
        raise ValueError(f"score_records has no prompt that names {attribute!r}")
    everything = records + (scored or [])
    values = sorted({r.attributes[attribute] for r in everything})
    labels = np.array([values.index(r.attributes[attribute]) for r in everything])
    features: dict[str, list[np.ndarray]] = {c: [] for c in CLASSES}
    for record in everything:
        enc = encode(pipe, record.prompt)
        for name, pos in _class_positions(enc).items():
            features[name].append(enc.embeds[pos].float().mean(0).cpu().numpy() if pos else None)
    if scored is None:
        order = np.random.default_rng(seed).permutation(len(records))
        fit, score = order[: len(order) // 2], order[len(order) // 2:]
    else:
        fit, score = np.arange(len(records)), np.arange(len(records), len(everything))
    out = {}
    for name, feats in features.items():
        if any(f is None for f in feats):
            continue
        x = np.stack(feats)
        mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
        w = _fit_ridge((x[fit] - mean) / std, labels[fit], len(values), alpha)
        pred = (np.hstack([(x[score] - mean) / std, np.ones((len(score), 1))]) @ w).argmax(1)
        out[name] = float((pred == labels[score]).mean())
    out["chance"] = 1.0 / len(values)
    return out
