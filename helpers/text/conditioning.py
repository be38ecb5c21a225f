"""Encoded prompts: the one conditioning type of the package (:class:`EncodedPrompt`).

A prompt is encoded once into its per-token embeddings -- the tensor the denoiser's
cross-attention reads -- together with the positions of its token classes ([SOS],
semantic, [EOS] class = the real [EOS] and every padding position), SDXL's pooled
embedding and PixArt's attention mask. Embedding edits (:mod:`helpers.text.surgery`),
K/V substitution (:mod:`helpers.hooks.kv`) and guidance schedules (:mod:`helpers.guidance`)
all take lists of them; :func:`pipeline_inputs` turns a list into the stock pipeline
call's keyword arguments::

    a = encode(pipe, "a red striped circle")
    images = pipe(**pipeline_inputs(pipe, [a]), latents=..., output_type="np").images
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ..loading import denoiser, family
from .tokens import PromptTooLongError, TokenClasses, pipeline_token_classes

__all__ = [
    "EmbeddingShapeError", "EOSSlotError", "NotMeaningfulError", "PromptTooLongError", "EncodedPrompt",
    "REPLACEABLE", "embedding_dim", "encode", "unconditional", "sos_only", "eos_only", "negative_for",
    "pipeline_inputs",
]

#: Token classes :func:`replace_tokens` can overwrite ("eos" is the whole [EOS] class).
REPLACEABLE = ("sos", "semantic", "eos")


class EmbeddingShapeError(ValueError):
    """Embeddings whose shape does not fit the prompt, the other prompt or the pipeline."""


class EOSSlotError(ValueError):
    """More [EOS] embeddings requested than the prompt has [EOS]-class positions."""


class NotMeaningfulError(ValueError):
    """The requested surgery has no meaning for this architecture (e.g. [SOS] on T5)."""


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
    """Per-token text embeddings of one prompt and the positions of its token classes.

    Attributes:
        embeds: ``(length, dim)`` embeddings as the denoiser's cross-attention reads them.
        sos, semantic, eos_class: positions of [SOS], the semantic tokens and the [EOS]
            class (real [EOS] first, then padding).
        family: ``"sd"``, ``"sdxl"`` or ``"pixart"``.
        label: a short description (the prompt, or how the embeddings were made).
        pooled: SDXL's pooled embedding ``(dim2,)``; ``None`` elsewhere.
        mask: PixArt's attention mask ``(length,)`` (1 = attended); ``None`` elsewhere.
        only: ``"sos"``/``"eos"`` for single-class prompts, ``None`` for full-length ones.
    """

    embeds: torch.Tensor
    sos: tuple[int, ...]
    semantic: tuple[int, ...]
    eos_class: tuple[int, ...]
    family: str
    label: str = ""
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    only: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.embeds, torch.Tensor) or self.embeds.ndim != 2:
            shape = tuple(self.embeds.shape) if isinstance(self.embeds, torch.Tensor) else type(self.embeds).__name__
            raise EmbeddingShapeError(f"embeds must be a (length, dim) tensor, got {shape}")
        n = self.embeds.shape[0]
        positions = self.sos + self.semantic + self.eos_class
        if sorted(positions) != list(range(n)):
            raise EmbeddingShapeError(f"token-class positions must cover 0..{n - 1} exactly once for {n} embeddings")
        if self.mask is not None and tuple(self.mask.shape) != (n,):
            raise EmbeddingShapeError(f"attention mask must have shape ({n},), got {tuple(self.mask.shape)}")
        if self.pooled is not None and self.pooled.ndim != 1:
            raise EmbeddingShapeError(f"pooled embedding must be 1-D, got shape {tuple(self.pooled.shape)}")

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeds.shape[1])

    def positions(self, which: str) -> tuple[int, ...]:
        """Positions of ``"sos"``, ``"semantic"`` or ``"eos"`` (the whole [EOS] class)."""
        if which not in REPLACEABLE:
            raise ValueError(f"unknown token class {which!r}; choose from {REPLACEABLE}")
        return {"sos": self.sos, "semantic": self.semantic, "eos": self.eos_class}[which]

    def replace(self, **changes) -> "EncodedPrompt":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def embedding_dim(pipe) -> int:
    """Width of the text embeddings the pipeline's denoiser expects."""
    fam = family(pipe)
    model = denoiser(pipe)
    if fam == "pixart":
        return int(model.config.caption_channels)
    return int(model.config.cross_attention_dim)


def _classes(pipe, prompt: str) -> TokenClasses:
    if family(pipe) == "pixart":
        prompt = pipe._text_preprocessing(prompt, clean_caption=False)[0]
    classes = pipeline_token_classes(pipe, prompt)
    if family(pipe) == "sdxl" and getattr(pipe, "tokenizer_2", None) is not None:
        second = pipeline_token_classes(pipe, prompt, which=2)
        if (second.sos, second.semantic, second.eos) != (classes.sos, classes.semantic, classes.eos):
            raise ValueError(
                f"SDXL's two tokenizers split {prompt!r} differently; token surgery needs the same positions"
            )
    return classes


def _from_classes(classes: TokenClasses, embeds: torch.Tensor, fam: str, label: str, pooled=None, mask=None):
    return EncodedPrompt(
        embeds=embeds, sos=classes.sos, semantic=classes.semantic, eos_class=classes.eos_class,
        family=fam, label=label, pooled=pooled, mask=mask,
    )


@torch.no_grad()
def encode(pipe, prompt: str) -> EncodedPrompt:
    """Encode ``prompt`` exactly as the stock pipeline call does (no classifier-free branch).

    Raises:
        PromptTooLongError: the prompt does not fit the text encoder (77 tokens for CLIP).
    """
    classes = _classes(pipe, prompt)  # validates the length first
    fam = family(pipe)
    device = denoiser(pipe).device
    if fam == "sd":
        embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
        return _from_classes(classes, embeds[0], fam, prompt)
    if fam == "sdxl":
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        return _from_classes(classes, embeds[0], fam, prompt, pooled=pooled[0])
    embeds, mask, _, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=device,
                                            clean_caption=False, max_sequence_length=classes.max_length)
    return _from_classes(classes, embeds[0], fam, prompt, mask=mask[0])


@torch.no_grad()
def unconditional(pipe) -> EncodedPrompt:
    """The unconditional ("negative") embeddings the stock pipeline uses for classifier-free guidance."""
    fam = family(pipe)
    device = denoiser(pipe).device
    classes = _classes(pipe, "")
    if fam == "sd":
        _, neg = pipe.encode_prompt("", device, 1, True)
        return _from_classes(classes, neg[0], fam, "unconditional")
    if fam == "sdxl":
        _, neg, _, neg_pooled = pipe.encode_prompt("", device=device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=True)
        return _from_classes(classes, neg[0], fam, "unconditional", pooled=neg_pooled[0])
    _, _, neg, neg_mask = pipe.encode_prompt("", do_classifier_free_guidance=True, device=device,
                                             clean_caption=False, max_sequence_length=classes.max_length)
    return _from_classes(classes, neg[0], fam, "unconditional", mask=neg_mask[0])


def sos_only(encoded: EncodedPrompt) -> EncodedPrompt:
    """A one-token conditioning: the prompt's [SOS] embedding alone.

    With a causal CLIP encoder the [SOS] embedding is the same for every prompt. On SDXL
    the pooled embedding ([EOS] information) is zeroed, as SDXL does for empty prompts.

    Raises:
        NotMeaningfulError: the tokenizer has no [SOS] (PixArt's T5).
    """
    if encoded.only is not None:
        raise ValueError(f"{encoded.label!r} is already {encoded.only.upper()}-only")
    if not encoded.sos:
        raise NotMeaningfulError(f"{encoded.family} prompts have no [SOS] token (T5 starts with the first word)")
    pooled = torch.zeros_like(encoded.pooled) if encoded.pooled is not None else None
    mask = encoded.mask[list(encoded.sos)] if encoded.mask is not None else None
    return EncodedPrompt(embeds=encoded.embeds[list(encoded.sos)], sos=(0,), semantic=(), eos_class=(),
                         family=encoded.family, label=f"[SOS] of {encoded.label}", pooled=pooled, mask=mask,
                         only="sos")


def eos_only(encoded: EncodedPrompt, length: int | None = None) -> EncodedPrompt:
    """A conditioning made of the prompt's [EOS]-class embeddings only (first ``length`` of them).

    Raises:
        EOSSlotError: ``length`` exceeds the prompt's number of [EOS]-class positions.
    """
    if encoded.only is not None:
        raise ValueError(f"{encoded.label!r} is already {encoded.only.upper()}-only")
    n = len(encoded.eos_class) if length is None else length
    if not 1 <= n <= len(encoded.eos_class):
        raise EOSSlotError(f"length={n} but {encoded.label!r} has {len(encoded.eos_class)} [EOS]-class positions")
    keep = list(encoded.eos_class[:n])
    mask = encoded.mask[keep] if encoded.mask is not None else None
    return EncodedPrompt(embeds=encoded.embeds[keep], sos=(), semantic=(), eos_class=tuple(range(n)),
                         family=encoded.family, label=f"[EOS] of {encoded.label}", pooled=encoded.pooled,
                         mask=mask, only="eos")


def negative_for(pipe, encoded: EncodedPrompt, negative: EncodedPrompt | None = None) -> EncodedPrompt:
    """The unconditional embeddings matching ``encoded``'s layout.

    Full-length prompts get the stock unconditional embeddings. A single-class prompt gets
    the same class of the empty prompt (its [SOS], or its first [EOS]-class embeddings),
    so both branches of classifier-free guidance see sequences of equal length.
    """
    negative = negative if negative is not None else unconditional(pipe)
    if encoded.only == "sos":
        return negative if negative.only == "sos" else sos_only(negative)
    if encoded.only == "eos":
        return negative if negative.only == "eos" else eos_only(negative, encoded.length)
    return negative


def pipeline_inputs(
    pipe, prompts: EncodedPrompt | Sequence[EncodedPrompt], negative: EncodedPrompt | None = None
) -> dict[str, torch.Tensor]:
    """Keyword arguments for ``pipe(...)``: ``prompt_embeds``, ``negative_prompt_embeds`` and,
    per architecture, the pooled embeddings (SDXL) or the attention masks (PixArt).

    Raises:
        EmbeddingShapeError: embeddings of another pipeline, or prompts of different lengths.
    """
    prompts = [prompts] if isinstance(prompts, EncodedPrompt) else list(prompts)
    if not prompts:
        raise ValueError("pipeline_inputs needs at least one prompt")
    fam, dim = family(pipe), embedding_dim(pipe)
    first = prompts[0]
    for p in prompts:
        if p.family != fam or p.dim != dim:
            raise EmbeddingShapeError(
                f"embeddings of {p.label!r} ({p.family}, width {p.dim}) do not fit this {fam} pipeline (width {dim})"
            )
        if p.length != first.length or p.only != first.only:
            raise EmbeddingShapeError(
                f"prompts in one batch need the same layout: {first.label!r} has {first.length} tokens, "
                f"{p.label!r} has {p.length}"
            )
    neg = negative_for(pipe, first, negative)
    if neg.embeds.shape != first.embeds.shape:
        raise EmbeddingShapeError(
            f"negative embeddings {tuple(neg.embeds.shape)} do not match the prompts' {tuple(first.embeds.shape)}"
        )
    model = denoiser(pipe)
    n = len(prompts)

    def stack(tensors):
        return torch.stack(list(tensors)).to(device=model.device, dtype=model.dtype)

    kwargs = {
        "prompt_embeds": stack(p.embeds for p in prompts),
        "negative_prompt_embeds": stack([neg.embeds] * n),
    }
    if fam == "sdxl":
        kwargs["pooled_prompt_embeds"] = stack(p.pooled for p in prompts)
        kwargs["negative_pooled_prompt_embeds"] = stack([neg.pooled] * n)
    if fam == "pixart":
        kwargs["prompt_attention_mask"] = torch.stack([p.mask for p in prompts]).to(model.device)
        kwargs["negative_prompt_attention_mask"] = torch.stack([neg.mask] * n).to(model.device)
        kwargs["negative_prompt"] = None  # PixArt's call defaults it to "" and refuses it with embeddings
        kwargs["clean_caption"] = False  # there is no caption to clean
    return kwargs
