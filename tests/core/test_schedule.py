"""Noise schedule (DESIGN.md section 2) against closed forms written out by hand.

VP: ``alpha^2 = sigmoid(l)``, ``sigma^2 = sigmoid(-l)``, ``SNR = exp(l)``; EDM:
``sigma_edm = exp(-l / 2)``, ``x_edm = x_vp / alpha``.
"""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core import alpha_sigma, edm_sigma_to_log_snr, edm_to_vp, log_snr_to_edm_sigma, snr, vp_to_edm


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.mark.parametrize("lam", [-6.0, -1.0, 0.0, 0.7, 5.0])
def test_vp_scales_and_snr_by_hand(lam):
    alpha, sigma = alpha_sigma(lam)  # a Python float is accepted
    assert float(alpha) == pytest.approx(math.sqrt(_sigmoid(lam)), rel=1e-6)
    assert float(sigma) == pytest.approx(math.sqrt(_sigmoid(-lam)), rel=1e-6)
    assert float(snr(lam)) == pytest.approx(math.exp(lam), rel=1e-6)
    assert float(log_snr_to_edm_sigma(lam)) == pytest.approx(math.exp(-lam / 2), rel=1e-6)


def test_vp_edm_rescaling_by_hand():
    # x_edm = x_vp / alpha with alpha^2 = sigmoid(l): at l = 0 alpha = 1/sqrt(2), at l = log 3 alpha^2 = 3/4.
    log_snr = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    x_vp = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], dtype=torch.float64)
    alpha = torch.tensor([math.sqrt(0.5), math.sqrt(0.75)], dtype=torch.float64)
    x_edm = vp_to_edm(x_vp, log_snr)
    torch.testing.assert_close(x_edm, x_vp / alpha[:, None], rtol=1e-12, atol=0)
    torch.testing.assert_close(edm_to_vp(x_vp, log_snr), x_vp * alpha[:, None], rtol=1e-12, atol=0)
    torch.testing.assert_close(edm_to_vp(x_edm, log_snr), x_vp, rtol=1e-12, atol=0)


def test_edm_sigma_to_log_snr_by_hand_and_positive_only():
    assert float(edm_sigma_to_log_snr(0.5)) == pytest.approx(2 * math.log(2.0), rel=1e-6)  # float below 1
    torch.testing.assert_close(
        edm_sigma_to_log_snr(torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)),
        torch.tensor([2 * math.log(4.0), 0.0, -2 * math.log(4.0)], dtype=torch.float64),
    )
    # sigma = 0 is the clean data (log_snr = +inf): refused, as a float and inside a tensor.
    with pytest.raises(ValueError, match=r"sigma: expected a finite number > 0, got 0.0"):
        edm_sigma_to_log_snr(0.0)
    with pytest.raises(ValueError, match=r"sigma: expected a finite number > 0, got inf"):
        edm_sigma_to_log_snr(math.inf)
    with pytest.raises(ValueError, match=r"sigma: expected values > 0, got minimum 0.0"):
        edm_sigma_to_log_snr(torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="log_snr: expected a tensor or a float, got str"):
        alpha_sigma("1.0")
