"""Held-out energy estimates and the honest (resampled-probe) geodesic solver."""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core import GeodesicConfig, SpacetimePoint, SplineCurve, alpha_sigma, curve_energy, optimize_geodesic
from spacetime_md.core.estimates import draw_probes, estimate_curve_energy
from spacetime_md.core.geometry import expectation_params, natural_params, segment_terms
from spacetime_md.toy import GaussianMixture

DIM = 6


@pytest.fixture
def mixture():
    g = torch.Generator().manual_seed(3)
    means = 2.0 * torch.randn(3, DIM, generator=g, dtype=torch.float64)
    return GaussianMixture(means, 0.6, [0.3, 0.4, 0.3])


def _endpoints(mixture, lam=4.0):
    alpha = float(alpha_sigma(lam)[0])
    return (SpacetimePoint(lam, alpha * mixture.means[0].clone()), SpacetimePoint(lam, alpha * mixture.means[2].clone()))


def _bent_curve(mixture):
    a, b = _endpoints(mixture)
    curve = SplineCurve(a, b, n_nodes=4)
    with torch.no_grad():
        curve.interior[:, 0] -= torch.tensor([2.0, 4.0, 4.0, 2.0], dtype=torch.float64)
    with torch.no_grad():
        return curve.evaluate(24)


def test_probe_layouts():
    g = torch.Generator().manual_seed(0)
    shared = draw_probes(3, 5, 4, "curve", dtype=torch.float32, device="cpu", generator=g)
    assert shared.shape == (3, 5, 4) and bool((shared == shared[:, :1]).all())
    assert set(shared.unique().tolist()) <= {-1.0, 1.0}
    own = draw_probes(3, 5, 4, "point", dtype=torch.float32, device="cpu", generator=g)
    assert own.shape == (3, 5, 4) and not bool((own == own[:, :1]).all())
    with pytest.raises(ValueError, match="probe_layout: expected 'curve' or 'point', got 'row'"):
        draw_probes(1, 2, 2, "row", dtype=torch.float32, device="cpu", generator=g)


def test_exact_estimate_is_the_clamped_energy_without_error(mixture):
    log_snr, x = _bent_curve(mixture)
    est = estimate_curve_energy(mixture.denoiser, log_snr, x, divergence="exact")
    want = float(curve_energy(mixture.denoiser, log_snr, x, divergence="exact", clamp="segment"))
    assert est.energy == pytest.approx(want, rel=1e-9)
    terms = segment_terms(natural_params(log_snr, x), expectation_params(mixture.denoiser, log_snr, x))
    assert est.energy_unclamped == pytest.approx(0.5 * 23 * float(terms.sum()), rel=1e-9)
    assert est.n_negative_segments == int((terms < 0).sum()) and est.n_segments == 23
    assert est.energy_se == 0.0 and est.n_probes == 0
    # The quantity a clamp="abs" solve optimises is reported too.
    assert est.energy_abs == pytest.approx(float(curve_energy(mixture.denoiser, log_snr, x, divergence="exact",
                                                              clamp="abs")), rel=1e-9)


@pytest.mark.parametrize("layout", ["curve", "point"])
def test_hutchinson_estimate_is_unbiased_within_its_standard_error(mixture, layout):
    log_snr, x = _bent_curve(mixture)
    exact = estimate_curve_energy(mixture.denoiser, log_snr, x, divergence="exact")
    est = estimate_curve_energy(mixture.denoiser, log_snr, x, n_probes=64, probe_layout=layout,
                                generator=torch.Generator().manual_seed(1))
    assert est.energy_se > 0 and est.n_probes == 64
    assert abs(est.energy_unclamped - exact.energy_unclamped) < 4 * est.energy_se


def test_shared_probes_cancel_noise_in_each_segment(mixture):
    """One probe per curve: the noise of neighbouring divergences cancels in each segment term, so
    far fewer exact-positive terms come out negative (and get clamped) than with a probe per point."""
    log_snr, x = _bent_curve(mixture)
    assert estimate_curve_energy(mixture.denoiser, log_snr, x, divergence="exact").n_negative_segments == 0
    negative = {layout: sum(estimate_curve_energy(mixture.denoiser, log_snr, x, n_probes=1, probe_layout=layout,
                                                  generator=torch.Generator().manual_seed(s)).n_negative_segments
                            for s in range(32))
                for layout in ("curve", "point")}
    assert negative["curve"] < 0.5 * negative["point"], negative


def test_estimate_input_errors(mixture):
    log_snr, x = _bent_curve(mixture)
    with pytest.raises(ValueError, match="n_probes: expected an integer >= 1, got 0"):
        estimate_curve_energy(mixture.denoiser, log_snr, x, n_probes=0)
    with pytest.raises(ValueError, match="divergence: expected 'exact' or 'hutchinson', got 'jvp'"):
        estimate_curve_energy(mixture.denoiser, log_snr, x, divergence="jvp")
    with pytest.raises(ValueError, match="at least 2 curve points, got 1"):
        estimate_curve_energy(mixture.denoiser, log_snr[:1], x[:1])


def test_config_errors():
    with pytest.raises(ValueError, match="probe_layout: expected 'point' or 'curve', got 'x'"):
        GeodesicConfig(probe_layout="x")
    with pytest.raises(ValueError, match="resample_every: expected an integer >= 0, got -1"):
        GeodesicConfig(resample_every=-1)
    with pytest.raises(ValueError, match="holdout_probes: expected an integer >= 0, got 1.5"):
        GeodesicConfig(holdout_probes=1.5)


HONEST = GeodesicConfig(n_nodes=4, n_points=(12, 24), divergence="hutchinson", n_probes=1, probe_layout="curve",
                        resample_every=1, patience=3, max_steps=40, rtol=1e-3, holdout_probes=16)


def test_honest_solver_keeps_the_best_held_out_curve(mixture):
    a, b = _endpoints(mixture)
    curve = SplineCurve(a, b, n_nodes=HONEST.n_nodes)
    snapshots = [curve.interior.detach().clone()]  # snapshots[i]: the curve at the start of step i
    history = []

    def callback(info):
        history.append(info)
        snapshots.append(curve.interior.detach().clone())

    result = optimize_geodesic(mixture.denoiser, a, b, HONEST, curve=curve, callback=callback)
    last = [i for i, h in enumerate(history) if h["stage"] == 1]
    assert all("held_out" in history[i] for i in last)  # resample_every=1: every step is scored held out
    best = min(last, key=lambda i: history[i]["held_out"])
    torch.testing.assert_close(result.curve.interior.detach(), snapshots[best])
    # The stopping test ran on the held-out values: the stage ended on them, not at max_steps.
    assert len(last) < HONEST.max_steps and result.converged
    # Held-out score of the result: an unbiased estimate, consistent with the exact energy.
    exact = estimate_curve_energy(mixture.denoiser, result.log_snr, result.x, divergence="exact")
    est = result.estimate
    assert est is not None and est.n_probes == 16 and est.probe_layout == "curve"
    assert abs(est.energy_unclamped - exact.energy_unclamped) < 4 * est.energy_se + 1e-9
    assert exact.energy < result.initial_energy
    assert result.summary()["estimate"]["energy_se"] == est.energy_se


def test_honest_solver_beats_the_fixed_probe_solver_on_the_exact_energy(mixture):
    """The fixed one-probe objective is fitted to its own noise; the honest one is not."""
    a, b = _endpoints(mixture)
    exact = {}
    for name, config in (("fixed", GeodesicConfig(n_nodes=4, n_points=(12, 24), divergence="hutchinson",
                                                    n_probes=1, max_steps=40, rtol=1e-3)),
                         ("honest", HONEST)):
        energies = []
        for seed in range(3):
            import dataclasses

            result = optimize_geodesic(mixture.denoiser, a, b, dataclasses.replace(config, seed=seed))
            energies.append(estimate_curve_energy(mixture.denoiser, result.log_snr, result.x,
                                                  divergence="exact").energy)
        exact[name] = sum(energies) / len(energies)
    assert exact["honest"] <= exact["fixed"] * 1.02, exact
    assert math.isfinite(exact["honest"])


def test_auto_threads_keep_the_faster_count_and_restore_torch():
    import time

    from spacetime_md.core.threads import choose_num_threads

    before = torch.get_num_threads()
    chosen, seconds = choose_num_threads(lambda: time.sleep(0.03 if torch.get_num_threads() == 2 else 0.0), (1, 2))
    assert chosen == 1 and seconds[2] > seconds[1] and torch.get_num_threads() == before
    chosen, _ = choose_num_threads(lambda: time.sleep(0.03 if torch.get_num_threads() == 1 else 0.0), (1, 2))
    assert chosen == 2 and torch.get_num_threads() == before


def test_auto_threads_solve_records_the_count(mixture):
    import dataclasses

    a, b = _endpoints(mixture)
    before = torch.get_num_threads()
    result = optimize_geodesic(mixture.denoiser, a, b, dataclasses.replace(HONEST, num_threads="auto", max_steps=3))
    assert result.num_threads in (1, 2) and result.summary()["num_threads"] == result.num_threads
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads: expected an integer >= 1, 'auto' or None, got 'many'"):
        GeodesicConfig(num_threads="many")


def test_batched_honest_mode_solves_each_pair_as_alone(mixture):
    import dataclasses

    from spacetime_md.core import optimize_geodesics

    a, b = _endpoints(mixture)
    c = SpacetimePoint(4.0, float(alpha_sigma(4.0)[0]) * mixture.means[1].clone())
    config = dataclasses.replace(HONEST, max_steps=6)
    seen = []
    batch = optimize_geodesics(mixture.denoiser, [a, a], [b, c], config, seeds=[3, 4], callback=seen.append)
    for k, end in enumerate((b, c)):
        alone = optimize_geodesic(mixture.denoiser, a, end, dataclasses.replace(config, seed=3 + k))
        torch.testing.assert_close(batch[k].curve.interior.detach(), alone.curve.interior.detach())
        assert batch[k].estimate == alone.estimate and batch[k].n_steps == alone.n_steps
    assert {info["pair"] for info in seen} == {0, 1}
