"""helpers.analysis.fft against an independent numpy implementation (centred spectrum, explicit loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.analysis import fft


def np_radius(h: int, w: int) -> np.ndarray:
    """Radius in Nyquist units of every bin of the fftshift-ed (centred) spectrum."""
    ky = np.arange(h) - h // 2  # integer frequencies after fftshift
    kx = np.arange(w) - w // 2
    return np.sqrt((ky[:, None] / (h / 2)) ** 2 + (kx[None, :] / (w / 2)) ** 2)


def np_mask(h: int, w: int, cutoff: float, kind: str, order: int = 2) -> np.ndarray:
    r = np_radius(h, w)
    if kind == "ideal":
        return (r <= cutoff + 1e-12).astype(float)
    if kind == "gaussian":
        return 0.5 ** ((r / cutoff) ** 2)
    return 1 / (1 + (r / cutoff) ** (2 * order))


def np_lowpass(x: np.ndarray, cutoff: float, kind: str = "ideal") -> np.ndarray:
    h, w = x.shape[-2:]
    centred = np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1)) * np_mask(h, w, cutoff, kind)
    return np.fft.ifft2(np.fft.ifftshift(centred, axes=(-2, -1))).real


def np_radial_spectrum(img: np.ndarray) -> dict[int, float]:
    """Ring index -> mean |F|^2 (orthonormal DFT) by an explicit loop over the bins."""
    h, w = img.shape
    power = np.abs(np.fft.fftshift(np.fft.fft2(img))) ** 2 / (h * w)
    step = 2 / min(h, w)
    r = np_radius(h, w)
    rings: dict[int, list[float]] = {}
    for i in range(h):
        for j in range(w):
            rings.setdefault(int(np.round(r[i, j] / step)), []).append(power[i, j])
    return {k: float(np.mean(v)) for k, v in sorted(rings.items())}


@pytest.mark.parametrize("shape", [(3, 4, 16, 16), (2, 64, 64), (1, 1, 12, 20), (5, 9)])
@pytest.mark.parametrize("kind", ["ideal", "gaussian", "butterworth"])
@pytest.mark.parametrize("cutoff", [0.25, 0.6])
def test_split_matches_numpy_and_reconstructs(shape, kind, cutoff):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    low, high = fft.split_bands(torch.from_numpy(x), cutoff=cutoff, mask=kind)
    np.testing.assert_allclose(low.numpy(), np_lowpass(x, cutoff, kind), atol=1e-10)
    np.testing.assert_allclose((low + high).numpy(), x, atol=1e-12)
    x32 = torch.from_numpy(x).float()
    low32, high32 = fft.split_bands(x32, cutoff=cutoff, mask=kind)
    assert low32.dtype == torch.float32
    torch.testing.assert_close(low32 + high32, x32, atol=1e-6, rtol=0)


def test_extreme_cutoffs():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    low, high = fft.split_bands(x, cutoff=0.0)  # DC only
    torch.testing.assert_close(low, x.mean(dim=(-2, -1), keepdim=True).expand_as(x))
    low, high = fft.split_bands(x, cutoff=1.5)  # every bin (corners are at sqrt 2)
    torch.testing.assert_close(low, x)
    assert high.abs().max() < 1e-12


def test_mask_values_and_monotone():
    for kind in fft.MASKS:
        m = fft.lowpass_mask(32, 32, 0.5, kind)
        assert m[0, 0] == 1 and m.min() >= 0 and m.max() <= 1
        np.testing.assert_allclose(torch.fft.fftshift(m).numpy(), np_mask(32, 32, 0.5, kind), atol=1e-12)
    # the smooth masks equal 1/2 at the cutoff (bin k=8 on a 32 grid is 0.5 Nyquist)
    assert abs(float(fft.lowpass_mask(32, 32, 0.5, "gaussian")[0, 8]) - 0.5) < 1e-12
    assert abs(float(fft.lowpass_mask(32, 32, 0.5, "butterworth")[0, 8]) - 0.5) < 1e-12


@pytest.mark.parametrize("shape", [(16, 16), (64, 64), (12, 20), (15, 15)])
def test_radial_spectrum_matches_numpy(shape):
    img = np.random.default_rng(1).standard_normal(shape)
    radii, spectrum = fft.radial_power_spectrum(torch.from_numpy(img))
    ref = np_radial_spectrum(img)
    np.testing.assert_allclose(spectrum.numpy(), list(ref.values()), rtol=1e-10)
    np.testing.assert_allclose(radii.numpy(), np.array(list(ref)) * 2 / min(shape), rtol=1e-12)


def test_radial_spectrum_batched_and_white_noise_is_flat():
    x = torch.randn(400, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    radii, spectrum = fft.radial_power_spectrum(x)
    assert spectrum.shape == (400, 4, len(radii))
    single = fft.radial_power_spectrum(x[3, 2])[1]
    torch.testing.assert_close(spectrum[3, 2], single)
    mean = spectrum.mean(dim=(0, 1))
    assert torch.all((mean - 1).abs() < 0.15)  # orthonormal DFT: E|F|^2 = 1 everywhere


def test_energy_share_parseval_and_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 16, 16)) + 0.5
    share = fft.energy_share(torch.from_numpy(x), cutoff=0.3).numpy()
    for i in range(3):
        power = np.abs(np.fft.fftshift(np.fft.fft2(x[i]))) ** 2
        inside = np_radius(16, 16) <= 0.3
        assert share[i] == pytest.approx(power[inside].sum() / power.sum(), rel=1e-10)
        no_dc = fft.energy_share(torch.from_numpy(x[i]), cutoff=0.3, remove_mean=True)
        power[8, 8] = 0
        assert float(no_dc) == pytest.approx(power[inside].sum() / power.sum(), rel=1e-10)
    # orthonormal DFT preserves energy
    total = fft.power_spectrum(torch.from_numpy(x)).sum(dim=(-2, -1)).numpy()
    np.testing.assert_allclose(total, (x**2).sum(axis=(-2, -1)), rtol=1e-12)


def test_band_fraction_and_norms():
    assert fft.band_fraction(16, 16, 0.25) == pytest.approx((np_radius(16, 16) <= 0.25).mean())
    x = torch.randn(5, 4, 16, 16)
    norms = fft.band_norms(x, 0.25)
    low, high = fft.split_bands(x, 0.25)
    torch.testing.assert_close(norms["low"], low.flatten(1).norm(dim=1))
    # the ideal bands are orthogonal: the energies add up
    energy = x.flatten(1).norm(dim=1) ** 2
    torch.testing.assert_close(norms["low"] ** 2 + norms["high"] ** 2, energy, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fft.split_bands(torch.zeros(8), 0.25), "H, W"),
        (lambda: fft.split_bands(torch.zeros(4, 4), -0.1), "cutoff"),
        (lambda: fft.split_bands(torch.zeros(4, 4), float("nan")), "cutoff"),
        (lambda: fft.split_bands(torch.zeros(4, 4), 0.2, mask="box"), "unknown mask"),
        (lambda: fft.split_bands(torch.zeros(4, 4), 0.0, mask="gaussian"), "cutoff > 0"),
        (lambda: fft.split_bands(torch.zeros(4, 4), 0.2, mask="butterworth", order=0), "order"),
        (lambda: fft.split_bands(torch.zeros(4, 4, dtype=torch.complex64), 0.2), "real"),
        (lambda: fft.band_norms(torch.zeros(4, 4), 0.2), "batch"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
