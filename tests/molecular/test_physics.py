"""Physics of the annealed-Langevin restraint, pinned by closed forms derived in the tests.

Every expected value here is computed by hand from the physics (DESIGN.md section 5), never
from the package's own helpers: the Boltzmann constant is written out, ``alpha`` is
``sqrt(sigmoid(log_snr))`` evaluated with ``math``, and the harmonic restraint's energy, force
and equipartition variance are the textbook ones. Together these tests fail if the force
constant ``k = kT * SNR / s^2`` is scaled (2x, or ``/ s`` instead of ``/ s^2``), if the OpenMM
energy ``0.5 * k * |r - c|^2`` loses its 0.5, or if the centre ``c = s * x / alpha`` loses its
``1 / alpha``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch

from spacetime_md.molecular.paths.openmm_langevin import (
    RESTRAINT_FORCE_GROUP,
    RestrainedLangevinSampler,
    restraint_schedule,
)

#: Molar gas constant N_A * k_B in kJ/mol/K (exact in the 2019 SI).
R_KJ_PER_MOL_K = 0.00831446261815324
TEMPERATURE_K = 300.0
KT = R_KJ_PER_MOL_K * TEMPERATURE_K  # 2.494338785445972 kJ/mol


def _free_particles(n_atoms: int, mass_da: float = 12.0) -> openmm.System:
    """``n_atoms`` non-interacting particles: the restraint is the only force."""
    system = openmm.System()
    for _ in range(n_atoms):
        system.addParticle(mass_da)
    return system


def _block_mean_and_sem(values: np.ndarray, n_blocks: int) -> tuple[float, float]:
    """Mean of a correlated time series and its standard error from ``n_blocks`` block means."""
    blocks = values[: len(values) // n_blocks * n_blocks].reshape(n_blocks, -1).mean(axis=1)
    return float(blocks.mean()), float(blocks.std(ddof=1) / math.sqrt(n_blocks))


def test_restraint_schedule_matches_hand_computed_point(dtype, tol):
    # log_snr = 2, s = 0.15 nm, T = 300 K:
    #   k = R T e^2 / s^2 = 2.4943387854 * 7.3890560989 / 0.0225 = 819.14708 kJ/mol/nm^2
    #   c = s x / alpha,  alpha = sqrt(sigmoid(2)) = sqrt(1 / (1 + e^-2)) = 0.93851
    s = 0.15
    log_snr = torch.tensor([2.0, -1.0, 0.0], dtype=dtype)
    x = torch.randn(3, 3 * 5, dtype=dtype)
    centres, k = restraint_schedule(log_snr, x, s, TEMPERATURE_K)

    k_hand = np.array([R_KJ_PER_MOL_K * 300.0 * math.exp(l) / 0.15**2 for l in (2.0, -1.0, 0.0)])
    assert k_hand[0] == pytest.approx(819.14708, rel=1e-6)
    alpha_hand = np.array([math.sqrt(1.0 / (1.0 + math.exp(-l))) for l in (2.0, -1.0, 0.0)])
    centres_hand = 0.15 * x.double().numpy() / alpha_hand[:, None]
    assert centres.dtype == np.float64 and k.dtype == np.float64
    assert centres.shape == (3, 5, 3) and k.shape == (3,)
    np.testing.assert_allclose(k, k_hand, rtol=tol)
    np.testing.assert_allclose(centres, centres_hand.reshape(3, 5, 3), rtol=tol, atol=tol * 1e-3)

    # (T, N, 3) input gives the same schedule; gradients on the curve are not a problem.
    again = restraint_schedule(log_snr, x.reshape(3, 5, 3).requires_grad_(True), s, TEMPERATURE_K)
    np.testing.assert_array_equal(again[0], centres)
    np.testing.assert_array_equal(again[1], k)
    # k is proportional to T: at 600 K it doubles exactly.
    np.testing.assert_allclose(restraint_schedule(log_snr, x, s, 600.0)[1], 2 * k, rtol=1e-12)


def test_restraint_schedule_errors():
    log_snr, x = torch.zeros(3), torch.zeros(3, 12)
    with pytest.raises(ValueError, match=r"length_scale_nm: expected a finite number > 0, got 0.0"):
        restraint_schedule(log_snr, x, 0.0, 300.0)
    with pytest.raises(ValueError, match=r"temperature_k: expected a finite number > 0, got True"):
        restraint_schedule(log_snr, x, 0.1, True)
    with pytest.raises(ValueError, match=r"temperature_k: expected a finite number > 0, got inf"):
        restraint_schedule(log_snr, x, 0.1, math.inf)
    with pytest.raises(TypeError, match=r"log_snr: expected a torch.Tensor, got ndarray"):
        restraint_schedule(np.zeros(3), x, 0.1, 300.0)
    with pytest.raises(ValueError, match=r"log_snr: expected shape \(T,\), got \(3, 1\)"):
        restraint_schedule(torch.zeros(3, 1), x, 0.1, 300.0)
    with pytest.raises(ValueError, match=r"x_model: expected shape \(3, 3N\) or \(3, N, 3\), got \(3, 13\)"):
        restraint_schedule(log_snr, torch.zeros(3, 13), 0.1, 300.0)
    with pytest.raises(ValueError, match=r"x_model: expected shape \(3, 3N\) or \(3, N, 3\), got \(2, 12\)"):
        restraint_schedule(log_snr, torch.zeros(2, 12), 0.1, 300.0)
    with pytest.raises(ValueError, match="x_model"):
        restraint_schedule(log_snr, torch.full((3, 12), math.nan), 0.1, 300.0)


def test_restraint_energy_and_force_are_the_harmonic_ones():
    # E = k/2 * sum_i |r_i - c_i|^2 and F_i = -k (r_i - c_i), evaluated by OpenMM on the
    # sampler's own context after it has moved through a two-point schedule.
    rng = np.random.default_rng(0)
    sampler = RestrainedLangevinSampler(_free_particles(3))
    centres = rng.normal(size=(2, 3, 3))
    k = np.array([100.0, 750.0])
    sampler.sample(centres, k, centres[0], n_steps=2, seed=1)
    x = centres[1] + rng.normal(scale=0.2, size=(3, 3))
    sampler.context.setPositions(x)
    state = sampler.context.getState(getEnergy=True, getForces=True, groups={RESTRAINT_FORCE_GROUP})
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    displacement = x - centres[1]
    assert energy == pytest.approx(0.5 * 750.0 * float((displacement**2).sum()), rel=1e-6)
    np.testing.assert_allclose(forces, -750.0 * displacement, rtol=1e-6)


def test_equipartition_variance_is_kT_over_k():
    # 20 free particles (12 Da) in a fixed restraint: each of the 60 coordinates is an
    # independent harmonic oscillator with <(x - c)^2> = kT / k exactly (LangevinMiddle samples
    # a harmonic configuration exactly at any stable step). k = 1200 kJ/mol/nm^2 gives
    # omega = sqrt(k/m) = 10 / ps; friction 20 / ps is critical damping, so the variance
    # decorrelates within ~0.1 ps: 2000 frames 0.1 ps apart, the first 1 ps dropped.
    n_atoms, k = 20, 1200.0
    sampler = RestrainedLangevinSampler(_free_particles(n_atoms), temperature=TEMPERATURE_K * unit.kelvin,
                                        timestep=5 * unit.femtosecond, friction=20 / unit.picosecond)
    centre = np.random.default_rng(1).normal(size=(n_atoms, 3))
    out = sampler.sample(centre[None], np.array([k]), centre, n_steps=40_000, record_every=20, seed=7)
    squared = ((out.frames[0, 10:] - centre) ** 2).mean(axis=(1, 2))  # per frame, over 60 coordinates
    mean, sem = _block_mean_and_sem(squared, n_blocks=40)
    expected = KT / k  # 2.0786e-3 nm^2
    assert sem < 0.02 * expected, (sem, expected)  # power: a 2x error is > 25 sigma away
    assert abs(mean - expected) < 5 * sem, (mean, expected, sem)


def test_schedule_through_sampler_gives_model_unit_variance_one_over_snr():
    # End to end: a constant curve point x (model units) at log_snr = 0 with s = 0.05 nm.
    # In model units the target restrains each coordinate to x / alpha with variance 1 / SNR,
    # so in nm the mean-squared displacement from s * x / alpha over all 3N coordinates is
    # 3N * s^2 / SNR = 60 * 0.0025 / 1 = 0.15 nm^2, whatever the temperature.
    n_atoms, s, log_snr = 20, 0.05, 0.0
    x_model = 3.0 * torch.randn(3 * n_atoms, dtype=torch.float64)
    n_points = 40
    centres, k = restraint_schedule(torch.full((n_points,), log_snr, dtype=torch.float64),
                                    x_model.expand(n_points, -1), s, TEMPERATURE_K)
    centre_hand = (s * x_model.numpy() * math.sqrt(2.0)).reshape(n_atoms, 3)  # alpha(0) = 1/sqrt(2)
    sampler = RestrainedLangevinSampler(_free_particles(n_atoms), temperature=TEMPERATURE_K * unit.kelvin,
                                        timestep=5 * unit.femtosecond, friction=20 / unit.picosecond)
    out = sampler.sample(centres, k, centre_hand, n_steps=200, record_every=20, seed=3)
    msd = ((out.frames[0, 10:] - centre_hand) ** 2).sum(axis=(1, 2))
    mean, sem = _block_mean_and_sem(msd, n_blocks=13)
    expected = 3 * n_atoms * s**2 / math.exp(log_snr)
    assert sem < 0.05 * expected, (sem, expected)
    assert abs(mean - expected) < 5 * sem, (mean, expected, sem)


def test_sampler_defaults_reach_the_integrator_and_the_restraint_starts_off():
    # The documented defaults (300 K, 1 fs, 1 / ps) in OpenMM's units, and kT = R T.
    sampler = RestrainedLangevinSampler(_free_particles(2))
    assert sampler.temperature == 300.0 and sampler.kT == pytest.approx(KT, rel=1e-12)
    assert sampler.integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(300.0, rel=1e-12)
    assert sampler.integrator.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.001, rel=1e-12)
    assert sampler.integrator.getFriction().value_in_unit(unit.picosecond**-1) == pytest.approx(1.0, rel=1e-12)
    # Until a schedule sets it, the restraint adds no energy.
    sampler.context.setPositions(np.ones((2, 3)))
    state = sampler.context.getState(getEnergy=True, groups={RESTRAINT_FORCE_GROUP})
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == 0.0


def test_sampler_bookkeeping(capsys):
    # Frames, force-evaluation counts, wall time, progress bar and callback of one default run.
    sampler = RestrainedLangevinSampler(_free_particles(2))
    centres, k = np.zeros((3, 2, 3)), np.full(3, 500.0)
    seen = []
    t0 = time.perf_counter()
    out = sampler.sample(centres, k, centres[0], progress=True, callback=seen.append)
    elapsed = time.perf_counter() - t0
    assert out.frames.shape == (1, 3, 2, 3)  # defaults: one path, one frame per curve point
    assert out.n_force_evals == 3 * 100 and sampler.n_force_evals == 3 * 100  # default n_steps = 100
    assert 0.0 <= out.wall_time <= elapsed
    assert "3/3" in capsys.readouterr().err
    assert [info["path"] for info in seen] == [0]
    np.testing.assert_array_equal(seen[0]["frames"], out.frames[0])
    # The default seed is 0; the sampler's own counter accumulates over runs.
    np.testing.assert_array_equal(sampler.sample(centres, k, centres[0], seed=0).frames, out.frames)
    assert sampler.n_force_evals == 2 * 3 * 100
    dense = sampler.sample(centres, k, centres[0], n_steps=2, record_every=1)
    assert dense.frames.shape == (1, 6, 2, 3) and dense.n_force_evals == 6
    with pytest.raises(ValueError, match=r"record_every: expected a divisor of n_steps \(2\), got 0"):
        sampler.sample(centres, k, centres[0], n_steps=2, record_every=0)
