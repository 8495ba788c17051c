"""Annealed Langevin (Algorithm 1), DDIM and diffusion edit distance."""

from __future__ import annotations

import math
import time

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


# --- contracts found unchecked by mutation testing (docs/mutation_testing.md) --------------


def test_mala_step_accepts_by_the_metropolis_hastings_ratio():
    # Target pi(y) ~ exp(-U(y) - k/2 |y - c|^2) with a non-Gaussian U = sum(y^4)/4. Proposal
    # y' = y - eps grad U_tot(y) + sqrt(2 eps) xi, so q(a | b) = N(a; b - eps grad U_tot(b), 2 eps I).
    # Accept iff u < pi(y') q(y | y') / (pi(y) q(y' | y)) (textbook Metropolis-Hastings).
    from spacetime_md.core.samplers import mala_step

    k, eps = 1.5, 0.4
    centre = torch.tensor([0.3, -0.2], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(256, 2, dtype=torch.float64, generator=gen) * 1.5
    noise = torch.randn(256, 2, dtype=torch.float64, generator=gen)

    def energy_grad(z):
        return 0.25 * z.pow(4).sum(-1), z.pow(3)

    def log_pi(z):
        return -0.25 * z.pow(4).sum(-1) - 0.5 * k * (z - centre).square().sum(-1)

    def log_q(a, b):
        return -(a - b + eps * (b.pow(3) + k * (b - centre))).square().sum(-1) / (4 * eps)

    proposal = y - eps * (y.pow(3) + k * (y - centre)) + math.sqrt(2 * eps) * noise
    log_ratio = log_pi(proposal) - log_pi(y) + log_q(y, proposal) - log_q(proposal, y)
    accept_prob = log_ratio.clamp_max(0.0).exp()
    uncertain = accept_prob < 0.999
    rows = accept_prob > 1e-8  # u = accept_prob * (1 + 1e-6) must not underflow to 0
    assert int((uncertain & rows).sum()) > 20 and int((~uncertain).sum()) > 20, "needs sure and unsure acceptances"
    energy, grad = energy_grad(y)
    # u just below the acceptance probability: accepted; just above (where it is < 1): rejected.
    for factor, want in ((1 - 1e-6, torch.ones(256, dtype=torch.bool)), (1 + 1e-6, ~uncertain)):
        uniform = (accept_prob * factor).clamp_max(1 - 1e-9)
        new_y, new_energy, new_grad, accepted = mala_step(energy_grad, y, energy, grad, centre, k, eps, noise, uniform)
        assert torch.equal(accepted[rows], want[rows])
        keep = accepted.unsqueeze(-1)
        torch.testing.assert_close(new_y, torch.where(keep, proposal, y), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_energy, torch.where(accepted, energy_grad(proposal)[0], energy),
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_grad, torch.where(keep, proposal.pow(3), grad), rtol=1e-12, atol=1e-12)


def test_annealed_langevin_defaults_one_step_and_step_size_checks():
    log_snr, x = torch.zeros(3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)
    start = torch.ones(2, dtype=torch.float64)
    t0 = time.perf_counter()
    default = sample_annealed_langevin(harmonic, log_snr, x, start, generator=torch.Generator().manual_seed(4))
    elapsed = time.perf_counter() - t0
    assert 0.0 <= default.wall_time <= elapsed  # timed inside the call (no speed asserted)
    # Documented defaults: one path, 10 steps per point, step size 1e-3.
    explicit = sample_annealed_langevin(harmonic, log_snr, x, start, generator=torch.Generator().manual_seed(4),
                                        n_paths=1, n_steps=10, step_size=1e-3)
    assert torch.equal(default.paths, explicit.paths) and default.paths.shape == (1, 3, 2)
    one = sample_annealed_langevin(harmonic, log_snr, x, start, n_steps=1, record="steps")
    assert one.paths.shape == (1, 3, 2) and one.n_energy_evals == 3
    with pytest.raises(ValueError, match=r"step_size: expected values > 0, got minimum 0.0"):
        sample_annealed_langevin(harmonic, log_snr, x, start,
                                 step_size=torch.tensor([0.1, 0.0, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"n_steps: expected an integer >= 1, got 0"):
        sample_annealed_langevin(harmonic, log_snr, x, start, n_steps=0)
