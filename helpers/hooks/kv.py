"""Feed different text embeddings to the keys and to the values of cross-attention.

Cross-attention computes ``softmax(Q K^T / sqrt(d)) V`` with ``K = W_k c`` and ``V = W_v c``
from the same text embeddings ``c``. :class:`KVSubstitutionProcessor` (a diffusers
attention processor) takes ``K`` and/or ``V`` from other embeddings, so a switched [EOS]
can be shown to the keys only (it can only move *where* the image attends), to the
values only (it can only change *what* is read), or to both::

    a, s = encode(pipe, prompt_a), switch_eos(encode(pipe, prompt_a), encode(pipe, prompt_b))
    with kv_substitution(pipe, keys=[s]) as sub:          # K from the switched prompt, V from A
        image = pipe(**pipeline_inputs(pipe, [a]), ...)
    images, kl = generate_substituted(pipe, [a], keys=[s], seed=0, measure_kl=True)

Batches: under classifier-free guidance the denoiser sees ``cat([negative, positive])``;
the substitute embeddings replace the *positive* half only. With ``keys`` equal to the
pipeline's own embeddings the output is bit-identical to the stock processor's.

:class:`AttentionKL` measures, on the positive half, how much substituting the keys
changes the attention distribution over tokens (``KL(p_orig || p_subst)`` per query),
against how far that distribution is from uniform (``KL(p_orig || uniform)``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..loading import denoiser, family
from ..text.conditioning import EmbeddingShapeError, EncodedPrompt, embedding_dim
from ..text.surgery import generate_batches
from .processors import CrossAttnProcessor, installed_processors

__all__ = ["KVSubstitutionProcessor", "AttentionKL", "kv_substitution", "generate_substituted"]


class AttentionKL:
    """Running means of KL divergences between cross-attention distributions over tokens.

    Per query position, head, layer and step (positive branch only):

    * ``kl_substituted``: KL(p_orig || p_subst), p computed with the original / substituted keys;
    * ``kl_uniform``: KL(p_orig || uniform over the attended tokens);
    * ``kl_uniform_substituted``: KL(p_subst || uniform).
    """

    KEYS = ("kl_substituted", "kl_uniform", "kl_uniform_substituted")

    def __init__(self, log: list | None = None) -> None:
        self.sums = {k: 0.0 for k in self.KEYS}
        self.count = 0
        self.per_layer: dict[str, dict[str, float]] = {}
        self.log = log  # when a list: every add() is appended to it, for replay() (resumable sweeps)

    def update(self, layer: str, logits_orig: torch.Tensor, logits_sub: torch.Tensor, valid: torch.Tensor) -> None:
        """Add ``(..., queries, tokens)`` attention logits; ``valid`` marks attended tokens."""
        values = self.values(logits_orig, logits_sub, valid)
        self.add(layer, [float(values[k].sum()) for k in self.KEYS], values["kl_substituted"].numel())

    @staticmethod
    def values(logits_orig: torch.Tensor, logits_sub: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three KLs of :attr:`KEYS` per query ``(..., queries)``; ``valid`` marks attended tokens."""
        logp = torch.log_softmax(logits_orig.float(), dim=-1)
        logq = torch.log_softmax(logits_sub.float(), dim=-1)
        p, q = logp.exp(), logq.exp()
        n_valid = valid.float().sum(-1, keepdim=True).clamp(min=1)
        log_u = -torch.log(n_valid)
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        return {
            "kl_substituted": torch.where(p > 0, p * (logp - logq), zero).sum(-1),
            "kl_uniform": torch.where(p > 0, p * (logp - log_u), zero).sum(-1),
            "kl_uniform_substituted": torch.where(q > 0, q * (logq - log_u), zero).sum(-1),
        }

    def add(self, layer: str, sums: Sequence[float], n: int) -> None:
        """Add the sums (in :attr:`KEYS` order) of ``n`` values of one layer to the running sums."""
        if self.log is not None:
            self.log.append([layer, list(sums), n])
        layer_sums = self.per_layer.setdefault(layer, {k: 0.0 for k in self.KEYS} | {"count": 0})
        for k, s in zip(self.KEYS, sums):
            self.sums[k] += s
            layer_sums[k] += s
        self.count += n
        layer_sums["count"] += n

    def replay(self, log: Sequence) -> None:
        """Apply a recorded :attr:`log`: the same additions in the same order give the same sums, bit for bit."""
        for layer, sums, n in log:
            self.add(layer, sums, n)

    def result(self) -> dict[str, float]:
        """Mean of each KL over every query, head, layer and step seen (NaN if none)."""
        return {k: (self.sums[k] / self.count if self.count else math.nan) for k in self.KEYS}

    def layer_table(self):
        """Per-layer means as a pandas DataFrame (one row per cross-attention layer)."""
        import pandas as pd

        rows = {name: {k: s[k] / max(s["count"], 1) for k in self.KEYS} for name, s in self.per_layer.items()}
        return pd.DataFrame.from_dict(rows, orient="index")


class KVSubstitutionProcessor(CrossAttnProcessor):
    """A :class:`~helpers.hooks.processors.CrossAttnProcessor` whose keys and values read other text states.

    The output uses the same operations as diffusers' ``AttnProcessor2_0`` (bit-identical
    when the substitutes equal the pipeline's own states). Attention recording keeps
    working: :func:`helpers.hooks.attention.record_attention` inside :func:`kv_substitution`
    records the attention under the substituted keys.

    Args:
        name: layer name (as in ``attn_processors``, without ``.processor``).
        keys: text states for the keys of the positive branch, ``(n, length, width)`` in the
            width this layer receives; ``None`` keeps the pipeline's own.
        values: the same for the values.
        kl: an :class:`AttentionKL` fed with the attention logits computed with the original
            and with the substituted keys (only when ``keys`` is given).
        recorder: an attention recorder (see :class:`~helpers.hooks.processors.CrossAttnProcessor`).
    """

    def __init__(self, name: str = "", keys: torch.Tensor | None = None, values: torch.Tensor | None = None,
                 kl: AttentionKL | None = None, recorder=None) -> None:
        self.keys, self.values, self.kl = keys, values, kl
        self._original: tuple | None = None
        super().__init__(name, recorder)

    @property
    def recorder(self):
        """The attention recorder, teed with the KL measurement when one is active."""
        return self._tee if self._tee is not None else self._recorder

    @recorder.setter
    def recorder(self, value) -> None:
        self._recorder = value
        self._tee = _KLTee(self, value) if self.kl is not None and self.keys is not None else None

    def key_value_inputs(self, attn, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values from the substitutes (positive half under CFG), else the prompt's states."""
        self._original = (attn, encoder_hidden_states)
        return (_substitute(attn, encoder_hidden_states, self.keys),
                _substitute(attn, encoder_hidden_states, self.values))

    @torch.no_grad()
    def measure(self, query: torch.Tensor, key_sub: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Attention logits with the original and the substituted keys (positive rows) -> ``self.kl``."""
        attn, states = self._original
        n = self.keys.shape[0]
        b, heads, _, head_dim = query.shape
        key_orig = attn.to_k(states[-n:]).view(n, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key_orig = attn.norm_k(key_orig)
        scale = head_dim ** -0.5  # scaled_dot_product_attention's default, as in the forward pass
        q = query[-n:].float()
        logits_orig = q @ key_orig.float().transpose(-1, -2) * scale
        logits_sub = q @ key_sub[-n:].float().transpose(-1, -2) * scale
        valid = torch.ones(logits_orig.shape[-1], dtype=torch.bool, device=q.device)
        if mask is not None:
            m = mask[-n:].float()
            logits_orig, logits_sub = logits_orig + m, logits_sub + m
            valid = m > -1000  # masked tokens carry a large negative bias
        self.kl.update(self.name, logits_orig, logits_sub, valid.expand_as(logits_orig))


class _KLTee:
    """Recorder interface that feeds the KL measurement and forwards to a real recorder."""

    def __init__(self, proc: KVSubstitutionProcessor, inner) -> None:
        self.proc, self.inner = proc, inner

    def wants(self, name: str, length: int) -> bool:
        self._inner_wants = self.inner is not None and self.inner.wants(name, length)
        return True  # the KL measurement wants every layer

    def record(self, name: str, query, key, attention_mask) -> None:
        self.proc.measure(query, key, attention_mask)
        if self._inner_wants:
            self.inner.record(name, query, key, attention_mask)


def _substitute(attn, states: torch.Tensor, alt: torch.Tensor | None) -> torch.Tensor:
    """``alt`` in place of ``states`` (only the positive half of a CFG batch), normalised like them."""
    if alt is None:
        return states
    b, n = states.shape[0], alt.shape[0]
    if alt.shape[1:] != states.shape[1:]:
        raise EmbeddingShapeError(
            f"substitute text states {tuple(alt.shape[1:])} do not match the layer's {tuple(states.shape[1:])}"
        )
    alt = alt.to(device=states.device, dtype=states.dtype)
    if attn.norm_cross:  # the processor normalised `states` already
        alt = attn.norm_encoder_hidden_states(alt)
    if b == n:
        return alt
    if b == 2 * n:  # classifier-free guidance: cat([negative, positive])
        return torch.cat([states[:n], alt])
    raise EmbeddingShapeError(f"substitutes for {n} prompts do not fit a denoiser batch of {b}")


def _as_states(pipe, embeds, what: str) -> torch.Tensor | None:
    """Substitute embeddings as a ``(n, length, dim)`` tensor in the width cross-attention reads."""
    if embeds is None:
        return None
    if isinstance(embeds, EncodedPrompt):
        embeds = [embeds]
    if not isinstance(embeds, torch.Tensor):
        embeds = list(embeds)
        if not embeds or not all(isinstance(e, EncodedPrompt) for e in embeds):
            raise TypeError(f"{what} must be a tensor or a list of EncodedPrompt")
        if len({tuple(e.embeds.shape) for e in embeds}) > 1:
            raise EmbeddingShapeError(f"all {what} embeddings must have the same shape")
        embeds = torch.stack([e.embeds for e in embeds])
    dim = embedding_dim(pipe)
    if embeds.ndim != 3 or embeds.shape[-1] != dim:
        raise EmbeddingShapeError(
            f"{what} must have shape (n, length, {dim}) for this pipeline, got {tuple(embeds.shape)}"
        )
    model = denoiser(pipe)
    embeds = embeds.to(device=model.device, dtype=model.dtype)
    if family(pipe) == "pixart" and getattr(model, "caption_projection", None) is not None:
        with torch.no_grad():  # PixArt projects T5 states before its cross-attention
            embeds = model.caption_projection(embeds)
    return embeds


@contextmanager
def kv_substitution(
    pipe,
    keys: torch.Tensor | Sequence[EncodedPrompt] | EncodedPrompt | None = None,
    values: torch.Tensor | Sequence[EncodedPrompt] | EncodedPrompt | None = None,
    kl: AttentionKL | None = None,
) -> Iterator[dict[str, KVSubstitutionProcessor]]:
    """Install :class:`KVSubstitutionProcessor` on every cross-attention layer; restore on exit.

    Args:
        pipe: a supported pipeline.
        keys, values: substitute text embeddings for the keys / values of the positive
            branch, one per prompt of the pipeline call (``None``: the pipeline's own).
        kl: optional :class:`AttentionKL` accumulator (needs ``keys``).

    Yields:
        The installed processors by layer name. The original processors are restored in
        ``finally``, also when the pipeline call raises.
    """
    k_states, v_states = _as_states(pipe, keys, "keys"), _as_states(pipe, values, "values")
    if k_states is not None and v_states is not None and k_states.shape != v_states.shape:
        raise EmbeddingShapeError(f"keys {tuple(k_states.shape)} and values {tuple(v_states.shape)} differ in shape")

    def make(name: str, original) -> KVSubstitutionProcessor:
        recorder = getattr(original, "_recorder", getattr(original, "recorder", None))
        return KVSubstitutionProcessor(name, k_states, v_states, kl, recorder)

    with installed_processors(denoiser(pipe), make) as processors:
        yield {name: p for name, p in processors.items() if isinstance(p, KVSubstitutionProcessor)}


def generate_substituted(
    pipe,
    prompts: Sequence[EncodedPrompt],
    keys: Sequence[EncodedPrompt] | None = None,
    values: Sequence[EncodedPrompt] | None = None,
    measure_kl: bool = False,
    out_dir: str | Path | None = None,
    **kwargs,
) -> tuple[np.ndarray, AttentionKL | None]:
    """:func:`~helpers.text.surgery.generate_from_embeddings` with K/V substitution per prompt.

    ``prompts[i]`` is the pipeline's conditioning; ``keys[i]`` / ``values[i]`` replace its
    keys / values. Returns the images and the :class:`AttentionKL` (``None`` unless
    ``measure_kl``). With ``out_dir`` every batch is saved as it finishes, its KL additions with it,
    and a rerun resumes: the images and the KL sums equal those of an uninterrupted run.
    """
    prompts = list(prompts)
    for what, subs in (("keys", keys), ("values", values)):
        if subs is not None and len(subs) != len(prompts):
            raise ValueError(f"{len(subs)} {what} for {len(prompts)} prompts")
    if measure_kl and keys is None:
        raise ValueError("measure_kl needs substituted keys")
    stats = AttentionKL() if measure_kl else None
    per_batch = measure_kl and out_dir is not None  # each batch logs its own additions, replayed below

    @contextmanager
    def context(idx: list[int]):
        kl = AttentionKL(log=[]) if per_batch else stats
        with kv_substitution(pipe, keys=None if keys is None else [keys[i] for i in idx],
                             values=None if values is None else [values[i] for i in idx], kl=kl):
            yield kl.log if per_batch else None

    item_keys = [(None if keys is None else keys[i], None if values is None else values[i], measure_kl)
                 for i in range(len(prompts))]
    images, logs = generate_batches(pipe, prompts, chunk_context=context, item_keys=item_keys, out_dir=out_dir,
                                    **kwargs)
    if per_batch:
        for log in logs:
            stats.replay(log)
    return images, stats
