"""Frequency view of latents and images: radial low/high-pass split and power spectra.

Everything works on batches shaped ``(..., H, W)`` (the last two axes are the image
plane) with ``torch.fft``. Frequencies are measured as a fraction of the Nyquist
frequency along each axis, so ``cutoff=0.25`` means "a quarter of the highest
representable frequency" whatever the resolution (16x16 latents, 64x64 images or
128x128 SDXL latents alike).

>>> low, high = split_bands(latents, cutoff=0.25)          # low + high == latents
>>> radii, spectrum = radial_power_spectrum(latents)       # (..., n_radii)
>>> energy_share(latents, cutoff=0.25)                     # (...,) fraction in the low band

The DFT is orthonormal (``norm="ortho"``): the total energy is preserved (Parseval) and
white noise of unit variance has expected power exactly 1 at every frequency.
"""

from __future__ import annotations

import math

import torch

MASKS = ("ideal", "gaussian", "butterworth")


def _check_plane(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor shaped (..., H, W), got {type(x).__name__}")
    if x.ndim < 2 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"expected a tensor shaped (..., H, W) with H, W >= 2, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError("expected a real tensor; the frequency split of complex inputs is not defined here")


def _check_cutoff(cutoff: float, mask: str, order: int) -> None:
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose from {MASKS}")
    if not isinstance(cutoff, (int, float)) or not math.isfinite(cutoff) or cutoff < 0:
        raise ValueError(f"cutoff must be a finite fraction of the Nyquist frequency >= 0, got {cutoff!r}")
    if mask != "ideal" and cutoff == 0:
        raise ValueError(f"the {mask} mask needs a cutoff > 0 (it is the radius where the mask is 1/2)")
    if mask == "butterworth" and (not isinstance(order, int) or order < 1):
        raise ValueError(f"the Butterworth order must be a positive integer, got {order!r}")


def radial_frequency(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Radius of every DFT bin, in units of the Nyquist frequency, in unshifted (fft2) order.

    Bin ``(k, l)`` has radius ``sqrt((2 f_k)^2 + (2 f_l)^2)`` where ``f = fftfreq(n)`` in cycles
    per sample, so 0 is the DC term, 1 is the Nyquist frequency along one axis and the
    corners reach ``sqrt(2)``. Apply ``torch.fft.fftshift`` to see it centred.
    """
    fy = torch.fft.fftfreq(height, device=device, dtype=torch.float64) * 2
    fx = torch.fft.fftfreq(width, device=device, dtype=torch.float64) * 2
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def lowpass_mask(
    height: int,
    width: int,
    cutoff: float,
    mask: str = "ideal",
    order: int = 2,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The low-pass transfer function ``(H, W)`` in unshifted order (values in [0, 1]).

    Args:
        cutoff: radius as a fraction of the Nyquist frequency.
        mask: ``"ideal"`` (1 where radius <= cutoff, else 0), ``"gaussian"``
            (``2 ** -(r / cutoff) ** 2``) or ``"butterworth"`` (``1 / (1 + (r / cutoff) ** (2 order))``).
            Both smooth masks equal 1/2 at the cutoff, so cutoffs compare across masks.
        order: Butterworth order (steepness).
    """
    _check_cutoff(cutoff, mask, order)
    r = radial_frequency(height, width, device)
    if mask == "ideal":
        return (r <= cutoff + 1e-12).to(torch.float64)
    ratio = r / cutoff
    if mask == "gaussian":
        return torch.exp(-math.log(2.0) * ratio**2)
    return 1.0 / (1.0 + ratio ** (2 * order))


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def split_bands(
    x: torch.Tensor, cutoff: float = 0.25, mask: str = "ideal", order: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` (..., H, W) into its low- and high-frequency parts.

    ``low`` is the inverse DFT of the spectrum times :func:`lowpass_mask`; ``high = x - low``,
    so ``low + high == x`` up to float rounding for every mask. Both come back in ``x``'s
    dtype (the FFT itself runs in float32, or float64 for float64 inputs).
    """
    _check_plane(x)
    _check_cutoff(cutoff, mask, order)
    work = x.to(_work_dtype(x))
    h = lowpass_mask(x.shape[-2], x.shape[-1], cutoff, mask, order, device=x.device).to(work.dtype)
    low = torch.fft.ifft2(torch.fft.fft2(work) * h).real
    high = work - low
    return low.to(x.dtype), high.to(x.dtype)


def lowpass(x: torch.Tensor, cutoff: float = 0.25, mask: str = "ideal", order: int = 2) -> torch.Tensor:
    """The low-frequency part of ``x`` (see :func:`split_bands`)."""
    return split_bands(x, cutoff, mask, order)[0]


def highpass(x: torch.Tensor, cutoff: float = 0.25, mask: str = "ideal", order: int = 2) -> torch.Tensor:
    """The high-frequency part of ``x``: ``x - lowpass(x)``."""
    return split_bands(x, cutoff, mask, order)[1]


def power_spectrum(x: torch.Tensor, shift: bool = False) -> torch.Tensor:
    """``|F(u, v)|^2`` of the orthonormal 2-D DFT, shape ``(..., H, W)``; centred if ``shift``."""
    _check_plane(x)
    power = torch.fft.fft2(x.to(_work_dtype(x)), norm="ortho").abs() ** 2
    return torch.fft.fftshift(power, dim=(-2, -1)) if shift else power


def radial_power_spectrum(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum.

    Bins are rings one frequency step wide: bin ``k`` holds the DFT bins whose radius,
    in units of the smaller axis' frequency step, rounds to ``k``.

    Returns:
        ``(radii, spectrum)``: ``radii`` ``(n,)`` ring centres as fractions of Nyquist;
        ``spectrum`` ``(..., n)`` the mean power in each ring.
    """
    power = power_spectrum(x)
    height, width = x.shape[-2:]
    step = 2.0 / min(height, width)  # one frequency step of the smaller axis, in Nyquist units
    ring = torch.round(radial_frequency(height, width, x.device) / step).long().flatten()
    n = int(ring.max()) + 1
    counts = torch.bincount(ring, minlength=n).to(power.dtype)
    sums = torch.zeros(*power.shape[:-2], n, dtype=power.dtype, device=power.device)
    sums.index_add_(-1, ring, power.flatten(-2))
    keep = counts > 0
    radii = torch.arange(n, dtype=power.dtype, device=power.device) * step
    return radii[keep], sums[..., keep] / counts[keep]


def energy_share(
    x: torch.Tensor, cutoff: float = 0.25, mask: str = "ideal", order: int = 2, remove_mean: bool = False
) -> torch.Tensor:
    """Fraction of the energy ``sum |F|^2`` weighted by the low-pass mask, shape ``(...)``.

    With the ideal mask this is the share of the energy at radius <= ``cutoff``. With
    ``remove_mean`` the DC term (each plane's mean) is left out of both sums.
    """
    _check_cutoff(cutoff, mask, order)
    power = power_spectrum(x)
    if remove_mean:
        power = power.clone()
        power[..., 0, 0] = 0
    weight = lowpass_mask(x.shape[-2], x.shape[-1], cutoff, mask, order, device=x.device).to(power.dtype)
    total = power.sum(dim=(-2, -1))
    return (power * weight).sum(dim=(-2, -1)) / total.clamp_min(torch.finfo(power.dtype).tiny)


def band_fraction(height: int, width: int, cutoff: float) -> float:
    """Share of the DFT bins inside the ideal low band (the noise's expected energy share)."""
    return float(lowpass_mask(height, width, cutoff).mean())


def band_norms(x: torch.Tensor, cutoff: float = 0.25, mask: str = "ideal", order: int = 2) -> dict[str, torch.Tensor]:
    """Per-sample Euclidean norms of the low and high parts: ``{"low": (B,), "high": (B,)}``.

    ``x`` is ``(B, ..., H, W)``; each sample's norm runs over all its other axes.
    """
    if isinstance(x, torch.Tensor) and x.ndim < 3:
        raise ValueError(f"expected a batch shaped (B, ..., H, W), got shape {tuple(x.shape)}")
    low, high = split_bands(x, cutoff, mask, order)
    return {"low": low.flatten(1).norm(dim=1), "high": high.flatten(1).norm(dim=1)}
