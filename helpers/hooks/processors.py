"""A stock-equivalent cross-attention processor that can record, and a safe way to install processors.

* :class:`CrossAttnProcessor` -- computes the output exactly like diffusers' ``AttnProcessor2_0``
  (same operations, so no pixel changes) and, when it has a recorder that wants the layer, also
  computes softmax(QK^T/sqrt(d)) for the conditional half of the batch. Subclasses override
  :meth:`~CrossAttnProcessor.key_value_inputs` to feed other encoder states to the keys and/or
  values (K/V substitution, :mod:`helpers.hooks.kv`) and keep recording.
* :func:`installed_processors` -- replaces the processors of some layers and always restores the
  originals (also when the block raises).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F


class AttentionRecordError(ValueError):
    """Recorded attention was asked for in a way that cannot be answered (message says why)."""


def attention_probabilities(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) in float32, shaped ``(batch, heads, queries, keys)``.

    The scale is SDPA's default ``1/sqrt(head_dim)``, the one the stock processor uses.
    """
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * query.shape[-1] ** -0.5
    if attention_mask is not None:
        scores = scores + attention_mask.float()
    return scores.softmax(dim=-1)


class CrossAttnProcessor:
    """Stock-equivalent scaled-dot-product attention processor that can record probabilities.

    Args:
        name: the layer's name in ``model.attn_processors`` (without ``.processor``).
        recorder: an :class:`AttentionRecorder` (or anything with ``wants(name, length)`` and
            ``record(name, query, key, attention_mask)``); ``None`` records nothing.

    The output is computed with the same operations as diffusers' ``AttnProcessor2_0``, so a
    pipeline gives bit-identical images with this processor installed. Subclass and override
    :meth:`key_value_inputs` to change what keys/values see; recording keeps working.
    """

    def __init__(self, name: str = "", recorder=None) -> None:
        self.name = name
        self.recorder = recorder

    def key_value_inputs(self, attn, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states fed to ``to_k`` and ``to_v`` (default: the prompt's, unchanged)."""
        return encoder_hidden_states, encoder_hidden_states

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key_states, value_states = self.key_value_inputs(attn, encoder_hidden_states)
        key = attn.to_k(key_states)
        value = attn.to_v(value_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.recorder is not None and self.recorder.wants(self.name, query.shape[-2]):
            self.recorder.record(self.name, query, key, attention_mask)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_layers(model: torch.nn.Module) -> list[str]:
    """Names (as in ``model.attn_processors``, without ``.processor``) of the cross-attention layers."""
    names = []
    for key in model.attn_processors:
        name = key.removesuffix(".processor")
        if getattr(model.get_submodule(name), "is_cross_attention", False):
            names.append(name)
    return names


@contextmanager
def installed_processors(
    model: torch.nn.Module, make: Callable[[str, object], object], layers: Iterable[str] | None = None
) -> Iterator[dict[str, object]]:
    """Replace the processors of ``layers`` (default: cross-attention) by ``make(name, original)``.

    The originals are restored on exit, also when the block raises. Yields the new processors by name.
    Useful for any processor family (recording, K/V substitution, ...).
    """
    originals = dict(model.attn_processors)
    chosen = set(cross_attention_layers(model) if layers is None else layers)
    unknown = chosen - {k.removesuffix(".processor") for k in originals}
    if unknown:
        raise AttentionRecordError(f"no attention layer named {sorted(unknown)[0]!r} in {type(model).__name__}")
    new = {}
    table = {}
    for key, proc in originals.items():
        name = key.removesuffix(".processor")
        table[key] = new[name] = make(name, proc) if name in chosen else proc
    model.set_attn_processor(table)
    try:
        yield new
    finally:
        model.set_attn_processor(dict(originals))
