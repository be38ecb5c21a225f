"""Figures of the band analysis (paper Fig 2, Proposition 1) and the interactive band explorer."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis import fft
from ..analysis.band_study import CleanSamples
from ..analysis.bands import BANDS, Proposition1Result, band_snapshot, snr_crossings
from ..latents import decode_latents


def _show(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, 3) or (H, W) in [0, 1] for display (0 is mid-grey)."""
    img = ((x.float() + 1) / 2).clamp(0, 1)
    return img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img.mean(0).numpy()


def plot_clean_samples(pipe, samples: CleanSamples, prompts: Sequence[str], n: int = 6):
    """The clean samples x0 (notebook 02): the model's images for the first ``n`` prompts, renders of the same
    attributes, and the VAE's reconstruction of the renders (their latents are the ground-truth x0)."""
    from .grids import image_grid

    n = min(len(prompts), n)
    recon = decode_latents(pipe, samples.ground_truth[:n])
    return image_grid(list(samples.generated_images[:n]) + list(samples.renders[:n]) + list(recon),
                      titles=list(prompts[:n]) + [""] * (2 * n), ncols=n,
                      row_labels=["generated", "ground truth", "VAE(ground truth)"])


def plot_band_views(
    scheduler,
    timesteps: Sequence[int],
    cutoff: float = 0.25,
    mask: str = "ideal",
    latent: tuple[torch.Tensor, torch.Tensor] | None = None,
    pixel: tuple[torch.Tensor, torch.Tensor] | None = None,
    pipe=None,
    size: float = 1.6,
):
    """Fig 2a: x_t and its low/high parts over t, one column per timestep.

    Column titles give the first sample's SNR of the low / high band (latent when given).
    Latent rows are decoded with ``pipe`` (channel means without it); pixel rows map [-1, 1]
    to [0, 1], so a zero high part is mid-grey.

    Args:
        latent: ``(x0, eps)`` of one latent ``(1, C, h, w)``; its rows are decoded with ``pipe``.
        pixel: ``(x0, eps)`` of one image ``(1, 3, H, W)`` in [-1, 1], noised in pixel space.
    """
    from .grids import image_grid

    rows: list[tuple[str, list[np.ndarray]]] = []
    titles: list[str] = []
    for kind, pair in (("latent", latent), ("pixel", pixel)):
        if pair is None:
            continue
        snaps = [band_snapshot(scheduler, pair[0], pair[1], int(t), cutoff, mask) for t in timesteps]
        if not titles:
            titles = [f"t={int(t)} | SNR {s['snr']['low']:.2g} / {s['snr']['high']:.2g}" for t, s in zip(timesteps, snaps)]
        for part in ("x_t", "low", "high"):
            stack = torch.cat([s[part] for s in snaps])
            if kind == "latent":
                images = list(decode_latents(pipe, stack)) if pipe is not None else [_show(z) for z in stack]
            else:
                images = [_show(z) for z in stack]
            rows.append((f"{kind} {part}", images))
    images = [img for _, imgs in rows for img in imgs]
    all_titles = titles + [""] * (len(images) - len(titles))
    return image_grid(images, titles=all_titles, ncols=len(timesteps), size=size, row_labels=[r for r, _ in rows])


def plot_snr_curves(tables: dict[str, pd.DataFrame], title: str = ""):
    """Fig 2b: signal vs noise norm per band over t, one panel per source of x0."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.4), squeeze=False)
    colors = {"low": "tab:blue", "high": "tab:orange"}
    for ax, (name, table) in zip(axes[0], tables.items()):
        mean = table.groupby(["band", "t"])[["signal", "noise"]].mean().reset_index()
        cross = snr_crossings(table)
        for band in BANDS:
            g = mean[mean.band == band]
            ax.plot(g.t, g.signal, color=colors[band], label=f"sqrt(abar) x0_{band}")
            ax.plot(g.t, g.noise, color=colors[band], ls="--", label=f"sqrt(1-abar) eps_{band}")
            if not math.isnan(cross[band]):
                ax.axvline(cross[band], color=colors[band], lw=0.8, alpha=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_title(f"{name}\nSNR=1 at t: low {cross['low']:.0f}, high {cross['high']:.0f}", fontsize=9)
    axes[0, 0].set_ylabel("norm (mean over samples)")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_variation(noising: pd.DataFrame, denoising: pd.DataFrame):
    """Fig 2c: variation ratios while noising (over t) and along the denoising trajectory."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    palette = {"low": "tab:blue", "high": "tab:orange"}
    style = {"hue": "band", "hue_order": BANDS, "palette": palette, "errorbar": ("pi", 90)}
    sns.lineplot(noising, x="t", y="variation", ax=axes[0], **style)
    axes[0].set_title("noising: ||x_t^b - x0^b|| / ||x0^b||", fontsize=9)
    den = denoising.assign(progress=denoising.step / denoising.step.max())
    sns.lineplot(den, x="progress", y="to_final", ax=axes[1], marker="o", **style)
    axes[1].set_title("denoising: ||x_t^b - x0^b|| / ||x0^b|| (x0 = generated)", fontsize=9)
    sns.lineplot(den.dropna(subset=["step_change"]), x="progress", y="step_change", ax=axes[2], marker="o", **style)
    axes[2].set_title("denoising: per-step change ||dx^b|| / ||x^b||", fontsize=9)
    for ax in axes[1:]:
        ax.set_xlabel("fraction of sampling steps done")
    axes[2].set_yscale("log")
    fig.tight_layout()
    return fig


def plot_spectra(groups: dict[str, torch.Tensor], cutoff: float | None = None):
    """Radially averaged power spectra, each sample normalised by its mean power (white noise = 1)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, x in groups.items():
        radii, spectrum = fft.radial_power_spectrum(x.double())
        norm = fft.power_spectrum(x.double()).mean(dim=(-2, -1), keepdim=True)[..., 0]
        spec = (spectrum / norm.clamp_min(1e-30)).reshape(-1, len(radii))
        med = spec.median(dim=0).values
        lo, hi = spec.quantile(0.05, dim=0), spec.quantile(0.95, dim=0)
        line = ax.plot(radii, med, label=f"{name} ({x.shape[-2]}x{x.shape[-1]})")[0]
        ax.fill_between(radii, lo, hi, color=line.get_color(), alpha=0.15)
    if cutoff is not None:
        ax.axvline(cutoff, color="k", lw=0.8, ls=":", label=f"cutoff {cutoff}")
    ax.set_yscale("log")
    ax.set_xlabel("radius (fraction of Nyquist)")
    ax.set_ylabel("power / mean power")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_proposition1(results: dict[str, Proposition1Result]):
    """Low-band energy shares of noise vs clean samples, and the per-plane max |F|^2 against s_delta."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        bins = np.linspace(0, 1, 61)
        ax.hist(res.noise_share, bins=bins, density=True, alpha=0.6, label=f"noise ({res.n_noise_planes} planes)")
        ax.hist(res.image_share, bins=bins, density=True, alpha=0.6, label=f"clean ({len(res.image_share)})")
        ax.axvline(res.band_fraction, color="k", ls=":", lw=0.8, label="share of bins in band")
        ax.set_title(f"{name}: energy share below {res.cutoff} Nyquist\nP(max|F|^2 <= {res.bound:.1f}) = "
                     f"{res.coverage:.3f} (claim >= {1 - res.delta:.2f})", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("low-band energy share")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def band_explorer(draw, t_max: int = 999, t: int = 500, cutoff: float = 0.25):
    """Sliders over t and cutoff that redraw ``draw(t, cutoff)`` into an output area on change.

    The first view is drawn as a normal cell output and the sliders only act on user changes:
    nothing is routed through a widget while a notebook is executed headless (``interact``
    sends every figure through an ``Output`` widget, which can stall nbclient/nbmake).
    Returns the widget box, or ``None`` when ipywidgets is not installed (static view only).
    """
    from IPython.display import display

    try:
        import ipywidgets as widgets
    except ImportError:
        draw(t, cutoff)
        return None
    t_slider = widgets.IntSlider(value=t, min=0, max=t_max, step=10, description="t", continuous_update=False)
    c_slider = widgets.FloatSlider(value=cutoff, min=0.05, max=1.0, step=0.05, description="cutoff",
                                   continuous_update=False)
    out = widgets.Output()

    def update(_change=None) -> None:
        with out:
            out.clear_output(wait=True)
            draw(t_slider.value, c_slider.value)

    for slider in (t_slider, c_slider):
        slider.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([t_slider, c_slider]), out])
    box.update = update  # for tests and scripted use
    display(box)
    draw(t, cutoff)
    return box


def band_view_explorer(
    scheduler,
    mask: str = "ideal",
    latent: tuple[torch.Tensor, torch.Tensor] | None = None,
    pixel: tuple[torch.Tensor, torch.Tensor] | None = None,
    pipe=None,
    t: int = 500,
    cutoff: float = 0.25,
    size: float = 1.3,
):
    """:func:`band_explorer` over :func:`plot_band_views` at t = 0 and t (``latent``/``pixel`` as there).

    Sliders over t (up to the scheduler's last training timestep) and the cutoff; the first view is drawn
    at ``t`` and ``cutoff``. Returns the widget box, or ``None`` without ipywidgets (static view only).
    """
    import matplotlib.pyplot as plt

    def draw(t: int, cutoff: float) -> None:
        fig = plot_band_views(scheduler, [0, t], cutoff, mask, latent=latent, pixel=pixel, pipe=pipe, size=size)
        plt.show()
        plt.close(fig)

    return band_explorer(draw, t_max=int(scheduler.config.num_train_timesteps) - 1, t=t, cutoff=cutoff)
