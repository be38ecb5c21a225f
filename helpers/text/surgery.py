"""Embedding surgery on text-encoder outputs: switched-[EOS] prompts and their ablations.

A prompt is encoded once into its per-token embeddings (:class:`EncodedPrompt`, the
tensor the denoiser's cross-attention reads) together with the positions of its token
classes ([SOS], semantic, [EOS] class = the real [EOS] and every padding position).
The functions below edit those embeddings and hand them to the stock pipeline call::

    a, b = encode(pipe, "a red striped circle"), encode(pipe, "a blue plain star")
    s = switch_eos(a, b)                        # A's [SOS] + semantic tokens, B's [EOS] class
    images = pipe(**pipeline_inputs(pipe, [s]), latents=..., output_type="np").images
    images = generate_from_embeddings(pipe, [a, b, s], seed=0)   # same, deterministic seeds

**Alignment rule** (A and B of different lengths). B's [EOS]-class embeddings, in
order (its real [EOS] first, then its padding), are written into the switched prompt
starting right after A's last semantic token, so B's real [EOS] lands on A's [EOS]
position. If B's prompt is shorter than A's, B has more [EOS]-class embeddings than A
has slots and the surplus at the end is dropped; if B's prompt is longer, B's sequence
is extended by repeating its last [EOS]-class embedding (a padding position; padding
embeddings of a causal encoder are near-copies of each other).

Architectures:

* **SD 1.x / 2.x** (``pipe.encode_prompt``): a causal CLIP encoder, so A's semantic
  embeddings know nothing of B and B's [EOS] class summarises all of B. SD 2.x pads with
  ``!`` instead of [EOS]; those padding positions still count as [EOS] class.
* **SDXL**: both encoders' hidden states concatenated per token (positions agree, the
  second tokenizer pads with ``!``) plus the *pooled* embedding, which is the projected
  [EOS] state of encoder 2: it is [EOS] information, so a switched prompt takes it from
  the [EOS] donor B by default (``pooled_from``).
* **PixArt-alpha** (T5): there is **no [SOS]** (:class:`NotMeaningfulError` for
  [SOS]-only prompts), the encoder is *bidirectional* (A's semantic embeddings already
  carry A's whole prompt, unlike CLIP) and padding is masked out of cross-attention by
  the attention mask, so only the single real ``</s>`` is effectively switched; the mask
  is carried along with the embeddings.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from .loading import denoiser, family
from .tokens import PromptTooLongError, TokenClasses, pipeline_token_classes

__all__ = [
    "EmbeddingShapeError", "EOSSlotError", "NotMeaningfulError", "PromptTooLongError", "EncodedPrompt",
    "encode", "unconditional", "switch_eos", "replace_tokens", "sos_only", "eos_only", "negative_for",
    "pipeline_inputs", "generate_from_embeddings", "caveats", "REPLACEABLE", "embedding_dim",
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


def _check_compatible(a: EncodedPrompt, b: EncodedPrompt) -> None:
    for p in (a, b):
        if p.only is not None:
            raise ValueError(f"{p.label!r} is a {p.only.upper()}-only prompt; switch full-length prompts")
    if a.family != b.family:
        raise EmbeddingShapeError(f"cannot mix embeddings of a {a.family} and a {b.family} pipeline")
    if a.embeds.shape != b.embeds.shape:
        raise EmbeddingShapeError(
            f"embeddings of the two prompts differ in shape: {tuple(a.embeds.shape)} vs {tuple(b.embeds.shape)}"
        )


def switch_eos(
    source: EncodedPrompt, target: EncodedPrompt, k: int | None = None, pooled_from: str = "target"
) -> EncodedPrompt:
    """The switched prompt of a pair: A's [SOS] and semantic tokens, then B's [EOS] class.

    Args:
        source: prompt A (keeps its [SOS] and semantic-token embeddings).
        target: prompt B (gives its [EOS]-class embeddings; see the module's alignment rule).
        k: take only the first ``k`` [EOS]-class embeddings from B and keep A's own
            [EOS]-class embeddings after them (``None``: all of them; ``0``: A unchanged).
        pooled_from: SDXL only, whose pooled embedding to use: ``"target"`` (B, default:
            it is [EOS] information) or ``"source"``.

    Raises:
        EmbeddingShapeError: the two prompts come from different pipelines or shapes.
        EOSSlotError: ``k`` is negative or larger than A's number of [EOS]-class positions.
    """
    _check_compatible(source, target)
    if pooled_from not in ("target", "source"):
        raise ValueError(f"pooled_from must be 'target' or 'source', not {pooled_from!r}")
    slots = source.eos_class
    if k is None:
        k = len(slots)
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= len(slots):
        raise EOSSlotError(
            f"k={k} switched [EOS] embeddings requested but prompt A ({source.label!r}) has "
            f"{len(slots)} [EOS]-class positions: use 0 <= k <= {len(slots)}"
        )
    donor = _aligned(target, len(slots))
    embeds = source.embeds.clone()
    embeds[list(slots[:k])] = target.embeds[donor[:k]]
    mask = None
    if source.mask is not None:
        mask = source.mask.clone()
        mask[list(slots[:k])] = target.mask[donor[:k]]
    pooled = source.pooled
    if source.pooled is not None and pooled_from == "target" and k > 0:
        pooled = target.pooled
    suffix = "" if k == len(slots) else f", k={k}"
    return source.replace(embeds=embeds, mask=mask, pooled=pooled,
                          label=f"{source.label} + [EOS] of {target.label}{suffix}")


def _aligned(target: EncodedPrompt, n_slots: int) -> list[int]:
    """Indices of B's [EOS]-class embeddings filling ``n_slots`` slots (truncate or repeat the last)."""
    donor = list(target.eos_class[:n_slots])
    return donor + [target.eos_class[-1]] * (n_slots - len(donor))


def replace_tokens(
    encoded: EncodedPrompt, which: str, mode: str = "zero", generator: torch.Generator | None = None
) -> EncodedPrompt:
    """Overwrite one token class by zero vectors or by random vectors of the same norms.

    Args:
        encoded: any full-length or single-class prompt (e.g. a switched one).
        which: ``"semantic"``, ``"eos"`` (the whole [EOS] class) or ``"sos"``.
        mode: ``"zero"`` or ``"random"`` (Gaussian directions; each vector keeps the norm
            of the embedding it replaces).
        generator: CPU generator for ``"random"`` (reproducible draws).
    """
    if mode not in ("zero", "random"):
        raise ValueError(f"mode must be 'zero' or 'random', not {mode!r}")
    positions = list(encoded.positions(which))
    embeds = encoded.embeds.clone()
    if positions:
        old = embeds[positions]
        if mode == "zero":
            new = torch.zeros_like(old)
        else:
            noise = torch.randn(old.shape, generator=generator, dtype=torch.float32).to(old.device, old.dtype)
            new = noise / noise.norm(dim=-1, keepdim=True) * old.norm(dim=-1, keepdim=True)
        embeds[positions] = new
    return encoded.replace(embeds=embeds, label=f"{encoded.label} | {which}->{mode}")


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


def generate_from_embeddings(
    pipe,
    prompts: Sequence[EncodedPrompt],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 16,
    seeds: Sequence[int] | None = None,
    negative: EncodedPrompt | None = None,
    chunk_context: Callable[[list[int]], ContextManager] | None = None,
    **kwargs,
) -> np.ndarray:
    """Images ``(n, H, W, 3)`` in [0, 1] for edited embeddings, through the stock pipeline call.

    Prompt ``i`` starts from the noise of ``seeds[i]`` (default ``seed + i``), as in
    :func:`helpers.generation.generate`, so the same index gives the same x_T whatever
    the conditioning. Consecutive prompts of the same layout are batched together.

    Args:
        chunk_context: optional factory called with the indices of each batch; the
            pipeline call runs inside the context it returns (used by the K/V hooks).
        **kwargs: passed to the pipeline call (e.g. ``callback_on_step_end``).
    """
    from .generation import initial_latents

    prompts = list(prompts)
    seeds = [seed + i for i in range(len(prompts))] if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if not prompts:
        return np.zeros((0, 0, 0, 3), dtype=np.float32)
    negative = negative if negative is not None else unconditional(pipe)
    out = []
    for idx in _batches(prompts, batch_size):
        chunk = [prompts[i] for i in idx]
        latents = initial_latents(pipe, [seeds[i] for i in idx])
        with (chunk_context(idx) if chunk_context is not None else nullcontext()):
            result = pipe(**pipeline_inputs(pipe, chunk, negative), latents=latents,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          output_type="np", **kwargs)
        out.append(result.images)
    return np.concatenate(out)


def _batches(prompts: Sequence[EncodedPrompt], batch_size: int) -> list[list[int]]:
    """Runs of consecutive indices with the same layout, at most ``batch_size`` long."""
    batches: list[list[int]] = []
    for i, p in enumerate(prompts):
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (prompts[last[0]].length, prompts[last[0]].only) == (p.length, p.only):
            last.append(i)
        else:
            batches.append([i])
    return batches


def caveats(pipe) -> list[str]:
    """What the switched-[EOS] experiment does (not) mean on this pipeline's architecture."""
    fam = family(pipe)
    notes = {
        "sd": ["Causal CLIP encoder: A's semantic embeddings never see B; B's [EOS] class summarises all of B."],
        "sdxl": ["Two CLIP encoders concatenated per token; the pooled embedding (encoder 2's projected [EOS]) "
                 "is taken from the [EOS] donor B."],
        "pixart": ["T5 has no [SOS]: [SOS]-only prompts are not defined.",
                   "T5 is bidirectional: A's semantic embeddings already encode A's whole prompt.",
                   "Padding is masked out of cross-attention: only B's single </s> is effectively switched."],
    }[fam]
    if fam == "sd" and pipe.tokenizer.pad_token_id != pipe.tokenizer.eos_token_id:
        notes.append("This tokenizer pads with a non-[EOS] token (SD 2.x style); padding still counts as [EOS] class.")
    return notes
