"""Spline curves against an independent natural cubic spline (scipy)."""

from __future__ import annotations

import pytest
import torch
from scipy.interpolate import CubicSpline

from spacetime_md.core import SpacetimePoint, SplineCurve, spline_basis


@pytest.mark.parametrize("n_knots", [2, 3, 4, 9])
def test_spline_basis_is_scipys_natural_cubic_spline(n_knots):
    gen = torch.Generator().manual_seed(n_knots)
    knots = torch.linspace(0, 1, n_knots, dtype=torch.float64)
    values = torch.randn(n_knots, 3, dtype=torch.float64, generator=gen) * 2.0  # curved data, not a line
    s = torch.cat([torch.rand(40, dtype=torch.float64, generator=gen), knots])
    W = spline_basis(s, n_knots)
    if n_knots == 2:  # two knots: the natural spline is the straight line
        want = (1 - s)[:, None] * values[0] + s[:, None] * values[1]
    else:
        want = torch.as_tensor(CubicSpline(knots.numpy(), values.numpy(), bc_type="natural")(s.numpy()))
    torch.testing.assert_close(W @ values, want, rtol=1e-10, atol=1e-10)


def test_spline_basis_clamps_outside_the_unit_interval():
    W_out = spline_basis(torch.tensor([-0.5, 1.5, 3.0], dtype=torch.float64), 5)
    W_end = spline_basis(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), 5)
    torch.testing.assert_close(W_out, W_end, rtol=0, atol=1e-14)
    ends = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(W_end[:, [0, -1]], ends)


def test_curve_evaluates_its_spline_and_refine_keeps_the_curve_at_the_new_knots():
    start = SpacetimePoint(1.0, torch.tensor([0.0, 1.0], dtype=torch.float64))
    end = SpacetimePoint(-2.0, torch.tensor([3.0, -1.0], dtype=torch.float64))
    curve = SplineCurve(start, end, n_nodes=4)
    with torch.no_grad():
        curve.interior.add_(torch.randn_like(curve.interior))
    knots = torch.linspace(0, 1, 6, dtype=torch.float64)
    values = curve.knots().detach()
    log_snr, x = curve.evaluate(11)
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    spline = CubicSpline(knots.numpy(), values.numpy(), bc_type="natural")(s.numpy())
    torch.testing.assert_close(log_snr.detach(), torch.as_tensor(spline[:, 0]), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.detach(), torch.as_tensor(spline[:, 1:]), rtol=1e-10, atol=1e-10)
    finer = curve.refine(7)
    assert finer.n_nodes == 7 and finer.dim == 2
    new_knots = torch.linspace(0, 1, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(finer(new_knots), curve(new_knots), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(finer.start, curve.start, rtol=0, atol=0)
        torch.testing.assert_close(finer.end, curve.end, rtol=0, atol=0)
