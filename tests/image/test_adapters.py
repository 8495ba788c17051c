"""Image adapters (EDM / epsilon / v / sample / UNet2DModel-like) against the Gaussian closed form."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.core import curve_energy, expectation_params, straight_line, SpacetimePoint
from spacetime_md.image import (
    DiscreteTimesteps,
    ImageDenoiser,
    ddpm_alphas_cumprod,
    from_edm_image,
    from_epsilon_image,
    from_unet2d,
    from_v_image,
)

from tests.image.conftest import EVENT_SHAPE

ABAR = ddpm_alphas_cumprod(1000, "linear")


def all_adapters(g):
    ts = DiscreteTimesteps(ABAR)
    return {
        "edm": from_edm_image(g.edm_network, EVENT_SHAPE),
        "epsilon": from_epsilon_image(g.epsilon_network, EVENT_SHAPE),
        "v": from_v_image(g.v_network, EVENT_SHAPE),
        "sample": ImageDenoiser(lambda img, lam: g.denoiser(img.reshape(img.shape[0], -1), lam).reshape(img.shape),
                                EVENT_SHAPE, "sample"),
        "unet_epsilon": from_unet2d(g.unet2d(ts, "epsilon"), EVENT_SHAPE, ABAR, "epsilon"),
        "unet_v": from_unet2d(g.unet2d(ts, "v_prediction"), EVENT_SHAPE, ABAR, "v_prediction"),
        "unet_sample": from_unet2d(g.unet2d(ts, "sample"), EVENT_SHAPE, ABAR, "sample"),
    }


@pytest.mark.parametrize("name", ["edm", "epsilon", "v", "sample", "unet_epsilon", "unet_v", "unet_sample"])
def test_adapter_mu_matches_closed_form(gaussian_images, name):
    den = all_adapters(gaussian_images)[name]
    # log_snr inside the DDPM table's range [-10.1, 9.2] so the UNet adapters are not clamped
    log_snr = torch.linspace(-4.0, 7.0, 9, dtype=torch.float64)
    x = torch.randn(9, 8, dtype=torch.float64)
    mu_x, mu_s = expectation_params(den, log_snr, x, divergence="exact")
    ref_x, ref_s = gaussian_images.expectation_params(log_snr, x)
    torch.testing.assert_close(mu_x, ref_x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mu_s, ref_s, rtol=1e-9, atol=1e-9)


def test_adapters_give_the_same_energy(gaussian_images, image_pair):
    a, b = image_pair
    log_snr, x = straight_line(SpacetimePoint(3.0, a.reshape(-1)), SpacetimePoint(1.0, b.reshape(-1)), 24)
    energies = {k: float(curve_energy(d, log_snr, x, divergence="exact")) for k, d in all_adapters(gaussian_images).items()}
    ref = float(curve_energy(gaussian_images.denoiser, log_snr, x, divergence="exact"))
    assert ref > 0
    for name, e in energies.items():
        assert e == pytest.approx(ref, rel=1e-9), name


def test_adapter_runs_in_float32_network_dtype(gaussian_images):
    g32 = type(gaussian_images)(gaussian_images.mean.float(), gaussian_images.std.float())
    den = from_epsilon_image(g32.epsilon_network, EVENT_SHAPE, dtype=torch.float32)
    x = torch.randn(3, 8, dtype=torch.float64)
    lam = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    out = den(x, lam)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, gaussian_images.denoiser(x, lam), rtol=1e-5, atol=1e-5)


def test_discrete_timesteps_are_inverse_and_monotone():
    ts = DiscreteTimesteps(ABAR)
    lo, hi = ts.log_snr_range
    lam = torch.linspace(lo + 1e-6, hi - 1e-6, 101, dtype=torch.float64)
    t = ts.timestep(lam)
    assert bool((t.diff() < 0).all())  # more noise = later timestep
    torch.testing.assert_close(ts.log_snr(t), lam, rtol=1e-10, atol=1e-10)
    # table entries map to integer timesteps
    k = torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64)
    torch.testing.assert_close(ts.timestep(ts.log_snr(k)), k, rtol=0, atol=1e-9)
    assert float(ts.timestep(torch.tensor(50.0))) == 0.0  # clamped
    assert DiscreteTimesteps(ABAR, round_timesteps=True).timestep(lam).frac().abs().max() == 0


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_ddpm_schedules_decrease(schedule):
    kwargs = {"beta_start": 0.00085, "beta_end": 0.012} if schedule == "scaled_linear" else {}
    abar = ddpm_alphas_cumprod(1000, schedule, **kwargs)
    assert abar.shape == (1000,)
    assert bool((abar.diff() < 0).all()) and 0 < float(abar[-1]) < float(abar[0]) < 1
    DiscreteTimesteps(abar)


def test_image_denoiser_boundary_errors(gaussian_images):
    den = from_edm_image(gaussian_images.edm_network, EVENT_SHAPE)
    assert den.dim == 8
    imgs = torch.randn(3, *EVENT_SHAPE, dtype=torch.float64)
    torch.testing.assert_close(den.unflatten(den.flatten(imgs)), imgs)
    assert den.flatten(imgs[0]).shape == (8,)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 8\)"):
        den(torch.randn(2, 9, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"images: expected shape \(2, 2, 2\)"):
        den.flatten(torch.randn(3, 2, 2, 3))
    bad = from_edm_image(lambda img, sigma: img[:, :1], EVENT_SHAPE)
    with pytest.raises(ValueError, match=r"network output: expected shape \(2, 2, 2, 2\)"):
        bad(torch.randn(2, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="prediction: expected one of"):
        ImageDenoiser(gaussian_images.edm_network, EVENT_SHAPE, "x0")
    with pytest.raises(ValueError, match="event_shape: expected positive integers"):
        ImageDenoiser(gaussian_images.edm_network, (2, 0, 2))
    with pytest.raises(TypeError, match="event_shape: expected a tuple"):
        ImageDenoiser(gaussian_images.edm_network, 8)
    with pytest.raises(TypeError, match="network: expected a callable"):
        ImageDenoiser(None, EVENT_SHAPE)
    with pytest.raises(ValueError, match="prediction_type: expected one of"):
        from_unet2d(gaussian_images.epsilon_network, EVENT_SHAPE, ABAR, "eps")
    with pytest.raises(ValueError, match="alphas_cumprod: expected strictly decreasing"):
        DiscreteTimesteps(ABAR.flip(0))
    with pytest.raises(ValueError, match="schedule: expected"):
        ddpm_alphas_cumprod(10, "quadratic")


def test_unet_output_conventions(gaussian_images):
    """Tensor, ``.sample``, dict and tuple outputs are all accepted."""
    ts = DiscreteTimesteps(ABAR)
    model = gaussian_images.unet2d(ts, "epsilon")
    x = torch.randn(4, 8, dtype=torch.float64)
    lam = torch.linspace(-2, 3, 4, dtype=torch.float64)
    ref = from_unet2d(model, EVENT_SHAPE, ABAR)(x, lam)
    for wrap in (lambda o: o.sample, lambda o: {"sample": o.sample}, lambda o: (o.sample,)):
        den = from_unet2d(lambda s, t, w=wrap: w(model(s, t)), EVENT_SHAPE, ABAR)
        torch.testing.assert_close(den(x, lam), ref)
