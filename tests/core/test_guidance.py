"""Autoguidance: a denoiser extrapolated away from a weaker version of itself."""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core import AutoGuidedDenoiser, CountingDenoiser, sample_ddim
from spacetime_md.toy import GaussianMixture


def _mixture(std: float) -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64), [std, std])


def test_formula_inside_and_outside_the_guided_levels():
    model, guide = _mixture(0.5).denoiser, _mixture(0.9).denoiser
    guided = AutoGuidedDenoiser(model, guide, weight=2.5, log_snr_min=-1.0, log_snr_max=3.0)
    x = torch.linspace(-3.0, 3.0, 6, dtype=torch.float64).unsqueeze(-1)
    log_snr = torch.tensor([-2.0, -1.0, 0.0, 2.9, 3.0, 5.0], dtype=torch.float64)
    d, g = model(x, log_snr), guide(x, log_snr)
    inside = torch.tensor([False, True, True, True, False, False]).unsqueeze(-1)  # [min, max)
    expected = torch.where(inside, d + 1.5 * (d - g), d)
    torch.testing.assert_close(guided(x, log_snr), expected, rtol=0, atol=1e-12)
    assert not torch.equal(expected[1:4], d[1:4])  # the guide really changes those rows


def test_guide_is_only_evaluated_where_needed():
    guide = CountingDenoiser(_mixture(0.9).denoiser)
    x = torch.zeros(4, 1, dtype=torch.float64)
    levels = torch.tensor([-3.0, 0.0, 1.0, 8.0], dtype=torch.float64)
    AutoGuidedDenoiser(_mixture(0.5).denoiser, guide, weight=2.0, log_snr_min=-1.0, log_snr_max=4.0)(x, levels)
    assert guide.n_evals == 2
    AutoGuidedDenoiser(_mixture(0.5).denoiser, guide, weight=1.0)(x, levels)  # w = 1: the model itself
    assert guide.n_evals == 2
    AutoGuidedDenoiser(_mixture(0.5).denoiser, guide, weight=2.0, log_snr_min=5.0, log_snr_max=6.0)(x, levels)
    assert guide.n_evals == 2


def test_guidance_corrects_an_over_smoothed_model():
    """Data: modes at +-2 with std 0.5. Model: the same modes too wide (0.7); guide: wider
    still (0.9). Guided sampling puts less mass between the modes than the model alone."""
    truth, model, guide = _mixture(0.5), _mixture(0.7).denoiser, _mixture(0.9).denoiser
    levels = torch.linspace(-8.0, 8.0, 200, dtype=torch.float64)
    x_init = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def between(denoiser):
        x = sample_ddim(denoiser, x_init, levels)
        return float((x.abs() < 1.0).double().mean())

    plain, guided = between(model), between(AutoGuidedDenoiser(model, guide, weight=2.0))
    exact = between(truth.denoiser)
    assert guided < 0.75 * plain
    assert abs(guided - exact) < abs(plain - exact)


class _Net(torch.nn.Module):
    dim = 3

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3).double()

    def forward(self, x, log_snr):
        return self.linear(x) * log_snr.sigmoid().unsqueeze(-1)


def test_gradients_and_attribute_lookup():
    guided = AutoGuidedDenoiser(_Net(), _Net(), weight=2.0)
    assert guided.dim == 3 and guided.linear.in_features == 3  # looked up on the guided model
    assert "weight=2.0" in repr(guided)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    guided(x, torch.zeros(2, dtype=torch.float64)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(AttributeError):
        guided.no_such_attribute


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight": -1.0}, r"weight: expected a finite number >= 0, got -1.0"),
        ({"weight": math.nan}, r"weight: expected a finite number >= 0, got nan"),
        ({"log_snr_min": 2.0, "log_snr_max": 1.0}, r"expected log_snr_min < log_snr_max, got 2.0, 1.0"),
        ({"log_snr_min": math.nan}, r"expected log_snr_min < log_snr_max, got nan, inf"),
        ({"guide": "model.pt"}, r"guide: expected a callable denoiser, got str"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"denoiser": _mixture(0.5).denoiser, "guide": _mixture(0.9).denoiser, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        AutoGuidedDenoiser(**args)
