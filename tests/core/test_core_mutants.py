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
