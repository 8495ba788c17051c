"""Exact Gaussian-mixture quantities."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.toy import GaussianMixture


@pytest.fixture
def gm():
    return GaussianMixture(torch.tensor([[-1.0, 0.5], [2.0, -1.0], [0.0, 2.0]]), [0.4, 0.8, 0.6], [0.2, 0.5, 0.3])


def test_score_is_gradient_of_marginal_log_prob(gm, dtype, tol):
    x = torch.randn(6, 2, dtype=dtype, requires_grad=True)
    lam = torch.linspace(-2, 3, 6, dtype=dtype)
    (grad,) = torch.autograd.grad(gm.marginal_log_prob(x, lam).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), lam), grad, rtol=tol, atol=tol)
    assert gm.denoiser(x.detach(), lam).dtype == dtype


def test_log_prob_normalised_1d():
    gm = GaussianMixture([-2.5, 0.5, 2.5], 0.75, [0.275, 0.45, 0.275])
    grid = torch.linspace(-10, 10, 4001, dtype=torch.float64)[:, None]
    mass = torch.trapezoid(gm.log_prob(grid).exp(), grid[:, 0])
    assert abs(float(mass) - 1.0) < 1e-8


def test_high_snr_denoiser_returns_clean_point(gm):
    x0 = torch.tensor([[0.3, 0.2]], dtype=torch.float64)
    lam = torch.tensor([18.0], dtype=torch.float64)
    torch.testing.assert_close(gm.denoiser(x0, lam), x0, rtol=1e-3, atol=1e-3)


def test_sample_moments(gm):
    samples = gm.sample(20000, generator=torch.Generator().manual_seed(0))
    mean = (gm.weights[:, None] * gm.means).sum(0)
    assert bool(((samples.mean(0) - mean).abs() < 0.05).all())


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.0, 1.0], [0.5, -0.1]), r"stds: expected values > 0, got \[0.5, -0.1\]"),
        (([0.0, 1.0], [0.5, 0.5], [1.0, -1.0]), "weights: expected non-negative values"),
        (([0.0, 1.0], [0.5, 0.5, 0.5]), r"stds: expected shape \(2,\), got \(3,\)"),
        (([float("nan"), 1.0], 0.5), "means: expected finite values"),
    ],
)
def test_bad_parameters(args, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args)


def test_bad_query_shape(gm):
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 2\), got \(4, 3\)"):
        gm.denoiser(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="n: expected a positive integer, got 0"):
        gm.sample(0)
