"""helpers.analysis.bands: band analysis of noising/denoising and the Proposition 1 check (mechanics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.analysis import bands as frequency
from helpers.latents import decode_latents, encode_images, image_size
from helpers.plots.bands import band_explorer, plot_band_views, plot_proposition1, plot_snr_curves, plot_spectra, plot_variation
from helpers.toy.world import ground_truth_scenes


def smooth_batch(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Image-like latents: a smooth random field (energy at low frequencies) plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 4, 4, 4, generator=g)
    field = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    return field + 0.1 * torch.randn(n, 4, size, size, generator=g)


def np_band(x: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape[-2:]
    ky, kx = np.meshgrid(np.fft.fftfreq(h) * 2, np.fft.fftfreq(w) * 2, indexing="ij")
    low = np.fft.ifft2(np.fft.fft2(x) * (np.hypot(ky, kx) <= cutoff + 1e-12)).real
    return low, x - low


@pytest.fixture(scope="module")
def scheduler(tiny_pipe):
    return frequency.forward_scheduler(tiny_pipe)


def test_forward_scheduler_keeps_vp_and_replaces_multistep(tiny_pipe):
    from diffusers import DPMSolverMultistepScheduler

    assert frequency.forward_scheduler(tiny_pipe) is tiny_pipe.scheduler
    dpm = DPMSolverMultistepScheduler.from_config(tiny_pipe.scheduler.config)
    replacement = frequency.forward_scheduler(dpm)
    assert type(replacement).__name__ == "DDPMScheduler"
    torch.testing.assert_close(replacement.alphas_cumprod, tiny_pipe.scheduler.alphas_cumprod)
    with pytest.raises(ValueError, match="pipeline or scheduler"):
        frequency.forward_scheduler(object())


def test_noising_bands_matches_closed_form(scheduler):
    x0 = smooth_batch()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    ts = [0, 250, 999]
    table = frequency.noising_bands(scheduler, x0, ts, cutoff=0.3, noise=eps, chunk_elements=x0.numel() * 2)
    assert len(table) == len(ts) * 2 * len(x0)
    abar = scheduler.alphas_cumprod.double().numpy()
    x0_np, eps_np = x0.double().numpy(), eps.double().numpy()
    x0_bands, eps_bands = np_band(x0_np, 0.3), np_band(eps_np, 0.3)
    for t in ts:
        a, s = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        xt_bands = np_band(a * x0_np + s * eps_np, 0.3)
        for b, band in enumerate(frequency.BANDS):
            rows = table[(table.t == t) & (table.band == band)].sort_values("sample")
            norm = lambda v: np.linalg.norm(v.reshape(len(v), -1), axis=1)  # noqa: E731
            np.testing.assert_allclose(rows.signal, a * norm(x0_bands[b]), rtol=1e-4)
            np.testing.assert_allclose(rows.noise, s * norm(eps_bands[b]), rtol=1e-4)
            np.testing.assert_allclose(rows.variation, norm(xt_bands[b] - x0_bands[b]) / norm(x0_bands[b]), rtol=1e-3)
            np.testing.assert_allclose(rows.snr, (rows.signal / rows.noise) ** 2, rtol=1e-5)
            assert np.allclose(rows.alpha_bar, abar[t])


def test_low_band_keeps_its_snr_longer(scheduler):
    table = frequency.noising_bands(scheduler, smooth_batch(), cutoff=0.25)
    cross = frequency.snr_crossings(table)
    assert set(cross) == {"low", "high"}
    assert cross["low"] > cross["high"] + 100
    per_sample = frequency.snr_crossings(table, per_sample=True)
    assert per_sample.shape == (6, 2) and (per_sample["low"] > per_sample["high"]).all()


def test_first_crossing_interpolates():
    t = np.array([0.0, 10.0, 20.0])
    assert frequency._first_crossing(t, np.array([2.0, 1.0, -1.0])) == pytest.approx(15.0)
    assert frequency._first_crossing(t, np.array([-1.0, -2.0, -3.0])) == 0.0
    assert math.isnan(frequency._first_crossing(t, np.array([3.0, 2.0, 1.0])))


def test_dc_only_signal_has_no_high_band(scheduler):
    x0 = torch.ones(2, 1, 8, 8)
    table = frequency.noising_bands(scheduler, x0, [0, 500, 999], cutoff=0.5)
    assert frequency.snr_crossings(table)["high"] == 0.0  # no high-frequency signal at all


def test_band_snapshot(scheduler):
    x0 = smooth_batch(2)
    eps = torch.randn(x0.shape)
    snap = frequency.band_snapshot(scheduler, x0, eps, 400, cutoff=0.25)
    torch.testing.assert_close(snap["low"] + snap["high"], snap["x_t"])
    torch.testing.assert_close(snap["x_t"], scheduler.add_noise(x0, eps, torch.tensor([400, 400])))
    assert snap["snr"]["low"] > snap["snr"]["high"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: frequency.noising_bands(s, torch.zeros(16, 16)), "batch"),
        (lambda s: frequency.noising_bands(s, torch.zeros(1, 16, 16), [1000]), "timesteps"),
        (lambda s: frequency.noising_bands(s, torch.zeros(1, 16, 16), [5], noise=torch.zeros(2, 16, 16)), "noise"),
        (lambda s: frequency.max_power_bound(16, 16, 1.5), "delta"),
        (lambda s: frequency.proposition1(torch.zeros(3, 8, 8), torch.zeros(3, 1, 16, 16)), "plane size"),
    ],
)
def test_bad_input(scheduler, call, match):
    with pytest.raises(ValueError, match=match):
        call(scheduler)


def test_trajectory_recorder_across_batches(tiny_pipe):
    prompts = ["a red circle", "a large blue square on the left", "a star"]
    traj = frequency.denoising_trajectory(tiny_pipe, prompts, seed=3, num_inference_steps=3,
                                          guidance_scale=7.5, batch_size=2)
    assert traj.latents.shape == (4, 3, 4, 16, 16)
    assert traj.levels == [int(t) for t in tiny_pipe.scheduler.timesteps] + [0]
    from helpers.generation import initial_latents

    torch.testing.assert_close(traj.latents[0], initial_latents(tiny_pipe, [3, 4, 5]))
    # the recorded end of the trajectory is the latent the pipeline decoded
    np.testing.assert_allclose(decode_latents(tiny_pipe, traj.final), traj.images, atol=1e-4)
    table = frequency.trajectory_variation(traj, cutoff=0.25)
    assert len(table) == 4 * 3 * 2
    last = table[table.step == 3]
    assert np.allclose(last.to_final, 0) and table[table.step == 0].step_change.isna().all()
    settled = frequency.step_where_settled(table, threshold=0.5)
    assert set(settled) == {"low", "high"} and all(0 < v <= 1 for v in settled.values())


def test_encode_decode_and_ground_truth(tiny_pipe):
    from helpers import promptsets
    from helpers.toy import world as toyworld

    records = promptsets.load_prompt_set("toy", n=3)
    scenes = ground_truth_scenes(records, seed=0)
    for record, scene in zip(records, scenes):
        for name, value in record.attributes.items():
            assert getattr(scene, name) == value
    images = toyworld.render_batch(scenes, size=image_size(tiny_pipe))
    z = encode_images(tiny_pipe, images)
    assert z.shape == (3, 4, 16, 16)
    assert decode_latents(tiny_pipe, z).shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match="images"):
        encode_images(tiny_pipe, images[0])


def test_max_power_bound_is_the_union_bound():
    s = frequency.max_power_bound(16, 16, 0.05)
    tail = 252 * math.exp(-s) + 4 * math.erfc(math.sqrt(s / 2))
    assert tail == pytest.approx(0.05, rel=1e-6)
    assert frequency.max_power_bound(15, 15, 0.05) < frequency.max_power_bound(64, 64, 0.05)


def test_proposition1_on_samples():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(3000, 16, 16, generator=g)
    result = frequency.proposition1(noise, smooth_batch(20), cutoff=0.25, delta=0.05)
    assert result.coverage >= 0.95  # the union bound is conservative
    assert result.max_mean_deviation < 0.2
    assert result.noise_share.mean() == pytest.approx(result.band_fraction, abs=0.005)
    assert result.images_above_noise == 1.0
    assert result.image_share.shape == (20,)
    no_dc = frequency.proposition1(noise, smooth_batch(20), cutoff=0.25, remove_mean=True)
    assert (no_dc.image_share <= result.image_share + 1e-9).all()
    assert set(result.summary()) >= {"P(max|F|^2 <= s_delta)", "images above noise interval"}


@pytest.mark.parametrize("kind", ["sd21", "sdxl", "pixart"])
def test_trajectory_on_other_architectures(kind):
    random_pipelines = pytest.importorskip("helpers.toy.random_pipelines")
    pipe = random_pipelines.random_pipeline(kind)
    traj = frequency.denoising_trajectory(pipe, ["a cat"], num_inference_steps=2, guidance_scale=2.0)
    assert traj.latents.shape[:2] == (3, 1)
    table = frequency.noising_bands(frequency.forward_scheduler(pipe), traj.final, [0, 999])
    assert set(frequency.snr_crossings(table)) == {"low", "high"}
    assert encode_images(pipe, traj.images).shape == traj.final.shape


def test_band_explorer_redraws_only_on_change():
    pytest.importorskip("ipywidgets")
    calls = []
    box = band_explorer(lambda t, c: calls.append((t, c)), t_max=999, t=300, cutoff=0.25)
    assert calls == [(300, 0.25)]  # the static first view
    sliders = box.children[0].children
    sliders[0].value = 700
    assert calls[-1] == (700, 0.25)
    sliders[1].value = 0.5
    assert calls[-1] == (700, 0.5) and len(calls) == 3


def test_figures_build(scheduler):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x0 = smooth_batch(3)
    pix = torch.rand(2, 3, 32, 32) * 2 - 1
    fig = plot_band_views(scheduler, [0, 500], 0.25, latent=(x0[:1], torch.randn(1, 4, 16, 16)),
                                    pixel=(pix[:1], torch.randn(1, 3, 32, 32)))
    assert len(fig.axes) == 12
    table = frequency.noising_bands(scheduler, x0, [0, 500, 999])
    den = table.rename(columns={"t": "step"}).assign(to_final=1.0, step_change=0.5)
    for f in (plot_snr_curves({"a": table}), plot_variation(table, den),
              plot_spectra({"noise": torch.randn(10, 16, 16), "x0": x0}, cutoff=0.25),
              plot_proposition1({"p": frequency.proposition1(torch.randn(50, 16, 16), x0)}), fig):
        plt.close(f)


def test_half_precision_vae_is_upcast_and_restored():
    from helpers.toy.random_pipelines import random_pipeline

    pipe = random_pipeline("sd15", seed=1)
    reference = encode_images(pipe, np.full((1, 64, 64, 3), 128, np.uint8))
    pipe.vae.to(torch.float16)
    pipe.vae.register_to_config(force_upcast=True)
    z = encode_images(pipe, np.full((1, 64, 64, 3), 128, np.uint8))
    assert pipe.vae.dtype == torch.float16  # restored
    torch.testing.assert_close(z, reference, atol=1e-2, rtol=1e-2)
    assert decode_latents(pipe, z).dtype == np.float32
