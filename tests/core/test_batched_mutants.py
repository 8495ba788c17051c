"""The trial steps of the batched strong-Wolfe line search, pinned by hand.

Killing the mutation run's survivors of ``core/batched.py`` (the line search and optimisers now
live in ``core/batched_optim.py``): the converged geodesics do not depend on the line search's
safeguards, so these tests drive the coroutine ``_wolfe_search`` with a 1-D objective ``phi(t)``
whose trial steps follow by hand from Nocedal & Wright (Algorithms 3.5/3.6): during
extrapolation the next trial is the cubic interpolant's minimiser clamped to ``[1.1 t, 10 t]``;
in the zoom, the bracket's midpoint when no cubic can be formed.
The L-BFGS state (``_LBFGS``) is checked on hand-set histories: a direction that is not a
descent direction restarts the pair from steepest descent (``d = -g``, ``g.d = -|g|^2``), and
curvature pairs with ``y.s <= 1e-10`` are skipped (the class docstring's rule).
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from spacetime_md.core import GeodesicConfig, SpacetimePoint, alpha_sigma, optimize_geodesics
from spacetime_md.core.batched_optim import _LBFGS, _wolfe_search
from spacetime_md.toy import GaussianMixture


def _trials(phi, t0, n):
    """The first ``n`` trial steps of a search on ``phi(t) -> (value, slope)`` from ``t0``."""
    f0, g0 = phi(0.0)
    search = _wolfe_search(f0, g0, t0)
    trials = [next(search)]
    while len(trials) < n:
        f, g = phi(trials[-1])
        trials.append(search.send((f, g, None)))
    return trials


def test_extrapolation_is_capped_at_ten_times_the_step():
    # phi = -t + 0.005 t^2: minimum at t = 100. At t = 2: slope -0.98 (not flat: |g| > 0.9,
    # still descending), sufficient decrease; the cubic through (0, 2) is phi itself, minimiser
    # 100 > 10 * 2, so the next trial is 20.
    def phi(t):
        return -t + 0.005 * t * t, -1.0 + 0.01 * t

    assert _trials(phi, 2.0, 2) == [2.0, pytest.approx(20.0, rel=1e-12)]


def test_extrapolation_moves_at_least_1_1_times_the_step():
    # phi = -t + 1.0125 t^2 - t^3 / 3, slope -1 + 2.025 t - t^2: at t = 2 the slope is -0.95
    # (not flat), phi(2) = -0.617 (sufficient decrease). The cubic through (0, 2) is phi itself,
    # whose local minimum is at t = (2.025 - sqrt(2.025^2 - 4)) / 2 = 0.854 < 1.1 * 2: the next
    # trial is clamped to 2.2.
    def phi(t):
        return -t + 1.0125 * t * t - t**3 / 3.0, -1.0 + 2.025 * t - t * t

    local_min = (2.025 - math.sqrt(2.025**2 - 4.0)) / 2.0
    assert 0.8 < local_min < 0.9
    assert _trials(phi, 2.0, 2) == [2.0, pytest.approx(2.2, rel=1e-12)]


def test_zoom_bisects_when_the_cubic_overflows():
    # The first trial t = 2 has a huge (finite) objective: the bracket is [0, 2] and the cubic
    # through its ends overflows (d1^2 = inf, then inf / inf), so the next trial is the midpoint 1.
    values = {0.0: (0.0, -1.0), 2.0: (1e300, 1.0)}

    def phi(t):
        return values[t]

    assert _trials(phi, 2.0, 2) == [2.0, 1.0]


def _lbfgs(n_pairs, n_flat):
    """An L-BFGS state of ``n_pairs`` pairs with ``n_flat`` curve parameters each (no problem
    attached: only the step logic is exercised), float64."""
    interior = torch.zeros(n_pairs, 1, n_flat, dtype=torch.float64)
    return _LBFGS(None, interior, GeodesicConfig(optimizer="lbfgs"))


def test_a_direction_that_does_not_descend_restarts_from_steepest_descent():
    opt = _lbfgs(1, 2)
    opt.grad[0] = torch.tensor([3.0, 4.0], dtype=torch.float64)  # |g|^2 = 25, |g|_1 = 7
    opt.gamma[0] = -1.0  # a stale scale: -gamma g = g, uphill
    opt.fresh[0] = False
    opt.value[0] = {"objective": 10.0}
    searches, trials = {}, {}
    idle = opt._start_steps([0], searches, trials)
    assert idle == [] and list(searches) == [0]  # restarted, not mistaken for a zero gradient
    assert opt.direction[0].tolist() == [-3.0, -4.0]
    assert opt.gamma[0].item() == 1.0 and opt.fresh[0] is False  # history reset, first trial used
    assert trials[0] == pytest.approx(min(1.0, 1.0 / 7.0) * opt.lr, rel=1e-12)
    # The search's initial slope is g.d = -25: a trial with sufficient decrease and slope -5
    # meets the curvature condition |g'| <= 0.9 * 25 and ends the search there.
    with pytest.raises(StopIteration) as done:
        searches[0].send((10.0 - 1.0, -5.0, "payload"))
    assert done.value.value == (trials[0], 9.0, "payload")


def test_curvature_pairs_at_the_threshold_are_skipped():
    opt = _lbfgs(2, 2)
    for k in range(2):
        opt.value[k] = {"objective": 0.0}
    g0 = torch.zeros(2, dtype=torch.float64)
    # y.s = 1 * 1e-10 = 1e-10 exactly (pair 0: skipped) and 2e-10 (pair 1: kept)
    outcomes = {0: (1.0, -1.0, (torch.tensor([1.0, 0.0], dtype=torch.float64),
                                torch.tensor([1e-10, 0.0], dtype=torch.float64), {"objective": -1.0})),
                1: (1.0, -1.0, (torch.tensor([1.0, 0.0], dtype=torch.float64),
                                torch.tensor([2e-10, 0.0], dtype=torch.float64), {"objective": -1.0}))}
    assert opt.grad[0].equal(g0)
    opt._finish_searches(outcomes, stage=0)
    assert opt.rho[0].abs().sum().item() == 0.0 and opt.gamma[0].item() == 1.0
    assert opt.rho[1, -1].item() == pytest.approx(1.0 / 2e-10, rel=1e-12)
    assert opt.gamma[1].item() == pytest.approx(2e-10 / 4e-20, rel=1e-12)  # y.s / y.y
    # both moved to the new point either way
    assert opt.interior[:, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_extrapolation_stops_after_max_evals():
    # phi = -t never flattens: with max_evals = 2 the search returns its second trial, 4 (the
    # cubic through the linear data is degenerate: the fallback 4 t), without a third.
    search = _wolfe_search(0.0, -1.0, 1.0, max_evals=2)
    assert next(search) == 1.0
    assert search.send((-1.0, -1.0, "first")) == 4.0
    with pytest.raises(StopIteration) as done:
        search.send((-4.0, -1.0, "second"))
    assert done.value.value == (4.0, -4.0, "second")


def test_an_uphill_slope_with_sufficient_decrease_starts_the_zoom():
    # At t = 1: phi = -0.5 (sufficient decrease), slope +0.95 (not flat: 0.95 > 0.9). The minimum
    # lies in [0, 1]: the next trial is inside the bracket (margins 0.1), not an extrapolation.
    search = _wolfe_search(0.0, -1.0, 1.0)
    assert next(search) == 1.0
    t = search.send((-0.5, 0.95, None))
    assert 0.1 <= t <= 0.9


def test_a_second_decrease_that_is_not_lower_ends_the_extrapolation():
    # phi(2) = -1, slope -0.95: the cubic through (0, 0, -1) and (2, -1, -0.95) has no minimum
    # (d1 = -0.45, d1^2 - g0 g1 < 0), so the next trial is the fallback 4 t = 8. phi(8) = -1
    # again (sufficient, but not lower): the bracket is [2, 8], the next trial lies inside it
    # with margins 0.1 * 6.
    search = _wolfe_search(0.0, -1.0, 2.0)
    assert next(search) == 2.0
    assert search.send((-1.0, -0.95, None)) == 8.0
    t = search.send((-1.0, -0.95, None))
    assert 2.0 + 0.6 - 1e-12 <= t <= 8.0 - 0.6 + 1e-12


def test_auto_threads_with_a_single_pair():
    # num_threads="auto" times one solver call on the first pair: a batch of one pair must work
    # and give the pair's result (the thread count does not change the arithmetic here).
    mixture = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=torch.float64), [0.6, 0.6])
    a = float(alpha_sigma(3.0)[0])
    start = SpacetimePoint(3.0, a * torch.tensor([-2.0, 0.0], dtype=torch.float64))
    end = SpacetimePoint(3.0, a * torch.tensor([2.0, 0.5], dtype=torch.float64))
    config = GeodesicConfig(n_nodes=4, n_points=(8,), max_steps=3)
    auto = optimize_geodesics(mixture.denoiser, [start], [end], dataclasses.replace(config, num_threads="auto"))
    plain = optimize_geodesics(mixture.denoiser, [start], [end], config)
    assert len(auto) == 1 and math.isfinite(auto[0].energy)
    assert auto[0].energy == pytest.approx(plain[0].energy, rel=1e-9)


def test_zoom_swaps_the_bracket_when_slope_times_width_is_zero():
    # Nocedal & Wright, Algorithm 3.6: hi <- lo when phi'(t) (hi - lo) >= 0, equality included.
    # Equality with a non-flat slope is only reachable through underflow: slopes of 1e-320
    # (subnormal) on a bracket of width 1e-4 give a product of 1e-324, which rounds to 0.
    search = _wolfe_search(0.0, -1e-320, 1e-4)
    assert next(search) == 1e-4
    assert search.send((1.0, 1.0, None)) == pytest.approx(1e-5, rel=1e-9)  # lower margin of [0, 1e-4]
    assert 1e-320 * 1e-4 == 0.0
    t = search.send((-1.0, 1e-320, None))  # lower and sufficient, not flat (1e-320 > 0.9e-320)
    assert t < 1e-5  # the new bracket is [0, 1e-5], not [1e-5, 1e-4]


def test_progress_bar_counts_one_per_pair_step(capsys):
    # The bar advances once per recorded step of any pair: its final count is the number of
    # callback calls (counted here independently of the bar).
    mixture = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5]], dtype=torch.float64), [0.6, 0.6])
    a = float(alpha_sigma(3.0)[0])
    start = SpacetimePoint(3.0, a * torch.tensor([-2.0, 0.0], dtype=torch.float64))
    end = SpacetimePoint(3.0, a * torch.tensor([2.0, 0.5], dtype=torch.float64))
    calls = []
    config = GeodesicConfig(n_nodes=4, n_points=(8,), max_steps=3, progress=True)
    optimize_geodesics(mixture.denoiser, [start, start], [end, end], config, callback=calls.append)
    counts = [int(n) for n in re.findall(r"pairs\): (\d+)pair-step \[", capsys.readouterr().err)]
    assert len(calls) == 6 and counts and counts[-1] == len(calls)
