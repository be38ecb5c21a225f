"""Deterministic generation on top of the stock pipeline call (no copied sampling loop).

:func:`for_each_batch` is the one batch-and-seed loop of the package: every helper that
generates (:func:`generate`, :func:`helpers.guidance.sample`,
:func:`helpers.text.surgery.generate_from_embeddings`, the acceleration benchmark) runs its
pipeline calls through it, so prompt ``i`` always starts from the noise of seed ``seed + i``
(or ``seeds[i]``), drawn on the CPU, whatever the batch size and whichever helper made it.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

R = TypeVar("R")


def generator_for(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator. CPU by default so images are identical across devices' runs."""
    return torch.Generator(device=device).manual_seed(int(seed))


def initial_latents(pipe, seeds: Sequence[int]) -> torch.Tensor:
    """The starting noise x_T for each seed, shaped for the pipeline's denoiser."""
    from .loading import denoiser

    model = denoiser(pipe)
    channels = model.config.in_channels
    size = model.config.sample_size
    noise = [torch.randn((1, channels, size, size), generator=generator_for(s)) for s in seeds]
    return torch.cat(noise).to(device=model.device, dtype=model.dtype)


def for_each_batch(
    pipe,
    n: int,
    call: Callable[[list[int], torch.Tensor], R],
    batch_size: int = 8,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batches: Sequence[Sequence[int]] | None = None,
    progress: bool = False,
    desc: str = "generate",
) -> list[R]:
    """Run ``call(indices, latents)`` for consecutive batches of ``n`` items; the results in order.

    Item ``i`` gets the initial noise of ``seeds[i]`` (default ``seed + i``), so the same item
    gives the same x_T whatever the batching.

    Args:
        call: makes one pipeline call for the items ``indices`` from the noise ``latents``.
        batch_size: items per call (when ``batches`` is not given).
        batches: explicit index lists (e.g. runs of prompts of the same layout).
        progress: a tqdm bar with ETA over the batches (shown from two batches on).
    """
    seeds = [seed + i for i in range(n)] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} prompts: give one seed per prompt")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    if batches is None:
        batches = [list(range(start, min(n, start + batch_size))) for start in range(0, n, batch_size)]
    out = []
    for idx in tqdm(batches, desc=desc, disable=not progress or len(batches) < 2):
        idx = list(idx)
        out.append(call(idx, initial_latents(pipe, [seeds[i] for i in idx])))
    return out


def generate(
    pipe,
    prompts: str | Sequence[str],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 8,
    progress: bool = True,
    **kwargs,
) -> np.ndarray:
    """Images for ``prompts`` as float ``(n, H, W, 3)`` arrays in [0, 1].

    Prompt ``i`` always uses the initial noise of seed ``seed + i`` (drawn on CPU), so the
    same call gives the same images whatever the batch size. Extra keyword arguments go
    to the pipeline call (e.g. ``callback_on_step_end``, ``prompt_embeds``).
    """
    from .text.tokens import check_prompts

    prompts = check_prompts(pipe, prompts)

    def call(idx: list[int], latents: torch.Tensor) -> np.ndarray:
        return pipe([prompts[i] for i in idx], num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    latents=latents, output_type="np", **kwargs).images

    return np.concatenate(for_each_batch(pipe, len(prompts), call, batch_size, seed, progress=progress))
