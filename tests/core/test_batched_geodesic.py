"""Batched geodesic solves: independence of pairs, agreement with single solves, batching."""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core import (
    AvoidRegion,
    GeodesicConfig,
    LowVariance,
    SpacetimePoint,
    SplineCurve,
    alpha_sigma,
    optimize_geodesic,
    optimize_geodesics,
)
from spacetime_md.errors import NonFiniteError
from spacetime_md.toy import GaussianMixture

LAM = 3.0
FAST = GeodesicConfig(n_nodes=5, n_points=(16, 32), max_steps=60)
HUTCH = GeodesicConfig(n_nodes=5, n_points=(16, 24), max_steps=60, divergence="hutchinson", n_probes=2)
# Endpoints (data space, scaled by alpha at LAM below) between and near the three modes.
PAIRS = [([-2.0, 0.0], [2.0, 0.5]), ([2.0, 0.5], [0.0, 2.5]), ([0.0, 2.5], [-2.0, 0.0]), ([-1.8, 0.2], [1.5, 0.3])]


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]]), [0.6, 0.6, 0.6])


def point(xy, lam=LAM, dtype=torch.float64):
    return SpacetimePoint(lam, float(alpha_sigma(lam)[0]) * torch.tensor(xy, dtype=dtype))


def pairs(n=len(PAIRS)):
    return [point(a) for a, _ in PAIRS[:n]], [point(b) for _, b in PAIRS[:n]]


def assert_same(r, q, tol, evals_rtol=0.0):
    assert abs(r.energy - q.energy) <= tol * max(1.0, abs(q.energy))
    torch.testing.assert_close(r.x, q.x, atol=tol, rtol=0)
    torch.testing.assert_close(r.log_snr, q.log_snr, atol=tol, rtol=0)
    assert (r.n_steps, r.converged) == (q.n_steps, q.converged)
    assert abs(r.n_denoiser_evals - q.n_denoiser_evals) <= evals_rtol * q.n_denoiser_evals


@pytest.mark.parametrize("config", [FAST, HUTCH], ids=["exact", "hutchinson"])
def test_pairs_are_independent_of_the_batch(mixture, config):
    starts, ends = pairs()
    seeds = [3, 1, 4, 1]
    batch = optimize_geodesics(mixture.denoiser, starts, ends, config, seeds=seeds)
    order = [2, 0, 3, 1]
    shuffled = optimize_geodesics(mixture.denoiser, [starts[k] for k in order], [ends[k] for k in order], config,
                                  seeds=[seeds[k] for k in order])
    for k in range(len(starts)):
        alone = optimize_geodesics(mixture.denoiser, [starts[k]], [ends[k]], config, seeds=[seeds[k]])[0]
        # A line search stuck at a kink of the clamped energy compares objective values equal to
        # rounding, which a larger batch changes: its trial count may differ, nothing else.
        assert_same(batch[k], alone, 1e-8, evals_rtol=0.02)
        assert_same(shuffled[order.index(k)], alone, 1e-8, evals_rtol=0.02)
        assert len(batch[k].history) == batch[k].n_steps
    # Different pairs really are different problems (the comparison above can fail).
    assert len({round(r.energy, 6) for r in batch}) == len(batch)


def test_energies_agree_with_single_solves(mixture):
    starts, ends = pairs()
    config = GeodesicConfig(n_nodes=5, n_points=(16, 32), max_steps=100, rtol=1e-6)
    batch = optimize_geodesics(mixture.denoiser, starts, ends, config)
    for k, r in enumerate(batch):
        single = optimize_geodesic(mixture.denoiser, starts[k], ends[k], config)
        # Same straight line, same discretisation: identical starting energy.
        assert abs(r.initial_energy - single.initial_energy) <= 1e-9 * single.initial_energy
        # Different L-BFGS implementations (paths differ), same optimum.
        assert abs(r.energy - single.energy) <= 1e-3 * single.energy, (k, r.energy, single.energy)
        assert r.converged and r.energy < 0.5 * r.initial_energy
        assert abs(r.length - single.length) <= 1e-3 * single.length
        assert r.curve(torch.linspace(0, 1, 5, dtype=torch.float64)).shape == (5, 3)


@pytest.mark.parametrize("config", [FAST, HUTCH], ids=["exact", "hutchinson"])
def test_one_denoiser_call_per_evaluation_carries_every_pair(mixture, config):
    rows: list[int] = []

    def counted(x, log_snr):
        rows.append(x.shape[0])
        return mixture.denoiser(x, log_snr)

    starts, ends = pairs()
    n_pairs, dim = len(starts), 2
    batch = optimize_geodesics(counted, starts, ends, config)
    per_point = dim if config.divergence_for(dim) == "exact" else config.n_probes
    pair_evals = 0
    for n in rows:
        sizes = [n // (t * per_point) for t in config.n_points if n % (t * per_point) == 0]
        assert any(1 <= k <= n_pairs for k in sizes), n
        pair_evals += max(k for k in sizes if k <= n_pairs)
    # The first calls (straight-line energies, then the first gradients) and the last (final
    # energies) hold every pair.
    assert rows[0] == rows[1] == n_pairs * config.n_points[0] * per_point
    assert rows[-1] == n_pairs * config.n_points[-1] * per_point
    assert sum(rows) == sum(r.n_denoiser_evals for r in batch)
    # Pairs share calls: one call per pair and evaluation would give len(rows) == pair_evals,
    # all K pairs in every call 1/K (0.25); pairs converge at different times, and the
    # Hutchinson case has one pair needing twice the evaluations of the others (measured 0.26
    # exact, 0.42 Hutchinson).
    assert len(rows) < 0.55 * pair_evals, (len(rows), pair_evals)


def test_adam_batched_equals_adam_single(mixture):
    config = GeodesicConfig(n_nodes=5, n_points=(16, 24), optimizer="adam", max_steps=120,
                            divergence="hutchinson", n_probes=2)
    starts, ends = pairs(3)
    seen = []
    batch = optimize_geodesics(mixture.denoiser, starts, ends, config, seeds=[0, 5, 9], callback=seen.append)
    for k, seed in enumerate([0, 5, 9]):
        single = optimize_geodesic(mixture.denoiser, starts[k], ends[k], GeodesicConfig(**{**config.to_dict(), "seed": seed}))
        assert_same(batch[k], single, 1e-10)
        assert [h["objective"] for h in batch[k].history] == pytest.approx([h["objective"] for h in single.history],
                                                                            rel=1e-10, abs=1e-10)
        assert sum(info["pair"] == k for info in seen) == single.n_steps
    assert {info["pair"] for info in seen} == {0, 1, 2}


def test_constraints_per_pair(mixture):
    starts, ends = pairs(3)
    floor = 2.0
    z_star = float(alpha_sigma(LAM)[0]) * torch.tensor([0.0, 0.3], dtype=torch.float64)
    config = GeodesicConfig(n_nodes=5, n_points=(24,), max_steps=80, constraint_warmup=3, constraint_ramp=5)

    def make():
        return [[LowVariance(floor, weight=1e3)], [], [LowVariance(floor, weight=1e3), AvoidRegion(LAM, z_star, 3.0)]]

    batch = optimize_geodesics(mixture.denoiser, starts, ends, config, make())
    free = optimize_geodesics(mixture.denoiser, starts, ends, config)
    for k, cons in enumerate(make()):
        single = optimize_geodesic(mixture.denoiser, starts[k], ends[k], config, cons)
        assert abs(batch[k].objective - single.objective) <= 2e-2 * single.objective, (k, batch[k].objective, single.objective)
        alone = optimize_geodesics(mixture.denoiser, [starts[k]], [ends[k]], config, [make()[k]])[0]
        assert_same(batch[k], alone, 1e-8)
        if cons:
            assert float(batch[k].log_snr.min()) > floor - 0.15
            assert float(free[k].log_snr.min()) < floor  # the constraint is active
            assert batch[k].history[0]["ramp"] == 0.0 and batch[k].history[-1]["ramp"] == 1.0
            assert set(batch[k].history[-1]["penalties"]) == {f"{type(c).__name__}_{i}" for i, c in enumerate(cons)}
        else:
            assert_same(batch[k], free[k], 1e-8)
    # A flat list applies to every pair; a shared AvoidRegion is copied per pair.
    avoid = AvoidRegion(LAM, z_star, 3.0)
    shared = optimize_geodesics(mixture.denoiser, starts[2:], ends[2:], config, [LowVariance(floor, weight=1e3), avoid])
    assert_same(shared[0], batch[2], 1e-8)


def test_setup_seeds_make_constraint_setup_independent_of_the_caller_rng(mixture):
    """AvoidRegion.setup draws Hutchinson probes from the global RNG: with setup_seeds each pair's
    anchor comes from its own seed, whatever the RNG state at entry, and that state is kept."""
    starts, ends = pairs(2)
    # z* at another log_snr than the endpoints: the anchor's KL then has a time part, which
    # carries the (probe-dependent) divergence.
    lam_star = LAM - 1.0
    z_star = float(alpha_sigma(lam_star)[0]) * torch.tensor([0.0, 0.3], dtype=torch.float64)
    config = GeodesicConfig(n_nodes=4, n_points=(16,), max_steps=5, divergence="hutchinson", n_probes=1)

    def anchors(entry_seed, **kwargs):
        torch.manual_seed(entry_seed)
        avoid = [AvoidRegion(lam_star, z_star, 3.0) for _ in starts]
        optimize_geodesics(mixture.denoiser, starts, ends, config, [[c] for c in avoid], **kwargs)
        return [float(c._start_kl) for c in avoid], torch.rand(1)

    (a, after_a), (b, _) = anchors(1, setup_seeds=[5, 6]), anchors(2, setup_seeds=[5, 6])
    assert a == b
    torch.manual_seed(1)
    assert torch.equal(after_a, torch.rand(1))  # the caller's RNG stream is untouched
    c, d = anchors(1)[0], anchors(2)[0]  # without setup_seeds the entry state decides the anchor
    assert c != d
    alone = AvoidRegion(lam_star, z_star, 3.0)
    optimize_geodesics(mixture.denoiser, starts[1:], ends[1:], config, [[alone]], setup_seeds=[6])
    assert float(alone._start_kl) == a[1]  # a pair's anchor does not depend on its neighbours


def test_warm_start_curves(mixture):
    starts, ends = pairs(2)
    first = optimize_geodesics(mixture.denoiser, starts, ends, FAST)
    again = optimize_geodesics(mixture.denoiser, starts, ends, FAST, curves=[r.curve for r in first])
    for r, q in zip(again, first):
        assert r.curve is q.curve and r.initial_energy < 0.5 * q.initial_energy
        assert r.energy <= q.energy * (1 + 1e-3)


def test_non_finite_objective_names_the_pair(mixture):
    def bad(x, log_snr):
        return torch.where(x[:, :1] > 3.0, torch.full_like(x, float("nan")), mixture.denoiser(x, log_snr))

    starts = [point([-2.0, 0.0]), point([-1.0, 0.0])]
    ends = [point([0.0, 0.0]), point([5.0, 0.0])]
    with pytest.raises(NonFiniteError, match=r"pair 1: geodesic objective became non-finite \(energy nan, .*\) at stage 0"):
        optimize_geodesics(bad, starts, ends, FAST)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda s, e: (s, e[:2] + [point([0.0, 0.0, 1.0])]), ValueError,
         r"ends\[2\].x: expected shape \(2,\) like starts\[0\].x, got \(3,\)"),
        (lambda s, e: ([s[0], point([0.0, 1.0], dtype=torch.float32), s[2]], e), ValueError,
         r"starts\[1\].x: expected dtype torch.float64 like starts\[0\].x, got torch.float32"),
        (lambda s, e: ([], []), ValueError, "starts: expected at least one pair, got none"),
        (lambda s, e: (s, [e[0], e[1], s[2]]), ValueError,
         "pair 2: start and end: expected two different spacetime points, got equal ones"),
        (lambda s, e: (s, e[:2]), ValueError, r"ends: expected 3 points \(one per start\), got 2"),
        (lambda s, e: (s[0], e[0]), TypeError, "starts: expected a sequence of SpacetimePoint .* use optimize_geodesic"),
        (lambda s, e: (s[:1] + [torch.zeros(3)] + s[2:], e), TypeError, r"starts\[1\]: expected a SpacetimePoint"),
    ],
    ids=["dimension", "dtype", "empty", "equal-endpoints", "lengths", "single-point", "not-a-point"],
)
def test_bad_pairs(mixture, change, error, match):
    starts, ends = change(*pairs(3))
    with pytest.raises(error, match=match):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST)


def test_bad_options(mixture):
    starts, ends = pairs(3)
    with pytest.raises(ValueError, match=r"seeds: expected 3 integers \(one per pair\), got 2"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, seeds=[0, 1])
    with pytest.raises(ValueError, match=r"seeds\[1\]: expected an integer >= 0, got -1"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, seeds=[0, -1, 2])
    with pytest.raises(ValueError, match=r"setup_seeds: expected 3 integers \(one per pair\), got 1"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, setup_seeds=[0])
    with pytest.raises(ValueError, match=r"setup_seeds\[2\]: expected an integer >= 0, got 1.5"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, setup_seeds=[0, 1, 1.5])
    with pytest.raises(TypeError, match="setup_seeds: expected a sequence of 3 integers"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, setup_seeds=3)
    with pytest.raises(ValueError, match="constraints: expected .* or 3 sequences .* got 2 entries"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, [[], [LowVariance(1.0)]])
    with pytest.raises(TypeError, match=r"constraints\[1\]\[0\]: expected an object with penalty\(\) and weight, got int"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, [[], [3], []])
    with pytest.raises(ValueError, match="pair 1: LowVariance: expected the start point's log_snr >= min_log_snr 5"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, [[], [LowVariance(5.0)], []])
    with pytest.raises(ValueError, match=r"curves: expected 3 SplineCurve warm starts \(one per pair\), got 1"):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, curves=[None])
    with pytest.raises(TypeError, match="config: expected a GeodesicConfig, got dict"):
        optimize_geodesics(mixture.denoiser, starts, ends, {"n_nodes": 3})


def _drive(search, phi):
    """Run a line-search coroutine on ``phi(t) -> (value, slope)``; returns its result and trials."""
    trials = []
    t = next(search)
    try:
        while True:
            trials.append(t)
            f, g = phi(t)
            t = search.send((f, g, t))
    except StopIteration as done:
        return done.value, trials


@pytest.mark.parametrize("t0", [1e-3, 1.0, 50.0])
def test_line_search_meets_strong_wolfe(t0):
    from spacetime_md.core.batched_optim import _C1, _C2, _wolfe_search

    def phi(t):  # minimum at t = 3, phi(0) = 9, phi'(0) = -6
        return (t - 3.0) ** 2 + 0.1 * (t - 3.0) ** 4, 2 * (t - 3.0) + 0.4 * (t - 3.0) ** 3

    f0, g0 = phi(0.0)
    (t, f, payload), trials = _drive(_wolfe_search(f0, g0, t0), phi)
    assert payload == t and f == phi(t)[0]
    assert f <= f0 + _C1 * t * g0 and abs(phi(t)[1]) <= -_C2 * g0
    assert len(trials) <= 10


def test_line_search_backs_off_from_non_finite_values():
    from spacetime_md.core.batched_optim import _wolfe_search

    def phi(t):  # decreasing, but undefined beyond t = 0.01 (sent as inf, as the driver does)
        return (1.0 - t, -1.0) if t <= 0.01 else (float("inf"), float("nan"))

    (t, f, _), trials = _drive(_wolfe_search(1.0, -1.0, 1.0), phi)
    assert 0 < t <= 0.01 and f < 1.0
    # No point with sufficient decrease at all: step 0 and no payload.
    (t, f, payload), _ = _drive(_wolfe_search(1.0, -1.0, 1.0), lambda t: (float("inf"), float("nan")))
    assert (t, f, payload) == (0.0, 1.0, None)


# --- contracts found unchecked by mutation testing (docs/mutation_testing.md) --------------


@pytest.mark.parametrize("swap", [False, True])
def test_cubic_interpolation_step_closed_form(swap):
    from spacetime_md.core.batched_optim import _cubic_min

    # f(t) = t^3 - 3t, a cubic: its interpolant through two points is itself, local minimum t = 1.
    p, q = (0.0, 0.0, -3.0), (2.0, 2.0, 9.0)
    if swap:
        p, q = q, p
    assert _cubic_min(p, q, -10.0, 10.0, fallback=-1.0) == pytest.approx(1.0, abs=1e-12)
    assert _cubic_min(p, q, 1.5, 10.0, fallback=-1.0) == 1.5  # clipped to [low, high]
    assert _cubic_min(p, p, 0.0, 1.0, fallback=0.25) == 0.25  # one point: no cubic


def test_two_loop_recursion_is_the_dense_bfgs_inverse_hessian():
    # L-BFGS direction -H g, H from H0 = gamma I by the BFGS update
    # H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T over the stored pairs, oldest first.
    from spacetime_md.core.batched_optim import _HISTORY_SIZE, _LBFGS

    gen = torch.Generator().manual_seed(0)
    n = 6
    a = torch.randn(n, n, dtype=torch.float64, generator=gen)
    hessian = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    opt = _LBFGS(None, torch.zeros(2, 2, 3, dtype=torch.float64), FAST)  # two pairs, N = 6 each
    dense = []
    for k, m in enumerate((3, 1)):  # pair 0 holds 3 curvature pairs, pair 1 one
        s = torch.randn(m, n, dtype=torch.float64, generator=gen)
        y = s @ hessian
        gamma = float((s[-1] @ y[-1]) / (y[-1] @ y[-1]))
        opt.s_hist[k, _HISTORY_SIZE - m:], opt.y_hist[k, _HISTORY_SIZE - m:] = s, y
        opt.rho[k, _HISTORY_SIZE - m:] = 1.0 / (s * y).sum(-1)
        opt.gamma[k] = gamma
        h = gamma * torch.eye(n, dtype=torch.float64)
        for s_i, y_i in zip(s, y):
            rho = 1.0 / (s_i @ y_i)
            left = torch.eye(n, dtype=torch.float64) - rho * torch.outer(s_i, y_i)
            h = left @ h @ left.T + rho * torch.outer(s_i, s_i)
        dense.append(h)
        # Secant condition of the newest pair: H y = s.
        torch.testing.assert_close(h @ y[-1], s[-1], rtol=1e-10, atol=1e-12)
    grad = torch.randn(2, n, dtype=torch.float64, generator=gen)
    direction = opt._two_loop(torch.tensor([0, 1]), grad)
    for k in range(2):
        torch.testing.assert_close(direction[k], -dense[k] @ grad[k], rtol=1e-10, atol=1e-12)


def test_batched_stages_stop_by_the_documented_convergence_rule(mixture):
    from tests.core.conftest import stops_as_documented

    starts, ends = pairs(2)
    config = GeodesicConfig(n_nodes=4, n_points=(8, 16), max_steps=60, rtol=1e-5, min_steps=8, patience=3)
    for constraints in (None, [LowVariance(-50.0)]):  # a constraint at full weight: the same rule
        for r in optimize_geodesics(mixture.denoiser, starts, ends, config, constraints):
            assert stops_as_documented(r.history, config) == [True, True]
            assert r.converged and r.n_steps == len(r.history)
    capped = GeodesicConfig(n_nodes=4, n_points=(8, 16), max_steps=4, rtol=0.0)
    for r in optimize_geodesics(mixture.denoiser, starts, ends, capped):
        assert stops_as_documented(r.history, capped) == [False, False] and not r.converged


def test_objective_is_energy_plus_ramped_weighted_penalties(mixture):
    # "weight * penalty(state) is added to the curve energy", the weight ramped after the warm-up.
    starts, ends = pairs(2)
    config = GeodesicConfig(n_nodes=4, n_points=(12,), max_steps=12, constraint_warmup=2, constraint_ramp=3)
    batch = optimize_geodesics(mixture.denoiser, starts, ends, config, [LowVariance(LAM - 0.5, weight=3.0)])
    single = optimize_geodesic(mixture.denoiser, starts[0], ends[0], config, [LowVariance(LAM - 0.5, weight=3.0)])
    for r in (*batch, single):
        assert any(h["penalties"]["LowVariance_0"] > 0 and h["ramp"] > 0 for h in r.history)
        for h in r.history:
            want = h["energy"] + h["ramp"] * 3.0 * h["penalties"]["LowVariance_0"]
            assert h["objective"] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_flat_objective_is_converged_without_moving():
    # D(x) = 0: mu is constant, so every curve has energy 0 and zero gradient.
    def zero(x, log_snr):
        return 0.0 * x

    starts, ends = pairs(2)
    config = GeodesicConfig(n_nodes=3, n_points=(8,), max_steps=20, min_steps=2)
    for r in (*optimize_geodesics(zero, starts, ends, config), optimize_geodesic(zero, starts[0], ends[0], config)):
        assert r.converged and r.energy == 0.0 and r.n_steps < config.max_steps
        line = SplineCurve(SpacetimePoint(r.curve.start[0], r.curve.start[1:]),
                           SpacetimePoint(r.curve.end[0], r.curve.end[1:]), config.n_nodes)
        torch.testing.assert_close(r.curve.interior.detach(), line.interior.detach(), rtol=0, atol=0)


def test_non_finite_penalty_names_the_pair(mixture):
    from spacetime_md.core import Penalty

    def blows_up(state):
        return state.log_snr.sum() * math.inf

    starts, ends = pairs(2)
    with pytest.raises(NonFiniteError, match=r"pair 1: geodesic objective became non-finite \(energy [0-9.e+-]+, "):
        optimize_geodesics(mixture.denoiser, starts, ends, FAST, [[], [Penalty(blows_up)]])


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_more_pairs_than_nodes(mixture, optimizer):
    # Per-pair optimiser state is sized by the number of pairs, whatever the curve's size.
    config = GeodesicConfig(n_nodes=2, n_points=(8,), max_steps=8, optimizer=optimizer)
    starts, ends = pairs(4)
    batch = optimize_geodesics(mixture.denoiser, starts, ends, config)
    for k in range(4):
        alone = optimize_geodesics(mixture.denoiser, [starts[k]], [ends[k]], config)[0]
        assert_same(batch[k], alone, 1e-8, evals_rtol=0.02)
