"""Diffusion Edit Distance (Eq. 17): where the geodesic is anchored."""

from __future__ import annotations

import math

import torch

from spacetime_md.core import GeodesicConfig, diffusion_edit_distance
from spacetime_md.toy import GaussianMixture

TINY = GeodesicConfig(n_nodes=2, n_points=(8,), max_steps=3)


def test_endpoints_are_the_data_points_at_the_anchor_level():
    # t_min is an EDM sigma: log_snr = -2 log t_min, and the VP points are alpha * x with
    # alpha^2 = sigmoid(log_snr). At t_min = 1: log_snr = 0, alpha^2 = 1/2.
    gm = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), [0.5, 0.5])
    a = torch.tensor([-1.0, 0.1], dtype=torch.float64)
    b = torch.tensor([0.9, 0.4], dtype=torch.float64)
    distance, result = diffusion_edit_distance(gm.denoiser, a, b, t_min=1.0, config=TINY, return_result=True)
    assert distance == result.length > 0
    assert abs(float(result.log_snr[0])) < 1e-12 and abs(float(result.log_snr[-1])) < 1e-12
    # (alpha is computed from a float log_snr in torch's default dtype, float32: 1e-7 relative.)
    torch.testing.assert_close(result.x[0], a / math.sqrt(2.0), rtol=1e-6, atol=0)
    torch.testing.assert_close(result.x[-1], b / math.sqrt(2.0), rtol=1e-6, atol=0)
    # The documented default anchor is t_min = 0.1: log_snr = 2 log 10.
    _, default = diffusion_edit_distance(gm.denoiser, a, b, config=TINY, return_result=True)
    assert float(default.log_snr[0]) == float(default.log_snr[-1])
    assert abs(float(default.log_snr[0]) - 2 * math.log(10.0)) < 1e-6
