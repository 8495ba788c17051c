"""The float32 solver on a rough *learned* 2-D denoiser, against plain Adam on the same curve class.

The paper's 2-D alanine (phi, psi) reference MLP is not available offline; the stand-in is our
own :class:`~spacetime_md.toy.periodic_model.PeriodicDenoiser`, trained for a few dozen steps
on exact samples of the packaged alanine (phi, psi) free-energy grid, so its curve energy is
rough. ``benchmarks/bench_geodesic_robust.py`` is the full-size version (docs/geodesic.md).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spacetime_md.core import GeodesicConfig, SpacetimePoint, SplineCurve, alpha_sigma, curve_energy, optimize_geodesic
from spacetime_md.core.explore import jittered_points as _jittered_points
from spacetime_md.core.honest import LbfgsMemory, run_honest_stage


@pytest.fixture(scope="module")
def rough_model():
    from spacetime_md.toy.landscape import alanine_dipeptide_fes
    from spacetime_md.toy.periodic_model import PeriodicModelConfig, PeriodicTrainConfig, train_periodic_denoiser

    data = alanine_dipeptide_fes().sample_grid(4000, generator=torch.Generator().manual_seed(0)).float()
    trained = train_periodic_denoiser(data, PeriodicModelConfig(hidden=32, n_layers=2, n_frequencies=4),
                                      PeriodicTrainConfig(n_steps=60, batch_size=256, log_every=60, seed=0))
    return trained.model


def _endpoints():
    alpha = float(alpha_sigma(4.0)[0])
    return (SpacetimePoint(4.0, alpha * torch.tensor([-2.55, 2.7])),
            SpacetimePoint(4.0, alpha * torch.tensor([0.95, -0.4])))


def _exact_energy(model, curve: SplineCurve, n_points: int = 256) -> float:
    with torch.no_grad():
        log_snr, x = curve.evaluate(n_points)
    return float(curve_energy(model, log_snr, x, divergence="exact", create_graph=False))


def test_float32_solver_on_a_rough_learned_denoiser_matches_adam(rough_model):
    a, b = _endpoints()
    result = optimize_geodesic(rough_model, a, b, GeodesicConfig(n_nodes=8, n_points=(16, 32), max_steps=80))
    assert result.log_snr.dtype == torch.float32 and bool(torch.isfinite(result.curve.interior).all())
    ours = _exact_energy(rough_model, result.curve)
    straight = _exact_energy(rough_model, SplineCurve(a, b, 8))
    # Plain Adam (the paper's lr 0.1) on the same knots and final discretisation, best iterate kept.
    curve = SplineCurve(a, b, 8)
    opt = torch.optim.Adam([curve.interior], lr=0.1)
    s = torch.linspace(0, 1, 32)
    adam = math.inf
    for step in range(150):
        opt.zero_grad()
        log_snr, x = curve.evaluate(s)
        curve_energy(rough_model, log_snr, x, divergence="exact").backward()
        opt.step()
        if step % 10 == 9:
            adam = min(adam, _exact_energy(rough_model, curve))
    assert math.isfinite(ours) and ours < 0.2 * straight
    # A local minimum of a rough landscape: within 10 % of Adam's best (docs/geodesic.md has the
    # full-size numbers, where ours ends 12-20 % above 2000 Adam steps).
    assert ours <= 1.10 * adam, (ours, adam)


def test_exploration_and_several_starts_keep_the_best_final_objective(rough_model):
    """``n_starts`` solves start k on ``n_points[k:]`` and keeps the lowest final objective;
    start 0 explores first (Adam on a jittered grid) when ``explore_steps > 0``."""
    a, b = _endpoints()
    robust = GeodesicConfig(n_nodes=8, n_points=(16, 32, 64), explore_steps=60, n_starts=3, max_steps=60)
    seen = []
    result = optimize_geodesic(rough_model, a, b, robust, callback=seen.append)
    singles = [optimize_geodesic(rough_model, a, b, GeodesicConfig(n_nodes=8, n_points=(16, 32, 64)[k:],
                                                                   explore_steps=60 if k == 0 else 0, max_steps=60))
               for k in range(3)]
    assert result.start_objectives == [r.objective for r in singles]
    assert result.objective == min(result.start_objectives)
    assert torch.equal(result.curve.interior, singles[result.start].curve.interior)
    assert result.n_steps == sum(r.n_steps for r in singles) == len(result.history) == len(seen)
    assert [h["start"] for h in seen] == [h["start"] for h in result.history]
    assert sum(bool(h.get("explore")) for h in result.history) == 60
    assert result.log_snr.dtype == torch.float32 and result.summary()["start"] == result.start
    # The exploration phase is not the plain first stage: it ends elsewhere.
    plain = optimize_geodesic(rough_model, a, b, GeodesicConfig(n_nodes=8, n_points=(16, 32, 64), max_steps=60))
    assert not torch.equal(plain.curve.interior, singles[0].curve.interior)


def test_exploration_and_a_second_start_escape_the_default_local_minimum():
    """The benchmark's model seed 1 (docs/geodesic.md): the default coarse-to-fine path ends 20 %
    above Adam's best of 10 000 steps (38.857); the robust setting of bench_geodesic_robust
    (exploration + a second start on T = 64 -> 128) comes within 2 % of it on the machine it was
    measured on, 3.3 % on an AMD EPYC (40.14: the trained model's floats depend on the CPU), so
    the bound is 5 %, and it must beat the default by 10 %."""
    from spacetime_md.toy.landscape import alanine_dipeptide_fes
    from spacetime_md.toy.periodic_model import PeriodicModelConfig, PeriodicTrainConfig, train_periodic_denoiser

    with torch.random.fork_rng():
        torch.manual_seed(1)  # as benchmarks/bench_geodesic_robust.py --seeds 1
        data = alanine_dipeptide_fes().sample_grid(20_000, generator=torch.Generator().manual_seed(1)).float()
        model = train_periodic_denoiser(data, PeriodicModelConfig(hidden=64, n_layers=3, n_frequencies=6),
                                        PeriodicTrainConfig(n_steps=300, batch_size=512, log_every=300, seed=1)).model
    a, b = _endpoints()
    default = _exact_energy(model, optimize_geodesic(model, a, b, GeodesicConfig()).curve, 1024)
    robust = optimize_geodesic(model, a, b, GeodesicConfig(n_points=(32, 64, 128), explore_steps=400, n_starts=2))
    energy = _exact_energy(model, robust.curve, 1024)
    assert energy <= 1.05 * 38.857 and energy < 0.9 * default, (energy, default, robust.start_objectives)


def test_several_starts_update_a_warm_start_curve_in_place(rough_model):
    a, b = _endpoints()
    curve = SplineCurve(a, b, 8)
    result = optimize_geodesic(rough_model, a, b, GeodesicConfig(n_nodes=8, n_points=(16, 32), n_starts=2,
                                                                 max_steps=20), curve=curve)
    assert result.curve is curve and len(result.start_objectives) == 2


def test_an_initial_dip_lowers_the_interior_log_snr_by_a_sine(rough_model):
    """A single dip d starts the solve from the straight line with its interior knots' log_snr
    lowered by d sin(pi s); with no optimiser steps left the curve is that initial curve."""
    a, b = _endpoints()
    straight = SplineCurve(a, b, 8)
    curve = SplineCurve(a, b, 8)
    optimize_geodesic(rough_model, a, b, GeodesicConfig(n_nodes=8, n_points=(16,), max_steps=1, min_steps=1,
                                                        init_dips=(2.5,), lr=1e-12), curve=curve)
    w = torch.linspace(0, 1, 10)[1:-1]
    drop = straight.interior[:, 0] - curve.interior[:, 0]
    torch.testing.assert_close(drop.detach(), 2.5 * torch.sin(math.pi * w), atol=1e-4, rtol=0)
    torch.testing.assert_close(curve.interior[:, 1:].detach(), straight.interior[:, 1:].detach(), atol=1e-4, rtol=0)


def test_several_dips_keep_the_start_with_the_best_final_objective(rough_model):
    """``init_dips=(0, d)`` runs one solve per dip (each with every ``n_starts`` start) and keeps the
    lowest final objective; the result records the winning dip."""
    a, b = _endpoints()
    config = GeodesicConfig(n_nodes=8, n_points=(16, 32), max_steps=40, init_dips=(0.0, 3.0), n_starts=2)
    result = optimize_geodesic(rough_model, a, b, config)
    singles = [optimize_geodesic(rough_model, a, b, GeodesicConfig(n_nodes=8, n_points=(16, 32)[k:], max_steps=40,
                                                                   init_dips=(dip,)))
               for dip in (0.0, 3.0) for k in range(2)]
    assert result.start_objectives == [r.objective for r in singles]
    assert result.objective == min(result.start_objectives)
    assert result.start_dip == (0.0, 0.0, 3.0, 3.0)[result.start]
    assert torch.equal(result.curve.interior, singles[result.start].curve.interior)
    assert result.initial_energy == singles[0].initial_energy  # the straight line's
    assert singles[2].initial_energy != singles[0].initial_energy  # a dipped curve is another curve
    assert result.summary()["start_dip"] == result.start_dip
    assert result.n_denoiser_evals == sum(r.n_denoiser_evals for r in singles)


@pytest.mark.parametrize("dips", [(), (-1.0,), (float("nan"),), (1.0, 1.0), (True,), ("2",), None])
def test_initial_dips_are_checked(dips):
    with pytest.raises(ValueError, match="init_dips"):
        GeodesicConfig(init_dips=dips)


def test_a_single_number_is_one_dip():
    assert GeodesicConfig(init_dips=2).init_dips == (2.0,)
    assert GeodesicConfig().init_dips == (0.0,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_points=(32,), explore_steps=10), "at least 2 stages"),
    (dict(n_points=(16, 32), n_starts=3), "at most len"),
    (dict(n_starts=0), "n_starts"),
    (dict(explore_steps=-1), "explore_steps"),
    (dict(explore_lr=0.0), "explore_lr"),
])
def test_exploration_options_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GeodesicConfig(**kwargs)


def test_batched_solver_refuses_the_exploration_options(rough_model):
    from spacetime_md.core import optimize_geodesics

    a, b = _endpoints()
    for kwargs in (dict(explore_steps=5), dict(n_starts=2), dict(init_dips=(0.0, 2.0))):
        with pytest.raises(ValueError, match="not of the batched"):
            optimize_geodesics(rough_model, [a], [b], GeodesicConfig(n_nodes=8, n_points=(16, 32), **kwargs))


def test_jittered_points_have_one_draw_per_cell():
    s = _jittered_points(10, torch.Generator().manual_seed(0), torch.float32, "cpu")
    assert s.shape == (10,) and float(s[0]) == 0.0 and float(s[-1]) == 1.0
    inner = s[1:-1]
    torch.testing.assert_close(torch.floor(inner * 8), torch.arange(8, dtype=torch.float32))
    assert not torch.equal(s, _jittered_points(10, torch.Generator().manual_seed(1), torch.float32, "cpu"))


def test_honest_stage_backtracks_out_of_a_non_finite_region():
    """A trial step into a region where the objective is NaN is backtracked, not raised."""
    target = torch.tensor([1.0, -2.0])
    params = torch.zeros(2)

    def objective(p):
        return float("nan") if float(p.norm()) > 3.0 else float((p - target).square().sum())

    def full(step, probes):
        return objective(params), objective(params), {}, 2 * (params - target)

    seen = []
    out = run_honest_stage(params, full, lambda step, probes: objective(params), lambda: None, max_steps=12,
                           patience=3, rtol=1e-6, lr=40.0, resample_every=1, ramp_done=lambda step: True,
                           on_step=seen.append)
    assert out.n_failed == 0 and out.n_steps == len(seen)
    assert all(math.isfinite(info["objective"]) for info in seen)
    assert float((params - target).norm()) < 1e-3


def test_lbfgs_memory_skips_flat_pairs_and_scales_like_torch():
    memory = LbfgsMemory(history_size=2)
    g = torch.tensor([1.0, 2.0])
    assert torch.equal(memory.direction(g), -g)
    assert not memory.push(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]))  # y.s <= 0: skipped
    assert memory.push(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))
    assert float(memory.h_diag) == pytest.approx(0.5)  # y.s / y.y
    # On a quadratic with Hessian diag(2, 4), pairs along both axes give the Newton direction.
    assert memory.push(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 4.0]))
    torch.testing.assert_close(memory.direction(g), torch.tensor([-0.5, -0.5]))
    assert memory.push(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 4.0])) and len(memory) == 2


def _honest_config(**kwargs) -> GeodesicConfig:
    return GeodesicConfig(n_nodes=6, n_points=(12, 24), max_steps=30, divergence="hutchinson", n_probes=1,
                          resample_every=1, patience=3, holdout_probes=4, init_dips=(0.0, 3.0), num_threads=1,
                          **kwargs)


@pytest.mark.parametrize("start_threads", [2, "auto"])
def test_starts_in_threads_give_the_result_of_starts_one_after_the_other(rough_model, start_threads):
    """``start_threads`` only changes when the starts run: same curve, objectives, history, held-out
    score (the winner's, its draws split over the threads) and evaluation count."""
    a, b = _endpoints()
    seen = []
    one = optimize_geodesic(rough_model, a, b, _honest_config(start_threads=1))
    many = optimize_geodesic(rough_model, a, b, _honest_config(start_threads=start_threads), callback=seen.append)
    assert torch.equal(many.curve.interior, one.curve.interior)
    assert many.start_objectives == one.start_objectives and many.start == one.start
    assert many.estimate == one.estimate and many.estimate.n_probes == 4
    assert many.history == one.history
    assert many.n_denoiser_evals == one.n_denoiser_evals
    assert sorted({info["start"] for info in seen}) == [0, 1]


@pytest.mark.parametrize("slow", [0, 1])
def test_a_start_scored_while_another_runs_gives_the_same_score(rough_model, slow):
    """A start that ends while the other still runs is scored at once (the callback slows one start
    down, so each start is once the early one); the winner's score and the row count are those of
    the starts one after the other."""
    import time

    a, b = _endpoints()
    one = optimize_geodesic(rough_model, a, b, _honest_config(start_threads=1))
    many = optimize_geodesic(rough_model, a, b, _honest_config(start_threads=2),
                             callback=lambda info: time.sleep(0.05) if info["start"] == slow else None)
    assert torch.equal(many.curve.interior, one.curve.interior)
    assert many.estimate == one.estimate
    assert many.n_denoiser_evals == one.n_denoiser_evals


def test_only_the_winning_start_is_scored_with_held_out_probes(rough_model):
    a, b = _endpoints()
    result = optimize_geodesic(rough_model, a, b, _honest_config())
    alone = optimize_geodesic(rough_model, a, b, dataclasses.replace(_honest_config(), init_dips=(result.start_dip,)))
    assert result.estimate == alone.estimate
    loser = optimize_geodesic(rough_model, a, b, dataclasses.replace(_honest_config(), holdout_probes=0,
                                                                     init_dips=(3.0 - result.start_dip,)))
    assert result.n_denoiser_evals == alone.n_denoiser_evals + loser.n_denoiser_evals


def test_a_failing_start_in_a_thread_is_raised_and_stops_the_other(rough_model):
    import threading
    import time

    a, b = _endpoints()
    full = optimize_geodesic(rough_model, a, b, dataclasses.replace(_honest_config(), init_dips=(0.0,)))
    steps_of_start_0 = []
    start_0_running = threading.Event()

    def callback(info):
        if info["start"] == 0:
            steps_of_start_0.append(info["step"])
            start_0_running.set()
            time.sleep(0.05)  # start 0 is slow: it is still running when start 1 fails
        elif info["step"] == 1:
            # Fail only once start 0 has taken a step (on a loaded machine start 1 can get there
            # first, and the test asserted on a race).
            assert start_0_running.wait(timeout=60)
            raise RuntimeError("start 1 failed")

    with pytest.raises(RuntimeError, match="start 1 failed"):
        optimize_geodesic(rough_model, a, b, _honest_config(start_threads=2), callback=callback)
    assert 0 < len(steps_of_start_0) < full.n_steps


def test_constraints_are_set_up_once_for_all_starts(rough_model):
    """Every start minimises the same objective: a constraint's ``setup`` runs once, before them."""
    from spacetime_md.core import Penalty

    calls = []

    class Counted(Penalty):
        def setup(self, denoiser, start, end, config):
            calls.append(config.init_dips)

    a, b = _endpoints()
    optimize_geodesic(rough_model, a, b, _honest_config(start_threads=2),
                      constraints=[Counted(lambda state: state.log_snr.new_zeros(()), weight=0.0)])
    assert calls == [(0.0, 3.0)]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "two", None])
def test_start_threads_are_checked(value):
    with pytest.raises(ValueError, match="start_threads"):
        GeodesicConfig(start_threads=value)


def test_held_out_draws_split_over_threads_give_the_same_estimate(rough_model):
    from spacetime_md.core.estimates import estimate_curve_energy

    a, b = _endpoints()
    with torch.no_grad():
        log_snr, x = SplineCurve(a, b, 4).evaluate(16)
    one, two, three = (estimate_curve_energy(rough_model, log_snr, x, n_probes=5, probe_layout="point",
                                             generator=torch.Generator().manual_seed(3), threads=t)
                       for t in (1, 2, 3))
    assert one == two == three and one.n_probes == 5
    with pytest.raises(ValueError, match="threads"):
        estimate_curve_energy(rough_model, log_snr, x, threads=0)
