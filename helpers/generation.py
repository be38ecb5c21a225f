"""Deterministic generation on top of the stock pipeline call (no copied sampling loop)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def generator_for(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator. CPU by default so images are identical across devices' runs."""
    return torch.Generator(device=device).manual_seed(int(seed))


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
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    out = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress or len(starts) < 2):
        chunk = prompts[start:start + batch_size]
        latents = initial_latents(pipe, [seed + start + i for i in range(len(chunk))])
        result = pipe(
            chunk,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            latents=latents,
            output_type="np",
            **kwargs,
        )
        out.append(result.images)
    return np.concatenate(out)


def initial_latents(pipe, seeds: Sequence[int]) -> torch.Tensor:
    """The starting noise x_T for each seed, shaped for the pipeline's denoiser."""
    from .loading import denoiser

    model = denoiser(pipe)
    channels = model.config.in_channels
    size = model.config.sample_size
    if getattr(pipe, "transformer", None) is not None and hasattr(model.config, "out_channels"):
        channels = model.config.in_channels
    noise = [torch.randn((1, channels, size, size), generator=generator_for(s)) for s in seeds]
    return torch.cat(noise).to(device=model.device, dtype=model.dtype)
