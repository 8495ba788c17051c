"""Geodesic solver, constraints and spline curves."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.core import (
    AvoidRegion,
    GeodesicConfig,
    LowVariance,
    Penalty,
    SpacetimePoint,
    SplineCurve,
    alpha_sigma,
    curve_energy,
    kl_along_curve,
    optimize_geodesic,
    spline_basis,
    straight_line,
)
from spacetime_md.errors import NonFiniteError
from spacetime_md.toy import GaussianMixture

FAST = GeodesicConfig(n_nodes=6, n_points=(16, 32), max_steps=60)


@pytest.fixture
def mixture_1d():
    return GaussianMixture([-2.5, 0.5, 2.5], 0.75, [0.275, 0.45, 0.275])


def endpoints(lam=4.0, a=-2.5, b=2.5):
    alpha = float(alpha_sigma(lam)[0])
    return (
        SpacetimePoint(lam, torch.tensor([alpha * a], dtype=torch.float64)),
        SpacetimePoint(lam, torch.tensor([alpha * b], dtype=torch.float64)),
    )


def test_spline_fixed_endpoints_straight_init_and_refine():
    a = SpacetimePoint(1.0, torch.tensor([0.0, 1.0], dtype=torch.float64))
    b = SpacetimePoint(-2.0, torch.tensor([3.0, -1.0], dtype=torch.float64))
    curve = SplineCurve(a, b, n_nodes=5)
    log_snr, x = curve.evaluate(9)
    want_l, want_x = straight_line(a, b, 9)
    torch.testing.assert_close(log_snr, want_l)
    torch.testing.assert_close(x, want_x)
    with torch.no_grad():
        curve.interior.add_(torch.randn_like(curve.interior))
    with torch.no_grad():
        log_snr, x = curve.evaluate(7)
    assert float(log_snr[0]) == 1.0 and float(log_snr[-1]) == -2.0
    torch.testing.assert_close(x[-1], b.x)
    finer = curve.refine(20)
    s = torch.linspace(0, 1, 50, dtype=torch.float64)
    # Refinement interpolates the old curve at its knots; the curves stay close.
    with torch.no_grad():
        assert float((finer(s) - curve(s)).abs().max()) < 0.1 * float(curve(s).abs().max())


def test_spline_basis_reproduces_constants_and_lines():
    s = torch.rand(30, dtype=torch.float64)
    W = spline_basis(s, 8)
    torch.testing.assert_close(W.sum(-1), torch.ones(30, dtype=torch.float64))
    knots = torch.linspace(0, 1, 8, dtype=torch.float64)
    torch.testing.assert_close(W @ knots, s)


def test_geodesic_beats_straight_line_and_is_symmetric(mixture_1d):
    a, b = endpoints()
    forward = optimize_geodesic(mixture_1d.denoiser, a, b, FAST)
    backward = optimize_geodesic(mixture_1d.denoiser, b, a, FAST)
    line_l, line_x = straight_line(a, b, 32)
    line_energy = float(curve_energy(mixture_1d.denoiser, line_l, line_x))
    assert forward.energy < 0.2 * line_energy
    assert abs(forward.initial_energy - float(curve_energy(mixture_1d.denoiser, *straight_line(a, b, 16)))) < 1e-9
    assert forward.converged and forward.n_denoiser_evals > 0
    assert abs(forward.energy - backward.energy) < 0.01 * forward.energy
    torch.testing.assert_close(forward.log_snr, backward.log_snr.flip(0), atol=0.05, rtol=0)
    # The geodesic between separated modes goes through noise (the paper's Fig. 1).
    assert float(forward.log_snr.min()) < 0.0


def test_abs_clamp_equals_segment_clamp_for_an_exact_analytic_model(mixture_1d):
    """An analytic mixture has no negative exact terms: counting |t| solves the same problem."""
    import dataclasses

    a, b = endpoints()
    seg = optimize_geodesic(mixture_1d.denoiser, a, b, FAST)
    ab = optimize_geodesic(mixture_1d.denoiser, a, b, dataclasses.replace(FAST, clamp="abs"))
    assert ab.energy == pytest.approx(seg.energy, rel=1e-9)
    torch.testing.assert_close(ab.x, seg.x)


def test_adam_and_hutchinson_options():
    gm = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.5]]), [0.6, 0.6])
    a = SpacetimePoint(3.0, torch.tensor([-1.8, 0.0], dtype=torch.float64))
    b = SpacetimePoint(3.0, torch.tensor([1.8, 0.45], dtype=torch.float64))
    cfg = GeodesicConfig(n_nodes=5, n_points=(16,), optimizer="adam", max_steps=150, divergence="hutchinson", n_probes=2)
    seen = []
    result = optimize_geodesic(gm.denoiser, a, b, cfg, callback=seen.append)
    assert len(seen) == result.n_steps and seen[0]["step"] == 0
    assert result.energy < 0.5 * result.initial_energy
    assert set(result.summary()) >= {"energy", "n_steps", "converged", "wall_time", "config"}


def test_low_variance_keeps_log_snr_above_floor(mixture_1d):
    a, b = endpoints()
    free = optimize_geodesic(mixture_1d.denoiser, a, b, FAST)
    floor = 1.0
    assert float(free.log_snr.min()) < floor
    cfg = GeodesicConfig(n_nodes=6, n_points=(16, 32), max_steps=80, constraint_warmup=5, constraint_ramp=10)
    low = optimize_geodesic(mixture_1d.denoiser, a, b, cfg, [LowVariance(floor, weight=1e3)])
    assert float(low.log_snr.min()) > floor - 0.15
    assert low.energy > free.energy
    assert low.history[0]["ramp"] == 0.0 and low.history[-1]["ramp"] == 1.0


def test_avoid_region_raises_kl_above_threshold():
    gm = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), [0.6, 0.6, 0.6])
    lam = 3.0
    alpha = float(alpha_sigma(lam)[0])
    a = SpacetimePoint(lam, alpha * torch.tensor([-2.0, 0.0], dtype=torch.float64))
    b = SpacetimePoint(lam, alpha * torch.tensor([2.0, 0.0], dtype=torch.float64))
    z_star = alpha * torch.tensor([0.0, 0.3], dtype=torch.float64)
    cfg = GeodesicConfig(n_nodes=6, n_points=(24,), max_steps=100)
    free = optimize_geodesic(gm.denoiser, a, b, cfg, [LowVariance(2.0, weight=1e3)])
    kl_free = kl_along_curve(gm.denoiser, free.log_snr, free.x, lam, z_star)
    threshold = 2.0 * float(kl_free.min()) + 1.0
    avoid = AvoidRegion(lam, z_star, min_kl=threshold, weight=50.0)
    result = optimize_geodesic(gm.denoiser, a, b, cfg, [LowVariance(2.0, weight=1e3), avoid])
    kl = kl_along_curve(gm.denoiser, result.log_snr, result.x, lam, z_star)
    assert float(kl.min()) > 0.85 * threshold, (float(kl.min()), threshold)
    assert result.energy > free.energy


def test_avoid_region_containing_an_endpoint_is_rejected():
    gm = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), [0.6, 0.6])
    a = SpacetimePoint(3.0, torch.tensor([-1.8, 0.0], dtype=torch.float64))
    b = SpacetimePoint(3.0, torch.tensor([1.8, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="forbidden region contains the start point: expected KL >= min_kl 1"):
        optimize_geodesic(gm.denoiser, a, b, FAST, [AvoidRegion(3.0, a.x.clone(), min_kl=1.0)])
    with pytest.raises(ValueError, match="LowVariance: expected the start point's log_snr >= min_log_snr 5"):
        optimize_geodesic(gm.denoiser, a, b, FAST, [LowVariance(5.0)])


def test_generic_penalty_hook(mixture_1d):
    a, b = endpoints()
    pen = Penalty(lambda state: (state.log_snr - 4.0).square().mean(), weight=100.0)
    result = optimize_geodesic(mixture_1d.denoiser, a, b, FAST, [pen])
    free = optimize_geodesic(mixture_1d.denoiser, a, b, FAST)
    assert float(result.log_snr.min()) > float(free.log_snr.min())


def test_nan_denoiser_gives_clear_error():
    def bad(x, log_snr):
        return torch.where(log_snr[:, None] < 3.5, torch.full_like(x, float("nan")), x)

    a, b = endpoints()
    with pytest.raises(NonFiniteError, match="geodesic objective became non-finite"):
        optimize_geodesic(bad, a, b, FAST)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_points": (32, 16)}, r"n_points: expected increasing \(coarse to fine\), got \(32, 16\)"),
        ({"n_points": (1,)}, "n_points: expected a non-empty sequence of integers >= 2"),
        ({"optimizer": "sgd"}, "optimizer: expected 'lbfgs' or 'adam', got 'sgd'"),
        ({"divergence": "fast"}, "divergence: expected 'auto', 'exact' or 'hutchinson', got 'fast'"),
        ({"n_nodes": 0}, "n_nodes: expected an integer >= 1, got 0"),
        ({"lr": -1.0}, "lr: expected a number > 0, got -1.0"),
        ({"rtol": float("nan")}, "rtol: expected a finite number, got nan"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GeodesicConfig(**kwargs)


def test_endpoint_validation(mixture_1d):
    a, b = endpoints()
    with pytest.raises(ValueError, match="start and end: expected two different spacetime points"):
        optimize_geodesic(mixture_1d.denoiser, a, a, FAST)
    with pytest.raises(ValueError, match=r"end.x: expected shape \(1,\) like start.x, got \(2,\)"):
        optimize_geodesic(mixture_1d.denoiser, a, SpacetimePoint(4.0, torch.zeros(2, dtype=torch.float64)), FAST)
    with pytest.raises(TypeError, match="start: expected a SpacetimePoint"):
        optimize_geodesic(mixture_1d.denoiser, torch.zeros(2), b, FAST)
    with pytest.raises(ValueError, match="start.x: expected finite values"):
        optimize_geodesic(mixture_1d.denoiser, SpacetimePoint(4.0, torch.tensor([float("nan")])), b, FAST)
    with pytest.raises(TypeError, match="config: expected a GeodesicConfig, got dict"):
        optimize_geodesic(mixture_1d.denoiser, a, b, {"n_nodes": 3})


# --- contracts found unchecked by mutation testing (docs/mutation_testing.md) --------------


def test_auto_divergence_is_exact_up_to_exact_max_dim():
    config = GeodesicConfig(exact_max_dim=3)
    assert (config.divergence_for(3), config.divergence_for(4)) == ("exact", "hutchinson")
    assert GeodesicConfig(divergence="hutchinson").divergence_for(1) == "hutchinson"
    assert GeodesicConfig(optimizer="adam").resolved_lr == 0.1 and GeodesicConfig().resolved_lr == 1.0
    assert GeodesicConfig(optimizer="adam").resolved_patience == 50 and GeodesicConfig().resolved_patience == 5


def _gaussian_posterior(m, s, log_snr, x):
    """Posterior N(mean, v I) of x0 given x_t for data x0 ~ N(m, s^2 I) (closed form)."""
    snr = log_snr.exp()
    v = 1.0 / (1.0 / s**2 + snr)
    ratio = (torch.sigmoid(log_snr).sqrt() / torch.sigmoid(-log_snr)).unsqueeze(-1)  # alpha / sigma^2
    return v.unsqueeze(-1) * (m / s**2 + ratio * x), v


def _gaussian_kl(mean1, v1, mean2, v2, dim):
    return 0.5 * (dim * v1 / v2 + (mean2 - mean1).square().sum(-1) / v2 - dim + dim * torch.log(v2 / v1))


def test_constraint_penalties_closed_form():
    from spacetime_md.core import CurveState, expectation_params, natural_params

    # LowVariance: mean_n relu(min_log_snr - log_snr_n)^2.
    state = CurveState(None, torch.tensor([0.0, 1.0, 3.0, 2.0]), torch.zeros(4, 1), None, None, None, 0)
    assert float(LowVariance(2.0).penalty(state)) == pytest.approx((4.0 + 1.0) / 4)
    # AvoidRegion: absolute KL(p(.|z*) || p(.|gamma_n)) for Gaussian data, and mean relu(min_kl - KL)^2.
    m, s = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64), 0.8
    gm = GaussianMixture(m[None], [s])
    start = SpacetimePoint(2.0, torch.tensor([-1.5, 0.0, 0.5], dtype=torch.float64))
    end = SpacetimePoint(2.5, torch.tensor([1.5, -1.0, 0.0], dtype=torch.float64))
    z_l, z_x = 2.0, torch.tensor([0.1, -0.2, 0.4], dtype=torch.float64)
    log_snr, x = straight_line(start, end, 150)
    mean_star, v_star = _gaussian_posterior(m, s, torch.tensor([z_l], dtype=torch.float64), z_x[None])
    want = _gaussian_kl(mean_star, v_star, *_gaussian_posterior(m, s, log_snr, x), 3)
    min_kl = float(want.min() + want[[0, -1]].min()) / 2  # between the curve's closest point and its ends
    assert AvoidRegion(z_l, z_x, min_kl=min_kl, n_bridge=2).n_bridge == 2  # the smallest allowed
    avoid = AvoidRegion(z_l, z_x, min_kl=min_kl, n_bridge=150)
    avoid.setup(gm.denoiser, torch.cat([torch.tensor([2.0]), start.x]), torch.cat([torch.tensor([2.5]), end.x]),
                GeodesicConfig())
    state = CurveState(torch.linspace(0, 1, 150), log_snr, x, natural_params(log_snr, x),
                       expectation_params(gm.denoiser, log_snr, x), gm.denoiser, 0)
    kl = avoid.kl(state)
    torch.testing.assert_close(kl, want, rtol=2e-3, atol=0)
    penalty = (min_kl - kl).clamp_min(0).square().mean()
    assert float(penalty) > 0
    torch.testing.assert_close(avoid.penalty(state), penalty, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="n_bridge: expected an integer >= 2, got 1"):
        AvoidRegion(z_l, z_x, min_kl=min_kl, n_bridge=1)


def test_constraint_weight_ramps_linearly_after_the_warm_up():
    gm = GaussianMixture([[-1.0], [1.0]], 0.5)
    a = SpacetimePoint(2.0, torch.tensor([-0.8], dtype=torch.float64))
    b = SpacetimePoint(2.0, torch.tensor([0.8], dtype=torch.float64))
    config = GeodesicConfig(n_nodes=2, n_points=(8,), optimizer="adam", max_steps=12, constraint_warmup=3,
                            constraint_ramp=4)
    ramps = [h["ramp"] for h in optimize_geodesic(gm.denoiser, a, b, config, [LowVariance(-50.0)]).history]
    assert len(ramps) == 12 and ramps[:3] == [0.0] * 3  # weights at 0 during the warm-up
    steps = [r1 - r0 for r0, r1 in zip(ramps, ramps[1:]) if r1 != r0]
    assert steps == pytest.approx([0.25] * 4)  # then linear, in constraint_ramp steps, to full weight
    assert ramps[-1] == 1.0 and ramps.index(1.0) <= 3 + 4


def test_stages_stop_by_the_documented_convergence_rule(mixture_1d):
    from tests.core.conftest import stops_as_documented

    a, b = endpoints()
    config = GeodesicConfig(n_nodes=4, n_points=(8, 16), max_steps=60, rtol=1e-5, min_steps=8, patience=3)
    for constraints in ([], [LowVariance(-50.0)]):  # a constraint at full weight: the same rule
        result = optimize_geodesic(mixture_1d.denoiser, a, b, config, constraints)
        assert stops_as_documented(result.history, config) == [True, True]
        assert result.converged and result.n_steps == len(result.history)


def test_public_defaults():
    # The defaults are public API (they are what every caller who omits an argument gets, and
    # the README numbers are produced with them): a changed default must be a deliberate change
    # of this test. DESIGN.md section 4: 10 nodes, T = 128 points at the finest stage.
    assert GeodesicConfig() == GeodesicConfig(
        n_nodes=10, n_points=(16, 32, 64, 128), optimizer="lbfgs", lr=None, max_steps=200, rtol=1e-4, patience=None,
        min_steps=10, divergence="auto", n_probes=4, exact_max_dim=16, chunk_size=None, clamp="segment",
        constraint_warmup=0, constraint_ramp=0, seed=0, progress=False, num_threads=None,
    )
    assert LowVariance(1.0).weight == 100.0 and Penalty(lambda state: state.log_snr.sum()).weight == 1.0
    avoid = AvoidRegion(1.0, torch.zeros(2), min_kl=1.0)
    assert (avoid.weight, avoid.n_bridge) == (10.0, 33)
