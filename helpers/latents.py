"""The pipeline's VAE between images and the diffusion latent space (one encode, one decode for every family).

>>> z = encode_images(pipe, images)      # (n, C, h, w): what the denoiser sees
>>> images = decode_latents(pipe, z)     # (n, H, W, 3) floats in [0, 1], as the pipeline's output_type="np"

Both handle every VAE convention of the supported families: ``scaling_factor``, a
``shift_factor`` (SD3/Flux-style VAEs), per-channel ``latents_mean`` / ``latents_std`` (some
SDXL-family VAEs) and ``force_upcast`` (a float16 VAE that must run in float32, e.g. SDXL's).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

__all__ = ["image_size", "encode_images", "decode_latents"]


def image_size(pipe) -> int:
    """Side of the images the pipeline generates by default (pixels)."""
    from .loading import denoiser

    return int(pipe.vae_scale_factor * denoiser(pipe).config.sample_size)


@contextlib.contextmanager
def _vae_in_safe_precision(vae):
    """Run a float16 VAE whose config asks for it (``force_upcast``, e.g. SDXL's) in float32, then restore it."""
    original = vae.dtype
    upcast = original == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(original)


def _channel_stats(config, dtype, device):
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, len(mean), 1, 1)
    return (torch.tensor(mean, dtype=dtype, device=device).view(shape),
            torch.tensor(std, dtype=dtype, device=device).view(shape))


def _check_batch(x, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a batch shaped (B, C, H, W), got {shape}")


@torch.no_grad()
def encode_images(pipe, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Latents ``(n, C, h, w)`` of images ``(n, H, W, 3)`` (uint8 or floats in [0, 1]) in the diffusion space.

    The posterior mean of ``pipe.vae``, normalised the way the pipelines' training code does:
    ``(z - latents_mean) * scaling_factor / latents_std`` where the VAE has per-channel statistics,
    else ``(z - shift_factor) * scaling_factor``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be shaped (n, H, W, 3), got {images.shape}")
    x = torch.from_numpy(images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0))
    x = x.permute(0, 3, 1, 2) * 2 - 1
    vae, config = pipe.vae, pipe.vae.config
    shift = getattr(config, "shift_factor", None) or 0.0
    out = []
    with _vae_in_safe_precision(vae) as dtype:
        for start in range(0, len(x), batch_size):
            z = vae.encode(x[start:start + batch_size].to(vae.device, dtype)).latent_dist.mean.float()
            stats = _channel_stats(config, z.dtype, z.device)
            if stats is not None:
                z = (z - stats[0]) * config.scaling_factor / stats[1]
            else:
                z = (z - shift) * config.scaling_factor
            out.append(z.cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """Images ``(n, H, W, 3)`` in [0, 1] from diffusion-space latents (the inverse of :func:`encode_images`).

    The same operations as the pipelines' own decoding (``vae.decode`` of the unnormalised latents,
    then ``(x / 2 + 0.5).clamp(0, 1)``), so a generated latent decodes to the pipeline's own image.
    """
    _check_batch(latents, "latents")
    vae, config = pipe.vae, pipe.vae.config
    shift = getattr(config, "shift_factor", None) or 0.0
    out = []
    with _vae_in_safe_precision(vae) as dtype:
        for start in range(0, len(latents), batch_size):
            z = latents[start:start + batch_size].to(vae.device, dtype)
            stats = _channel_stats(config, dtype, z.device)
            if stats is not None:
                z = z * stats[1] / config.scaling_factor + stats[0]
            else:
                z = z / config.scaling_factor
                if shift:
                    z = z + shift
            image = vae.decode(z, return_dict=False)[0]
            out.append((image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy())
    return np.concatenate(out)
