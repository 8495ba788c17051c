"""Annealed Langevin (Algorithm 1), DDIM and diffusion edit distance."""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core import (
    GeodesicConfig,
    alpha_sigma,
    diffusion_edit_distance,
    sample_annealed_langevin,
    sample_ddim,
)
from spacetime_md.errors import NonFiniteError
from spacetime_md.toy import GaussianMixture


def harmonic(y):
    return 0.5 * y.square().sum(-1)


def test_annealed_langevin_stationary_distribution():
    # U = |y|^2/2 plus restraint SNR/2 |y - c|^2: target N(c SNR/(1+SNR), 1/(1+SNR)).
    lam = math.log(3.0)
    alpha = float(alpha_sigma(lam)[0])
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    log_snr = torch.full((4,), lam, dtype=torch.float64)
    x = (alpha * c).expand(4, 2)
    gen = torch.Generator().manual_seed(0)
    result = sample_annealed_langevin(
        harmonic, log_snr, x, torch.zeros(2, dtype=torch.float64),
        n_paths=4000, n_steps=150, step_size=0.01, generator=gen,
    )
    assert result.paths.shape == (4000, 4, 2)
    assert result.n_energy_evals == 4000 * 4 * 150 and result.evals_per_path == 600
    final = result.paths[:, -1]
    want_mean, want_var = c * 3 / 4, 1 / 4
    sem = math.sqrt(want_var / 4000)
    assert bool(((final.mean(0) - want_mean).abs() < 5 * sem).all()), final.mean(0)
    # Unadjusted Langevin has an O(step) variance bias; allow 5 %.
    assert bool(((final.var(0) - want_var).abs() < 0.05 * want_var).all()), final.var(0)


@pytest.mark.parametrize("method, want_ratio", [("ula", 1 / (1 - 0.6)), ("mala", 1.0)])
def test_mala_removes_the_step_size_bias(method, want_ratio):
    # Harmonic U_n of curvature k = 1 + SNR = 4 and eps k = 1.2: unadjusted Langevin has variance
    # 1 / (k (1 - eps k / 2)) = 2.5x the target's; the Metropolis-adjusted chain has the target's.
    lam = math.log(3.0)
    alpha = float(alpha_sigma(lam)[0])
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    log_snr = torch.full((3,), lam, dtype=torch.float64)
    x = (alpha * c).expand(3, 2)
    result = sample_annealed_langevin(
        harmonic, log_snr, x, torch.zeros(2, dtype=torch.float64), n_paths=4000, n_steps=100, step_size=0.3,
        generator=torch.Generator().manual_seed(0), method=method,
    )
    final = result.paths[:, -1]
    want_var = 0.25 * want_ratio
    assert bool(((final.var(0) - want_var).abs() < 0.08 * want_var).all()), final.var(0)
    assert bool(((final.mean(0) - 0.75 * c).abs() < 0.05).all()), final.mean(0)
    if method == "mala":
        assert result.acceptance.shape == (3,)
        assert 0.3 < result.acceptance_rate < 0.95
        assert result.evals_per_path == 3 * 100 + 1
    else:
        assert result.acceptance is None and result.acceptance_rate is None
        assert result.evals_per_path == 3 * 100


def test_mala_rejects_non_finite_proposals():
    # A hard wall at y_0 > 0.5: unadjusted steps would step into inf; the adjusted chain never does.
    def walled(y):
        return torch.where(y[:, 0] > 0.5, torch.full_like(y[:, 0], math.inf), harmonic(y))

    log_snr, x = torch.zeros(4, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
    result = sample_annealed_langevin(walled, log_snr, x, torch.zeros(2, dtype=torch.float64), n_paths=200,
                                      n_steps=20, step_size=0.2, generator=torch.Generator().manual_seed(3),
                                      record="steps", method="mala")
    assert bool(torch.isfinite(result.paths).all())
    assert float(result.paths[..., 0].max()) <= 0.5
    assert result.acceptance_rate < 1.0


def test_annealed_langevin_record_steps_and_reproducible():
    log_snr = torch.linspace(2, -2, 5)
    x = torch.zeros(5, 3)
    kwargs = dict(n_paths=3, n_steps=4, step_size=torch.full((5,), 0.01))
    a = sample_annealed_langevin(harmonic, log_snr, x, torch.ones(3), generator=torch.Generator().manual_seed(1), record="steps", **kwargs)
    b = sample_annealed_langevin(harmonic, log_snr, x, torch.ones(3), generator=torch.Generator().manual_seed(1), record="steps", **kwargs)
    assert a.paths.shape == (3, 20, 3)
    assert torch.equal(a.paths, b.paths)


def test_annealed_langevin_errors():
    log_snr, x = torch.zeros(5), torch.zeros(5, 2)
    with pytest.raises(ValueError, match=r"x_init: expected shape \(2,\), got \(3,\)"):
        sample_annealed_langevin(harmonic, log_snr, x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"x_init: expected shape \(4, 2\), got \(3, 2\)"):
        sample_annealed_langevin(harmonic, log_snr, x, torch.zeros(3, 2), n_paths=4)
    with pytest.raises(ValueError, match="step_size: expected a number > 0, got 0"):
        sample_annealed_langevin(harmonic, log_snr, x, torch.zeros(2), step_size=0)
    with pytest.raises(ValueError, match=r"reduced_potential output: expected shape \(1,\), got \(1, 2\)"):
        sample_annealed_langevin(lambda y: y * 1.0, log_snr, x, torch.zeros(2))
    with pytest.raises(ValueError, match="log_snr: expected size 5 for dimension T"):
        sample_annealed_langevin(harmonic, torch.zeros(4), x, torch.zeros(2))
    with pytest.raises(ValueError, match="method: expected 'ula' or 'mala', got 'hmc'"):
        sample_annealed_langevin(harmonic, log_snr, x, torch.zeros(2), method="hmc")
    with pytest.raises(NonFiniteError, match="non-finite states at curve point 0"):
        sample_annealed_langevin(harmonic, torch.full((5,), 8.0), x, torch.ones(2), step_size=1.0, n_steps=50)


def test_ddim_generates_gaussian_data():
    gm = GaussianMixture([[1.5]], [0.5])
    schedule = torch.linspace(-10, 10, 400, dtype=torch.float64)
    noise = torch.randn(5000, 1, dtype=torch.float64)
    x0 = sample_ddim(gm.denoiser, noise, schedule)
    alpha = float(alpha_sigma(schedule[-1])[0])
    samples = x0 / alpha
    assert abs(float(samples.mean()) - 1.5) < 0.03
    assert abs(float(samples.std()) - 0.5) < 0.03
    traj = sample_ddim(gm.denoiser, noise[:7], schedule, return_trajectory=True)
    assert traj.shape == (400, 7, 1)


def test_diffusion_edit_distance_symmetric_and_zero_on_identity():
    gm = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), [0.5, 0.5])
    a = torch.tensor([-1.0, 0.1], dtype=torch.float64)
    b = torch.tensor([0.9, 0.4], dtype=torch.float64)
    cfg = GeodesicConfig(n_nodes=5, n_points=(16, 32), max_steps=60)
    d_ab = diffusion_edit_distance(gm.denoiser, a, b, t_min=0.2, config=cfg)
    d_ba = diffusion_edit_distance(gm.denoiser, b, a, t_min=0.2, config=cfg)
    assert d_ab > 0
    assert abs(d_ab - d_ba) < 0.02 * d_ab
    assert diffusion_edit_distance(gm.denoiser, a, a.clone(), t_min=0.2) == 0.0
    with pytest.raises(ValueError, match=r"x_b: expected shape \(2,\), got \(3,\)"):
        diffusion_edit_distance(gm.denoiser, a, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="t_min: expected a number > 0, got 0"):
        diffusion_edit_distance(gm.denoiser, a, b, t_min=0)
