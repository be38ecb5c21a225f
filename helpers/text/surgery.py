"""Embedding surgery on text-encoder outputs: switched-[EOS] prompts and their ablations.

A prompt is encoded once into an :class:`~helpers.text.conditioning.EncodedPrompt` (its
per-token embeddings and the positions of its token classes: [SOS], semantic, [EOS] class
= the real [EOS] and every padding position). The functions below edit those embeddings
and hand them to the stock pipeline call::

    a, b = encode(pipe, "a red striped circle"), encode(pipe, "a blue plain star")
    s = switch_eos(a, b)                        # A's [SOS] + semantic tokens, B's [EOS] class
    images = pipe(**pipeline_inputs(pipe, [s]), latents=..., output_type="np").images
    images = generate_from_embeddings(pipe, [a, b, s], seed=0)   # same, deterministic seeds
    images = generate_from_embeddings(pipe, [a, b, s], out_dir="sweeps/abs")  # resumes after a crash

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

from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from ..loading import family
from .conditioning import (
    REPLACEABLE,
    EmbeddingShapeError,
    EncodedPrompt,
    EOSSlotError,
    NotMeaningfulError,
    PromptTooLongError,
    encode,
    eos_only,
    pipeline_inputs,
    sos_only,
    unconditional,
)

__all__ = [
    "EmbeddingShapeError", "EOSSlotError", "NotMeaningfulError", "PromptTooLongError", "EncodedPrompt", "REPLACEABLE", "PARTS", "encode",
    "unconditional", "pipeline_inputs", "switch_eos", "replace_tokens", "sos_only", "eos_only",
    "generate_from_embeddings", "generate_batches", "caveats",
]
#: Prompts per pipeline call of :func:`generate_from_embeddings` (``batch_size=None``).
BATCH_SIZE = 16


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


#: Which [EOS]-class positions :func:`switch_eos` takes from B.
PARTS = ("all", "eos", "padding")


def switch_eos(
    source: EncodedPrompt, target: EncodedPrompt, k: int | None = None, pooled_from: str = "target",
    part: str = "all", slots: Sequence[int] | None = None,
) -> EncodedPrompt:
    """The switched prompt of a pair: A's [SOS] and semantic tokens, then B's [EOS] class.

    Args:
        source: prompt A (keeps its [SOS] and semantic-token embeddings).
        target: prompt B (gives its [EOS]-class embeddings; see the module's alignment rule).
        k: take only the first ``k`` [EOS]-class embeddings from B and keep A's own
            [EOS]-class embeddings after them (``None``: all of them; ``0``: A unchanged).
        pooled_from: SDXL only, whose pooled embedding to use: ``"target"`` (B, default:
            it is [EOS] information) or ``"source"``.
        part: ``"all"`` (the whole [EOS] class, the paper's switch), ``"eos"`` (only the real [EOS]:
            B's real [EOS] on A's, A's padding kept) or ``"padding"`` (only the padding: A's real
            [EOS] kept, B's padding after it) -- the controls of "is it the real [EOS] or the
            padding?" (Padding Tone). ``k`` applies to ``"all"`` only.
        slots: instead of ``k`` / ``part``, any set of indices into A's [EOS] class (0 = the real [EOS],
            1.. = the padding after it), each taking B's aligned embedding (the controls' orders).
            ``range(k)`` equals ``k=k``, ``[0]`` equals ``part="eos"``.

    The pooled embedding (SDXL) is B's when slot 0 (the real [EOS], whose projection it is) is switched
    and ``pooled_from="target"``, else A's.

    Raises:
        EmbeddingShapeError: the two prompts come from different pipelines or shapes.
        EOSSlotError: ``k`` is negative or larger than A's number of [EOS]-class positions.
    """
    _check_compatible(source, target)
    if pooled_from not in ("target", "source"):
        raise ValueError(f"pooled_from must be 'target' or 'source', not {pooled_from!r}")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    eos = source.eos_class
    if part != "all" and k is not None:
        raise ValueError(f"k applies to part='all' only (part={part!r} switches a fixed set of positions)")
    if slots is not None and (k is not None or part != "all"):
        raise ValueError("slots replaces k and part: pass one of them")
    if k is None:
        k = len(eos)
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= len(eos):
        raise EOSSlotError(
            f"k={k} switched [EOS] embeddings requested but prompt A ({source.label!r}) has "
            f"{len(eos)} [EOS]-class positions: use 0 <= k <= {len(eos)}"
        )
    donor = _aligned(target, len(eos))
    if slots is not None:
        chosen = sorted(_checked_slots(slots, len(eos)))
    else:
        chosen = list({"all": range(k), "eos": range(min(1, len(eos))), "padding": range(1, len(eos))}[part])
    where, taken = [eos[i] for i in chosen], [donor[i] for i in chosen]
    embeds = source.embeds.clone()
    embeds[where] = target.embeds[taken]
    mask = None
    if source.mask is not None:
        mask = source.mask.clone()
        mask[where] = target.mask[taken]
    pooled = source.pooled
    if source.pooled is not None and pooled_from == "target" and 0 in chosen:
        pooled = target.pooled
    suffix = (f", slots {chosen}" if slots is not None else "" if part == "all" and k == len(eos)
              else f", k={k}" if part == "all" else f", {part} only")
    return source.replace(embeds=embeds, mask=mask, pooled=pooled,
                          label=f"{source.label} + [EOS] of {target.label}{suffix}")


def _checked_slots(slots: Sequence[int], n: int) -> list[int]:
    """``slots`` as ints, each in ``[0, n)`` and none repeated (else ``EOSSlotError``)."""
    chosen = list(slots)
    if any(not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= i < n for i in chosen):
        raise EOSSlotError(f"slots must be integers in [0, {n}) (A has {n} [EOS]-class positions), got {chosen}")
    if len(set(int(i) for i in chosen)) != len(chosen):
        raise EOSSlotError(f"slots must not repeat, got {chosen}")
    return [int(i) for i in chosen]


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


def generate_from_embeddings(
    pipe,
    prompts: Sequence[EncodedPrompt],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int | None = BATCH_SIZE,
    seeds: Sequence[int] | None = None,
    negative: EncodedPrompt | None = None,
    chunk_context: Callable[[list[int]], ContextManager] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "generate",
    **kwargs,
) -> np.ndarray:
    """Images ``(n, H, W, 3)`` in [0, 1] for edited embeddings, through the stock pipeline call.

    Prompt ``i`` starts from the noise of ``seeds[i]`` (default ``seed + i``), as in
    :func:`helpers.generation.generate`, so the same index gives the same x_T whatever
    the conditioning. Consecutive prompts of the same layout are batched together.

    Args:
        batch_size: prompts per pipeline call (``None``: 16).
        chunk_context: optional factory called with the indices of each batch; the
            pipeline call runs inside the context it returns (used by the K/V hooks).
        out_dir: save each batch there as it finishes and skip the batches already there
            (:func:`helpers.sweeps.run_sweep`): a rerun after a crash resumes with the same images.
        progress: a tqdm bar with ETA (from two batches on).
        **kwargs: passed to the pipeline call (e.g. ``callback_on_step_end``; with ``out_dir``
            only values a fingerprint can hold).
    """
    return generate_batches(pipe, prompts, seed, num_inference_steps, guidance_scale, batch_size, seeds, negative,
                            chunk_context, out_dir=out_dir, progress=progress, desc=desc, **kwargs)[0]


def generate_batches(
    pipe,
    prompts: Sequence[EncodedPrompt],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int | None = BATCH_SIZE,
    seeds: Sequence[int] | None = None,
    negative: EncodedPrompt | None = None,
    chunk_context: Callable[[list[int]], ContextManager] | None = None,
    item_keys: Sequence | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "generate",
    **kwargs,
) -> tuple[np.ndarray, list]:
    """:func:`generate_from_embeddings`, also returning per batch (in order) what ``chunk_context``'s
    context yielded (its ``as`` value, read after the call: e.g. a list the hooks filled).

    With ``out_dir`` that value is saved with its batch, so it must be JSON values or numpy arrays,
    and ``item_keys[i]`` must say what ``chunk_context`` does for prompt ``i`` (it enters the
    fingerprint of the batch: e.g. the substituted keys and values).
    """
    from ..generation import for_each_batch

    prompts = list(prompts)
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    if not prompts:
        return np.zeros((0, 0, 0, 3), dtype=np.float32), []
    negative = negative if negative is not None else unconditional(pipe)
    seeds = [seed + i for i in range(len(prompts))] if seeds is None else [int(s) for s in seeds]

    def call(idx: list[int], latents: torch.Tensor) -> tuple[np.ndarray, object]:
        with (chunk_context(idx) if chunk_context is not None else nullcontext()) as value:
            images = pipe(**pipeline_inputs(pipe, [prompts[i] for i in idx], negative), latents=latents,
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          output_type="np", **kwargs).images
        return images, value

    batches = _batches(prompts, batch_size)
    if out_dir is None:
        parts = for_each_batch(pipe, len(prompts), call, seeds=seeds, batches=batches, progress=progress, desc=desc)
        return np.concatenate([images for images, _ in parts]), [value for _, value in parts]
    from ..sweeps import pipeline_key, run_sweep

    if chunk_context is not None and (item_keys is None or len(item_keys) != len(prompts)):
        raise ValueError("with out_dir, chunk_context needs item_keys: one fingerprintable value per prompt")

    def run(chunk: list) -> list:  # one batch: its items carry their index and seed
        (images, value), = for_each_batch(pipe, len(prompts), call, seeds=seeds, batches=[[i for i, *_ in chunk]])
        return [{"image": images[j], **({"batch": value} if j == 0 else {})} for j in range(len(chunk))]

    items = [(i, p, seeds[i], None if item_keys is None else item_keys[i]) for i, p in enumerate(prompts)]
    key = {"helper": "generate_from_embeddings", "pipeline": pipeline_key(pipe), "steps": num_inference_steps,
           "guidance": guidance_scale, "negative": negative, "kwargs": kwargs}
    results = run_sweep(items, run, out_dir, chunks=batches, key=key, desc=desc, progress=progress)
    return np.stack([r["image"] for r in results]), [r["batch"] for r in results if "batch" in r]


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
