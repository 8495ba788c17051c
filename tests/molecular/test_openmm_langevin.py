"""OpenMM annealed Langevin with a moving restraint, and relaxed (phi, psi) quenching."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler
from spacetime_md.molecular.paths.relaxed import (
    DihedralQuencher,
    PositionQuencher,
    TorsionQuencher,
    _dihedrals,
    compute_relaxed_map,
)

PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)


@pytest.fixture(scope="module")
def alanine():
    import openmmtools

    pdb_path = Path(openmmtools.__file__).parent / "data" / "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb"
    pdb = app.PDBFile(str(pdb_path))
    system = app.ForceField("amber99sbildn.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds
    )
    return system, np.array(pdb.positions.value_in_unit(unit.nanometer))


def test_stiff_restraint_holds_structure_at_centres(alanine):
    system, pos = alanine
    # High friction: the jump of the centres relaxes within the 200 steps (no ringing).
    sampler = RestrainedLangevinSampler(system, friction=50 / unit.picosecond)
    centres = np.stack([pos, pos + np.array([0.05, 0.0, 0.0])])
    out = sampler.sample(centres, np.array([2e4, 2e4]), pos, n_paths=2, n_steps=200, seed=3)
    assert out.frames.shape == (2, 2, 22, 3)
    assert out.n_force_evals == 2 * 2 * 200
    # k = 2e4 kJ/mol/nm^2 at 300 K: rms displacement per coordinate sqrt(kT/k) ~ 0.011 nm.
    rms = np.sqrt(((out.frames[:, 1] - centres[1]) ** 2).mean())
    assert rms < 0.03
    mean_shift = (out.frames[:, 1] - out.frames[:, 0]).mean(axis=(0, 1))
    assert abs(mean_shift[0] - 0.05) < 0.015
    again = RestrainedLangevinSampler(system, friction=50 / unit.picosecond).sample(centres, np.array([2e4, 2e4]), pos, n_paths=2, n_steps=200, seed=3)
    np.testing.assert_allclose(again.frames, out.frames)  # seeded, Reference platform
    # Recording every 50 steps does not perturb the dynamics: every 4th frame is the per-point one.
    dense = RestrainedLangevinSampler(system, friction=50 / unit.picosecond).sample(
        centres, np.array([2e4, 2e4]), pos, n_paths=2, n_steps=200, seed=3, record_every=50)
    assert dense.frames.shape == (2, 8, 22, 3) and dense.n_force_evals == 2 * 2 * 200
    np.testing.assert_allclose(dense.frames[:, 3::4], out.frames)
    with pytest.raises(ValueError, match=r"record_every: expected a divisor of n_steps \(200\), got 30"):
        sampler.sample(centres, np.array([2e4, 2e4]), pos, n_steps=200, record_every=30)


def test_runs_with_different_seeds_share_no_path(alanine):
    # Path p of seed s used to be path p + 1 of seed s - 1 (seeds s + p + 1).
    system, pos = alanine
    sampler = RestrainedLangevinSampler(system)
    centres, k = np.broadcast_to(pos, (2, 22, 3)), np.full(2, 1e3)
    a = sampler.sample(centres, k, pos, n_paths=2, n_steps=20, seed=0).frames
    b = sampler.sample(centres, k, pos, n_paths=2, n_steps=20, seed=1).frames
    for i in range(2):
        for j in range(2):
            assert not np.allclose(a[i], b[j])
    assert not np.allclose(a[0], a[1])


def test_zero_restraint_is_plain_md_cost(alanine):
    system, pos = alanine
    sampler = RestrainedLangevinSampler(system)
    out = sampler.sample(np.broadcast_to(pos, (4, 22, 3)), np.zeros(4), pos, n_steps=50)
    assert np.isfinite(out.frames).all() and out.n_force_evals == 200


def test_sampler_errors(alanine):
    system, pos = alanine
    with pytest.raises(TypeError, match="temperature: expected an openmm.unit.Quantity in kelvin, got bare float"):
        RestrainedLangevinSampler(system, temperature=300.0)
    with pytest.raises(TypeError, match="timestep: expected a quantity compatible with picosecond, got nanometer"):
        RestrainedLangevinSampler(system, timestep=1 * unit.nanometer)
    with pytest.raises(TypeError, match="system: expected an openmm.System, got str"):
        RestrainedLangevinSampler("system")
    sampler = RestrainedLangevinSampler(system)
    with pytest.raises(ValueError, match=r"centres: expected shape \(T, 22, 3\), got \(3, 21, 3\)"):
        sampler.sample(np.zeros((3, 21, 3)), np.zeros(3), pos)
    with pytest.raises(ValueError, match=r"force_constants: expected shape \(3,\), got \(2,\)"):
        sampler.sample(np.zeros((3, 22, 3)), np.zeros(2), pos)
    with pytest.raises(ValueError, match="expected finite values and force constants >= 0"):
        sampler.sample(np.full((3, 22, 3), np.nan), np.zeros(3), pos)
    with pytest.raises(ValueError, match=r"x_init: expected shape \(22, 3\) or \(2, 22, 3\), got \(3, 22, 3\)"):
        sampler.sample(np.zeros((3, 22, 3)), np.zeros(3), np.zeros((3, 22, 3)), n_paths=2)


def test_quench_reaches_target_dihedrals_and_lowers_energy(alanine):
    system, pos = alanine
    quencher = DihedralQuencher(system, PHI, PSI)
    target = (-1.4, 1.2)
    energy, x = quencher.quench(pos, *target)
    phi = float(_dihedrals(x[None], PHI)[0])
    psi = float(_dihedrals(x[None], PSI)[0])
    assert abs(phi - target[0]) < math.radians(3) and abs(psi - target[1]) < math.radians(3)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    raw = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert quencher.quench_frames(pos[None])[0] < raw


def test_torsion_quencher_generalises_the_dihedral_one(alanine):
    system, pos = alanine
    frames = np.stack([pos, pos + 0.002 * np.random.default_rng(0).standard_normal(pos.shape)])
    both = DihedralQuencher(system, PHI, PSI).quench_frames(frames)
    np.testing.assert_array_equal(TorsionQuencher(system, [PHI, PSI]).quench_frames(frames), both)
    # a third restrained dihedral (O-C-N-CA) can only keep the minimum as high or higher
    theta = TorsionQuencher(system, [PHI, PSI, (5, 4, 6, 8)])
    assert (theta.quench_frames(frames) >= both - 1.0).all() and theta.n_minimisations == 2
    with pytest.raises(ValueError, match=r"torsions: expected one or more quadruples of atom indices, got \[\(1, 2, 3\)\]"):
        TorsionQuencher(system, [(1, 2, 3)])
    with pytest.raises(ValueError, match=r"torsions: expected one or more quadruples of atom indices, got \[\]"):
        TorsionQuencher(system, [])


def test_position_quencher_keeps_the_conformation_and_removes_thermal_energy(alanine):
    system, pos = alanine
    heavy = [i for i, a in enumerate(app.PDBFile(str(Path(__import__("openmmtools").__file__).parent / "data"
                                                     / "alanine-dipeptide-gbsa" / "alanine-dipeptide.pdb"))
                                     .topology.atoms()) if a.element.symbol != "H"]
    # a thermally perturbed frame: the quench lowers its energy a lot but keeps phi, psi and every
    # heavy atom close to where they were
    noisy = pos + 0.004 * np.random.default_rng(1).standard_normal(pos.shape)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(noisy)
    raw = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    quencher = PositionQuencher(system, heavy)
    energy, x = quencher.quench(noisy)
    assert energy < raw - 50.0, (energy, raw)
    shift = np.linalg.norm(x[heavy] - noisy[heavy], axis=-1)
    assert shift.max() < 0.02, shift.max()  # nm; sqrt(kT / k) = 0.016 nm
    for atoms in (PHI, PSI):
        d = float(_dihedrals(x[None], atoms)[0] - _dihedrals(noisy[None], atoms)[0])
        assert abs(math.remainder(d, 2 * math.pi)) < math.radians(20)  # states are ~100 deg apart
    # a stiffer restraint keeps the frame closer, so its minimum is higher
    stiff = PositionQuencher(system, heavy, k_restraint=1e6).quench_frames(noisy[None])[0]
    soft = PositionQuencher(system, heavy, k_restraint=100.0).quench_frames(noisy[None])[0]
    assert soft < energy < stiff
    assert quencher.n_minimisations == 1
    with pytest.raises(ValueError, match=r"atoms: expected one or more indices in \[0, 22\), got \[22\]"):
        PositionQuencher(system, [22])
    with pytest.raises(ValueError, match=r"k_restraint: expected a finite number > 0 \(kJ/mol/nm\^2\), got -1"):
        PositionQuencher(system, heavy, k_restraint=-1)


def test_relaxed_map_minimum_is_c7eq(alanine):
    system, pos = alanine
    relaxed = compute_relaxed_map(system, pos, PHI, PSI, n_grid=8)
    i, j = np.unravel_index(np.argmin(relaxed.energy), relaxed.energy.shape)
    # C7eq: phi about -83 deg, psi about +73 deg (vacuum); grid step 45 deg.
    assert relaxed.phi[i] in (-math.pi / 2, -math.pi / 4 * 3) or abs(relaxed.phi[i] + math.pi / 2) < 1e-9
    assert 0 < relaxed.psi[j] < math.pi / 2 + 1e-9
    assert relaxed.energy.shape == (8, 8) and np.isfinite(relaxed.energy).all()
