"""Exponential-family parameters, curve energy/length and KL against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core import (
    alpha_sigma,
    curve_energy,
    curve_length,
    divergence,
    edm_sigma_to_log_snr,
    expectation_params,
    kl_along_curve,
    log_snr_to_edm_sigma,
    natural_params,
    rademacher_probes,
    straight_line,
    SpacetimePoint,
)
from spacetime_md.toy import GaussianMixture


# --- closed forms for Gaussian data x0 ~ N(m, s^2 I), written independently of the toy module


def gaussian_posterior(m, s, log_snr, x):
    """Posterior N(mean, v I) of x0 given x_t for Gaussian data."""
    alpha, sigma = alpha_sigma(log_snr)
    v = 1.0 / (1.0 / s**2 + log_snr.exp())
    mean = v.unsqueeze(-1) * (m / s**2 + (alpha / sigma**2).unsqueeze(-1) * x)
    return mean, v


def gaussian_mu(m, s, log_snr, x):
    mean, v = gaussian_posterior(m, s, log_snr, x)
    return mean, mean.square().sum(-1) + x.shape[-1] * v


def gaussian_kl(mean1, v1, mean2, v2, dim):
    """KL(N(mean1, v1 I) || N(mean2, v2 I))."""
    return 0.5 * (dim * v1 / v2 + (mean2 - mean1).square().sum(-1) / v2 - dim + dim * torch.log(v2 / v1))


@pytest.fixture
def gaussian():
    m = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    s = 0.8
    gm = GaussianMixture(m[None], [s])
    return m, s, gm


def test_schedule_identities(dtype):
    lam = torch.linspace(-12, 12, 25, dtype=dtype)
    alpha, sigma = alpha_sigma(lam)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(lam))
    torch.testing.assert_close((alpha**2 / sigma**2).log(), lam, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(edm_sigma_to_log_snr(log_snr_to_edm_sigma(lam)), lam)
    torch.testing.assert_close(log_snr_to_edm_sigma(lam), sigma / alpha)


def test_natural_params_closed_form(dtype):
    lam = torch.tensor([-3.0, 0.0, 2.5], dtype=dtype)
    x = torch.randn(3, 4, dtype=dtype)
    eta_x, eta_s = natural_params(lam, x)
    snr = lam.exp()
    alpha = (snr / (1 + snr)).sqrt()
    sigma2 = 1 / (1 + snr)
    torch.testing.assert_close(eta_x, (alpha / sigma2)[:, None] * x)
    torch.testing.assert_close(eta_s, -snr / 2)


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_expectation_params_gaussian_closed_form(gaussian, method):
    # For isotropic Gaussian data the Jacobian is a multiple of I, so Hutchinson is exact too.
    m, s, gm = gaussian
    lam = torch.tensor([-4.0, -1.0, 0.5, 3.0, 7.0], dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    mu_x, mu_s = expectation_params(gm.denoiser, lam, x, divergence=method, n_probes=2)
    want_x, want_s = gaussian_mu(m, s, lam, x)
    torch.testing.assert_close(mu_x, want_x, rtol=1e-10, atol=0)
    torch.testing.assert_close(mu_s, want_s, rtol=1e-8, atol=0)


def test_expectation_params_mixture_matches_exact_moments(dtype, tol):
    gm = GaussianMixture(torch.randn(4, 5), [0.5, 0.9, 1.3, 0.7], [0.1, 0.2, 0.3, 0.4])
    lam = torch.linspace(-3, 4, 6, dtype=dtype)
    x = torch.randn(6, 5, dtype=dtype)
    mu_x, mu_s = expectation_params(gm.denoiser, lam, x)
    want_x, want_s = gm.posterior_moments(x, lam)
    torch.testing.assert_close(mu_x, want_x, rtol=tol, atol=tol)
    torch.testing.assert_close(mu_s, want_s, rtol=tol, atol=tol)


def test_exact_divergence_chunked_equals_unchunked():
    gm = GaussianMixture(torch.randn(3, 6), [0.5, 0.9, 1.3])
    lam = torch.linspace(-2, 3, 4, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    d0, div0 = divergence(gm.denoiser, lam, x, method="exact")
    d1, div1 = divergence(gm.denoiser, lam, x, method="exact", chunk_size=9)
    torch.testing.assert_close(div0, div1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d0, d1)


def test_hutchinson_agrees_with_exact_in_expectation():
    # Non-isotropic posterior covariance: Hutchinson has variance; check an n-sigma bound.
    gm = GaussianMixture(torch.randn(4, 6) * 2, [0.4, 0.9, 1.3, 0.6])
    lam = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x = torch.randn(2, 6, dtype=torch.float64) * 2
    _, exact = divergence(gm.denoiser, lam, x, method="exact")
    gen = torch.Generator().manual_seed(1)
    samples = torch.stack(
        [divergence(gm.denoiser, lam, x, method="hutchinson", n_probes=1, generator=gen)[1] for _ in range(400)]
    )
    mean, sem = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    assert bool((samples.std(0) > 0).all()), "test needs a non-trivial estimator variance"
    assert bool(((mean - exact).abs() <= 5 * sem + 1e-12).all()), (mean, exact, sem)


def test_hutchinson_is_differentiable(gaussian):
    _, _, gm = gaussian
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    lam = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    _, mu_s = expectation_params(gm.denoiser, lam, x, divergence="hutchinson", n_probes=2)
    gx, gl = torch.autograd.grad(mu_s.sum(), (x, lam))
    assert torch.isfinite(gx).all() and gl.abs().sum() > 0


def curve(gm_dim=3, n_points=64, dtype=torch.float64):
    s = torch.linspace(0, 1, n_points, dtype=dtype)
    log_snr = 3.0 - 6.0 * torch.sin(math.pi * s)
    x = torch.stack([torch.cos(3 * s + k) * (1 + k) for k in range(gm_dim)], dim=-1)
    return log_snr, x


def test_curve_energy_gaussian_closed_form(gaussian):
    m, s, gm = gaussian
    log_snr, x = curve()
    energy = curve_energy(gm.denoiser, log_snr, x, clamp="none")
    eta_x, eta_s = natural_params(log_snr, x)
    mu_x, mu_s = gaussian_mu(m, s, log_snr, x)
    terms = (eta_x.diff(dim=0) * mu_x.diff(dim=0)).sum(-1) + eta_s.diff() * mu_s.diff()
    want = 0.5 * (log_snr.shape[0] - 1) * terms.sum()
    torch.testing.assert_close(energy, want, rtol=1e-8, atol=0)
    assert bool((terms > 0).all()), "exact segment terms are twice a symmetrised KL, so positive"
    length = curve_length(gm.denoiser, log_snr, x)
    torch.testing.assert_close(length, terms.sqrt().sum(), rtol=1e-8, atol=0)


def test_segment_term_is_twice_symmetrised_kl(gaussian):
    m, s, gm = gaussian
    log_snr = torch.tensor([0.5, 0.9], dtype=torch.float64)
    x = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2]], dtype=torch.float64)
    energy = curve_energy(gm.denoiser, log_snr, x)  # (T-1)/2 * term = term / 2
    mean, v = gaussian_posterior(m, s, log_snr, x)
    sym = gaussian_kl(mean[0], v[0], mean[1], v[1], 3) + gaussian_kl(mean[1], v[1], mean[0], v[0], 3)
    torch.testing.assert_close(2 * energy, sym, rtol=1e-8, atol=0)


def test_constant_curve_has_zero_energy(dtype):
    gm = GaussianMixture(torch.randn(3, 2), [0.5, 0.9, 1.3])
    log_snr = torch.full((10,), 1.5, dtype=dtype)
    x = torch.randn(1, 2, dtype=dtype).expand(10, 2)
    assert float(curve_energy(gm.denoiser, log_snr, x)) == 0.0
    assert float(curve_length(gm.denoiser, log_snr, x)) == 0.0


def test_energy_estimate_converges_with_more_points():
    gm = GaussianMixture(torch.randn(3, 3), [0.5, 0.9, 1.3])
    energies = []
    for n_points in (16, 32, 64, 128, 256):
        log_snr, x = curve(n_points=n_points)
        energies.append(float(curve_energy(gm.denoiser, log_snr, x)))
    diffs = [abs(b - a) for a, b in zip(energies, energies[1:])]
    assert all(d2 < d1 for d1, d2 in zip(diffs, diffs[1:])), (energies, diffs)
    assert diffs[-1] < 0.02 * energies[-1]


def test_kl_along_curve_matches_closed_form(gaussian):
    # Trapezoid integration: error falls as O(h^2) to the closed-form Gaussian KL.
    m, s, gm = gaussian
    ref_l, ref_x = torch.tensor(1.0, dtype=torch.float64), torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    mean_ref, v_ref = gaussian_posterior(m, s, ref_l.reshape(1), ref_x[None])
    errors = []
    for n_points in (200, 400):
        log_snr, x = curve(n_points=n_points)
        kl = kl_along_curve(gm.denoiser, log_snr, x, ref_l, ref_x, n_bridge=n_points)
        mean, v = gaussian_posterior(m, s, log_snr, x)
        want = gaussian_kl(mean_ref, v_ref, mean, v, 3)
        errors.append(float(((kl - want).abs() / want.clamp_min(1e-3)).max()))
    assert errors[1] < 0.3 * errors[0], errors
    assert errors[1] < 5e-3, errors


def test_kl_along_curve_zero_at_reference_and_nonnegative():
    gm = GaussianMixture(torch.randn(3, 2), [0.5, 0.9, 1.3])
    log_snr, x = curve(gm_dim=2, n_points=128)
    k = 40
    kl = kl_along_curve(gm.denoiser, log_snr, x, log_snr[k], x[k], n_bridge=64)
    assert abs(float(kl[k])) < 1e-3 * float(kl.max())
    assert float(kl.min()) >= -1e-3 * float(kl.max())
    assert float(kl.max()) > 0.1


def test_straight_line_endpoints():
    a = SpacetimePoint(2.0, torch.zeros(3))
    b = SpacetimePoint(-1.0, torch.ones(3))
    log_snr, x = straight_line(a, b, 5)
    assert log_snr.tolist() == [2.0, 1.25, 0.5, -0.25, -1.0]
    assert torch.equal(x[-1], torch.ones(3))


# --- bad input -------------------------------------------------------------------------


def _gm():
    return GaussianMixture(torch.randn(2, 3), [0.5, 0.9])


@pytest.mark.parametrize(
    "log_snr, x, match",
    [
        (torch.zeros(4), torch.zeros(4), r"x: expected shape \(B, \*\), got \(4,\)"),
        (torch.zeros(3), torch.zeros(4, 3), r"log_snr: expected size 4 for dimension B"),
        (torch.zeros(4), torch.zeros(4, 3, dtype=torch.int64), r"x: expected a floating-point tensor"),
        (torch.zeros(4), torch.full((4, 3), float("nan")), r"x: expected finite values, got 12 NaN/inf"),
        (torch.tensor([0, 0, float("inf"), 0]), torch.zeros(4, 3), r"log_snr: expected finite values"),
        (torch.zeros(4, dtype=torch.float64), torch.zeros(4, 3), r"log_snr: expected dtype torch.float32"),
        ([0.0] * 4, torch.zeros(4, 3), r"log_snr: expected a torch.Tensor, got list"),
    ],
)
def test_bad_input_messages(log_snr, x, match):
    gm = _gm()
    with pytest.raises((ValueError, TypeError), match=match):
        natural_params(log_snr, x)
    with pytest.raises((ValueError, TypeError), match=match):
        expectation_params(gm.denoiser, log_snr, x)


def test_bad_curve_and_options():
    gm = _gm()
    with pytest.raises(ValueError, match="at least 2 curve points, got 1"):
        curve_energy(gm.denoiser, torch.zeros(1), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="method: expected 'exact' or 'hutchinson', got 'magic'"):
        divergence(gm.denoiser, torch.zeros(2), torch.zeros(2, 3), method="magic")
    with pytest.raises(ValueError, match="clamp: expected 'segment', 'abs' or 'none', got 'relu'"):
        curve_energy(gm.denoiser, torch.zeros(2), torch.zeros(2, 3), clamp="relu")
    with pytest.raises(ValueError, match=r"denoiser output: expected shape \(6, 3\) \(same as its input x\), got \(6, 2\)"):
        expectation_params(lambda x, l: x[:, :2], torch.zeros(2), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="denoiser: expected a callable, got int"):
        expectation_params(3, torch.zeros(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"ref_x: expected shape \(3,\), got \(2,\)"):
        kl_along_curve(gm.denoiser, torch.zeros(2), torch.zeros(2, 3), 0.0, torch.zeros(2))
    with pytest.raises(ValueError, match="n_bridge: expected an integer >= 2, got 1"):
        kl_along_curve(gm.denoiser, torch.zeros(2), torch.zeros(2, 3), 0.0, torch.zeros(3), n_bridge=1)
    with pytest.raises(ValueError, match="sigma: expected a finite number > 0, got -1"):
        edm_sigma_to_log_snr(-1.0)
    with pytest.raises(ValueError, match=r"probes: expected shape \(\*, 2, 3\), got \(1, 2, 2\)"):
        divergence(gm.denoiser, torch.zeros(2), torch.zeros(2, 3), method="hutchinson", probes=torch.ones(1, 2, 2))


# --- contracts found unchecked by mutation testing (docs/mutation_testing.md) --------------


def test_rademacher_probes_are_fair_signs():
    probes = rademacher_probes(2000, (3, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert probes.shape == (2000, 3, 2) and probes.dtype == torch.float64
    assert set(probes.unique().tolist()) == {-1.0, 1.0}
    # Each entry is +-1 with probability 1/2: mean 0, standard error 1/sqrt(n); a 5-sigma bound.
    assert float(probes.mean().abs()) < 5 / math.sqrt(probes.numel())


def test_exact_divergence_chunk_size_bounds_the_rows_per_call():
    gm = GaussianMixture(torch.randn(3, 6), [0.5, 0.9, 1.3])
    lam = torch.linspace(-2, 3, 4, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    _, want = divergence(gm.denoiser, lam, x, method="exact")
    rows = []

    def recording(x, log_snr):
        rows.append(x.shape[0])
        return gm.denoiser(x, log_snr)

    for chunk_size in (4, 9, 13, 100):
        rows.clear()
        _, div = divergence(recording, lam, x, method="exact", chunk_size=chunk_size)
        torch.testing.assert_close(div, want, rtol=1e-12, atol=1e-12)
        assert max(rows) <= chunk_size and sum(rows) == 4 * 6, (chunk_size, rows)


def test_hutchinson_with_given_probes_is_the_mean_quadratic_form():
    # With fixed probes v_p the estimate is mean_p v_p^T J v_p, whatever the probes (Gaussian here).
    gm = GaussianMixture(torch.randn(4, 3) * 2, [0.4, 0.9, 1.3, 0.6])
    lam = torch.tensor([0.0, 1.0, -0.5], dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64) * 2
    probes = torch.randn(5, 3, 3, dtype=torch.float64)
    denoised, est = divergence(gm.denoiser, lam, x, method="hutchinson", probes=probes)
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: gm.denoiser(v[None], lam[b : b + 1])[0], x[b])
        want = torch.einsum("pi,ij,pj->p", probes[:, b], jac, probes[:, b]).mean()
        torch.testing.assert_close(est[b], want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(denoised, gm.denoiser(x, lam), rtol=1e-12, atol=0)


def test_kl_along_curve_starts_at_the_curves_first_point(gaussian):
    # A two-point curve with a long first step: kl[0] is KL(z* || z_0), whatever comes next.
    m, s, gm = gaussian
    ref_l, ref_x = torch.tensor(1.0, dtype=torch.float64), torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    log_snr = torch.tensor([2.0, -1.0], dtype=torch.float64)
    x = torch.tensor([[0.2, -0.4, 0.9], [1.5, 1.0, -2.0]], dtype=torch.float64)
    kl = kl_along_curve(gm.denoiser, log_snr, x, ref_l, ref_x, n_bridge=200)
    mean_ref, v_ref = gaussian_posterior(m, s, ref_l.reshape(1), ref_x[None])
    mean, v = gaussian_posterior(m, s, log_snr[:1], x[:1])
    want = float(gaussian_kl(mean_ref, v_ref, mean, v, 3))
    assert kl.shape == (2,)
    assert abs(float(kl[0]) - want) < 1e-3 * want, (float(kl[0]), want)


def test_clamp_modes_count_negative_terms():
    from spacetime_md.core.geometry import clamp_terms

    terms = torch.tensor([2.0, -1.0, 0.5])
    assert clamp_terms(terms, "segment").tolist() == [2.0, 0.0, 0.5]
    assert clamp_terms(terms, "abs").tolist() == [2.0, 1.0, 0.5]
    assert clamp_terms(terms, "none").tolist() == [2.0, -1.0, 0.5]
