"""Core behaviour that the mutation run (benchmarks/mutation_test.py) found untested.

Each test pins a documented rule by a value computed by hand: the auto-guidance window is
``[log_snr_min, log_snr_max)`` with correction ``(w - 1) (D - G)`` on the rows inside only; the
edit distance between equal points is exactly 0; the dtype/device check compares every tensor
after the first.
"""

from __future__ import annotations

import pytest
import torch

from spacetime_md.core import AutoGuidedDenoiser, diffusion_edit_distance
from spacetime_md.core._validation import check_same_dtype_device


def _denoiser(x, log_snr):
    return 2.0 * x + log_snr[:, None]


def _guide(x, log_snr):
    return x - 1.0


def test_auto_guidance_window_is_half_open_and_the_correction_is_w_minus_1_times_d_minus_g():
    guided = AutoGuidedDenoiser(_denoiser, _guide, weight=3.0, log_snr_min=0.0, log_snr_max=4.0)
    x = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    log_snr = torch.tensor([-1.0, 0.0, 2.0, 4.0], dtype=torch.float64)  # out, min (in), in, max (out)
    d, g = _denoiser(x, log_snr), _guide(x, log_snr)
    expected = d.clone()
    expected[1:3] = d[1:3] + 2.0 * (d[1:3] - g[1:3])  # (w - 1) = 2
    torch.testing.assert_close(guided(x, log_snr), expected, rtol=0, atol=1e-12)
    # every row inside (the all-rows branch) and every row outside
    inside = torch.tensor([0.0, 3.999], dtype=torch.float64)
    torch.testing.assert_close(guided(x[:2], inside),
                               3.0 * _denoiser(x[:2], inside) - 2.0 * _guide(x[:2], inside), rtol=0, atol=1e-12)
    outside = torch.tensor([4.0, -0.001], dtype=torch.float64)
    torch.testing.assert_close(guided(x[:2], outside), _denoiser(x[:2], outside), rtol=0, atol=0)


def test_edit_distance_of_a_point_to_itself_is_zero():
    x = torch.randn(4, dtype=torch.float64)
    distance, result = diffusion_edit_distance(_denoiser, x, x.clone(), 0.5, return_result=True)
    assert distance == 0.0 and result is None


def test_dtype_device_check_compares_the_second_tensor_too():
    a, b = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"b: expected dtype torch.float64 \(same as a\), got torch.float32"):
        check_same_dtype_device(a=a, b=b)
    check_same_dtype_device(a=a, b=a.clone())


def test_spline_curve_starts_on_the_straight_line_and_straight_line_values():
    from spacetime_md.core import SpacetimePoint, SplineCurve, straight_line

    a = SpacetimePoint(4.0, torch.tensor([1.0, -2.0], dtype=torch.float64))
    b = SpacetimePoint(2.0, torch.tensor([3.0, 2.0], dtype=torch.float64))
    z0, z1 = torch.tensor([4.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([2.0, 3.0, 2.0], dtype=torch.float64)
    curve = SplineCurve(a, b, n_nodes=3)
    w = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)[:, None]  # interior knots at k / 4
    torch.testing.assert_close(curve.interior.detach(), (1 - w) * z0 + w * z1, rtol=0, atol=1e-12)
    log_snr, x = straight_line(a, b, 3)
    torch.testing.assert_close(log_snr, torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(x, torch.tensor([[1.0, -2.0], [2.0, 0.0], [3.0, 2.0]], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # evaluate(int): T equally spaced points, 2 and 3 allowed, endpoints exact
    for n in (2, 3):
        ls, xs = curve.evaluate(n)
        assert ls.shape == (n,) and ls[0] == 4.0 and ls[-1] == 2.0
        torch.testing.assert_close(xs[-1], b.x, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="s: expected at least 2 points, got 1"):
        curve.evaluate(1)
    # the basis of a uniform grid is computed once and reused
    s = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert curve.basis(s) is curve.basis(s.clone())


def test_coarse_stage_stops_at_ten_times_rtol():
    # rtol 1e-4 on the 1-D mixture: the documented coarse-stage rule (10 x rtol) stops stage 0
    # one step later than 20 x rtol would; stops_as_documented checks the exact step.
    from spacetime_md.core import GeodesicConfig, SpacetimePoint, alpha_sigma, optimize_geodesic
    from spacetime_md.toy import GaussianMixture
    from tests.core.conftest import stops_as_documented

    mixture = GaussianMixture([-2.5, 0.5, 2.5], 0.75, [0.275, 0.45, 0.275])
    alpha = float(alpha_sigma(4.0)[0])
    a = SpacetimePoint(4.0, torch.tensor([-2.5 * alpha], dtype=torch.float64))
    b = SpacetimePoint(4.0, torch.tensor([2.5 * alpha], dtype=torch.float64))
    config = GeodesicConfig(n_nodes=4, n_points=(8, 16), max_steps=60, rtol=1e-4, min_steps=3, patience=3)
    result = optimize_geodesic(mixture.denoiser, a, b, config)
    assert stops_as_documented(result.history, config) == [True, True]


def test_low_variance_accepts_endpoints_exactly_at_the_floor_and_honest_mode_is_off_by_default():
    from spacetime_md.core import GeodesicConfig, LowVariance

    z = torch.tensor([1.0, 0.0], dtype=torch.float64)
    LowVariance(1.0).setup(None, z, z.clone(), GeodesicConfig())  # log_snr == min_log_snr: allowed
    with pytest.raises(ValueError, match="LowVariance: expected the start point's log_snr >= min_log_snr 1.5"):
        LowVariance(1.5).setup(None, z, z.clone(), GeodesicConfig())
    assert GeodesicConfig().resample_every == 0  # documented default: a fixed probe


def test_ddim_with_two_noise_levels_is_one_exact_step():
    # x1 = alpha1 D + sigma1 (x0 - alpha0 D) / sigma0, alpha^2 = sigmoid(log_snr), sigma^2 = sigmoid(-log_snr)
    from spacetime_md.core import sample_ddim

    constant = torch.tensor([[0.5, -1.0]], dtype=torch.float64)

    def denoiser(x, log_snr):
        return constant.expand_as(x)

    x0 = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    levels = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    a0, a1 = torch.sigmoid(levels).sqrt()
    s0, s1 = torch.sigmoid(-levels).sqrt()
    expected = a1 * constant + s1 * (x0 - a0 * constant) / s0
    torch.testing.assert_close(sample_ddim(denoiser, x0, levels), expected, rtol=0, atol=1e-12)
    three = sample_ddim(denoiser, x0, torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64), return_trajectory=True)
    assert three.shape == (3, 1, 2)
    with pytest.raises(ValueError, match="log_snr: expected at least 2 noise levels, got 1"):
        sample_ddim(denoiser, x0, levels[:1])
