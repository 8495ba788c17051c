"""Lattice-equivariant periodic denoiser, its training, and the quadrature oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spacetime_md.core import alpha_sigma
from spacetime_md.errors import CheckpointError
from spacetime_md.toy.gaussian_mixture import GaussianMixture
from spacetime_md.toy.landscape import PeriodicGridPotential
from spacetime_md.toy.periodic_model import (
    ExactPeriodicDenoiser,
    PeriodicDenoiser,
    PeriodicModelConfig,
    PeriodicTrainConfig,
    evaluate_denoiser_error,
    train_periodic_denoiser,
)

TWO_PI = 2 * math.pi


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensor ops: one intra-op thread (two threads stall when the other core is busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def wrapped_gaussian_potential(n=96, std=0.4, centre=(0.5, -1.0)):
    """Reduced energy of a narrow Gaussian on the torus (nearest-image distance)."""
    x = -math.pi + TWO_PI * np.arange(n) / n
    d0 = (x - centre[0] + math.pi) % TWO_PI - math.pi
    d1 = (x - centre[1] + math.pi) % TWO_PI - math.pi
    values = (d0[None, :] ** 2 + d1[:, None] ** 2) / (2 * std**2)
    return PeriodicGridPotential(values)


def random_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = PeriodicDenoiser(PeriodicModelConfig(hidden=32, n_layers=2, n_frequencies=3, **kwargs))
    with torch.no_grad():  # the head starts at zero; give it some output
        model.head.weight.normal_(0, 0.5)
        model.head.bias.normal_(0, 0.5)
    return model.double()


def test_model_is_lattice_equivariant_by_construction():
    model = random_model()
    x = torch.randn(64, 2, dtype=torch.float64)
    log_snr = torch.linspace(-4, 6, 64, dtype=torch.float64)
    alpha = alpha_sigma(log_snr)[0].unsqueeze(-1)
    base = model(x, log_snr)
    for k in ([1, 0], [0, -1], [2, 3]):
        shift = TWO_PI * torch.tensor(k, dtype=torch.float64)
        assert torch.allclose(model(x + alpha * shift, log_snr), base + shift, atol=1e-9)
    # and it is not trivially x / alpha
    assert (base - x / alpha).abs().max() > 1e-2


def test_model_respects_custom_periods_and_eps_relation():
    model = random_model(seed=1, lower=(0.0, -1.0), period=(3.0, 2.0))
    x = torch.randn(16, 2, dtype=torch.float64)
    log_snr = torch.zeros(16, dtype=torch.float64)
    alpha, sigma = alpha_sigma(log_snr)
    shift = alpha.unsqueeze(-1) * torch.tensor([3.0, 2.0], dtype=torch.float64)
    assert torch.allclose(model(x + shift, log_snr), model(x, log_snr) + torch.tensor([3.0, 2.0],
                          dtype=torch.float64), atol=1e-9)
    # D = (x - sigma eps) / alpha
    eps = model.eps(x, log_snr)
    assert torch.allclose(model(x, log_snr), (x - sigma.unsqueeze(-1) * eps) / alpha.unsqueeze(-1), atol=1e-12)


def test_float32_model_accepts_float64_inputs():
    model = PeriodicDenoiser(PeriodicModelConfig(hidden=16, n_layers=1, n_frequencies=2))
    out = model(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert torch.allclose(out, torch.zeros(3, 2, dtype=torch.float64))  # zero-initialised head
    # far outside the trained range (line searches go there) float64 inputs stay finite
    model = random_model().float()
    extreme = torch.tensor([-600.0, -100.0, 60.0], dtype=torch.float64)
    assert torch.isfinite(model(torch.ones(3, 2, dtype=torch.float64), extreme)).all()


def test_model_config_validation():
    with pytest.raises(ValueError, match="hidden: expected an integer >= 1, got 0"):
        PeriodicModelConfig(hidden=0)
    with pytest.raises(ValueError, match="expected 2 values each, got 1 and 2"):
        PeriodicModelConfig(lower=(0.0,))
    with pytest.raises(ValueError, match="n_time_frequencies: expected an integer >= 0"):
        PeriodicModelConfig(n_time_frequencies=-1)
    with pytest.raises(TypeError, match="expected a PeriodicModelConfig"):
        PeriodicDenoiser({"hidden": 3})


def test_train_config_validation():
    with pytest.raises(ValueError, match="expected min < max"):
        PeriodicTrainConfig(min_log_snr=3.0, max_log_snr=1.0)
    with pytest.raises(ValueError, match="ema_decay: expected a number in"):
        PeriodicTrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="n_steps: expected an integer >= 1"):
        PeriodicTrainConfig(n_steps=0)
    with pytest.raises(ValueError, match=r"data: expected shape \(\*, 2\)"):
        train_periodic_denoiser(torch.zeros(10, 3))


def test_save_load_round_trip(tmp_path):
    model = random_model().float()
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = PeriodicDenoiser.load(path)
    x, log_snr = torch.randn(8, 2), torch.randn(8)
    assert torch.allclose(loaded(x, log_snr), model(x, log_snr))
    assert loaded.config == model.config


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected an existing file"):
        PeriodicDenoiser.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable file"):
        PeriodicDenoiser.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"kind": "Something"}, other)
    with pytest.raises(CheckpointError, match="expected kind 'PeriodicDenoiser', got 'Something'"):
        PeriodicDenoiser.load(other)


# -- quadrature oracle ------------------------------------------------------------------------------


def test_exact_denoiser_matches_gaussian_closed_form():
    std, centre = 0.4, (0.5, -1.0)
    pot = wrapped_gaussian_potential(std=std, centre=centre)
    exact = ExactPeriodicDenoiser(pot, n_images=1)
    gm = GaussianMixture(torch.tensor([centre], dtype=torch.float64), std)
    # at these noise levels the periodic images of the data carry negligible posterior mass
    log_snr = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    alpha = alpha_sigma(log_snr)[0].unsqueeze(-1)
    x = alpha * torch.tensor([[1.0, -1.5], [0.0, -0.5], [0.6, -1.1], [0.3, -0.9], [0.5, -1.0]],
                             dtype=torch.float64)
    first, second = exact.posterior_moments(x, log_snr)
    g_first, g_second = gm.posterior_moments(x, log_snr)
    # the grid density is piecewise constant on cells of 0.065 rad: a small, known smoothing
    assert torch.allclose(first, g_first, atol=1e-4)
    assert torch.allclose(second, g_second, rtol=1e-4)


def test_exact_denoiser_is_lattice_equivariant_and_differentiable():
    pot = wrapped_gaussian_potential(n=48, std=0.6)
    exact = ExactPeriodicDenoiser(pot, n_images=1, chunk_size=4)
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    log_snr = torch.linspace(0, 3, 6, dtype=torch.float64)
    alpha = alpha_sigma(log_snr)[0].unsqueeze(-1)
    shift = TWO_PI * torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert torch.allclose(exact(x + alpha * shift, log_snr), exact(x, log_snr) + shift, atol=1e-9)
    (grad,) = torch.autograd.grad(exact(x, log_snr).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(TypeError, match="expected a PeriodicGridPotential"):
        ExactPeriodicDenoiser(object())
    with pytest.raises(ValueError, match="refine: expected an integer >= 1"):
        ExactPeriodicDenoiser(pot, refine=0)


# -- training -----------------------------------------------------------------------------------------


def test_training_fits_the_periodic_denoiser():
    pot = wrapped_gaussian_potential(n=64, std=0.5, centre=(2.8, 0.0))  # mass wraps across +-pi
    gen = torch.Generator().manual_seed(0)
    data = pot.sample_grid(20_000, generator=gen)
    mc = PeriodicModelConfig(hidden=48, n_layers=2, n_frequencies=3, n_time_frequencies=4)
    tc = PeriodicTrainConfig(n_steps=200, batch_size=256, lr=5e-3, min_log_snr=-3, max_log_snr=5, log_every=50)
    res = train_periodic_denoiser(data, mc, tc)
    assert len(res.history) == 4 and res.final_loss < res.history[0]["loss"] * 1.05
    assert not any(p.requires_grad for p in res.model.parameters())
    exact = ExactPeriodicDenoiser(pot, n_images=1)
    untrained = PeriodicDenoiser(mc)  # zero head: D = x / alpha
    levels = [0.0, 2.0]
    err_trained = evaluate_denoiser_error(res.model, exact, data, levels, n_points=128,
                                          generator=torch.Generator().manual_seed(1))
    err_untrained = evaluate_denoiser_error(untrained, exact, data, levels, n_points=128,
                                            generator=torch.Generator().manual_seed(1))
    for lam in levels:
        assert err_trained[lam] < 0.5 * err_untrained[lam]
