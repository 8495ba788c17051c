"""Denoiser adapters and wrappers against a one-Gaussian posterior written out by hand.

Data ``x_0 ~ N(m, c^2 I)``. VP: ``x_t = alpha x_0 + sigma eps`` with ``alpha^2 = sigmoid(l)``,
``sigma^2 = sigmoid(-l)``; the posterior means are
``E[x_0 | x_t] = m + c^2 alpha (x_t - alpha m) / (alpha^2 c^2 + sigma^2)`` and
``E[eps | x_t] = sigma (x_t - alpha m) / (alpha^2 c^2 + sigma^2)``. EDM:
``x = x_0 + s eps`` gives ``E[x_0 | x] = (s^2 m + c^2 x) / (s^2 + c^2)``.
"""

from __future__ import annotations

import pytest
import torch

from spacetime_md.core import AutoGuidedDenoiser, CountingDenoiser, from_edm, from_epsilon, from_v

M = torch.tensor([0.7, -1.1, 0.3], dtype=torch.float64)
C2 = 0.64  # c^2


def _scales(log_snr):
    return torch.sigmoid(log_snr).sqrt().unsqueeze(-1), torch.sigmoid(-log_snr).sqrt().unsqueeze(-1)


def exact_x0(x, log_snr):
    alpha, sigma = _scales(log_snr)
    return M + C2 * alpha * (x - alpha * M) / (alpha.square() * C2 + sigma.square())


def exact_eps(x, log_snr):
    alpha, sigma = _scales(log_snr)
    return sigma * (x - alpha * M) / (alpha.square() * C2 + sigma.square())


def exact_v(x, log_snr):
    alpha, sigma = _scales(log_snr)
    return alpha * exact_eps(x, log_snr) - sigma * exact_x0(x, log_snr)


def exact_edm(x_edm, sigma_edm):
    s2 = sigma_edm.square().unsqueeze(-1)
    return (s2 * M + C2 * x_edm) / (s2 + C2)


@pytest.fixture
def points():
    # B = 4 rows, D = 3: B != D so that a broadcast along the wrong axis fails loudly.
    log_snr = torch.tensor([-3.0, -0.5, 1.0, 4.0], dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64) * 1.5
    return x, log_snr


@pytest.mark.parametrize("adapter, model", [(from_epsilon, exact_eps), (from_v, exact_v), (from_edm, exact_edm)],
                         ids=["epsilon", "v", "edm"])
def test_adapters_recover_the_posterior_mean(points, adapter, model):
    x, log_snr = points
    torch.testing.assert_close(adapter(model)(x, log_snr), exact_x0(x, log_snr), rtol=1e-10, atol=1e-12)


def test_counting_denoiser_counts_rows_and_calls(points):
    x, log_snr = points
    counting = CountingDenoiser(exact_x0)
    assert (counting.n_evals, counting.n_calls) == (0, 0)
    torch.testing.assert_close(counting(x, log_snr), exact_x0(x, log_snr))
    counting(x[:1], log_snr[:1])
    assert (counting.n_evals, counting.n_calls) == (5, 2)
    assert "n_evals=5" in repr(counting)
    with pytest.raises(TypeError, match="denoiser: expected a callable, got int"):
        CountingDenoiser(3)


def _guide(x, log_snr):
    return 0.5 * exact_x0(x, log_snr)


def test_autoguidance_everywhere_and_weights_zero_and_one(points):
    x, log_snr = points
    d, g = exact_x0(x, log_snr), _guide(x, log_snr)
    # Default: guidance at every level with w = 2, D + (w - 1)(D - G) = 2 D - G.
    torch.testing.assert_close(AutoGuidedDenoiser(exact_x0, _guide)(x, log_snr), 2 * d - g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(AutoGuidedDenoiser(exact_x0, _guide, weight=0.5)(x, log_snr), 0.5 * (d + g),
                               rtol=1e-12, atol=1e-12)
    # w = 0 returns the guide (documented), w = 1 the model.
    torch.testing.assert_close(AutoGuidedDenoiser(exact_x0, _guide, weight=0.0)(x, log_snr), g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(AutoGuidedDenoiser(exact_x0, _guide, weight=1.0)(x, log_snr), d, rtol=0, atol=0)


def test_autoguidance_interval_must_be_non_empty():
    with pytest.raises(ValueError, match=r"expected log_snr_min < log_snr_max, got 1.0, 1.0"):
        AutoGuidedDenoiser(exact_x0, _guide, log_snr_min=1.0, log_snr_max=1.0)


def test_smooth_autoguidance_follows_the_sigmoid_profile_and_is_smooth_in_log_snr():
    """``edge_width = h``: D + (w - 1) s(l) (D - G), s the product of two sigmoids written out
    here; its derivative in log_snr is finite and continuous across the interval's ends, where
    the hard interval jumps by (w - 1)(D - G)."""
    x = torch.tensor([[0.2, -0.4, 1.0]], dtype=torch.float64).repeat(401, 1)
    log_snr = torch.linspace(-6.0, 12.0, 401, dtype=torch.float64)
    w, lo, hi, h = 2.5, -2.0, 8.0, 0.5
    smooth = AutoGuidedDenoiser(exact_x0, _guide, weight=w, log_snr_min=lo, log_snr_max=hi, edge_width=h)
    s = 1 / (1 + torch.exp(-(log_snr - lo) / h)) / (1 + torch.exp(-(hi - log_snr) / h))
    d, g = exact_x0(x, log_snr), _guide(x, log_snr)
    torch.testing.assert_close(smooth(x, log_snr), d + (w - 1) * s[:, None] * (d - g), rtol=1e-12, atol=1e-12)
    assert smooth.smooth and not AutoGuidedDenoiser(exact_x0, _guide, weight=w, log_snr_min=lo).smooth
    # Finite differences in log_snr: bounded for the smooth pair, a jump for the hard one.
    step = log_snr[1] - log_snr[0]
    hard = AutoGuidedDenoiser(exact_x0, _guide, weight=w, log_snr_min=lo, log_snr_max=hi)
    slope_smooth = (smooth(x, log_snr).diff(dim=0) / step).abs().max()
    slope_hard = (hard(x, log_snr).diff(dim=0) / step).abs().max()
    assert slope_smooth < 5.0 < slope_hard
    # Far outside the interval the guide is skipped: the result is D itself.
    far = torch.tensor([-40.0, 60.0], dtype=torch.float64)
    calls = []
    spy = AutoGuidedDenoiser(exact_x0, lambda a, b: calls.append(len(b)) or _guide(a, b), weight=w, log_snr_min=lo,
                             log_snr_max=hi, edge_width=h)
    torch.testing.assert_close(spy(x[:2], far), exact_x0(x[:2], far), rtol=0, atol=0)
    assert calls == []
    assert smooth.guidance_settings() == {"weight": 2.5, "log_snr_min": -2.0, "log_snr_max": 8.0, "edge_width": 0.5}


@pytest.mark.parametrize("width", [-0.1, float("nan"), float("inf")])
def test_edge_width_is_checked(width):
    with pytest.raises(ValueError, match="edge_width: expected a finite number >= 0"):
        AutoGuidedDenoiser(exact_x0, _guide, edge_width=width)
