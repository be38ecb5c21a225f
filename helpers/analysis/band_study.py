"""Notebook 02's study, built on :mod:`helpers.analysis.bands`: its sizes, its clean samples, Proposition 1's checks.

* :class:`Sizes`: how much each profile measures (quick: CI; full: the paper's 50-step runs, many noise planes).
* :func:`clean_samples` -> :class:`CleanSamples`: generated latents (the ends of recorded sampling
  trajectories) beside the VAE latents and the pixels of ground-truth renders; :func:`band_views`: the
  first of them with one noise draw each (Fig 2a and the explorer).
* :func:`check_proposition1` -> :class:`Proposition1Checks`: latent- and pixel-size noise planes against
  every set of clean samples, the tables, and the controls that must fail (:meth:`Proposition1Checks.controls`).
* :func:`verdict_numbers`: what :func:`helpers.verdicts.frequency_low_band_first` reads, and
  :func:`numbers_text`, its printed reading.

The renders come from the notebook (only the loader and the toy-world metrics import ``helpers.toy``).

>>> x0 = clean_samples(pipe, traj, renders, n_pixel=sizes.pixel)
>>> prop = check_proposition1(x0, sizes, cutoff=0.25, delta=0.05, seed=1)
>>> prop.noise_table(), prop.image_table(), prop.controls(x0, seed=2)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..hooks.trajectory import Trajectory
from ..latents import encode_images, image_size
from .bands import BANDS, Proposition1Result, noise_planes, proposition1, snr_crossings


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much notebook 02 measures (:meth:`for_run`); ``str()`` gives the notebook's one-line summary."""

    image: int  # image side in pixels
    generated: int  # generated samples: one recorded sampling trajectory each
    ground_truth: int  # ground-truth renders (one VAE encode each)
    timesteps: int  # timesteps of the forward process on [0, T-1]
    noise: int  # latent-size noise planes for Proposition 1
    pixel: int  # renders also analysed in pixel space (bounded by memory)
    noise_pixel: int  # pixel-size noise planes (bounded by memory)

    @classmethod
    def for_run(cls, pipe, quick: bool, n_prompts: int) -> "Sizes":
        """Quick profile: a handful of samples and timesteps; full: 24 trajectories (at most ``n_prompts``),
        128 renders, 200 timesteps, 20 000 noise planes; the pixel-space sets shrink with the image size."""
        image = image_size(pipe)
        ground_truth, noise = (16, 2000) if quick else (128, 20000)
        return cls(image=image, generated=min(n_prompts, 4 if quick else 24), ground_truth=ground_truth,
                   timesteps=50 if quick else 200, noise=noise,
                   pixel=min(ground_truth, max(4, (2**22 if quick else 2**23) // (3 * image * image))),
                   noise_pixel=max(16, min(noise // 4, (2**22 if quick else 2**24) // (image * image))))

    def __str__(self) -> str:
        return (f"images {self.image}x{self.image} | generated {self.generated} | ground truth {self.ground_truth} "
                f"(pixel view {self.pixel}) | timesteps {self.timesteps}")


@dataclasses.dataclass
class CleanSamples:
    """The clean samples x0 of the band analysis."""

    generated: torch.Tensor  # (n_gen, C, h, w): the generated latents (ends of the trajectories)
    generated_images: np.ndarray  # (n_gen, H, W, 3) the model's images
    ground_truth: torch.Tensor  # (n_gt, C, h, w): latents of the renders (the pipeline's VAE)
    renders: np.ndarray  # (n_gt, H, W, 3) uint8 ground-truth renders
    pixels: torch.Tensor  # (n_pixel, 3, H, W): the first renders in [-1, 1]

    def __str__(self) -> str:
        return (f"latent {tuple(self.generated.shape[1:])}: std generated {self.generated.std():.3f}, "
                f"ground truth {self.ground_truth.std():.3f}")

    @property
    def sources(self) -> dict[str, torch.Tensor]:
        """The three sets noised in Fig 2b/2c, by name."""
        return {"generated latents": self.generated, "ground-truth latents": self.ground_truth,
                "ground-truth pixels": self.pixels}


def clean_samples(pipe, trajectory: Trajectory, renders: np.ndarray, n_pixel: int) -> CleanSamples:
    """Generated latents from a recorded ``trajectory`` (:func:`helpers.analysis.bands.denoising_trajectory`),
    ground-truth latents of ``renders`` (uint8 ``(n, H, W, 3)``, :func:`helpers.latents.encode_images`) and
    the first ``n_pixel`` renders as pixels in [-1, 1]."""
    pixels = torch.from_numpy(renders[:n_pixel]).permute(0, 3, 1, 2).float() / 127.5 - 1
    return CleanSamples(generated=trajectory.final, generated_images=trajectory.images,
                        ground_truth=encode_images(pipe, renders), renders=renders, pixels=pixels)


def band_views(samples: CleanSamples, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"latent": (x0, eps), "pixel": (x0, eps)}`` for the first ground-truth sample, one noise draw each
    (latent first, from one generator seeded with ``seed``): the ``latent``/``pixel`` arguments of
    :func:`helpers.plots.bands.plot_band_views`."""
    latent, pixel = samples.ground_truth[:1], samples.pixels[:1]
    eps = noise_planes(seed, latent=latent.shape, pixel=pixel.shape)
    return {"latent": (latent, eps["latent"]), "pixel": (pixel, eps["pixel"])}


#: Columns of a Proposition 1 table about the noise (the same for every set of one plane size) ...
NOISE_COLUMNS = ["noise planes", "P(max|F|^2 <= s_delta)", "s_delta", "max |E|F|^2 - 1|", "low-band bin share",
                 "noise low-band share (mean)", "noise share interval lo", "noise share interval hi"]
#: ... and about the clean samples (the image side, the part of the check that can fail).
IMAGE_COLUMNS = ["image low-band share (mean)", "image low-band share (min)", "images above noise interval"]


def proposition1_table(results: Mapping[str, Proposition1Result]) -> pd.DataFrame:
    """One row per check (:meth:`helpers.analysis.bands.Proposition1Result.summary`), by name."""
    return pd.DataFrame({name: r.summary() for name, r in results.items()}).T


@dataclasses.dataclass
class Proposition1Checks:
    """Proposition 1 on the clean samples (:func:`check_proposition1`)."""

    results: dict[str, Proposition1Result]  # by name: "latent, generated", ..., "pixel, ground truth, no DC"
    noise: dict[str, torch.Tensor]  # "latent": (n, h, w), "pixel": (n, H, W) iid N(0, 1) planes
    cutoff: float
    delta: float

    @property
    def table(self) -> pd.DataFrame:
        """Every check's numbers (:func:`proposition1_table`)."""
        return proposition1_table(self.results)

    def noise_table(self) -> pd.DataFrame:
        """The noise side, one row per plane size (floats)."""
        return self.table.drop_duplicates("plane").set_index("plane")[NOISE_COLUMNS].astype(float)

    def image_table(self) -> pd.DataFrame:
        """The image side of every check (floats)."""
        return self.table[IMAGE_COLUMNS].astype(float)

    def spectra(self, samples: CleanSamples) -> dict[str, torch.Tensor]:
        """What the spectra figure compares (:func:`helpers.plots.bands.plot_spectra`): the first 500 latent and
        200 pixel noise planes beside the generated latents, the ground-truth latents and pixels."""
        return {"noise": self.noise["latent"][:500], "generated latents": samples.generated,
                "ground-truth latents": samples.ground_truth, "noise (pixels)": self.noise["pixel"][:200],
                "ground-truth pixels": samples.pixels}

    def shares(self) -> dict[str, Proposition1Result]:
        """The checks whose energy shares are drawn (:func:`helpers.plots.bands.plot_proposition1`): ground-truth
        latents with and without the DC term, ground-truth pixels."""
        names = ("latent, ground truth", "latent, ground truth, no DC", "pixel, ground truth")
        return {k: self.results[k] for k in names}

    @property
    def worst(self) -> Proposition1Result:
        """The check of lowest coverage: the one the verdict reads (with its number of noise planes)."""
        return min(self.results.values(), key=lambda r: r.coverage)

    def controls(self, samples: CleanSamples, seed: int) -> dict[str, Proposition1Result]:
        """The image side on the ground-truth latents beside two image sets without that property, which must fail.

        Shaped like ``samples.ground_truth`` and drawn from one generator seeded with ``seed``: white-noise
        "images", and a checkerboard of random phase per sample and channel plus 0.1 x noise (a high-pass
        texture); both checked against the latent noise planes. The first entry is the claim's own check.
        """
        like = samples.ground_truth
        g = torch.Generator().manual_seed(seed)
        white = torch.randn(like.shape, generator=g)
        yy, xx = torch.meshgrid(torch.arange(like.shape[-2]), torch.arange(like.shape[-1]), indexing="ij")
        phase = torch.randint(0, 2, (len(like), like.shape[1], 1, 1), generator=g)
        checker = (((xx + yy)[None, None] + phase) % 2) * 2.0 - 1.0 + 0.1 * torch.randn(like.shape, generator=g)
        return {"latent, ground truth (the claim)": self.results["latent, ground truth"],
                "control: white-noise images": proposition1(self.noise["latent"], white, self.cutoff, self.delta),
                "control: high-pass texture": proposition1(self.noise["latent"], checker, self.cutoff, self.delta)}


def check_proposition1(samples: CleanSamples, sizes: Sizes, cutoff: float = 0.25, delta: float = 0.05,
                       seed: int = 0) -> Proposition1Checks:
    """:func:`helpers.analysis.bands.proposition1` on every set of clean samples.

    Noise planes (:func:`helpers.analysis.bands.noise_planes`, ``seed``): ``sizes.noise`` of the latent's
    size, then ``sizes.noise_pixel`` of the image's. Checks: generated latents, ground-truth latents
    (with and without the DC term) and ground-truth pixels (with and without it).
    """
    noise = noise_planes(seed, latent=(sizes.noise, *samples.generated.shape[-2:]),
                         pixel=(sizes.noise_pixel, sizes.image, sizes.image))
    lat, pix = noise["latent"], noise["pixel"]
    results = {
        "latent, generated": proposition1(lat, samples.generated, cutoff, delta),
        "latent, ground truth": proposition1(lat, samples.ground_truth, cutoff, delta),
        "latent, ground truth, no DC": proposition1(lat, samples.ground_truth, cutoff, delta, remove_mean=True),
        "pixel, ground truth": proposition1(pix, samples.pixels, cutoff, delta),
        "pixel, ground truth, no DC": proposition1(pix, samples.pixels, cutoff, delta, remove_mean=True),
    }
    return Proposition1Checks(results=results, noise=noise, cutoff=cutoff, delta=delta)


#: The checks whose image side the verdict reads (with the DC term: the claim as stated).
IMAGE_SIDE_CHECKS = ("latent, generated", "latent, ground truth", "pixel, ground truth")


def verdict_numbers(tables: Mapping[str, pd.DataFrame], sampler_timesteps: Sequence[float],
                    settled: Mapping[str, float], checks: Proposition1Checks, cutoff: float, mask: str) -> dict:
    """The numbers :func:`helpers.verdicts.frequency_low_band_first` reads (the notebook's ``verdict_numbers``).

    Args:
        tables: :func:`helpers.analysis.bands.noising_bands` per source (``CleanSamples.sources``' names).
        sampler_timesteps: the sampler's timesteps of the recorded trajectory.
        settled: :func:`helpers.analysis.bands.step_where_settled` of the denoising variation.
    Returns ``t_cross`` (mean-curve crossings per source), ``samples_low_later`` (share of samples whose
    low band crosses later), ``sampling_share_before_cross`` (share of the sampler's steps above each band's
    crossing, generated latents), ``denoising_settled_fraction``, ``prop1_min_coverage``, ``prop1_delta``,
    ``prop1_images_above_noise`` (the lowest of :data:`IMAGE_SIDE_CHECKS`), ``cutoff`` and ``mask``.
    """
    cross = {name: snr_crossings(table) for name, table in tables.items()}
    later = {name: float((lambda d: (d["low"] > d["high"]).mean())(snr_crossings(table, per_sample=True)))
             for name, table in tables.items()}
    sampler_t = np.asarray(sampler_timesteps)
    share_before = {band: float(np.mean(sampler_t > cross["generated latents"][band])) for band in BANDS}
    coverage = min(r.coverage for r in checks.results.values())
    images_above = min(checks.results[k].images_above_noise for k in IMAGE_SIDE_CHECKS)
    return {"t_cross": cross, "samples_low_later": later, "sampling_share_before_cross": share_before,
            "denoising_settled_fraction": settled, "prop1_min_coverage": coverage, "prop1_delta": checks.delta,
            "prop1_images_above_noise": images_above, "cutoff": cutoff, "mask": mask}


def numbers_text(numbers: Mapping) -> str:
    """The crossing table (rounded) and one sentence: what :func:`verdict_numbers` says, for printing."""
    later, share, settled = (numbers[k] for k in ("samples_low_later", "sampling_share_before_cross",
                                                  "denoising_settled_fraction"))
    sentence = (f"low band later in {later['generated latents']:.0%} (generated) / {later['ground-truth latents']:.0%} "
                f"(ground truth) of samples; during sampling the low band is noise-dominated for the first "
                f"{share['low']:.0%} of the steps, the high band for the first {share['high']:.0%}; within 50% of "
                f"the final value after {settled['low']:.0%} (low) vs {settled['high']:.0%} (high) of the steps "
                f"(cutoff {numbers['cutoff']})")
    return f"{pd.DataFrame(numbers['t_cross']).T.round(1)}\n{sentence}"
