"""Band analysis of the diffusion process (paper Fig 2 and Proposition 1), built on :mod:`helpers.analysis.fft`.

* :func:`noising_bands`: noise clean samples x0 with the pipeline's own scheduler
  (``scheduler.add_noise``) at many timesteps and measure, per frequency band, the
  signal ``||sqrt(abar_t) x0_band||``, the noise ``||sqrt(1 - abar_t) eps_band||`` (Fig 2b)
  and the variation ratio ``||x_t_band - x0_band|| / ||x0_band||`` (Fig 2c, noising).
* :func:`denoising_trajectory` + :func:`trajectory_variation`: the same ratios along the
  real sampling trajectory (:func:`helpers.hooks.trajectory.trajectory`; Fig 2c, denoising).
* :func:`cutoff_sweep`: the SNR crossings for several cutoffs; :func:`to_final_by_progress`: the
  denoising ratio against the fraction of steps done.
* :func:`proposition1`: the numerical check that Gaussian noise spreads its energy evenly
  over all frequencies while images concentrate theirs at low frequencies (planes: :func:`noise_planes`).

The VAE (ground-truth renders into latents and back) is :mod:`helpers.latents`; the figures
are :mod:`helpers.plots.bands`; notebook 02's sizes, samples and checks :mod:`helpers.analysis.band_study`.

>>> sched = forward_scheduler(pipe)
>>> table = noising_bands(sched, x0, cutoff=0.25)
>>> snr_crossings(table)                      # {"low": 870.3, "high": 402.1}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..hooks.trajectory import Trajectory
from . import fft


#: Schedulers whose ``add_noise(x0, eps, t)`` is ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for any
#: training timestep ``t`` (multistep solvers such as DPM-Solver index their own sampling grid).
VP_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "DDIMParallelScheduler", "DDPMParallelScheduler")


BANDS = ("low", "high")


def forward_scheduler(pipe_or_scheduler):
    """The scheduler used to noise x0: the pipeline's own when it can noise to any timestep.

    For samplers whose ``add_noise`` only knows their own sampling grid (DPM-Solver, Euler),
    a ``DDPMScheduler`` built from the same config (same betas, same ``abar_t``) is returned.
    """
    scheduler = getattr(pipe_or_scheduler, "scheduler", pipe_or_scheduler)
    if not hasattr(scheduler, "add_noise") or not hasattr(scheduler, "config"):
        raise ValueError(f"expected a diffusers pipeline or scheduler, got {type(pipe_or_scheduler).__name__}")
    if type(scheduler).__name__ in VP_SCHEDULERS:
        return scheduler
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)


def default_timesteps(scheduler, n: int = 100) -> np.ndarray:
    """``n`` evenly spaced training timesteps from 0 to ``T - 1`` (both ends included)."""
    total = int(scheduler.config.num_train_timesteps)
    return np.unique(np.linspace(0, total - 1, max(2, n)).round().astype(int))


def _check_batch(x0: torch.Tensor, name: str = "x0") -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim < 3:
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"{name} must be a batch shaped (B, C, H, W) or (B, H, W), got {shape}")


def _check_timesteps(scheduler, timesteps) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(timesteps), dtype=torch.long).flatten()
    total = int(scheduler.config.num_train_timesteps)
    if t.numel() == 0 or t.min() < 0 or t.max() >= total:
        raise ValueError(f"timesteps must be training timesteps in [0, {total - 1}], got {np.asarray(timesteps)}")
    return t


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def noising_bands(
    scheduler,
    x0: torch.Tensor,
    timesteps: Sequence[int] | np.ndarray | None = None,
    cutoff: float = 0.25,
    mask: str = "ideal",
    noise: torch.Tensor | None = None,
    seed: int = 0,
    chunk_elements: int = 2**23,
) -> pd.DataFrame:
    """Noise ``x0`` with ``scheduler.add_noise`` at every timestep and measure each band.

    One noise draw ``eps`` per sample is reused at every timestep (common random numbers),
    so the curves over t are smooth and their crossings well defined.

    Args:
        scheduler: see :func:`forward_scheduler`.
        x0: clean samples ``(B, C, H, W)`` (latents, or images in [-1, 1]).
        timesteps: training timesteps (default :func:`default_timesteps`).
        cutoff, mask: the band split (:func:`helpers.analysis.fft.split_bands`).
        noise: ``eps`` shaped like ``x0`` (default: seeded standard normal).

    Returns:
        One row per (sample, t, band): ``alpha_bar``, ``signal`` = ||sqrt(abar) x0_band||,
        ``noise`` = ||sqrt(1-abar) eps_band||, ``snr`` = (signal / noise)^2, ``x0_norm`` and
        ``variation`` = ||x_t_band - x0_band|| / ||x0_band||.
    """
    _check_batch(x0)
    t_all = _check_timesteps(scheduler, default_timesteps(scheduler) if timesteps is None else timesteps)
    x0 = x0.detach().float().cpu()
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    noise = noise.detach().float().cpu()
    x0_bands = dict(zip(BANDS, fft.split_bands(x0, cutoff, mask)))
    eps_bands = dict(zip(BANDS, fft.split_bands(noise, cutoff, mask)))
    alphas = scheduler.alphas_cumprod.detach().float().cpu()
    batch = x0.shape[0]
    per_chunk = max(1, chunk_elements // x0.numel())
    rows = []
    for start in range(0, len(t_all), per_chunk):
        t = t_all[start:start + per_chunk].repeat_interleave(batch)
        rep = len(t) // batch

        def tile(a: torch.Tensor) -> torch.Tensor:
            return a.repeat(rep, *([1] * (a.ndim - 1)))

        xt_bands = dict(zip(BANDS, fft.split_bands(scheduler.add_noise(tile(x0), tile(noise), t), cutoff, mask)))
        for band in BANDS:
            signal = scheduler.add_noise(tile(x0_bands[band]), torch.zeros_like(tile(x0_bands[band])), t)
            noise_part = scheduler.add_noise(torch.zeros_like(tile(eps_bands[band])), tile(eps_bands[band]), t)
            x0_norm = _norms(tile(x0_bands[band]))
            variation = _norms(xt_bands[band] - tile(x0_bands[band])) / x0_norm.clamp_min(1e-12)
            s, n = _norms(signal), _norms(noise_part)
            rows.append(pd.DataFrame({
                "sample": np.tile(np.arange(batch), rep),
                "t": t.numpy(),
                "alpha_bar": alphas[t].numpy(),
                "band": band,
                "signal": s.numpy(),
                "noise": n.numpy(),
                "snr": (s / n.clamp_min(1e-12)).pow(2).numpy(),
                "x0_norm": x0_norm.numpy(),
                "variation": variation.numpy(),
            }))
    return pd.concat(rows, ignore_index=True).sort_values(["band", "t", "sample"], ignore_index=True)


def _first_crossing(t: np.ndarray, log_ratio: np.ndarray) -> float:
    """First t where log(signal/noise) drops to 0 (linear interpolation between grid points)."""
    below = np.flatnonzero(log_ratio <= 0)
    if len(below) == 0:
        return float("nan")  # the signal wins at every timestep measured
    i = below[0]
    if i == 0:
        return float(t[0])
    t0, t1, r0, r1 = t[i - 1], t[i], log_ratio[i - 1], log_ratio[i]
    return float(t0 + (t1 - t0) * r0 / (r0 - r1))


def snr_crossings(table: pd.DataFrame, per_sample: bool = False) -> dict[str, float] | pd.DataFrame:
    """Timestep at which each band's SNR falls to 1 (noise norm overtakes signal norm).

    By default on the mean norms over samples (``{"low": t, "high": t}``; NaN if the signal
    wins everywhere); with ``per_sample`` a DataFrame with one crossing per sample and band.
    """
    if per_sample:
        out = []
        for (sample, band), g in table.groupby(["sample", "band"]):
            g = g.sort_values("t")
            out.append({"sample": sample, "band": band,
                        "t_cross": _first_crossing(g["t"].to_numpy(), np.log(g["snr"].to_numpy() + 1e-300))})
        return pd.DataFrame(out).pivot(index="sample", columns="band", values="t_cross")
    mean = table.groupby(["band", "t"])[["signal", "noise"]].mean().reset_index()
    result = {}
    for band, g in mean.groupby("band"):
        ratio = np.log(g["signal"].to_numpy() + 1e-300) - np.log(g["noise"].to_numpy() + 1e-300)
        result[band] = _first_crossing(g["t"].to_numpy(), ratio)
    return {band: result[band] for band in BANDS if band in result}


def cutoff_sweep(
    scheduler,
    sources: Mapping[str, torch.Tensor],
    cutoffs: Iterable[float],
    mask: str = "ideal",
    timesteps: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    measured: Mapping[float, Mapping[str, pd.DataFrame]] | None = None,
) -> pd.DataFrame:
    """How much the SNR crossings depend on the cutoff: one row per (cutoff, source), cutoffs in increasing order.

    Columns: the crossing timesteps of the mean curves (``t_cross low`` / ``t_cross high``,
    :func:`snr_crossings`), the share of samples whose own low band crosses later than their own
    high band, and the share of frequency bins in the low band. Each source is noised with
    :func:`noising_bands` at ``timesteps`` (``seed``), except where ``measured[cutoff][source]`` already
    holds its table (used as it is, e.g. the main cutoff's finer grid). Rounded to 3 decimals.
    """
    measured = measured or {}
    rows = []
    for cutoff in sorted(set(cutoffs)):
        for name, x0 in sources.items():
            table = (measured[cutoff][name] if cutoff in measured
                     else noising_bands(scheduler, x0, timesteps, cutoff, mask, seed=seed))
            cross = snr_crossings(table)
            per = snr_crossings(table, per_sample=True)
            rows.append({"cutoff": cutoff, "source": name, "t_cross low": cross["low"], "t_cross high": cross["high"],
                         "samples low later": float((per["low"] > per["high"]).mean()),
                         "bins in low band": fft.band_fraction(*x0.shape[-2:], cutoff)})
    return pd.DataFrame(rows).set_index(["cutoff", "source"]).round(3)


def band_snapshot(
    scheduler, x0: torch.Tensor, noise: torch.Tensor, t: int, cutoff: float = 0.25, mask: str = "ideal"
) -> dict[str, torch.Tensor | dict[str, float]]:
    """x_t and its low/high parts at one timestep, with each band's SNR (for Fig 2a and the slider)."""
    _check_batch(x0)
    ts = _check_timesteps(scheduler, [t]).repeat(x0.shape[0])
    xt = scheduler.add_noise(x0.float().cpu(), noise.float().cpu(), ts)
    low, high = fft.split_bands(xt, cutoff, mask)
    table = noising_bands(scheduler, x0, [int(t)], cutoff, mask, noise=noise)
    snr = table.groupby("band")[["signal", "noise"]].mean()
    return {"x_t": xt, "low": low, "high": high,
            "snr": {band: float((snr.loc[band, "signal"] / snr.loc[band, "noise"]) ** 2) for band in BANDS}}


def denoising_trajectory(
    pipe,
    prompts: str | Sequence[str],
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 8,
    progress: bool = False,
) -> Trajectory:
    """Generate with the stock pipeline call and record x_t at every step (no copied loop).

    The recording is :func:`helpers.hooks.trajectory.trajectory`'s (x_t entering each step, then
    the final latent: ``traj.latents``, ``traj.final``, ``traj.levels``); the initial noise is that
    of :func:`helpers.generation.generate` (seeds ``seed + i`` for prompt ``i``).
    """
    from ..hooks.trajectory import trajectory

    images, recorded = trajectory(pipe, prompts, seed=seed, num_inference_steps=num_inference_steps,
                                  guidance_scale=guidance_scale, batch_size=batch_size, progress=progress)
    _ = recorded.final  # raises when the final latent was not recorded
    return dataclasses.replace(recorded, timesteps=[int(t) for t in recorded.timesteps], images=images)


def trajectory_variation(traj: Trajectory, cutoff: float = 0.25, mask: str = "ideal") -> pd.DataFrame:
    """Per-band variation along a recorded trajectory.

    Returns one row per (sample, step, band): ``step`` (steps done), ``t`` (its noise level),
    ``to_final`` = ||x_step_band - x0_band|| / ||x0_band|| with x0 the generated latent, and
    ``step_change`` = ||x_step_band - x_(step-1)_band|| / ||x_(step-1)_band|| (NaN at step 0).
    """
    steps, batch = traj.latents.shape[:2]
    low, high = fft.split_bands(traj.latents.float(), cutoff, mask)
    rows = []
    for band, part in zip(BANDS, (low, high)):
        final = part[-1]
        to_final = (part - final).flatten(2).norm(dim=2) / final.flatten(1).norm(dim=1).clamp_min(1e-12)
        change = torch.full((steps, batch), float("nan"))
        change[1:] = (part[1:] - part[:-1]).flatten(2).norm(dim=2) / part[:-1].flatten(2).norm(dim=2).clamp_min(1e-12)
        rows.append(pd.DataFrame({
            "sample": np.tile(np.arange(batch), steps),
            "step": np.repeat(np.arange(steps), batch),
            "t": np.repeat(traj.levels, batch),
            "band": band,
            "to_final": to_final.flatten().numpy(),
            "step_change": change.flatten().numpy(),
        }))
    return pd.concat(rows, ignore_index=True)


def step_where_settled(table: pd.DataFrame, threshold: float = 0.5) -> dict[str, float]:
    """First step (as a fraction of the run) at which the mean ``to_final`` ratio drops below ``threshold``."""
    mean = table.groupby(["band", "step"])["to_final"].mean().reset_index()
    total = int(table["step"].max())
    out = {}
    for band, g in mean.groupby("band"):
        below = g[g["to_final"] < threshold]["step"]
        out[band] = float(below.iloc[0]) / total if len(below) else float("nan")
    return {band: out[band] for band in BANDS if band in out}


def to_final_by_progress(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ``to_final`` ratio (:func:`trajectory_variation`) per band (columns) against the fraction of
    sampling steps done (index ``progress``, rounded to 0.01); rounded to 3 decimals."""
    progress = table.assign(progress=(table.step / table.step.max()).round(2))
    return progress.groupby(["progress", "band"])["to_final"].mean().unstack().round(3)


def noise_planes(seed: int, **shapes: Sequence[int]) -> dict[str, torch.Tensor]:
    """Standard normal tensors of the given shapes (``name=shape``), drawn in that order from one generator
    seeded with ``seed``: ``noise_planes(1, latent=(2000, 16, 16), pixel=(500, 64, 64))``."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(tuple(shape), generator=g) for name, shape in shapes.items()}


def max_power_bound(height: int, width: int, delta: float) -> float:
    """Level s with P(max over bins of |F(u,v)|^2 > s) <= delta for an H x W plane of iid N(0, 1).

    Union bound with the exact tails of the orthonormal DFT of white noise: a bin that is its
    own conjugate (DC, and Nyquist bins of even axes) is real N(0, 1), so P(|F|^2 > s) =
    erfc(sqrt(s / 2)); every other bin is complex with |F|^2 ~ Exp(1), so P = exp(-s).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    real = (1 + (height % 2 == 0)) * (1 + (width % 2 == 0))
    complex_bins = height * width - real

    def tail(s: float) -> float:
        return complex_bins * math.exp(-s) + real * math.erfc(math.sqrt(s / 2))

    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > delta else (lo, mid)
    return hi


@dataclasses.dataclass
class Proposition1Result:
    """Numbers of the Proposition 1 check (see :func:`proposition1`)."""

    plane: tuple[int, int]
    n_noise_planes: int
    cutoff: float
    delta: float
    bound: float  # s_delta of max_power_bound
    coverage: float  # fraction of noise planes whose max |F|^2 <= bound (the measured confidence)
    max_mean_deviation: float  # max over bins of |mean |F|^2 - 1| (flatness of the expected spectrum)
    band_fraction: float  # share of bins in the low band = noise's expected low-band energy share
    noise_share: np.ndarray  # per noise plane
    image_share: np.ndarray  # per image
    noise_share_interval: tuple[float, float]  # central 1 - delta interval of noise_share
    images_above_noise: float  # fraction of images whose share exceeds the noise interval's upper end

    def summary(self) -> dict[str, float]:
        return {
            "plane": f"{self.plane[0]}x{self.plane[1]}",
            "noise planes": self.n_noise_planes,
            "P(max|F|^2 <= s_delta)": self.coverage,
            "s_delta": self.bound,
            "max |E|F|^2 - 1|": self.max_mean_deviation,
            "low-band bin share": self.band_fraction,
            "noise low-band share (mean)": float(self.noise_share.mean()),
            "noise share interval lo": self.noise_share_interval[0],
            "noise share interval hi": self.noise_share_interval[1],
            "image low-band share (mean)": float(self.image_share.mean()),
            "image low-band share (min)": float(self.image_share.min()),
            "images above noise interval": self.images_above_noise,
        }


def proposition1(
    noise: torch.Tensor, images: torch.Tensor, cutoff: float = 0.25, delta: float = 0.05, remove_mean: bool = False
) -> Proposition1Result:
    """Check Proposition 1 on samples.

    Args:
        noise: iid standard normal planes ``(..., H, W)`` (every plane is one sample).
        images: clean samples ``(n, ..., H, W)`` (latents or images), one share per sample.
        cutoff: low band radius (fraction of Nyquist).
        delta: the failure probability of the statement (confidence 1 - delta).
        remove_mean: leave the DC term out of the image shares (a harder test for the images).
    """
    _check_batch(images, "images")
    h, w = noise.shape[-2:]
    if images.shape[-2:] != (h, w):
        raise ValueError(f"noise and images need the same plane size, got {(h, w)} and {tuple(images.shape[-2:])}")
    planes = noise.detach().reshape(-1, h, w).double()
    power = fft.power_spectrum(planes)
    bound = max_power_bound(h, w, delta)
    coverage = float((power.flatten(1).max(dim=1).values <= bound).double().mean())
    noise_share = fft.energy_share(planes, cutoff).numpy()
    img = images.detach().double().flatten(1, -3) if images.ndim > 3 else images.detach().double()[:, None]
    ipower = fft.power_spectrum(img)
    if remove_mean:
        ipower[..., 0, 0] = 0
    weight = fft.lowpass_mask(h, w, cutoff).to(ipower.dtype)
    image_share = ((ipower * weight).sum(dim=(-3, -2, -1)) / ipower.sum(dim=(-3, -2, -1))).numpy()
    lo, hi = np.quantile(noise_share, [delta / 2, 1 - delta / 2])
    return Proposition1Result(
        plane=(h, w), n_noise_planes=len(planes), cutoff=cutoff, delta=delta, bound=bound, coverage=coverage,
        max_mean_deviation=float((power.mean(dim=0) - 1).abs().max()), band_fraction=fft.band_fraction(h, w, cutoff),
        noise_share=noise_share, image_share=image_share, noise_share_interval=(float(lo), float(hi)),
        images_above_noise=float((image_share > hi).mean()),
    )
