"""Relaxed energies (``relaxed.py``) against an independent dihedral drive done with OpenMM directly.

The reference restrains (phi, psi) with its own ``CustomTorsionForce`` of another form,
``k (1 - cos(theta - theta0))`` with k = 2e5 kJ/mol (50x stiffer than the quencher's 4000 kJ/mol/rad^2),
minimises to 0.01 kJ/mol/nm and evaluates the minimum in a separate Context of the plain force
field (built here from ``amber99sbildn.xml``, not through ``load_system``). Measured agreement
with the quencher: within 0.6 kJ/mol and 0.6 deg on the points below (the quencher's softer
restraint lets the torsions give way by about (dE/dtheta) / k).

Units: nm, kJ/mol, radians (degrees only where named).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

import spacetime_md
from spacetime_md.molecular.paths.relaxed import (
    DihedralQuencher,
    PositionQuencher,
    RelaxedMap,
    TorsionQuencher,
    _dihedrals,
    compute_relaxed_map,
    refine_relaxed_maximum,
)

DATA = Path(spacetime_md.__file__).parent / "data" / "alanine_dipeptide"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
#: (phi, psi) in degrees: the three minima, the phi = 0 barrier, and points across psi = +-180.
GRID_DEG = [(-80, 70), (70, -70), (-70, -40), (0, 70), (0, -60), (-150, 160), (-80, 180), (-80, -170), (180, 180)]
ENERGY_TOL = 1.0  # kJ/mol; measured <= 0.6
ANGLE_TOL_DEG = 1.0  # measured <= 0.6 with k = 4000 kJ/mol/rad^2; a restraint half as stiff gives ~1.2


@pytest.fixture(scope="module")
def alanine():
    pdb = app.PDBFile(str(DATA / "C7eq.pdb"))
    system = app.ForceField("amber99sbildn.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                              constraints=app.HBonds)
    return system, np.array(pdb.positions.value_in_unit(unit.nanometer)), mdtraj.load(str(DATA / "C7eq.pdb")).topology


def _reference_context(system):
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def _energy(system, x):
    context = _reference_context(system)
    context.setPositions(x)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _angles_deg(topology, x):
    return np.degrees(mdtraj.compute_dihedrals(mdtraj.Trajectory(np.asarray(x)[None], topology), [PHI, PSI])[0])


def _drive_minimum(system, x, phi, psi):
    """Independent dihedral-drive minimum at (phi, psi) radians from ``x``: (energy kJ/mol, positions nm)."""
    restrained = copy.deepcopy(system)
    force = openmm.CustomTorsionForce("kd*(1-cos(theta-theta0))")
    force.addGlobalParameter("kd", 2e5)
    force.addPerTorsionParameter("theta0")
    force.addTorsion(*PHI, [phi])
    force.addTorsion(*PSI, [psi])
    restrained.addForce(force)
    context = _reference_context(restrained)
    context.setPositions(x)
    context.applyConstraints(1e-8)
    openmm.LocalEnergyMinimizer.minimize(context, 0.01, 0)
    y = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return _energy(system, y), np.asarray(y)


def _wrapped_deg(d):
    return (np.asarray(d) + 180.0) % 360.0 - 180.0


@pytest.fixture(scope="module")
def reference_grid(alanine):
    system, pos, _ = alanine
    return [_drive_minimum(system, pos, math.radians(a), math.radians(b))[0] for a, b in GRID_DEG]


def test_relaxed_energies_equal_an_independent_dihedral_drive(alanine, reference_grid):
    system, pos, topology = alanine
    quencher = DihedralQuencher(system, PHI, PSI)
    for (phi, psi), reference in zip(GRID_DEG, reference_grid):
        energy, x = quencher.quench(pos, math.radians(phi), math.radians(psi))
        assert energy == pytest.approx(reference, abs=ENERGY_TOL), (phi, psi)
        # the reported energy is the force field's at the returned structure, without the restraint
        assert energy == pytest.approx(_energy(system, x), abs=1e-3)
        np.testing.assert_allclose(_wrapped_deg(_angles_deg(topology, x) - (phi, psi)), 0.0, atol=ANGLE_TOL_DEG)
    # the relaxed barrier C7eq -> phi = 0 is tens of kJ/mol: a check with teeth
    assert reference_grid[3] - reference_grid[0] > 30.0


def test_relaxed_map_is_a_serpentine_dihedral_drive(alanine):
    # compute_relaxed_map visits a 4 x 4 grid row by row, reversing every other row, each point
    # starting from the previous minimum (a row from the previous row's first minimum).
    system, pos, topology = alanine
    relaxed = compute_relaxed_map(system, pos, PHI, PSI, n_grid=4)
    angles = np.radians([-180.0, -90.0, 0.0, 90.0])
    np.testing.assert_allclose(relaxed.phi, angles, atol=1e-12)
    np.testing.assert_allclose(relaxed.psi, angles, atol=1e-12)
    reference = np.empty((4, 4))
    row_start = pos
    for i in range(4):
        x = row_start
        for k, j in enumerate(range(4) if i % 2 == 0 else range(3, -1, -1)):
            reference[i, j], x = _drive_minimum(system, x, angles[i], angles[j])
            if k == 0:
                row_start = x
    # continuation carries small differences from point to point (measured up to 1.1 kJ/mol)
    np.testing.assert_allclose(relaxed.energy, reference, atol=2 * ENERGY_TOL)
    assert relaxed.wall_time > 0.0


def test_restraint_energy_is_half_k_times_the_periodic_deviation_squared(alanine):
    # By hand: 0.5 * 4000 kJ/mol/rad^2 * d^2 per torsion, d the deviation wrapped into [0, pi].
    system, pos, _ = alanine
    quencher = TorsionQuencher(system, [PHI, PSI])
    phi0, psi0 = (float(_dihedrals(pos[None], t)[0]) for t in (PHI, PSI))
    for d_phi, d_psi in ((0.1, 0.0), (0.1, -0.2), (0.0, 2 * math.pi - 0.3)):
        for k, (atoms, value) in enumerate(zip((PHI, PSI), (phi0 + d_phi, psi0 + d_psi))):
            quencher.force.setTorsionParameters(k, *atoms, [value])
        quencher.force.updateParametersInContext(quencher.context)
        quencher.context.setPositions(pos)
        state = quencher.context.getState(getEnergy=True, groups={30})
        wrapped = [min(abs(d), 2 * math.pi - abs(d)) for d in (d_phi, d_psi)]
        expected = sum(0.5 * 4000.0 * w**2 for w in wrapped)
        assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected, rel=1e-5)
    # the physical energy excludes the restraint group
    physical = quencher.context.getState(getEnergy=True, groups=quencher._physical_groups)
    assert physical.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(_energy(system, pos),
                                                                                                  abs=1e-6)


def test_position_restraint_energy_is_half_k_r_squared(alanine):
    system, pos, _ = alanine
    quencher = PositionQuencher(system, [8, 14])  # CA, C
    for k, i in enumerate((8, 14)):
        quencher.force.setParticleParameters(k, i, [float(v) for v in pos[i]])
    quencher.force.updateParametersInContext(quencher.context)
    moved = pos.copy()
    moved[8] += (0.01, -0.02, 0.0)
    moved[14] += (0.0, 0.0, 0.03)
    quencher.context.setPositions(moved)
    energy = quencher.context.getState(getEnergy=True, groups={30}).getPotentialEnergy()
    expected = 0.5 * 10_000.0 * (0.01**2 + 0.02**2 + 0.03**2)  # documented default 10 000 kJ/mol/nm^2
    assert energy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected, rel=1e-6)


def test_dihedrals_equal_mdtraj(alanine):
    system, pos, topology = alanine
    rng = np.random.default_rng(3)
    frames = pos[None] + 0.05 * rng.standard_normal((5, *pos.shape))
    for atoms in (PHI, PSI, (5, 4, 6, 8)):
        expected = mdtraj.compute_dihedrals(mdtraj.Trajectory(frames, topology), [atoms])[:, 0]
        np.testing.assert_allclose(_dihedrals(frames, atoms), expected, atol=1e-5)


def test_quench_frames_holds_each_frame_at_its_own_torsions(alanine):
    system, pos, topology = alanine
    quencher = DihedralQuencher(system, PHI, PSI)
    frames = np.stack([pos, _drive_minimum(system, pos, math.radians(-80), math.radians(70))[1]])
    energies = quencher.quench_frames(frames)
    for frame, energy in zip(frames, energies):
        phi, psi = np.radians(_angles_deg(topology, frame))
        assert energy == pytest.approx(_drive_minimum(system, frame, phi, psi)[0], abs=ENERGY_TOL)
    assert quencher.n_minimisations == 2


def test_refine_relaxed_maximum_walks_the_frames_torsion_route(alanine):
    # Five frames of a drive from C7eq over the phi = 0 barrier: the route joins their (phi, psi)
    # with 4 substeps per interval; the maximum is the highest route point's relaxed energy.
    system, pos, topology = alanine
    route_deg = [(-80, 70), (-40, 70), (0, 70), (40, 70), (70, 20)]
    frames, x = [], pos
    for phi, psi in route_deg:
        x = _drive_minimum(system, x, math.radians(phi), math.radians(psi))[1]
        frames.append(x)
    frames = np.stack(frames)
    quencher = DihedralQuencher(system, PHI, PSI)
    refined = refine_relaxed_maximum(quencher, frames, around=2, window=1, substeps=4)
    assert refined.window == (1, 3)
    frame_angles = np.array([_angles_deg(topology, f) for f in frames[1:4]])
    expected_route = np.concatenate([frame_angles[0] + np.arange(4)[:, None] / 4 * (frame_angles[1] - frame_angles[0]),
                                     frame_angles[1] + np.arange(4)[:, None] / 4 * (frame_angles[2] - frame_angles[1]),
                                     frame_angles[2:3]])
    np.testing.assert_allclose(np.degrees(refined.route), expected_route, atol=1e-3)
    best = int(np.argmax(refined.energies))
    assert refined.energy == refined.energies[best] == refined.energies.max()
    assert refined.frame_position == pytest.approx(1 + best / 4)
    np.testing.assert_allclose(np.degrees(refined.phi_psi), _wrapped_deg(expected_route[best]), atol=1e-3)
    # every route point's energy is the independent drive's (continuation from frame 1)
    x = frames[1]
    for point, energy in zip(np.radians(expected_route), refined.energies):
        reference, x = _drive_minimum(system, x, *point)
        assert energy == pytest.approx(reference, abs=ENERGY_TOL)
    # the barrier top of this route is the phi ~ 0 point, not one of the outer frames
    assert abs(_wrapped_deg(np.degrees(refined.angles[0]))) < 25.0
    assert quencher.n_minimisations == len(expected_route) == 9


def test_relaxed_map_nearest_index_and_round_trip(tmp_path):
    angles = -math.pi + 2 * math.pi * np.arange(8) / 8
    energy = np.arange(64.0).reshape(8, 8)
    relaxed = RelaxedMap(angles, angles.copy(), energy, 1.5)
    # grid step 45 deg: -180 -> 0, -160 -> 0 (nearest), 0 -> 4, 170 -> 0 (wraps to -180), 100 -> 6
    assert relaxed.nearest_index(math.radians(-160), 0.0) == (0, 4)
    assert relaxed.nearest_index(math.radians(170), math.radians(100)) == (0, 6)
    assert relaxed.nearest_index(math.radians(-115), math.radians(-110)) == (1, 2)
    relaxed.save(tmp_path / "map.npz")
    loaded = RelaxedMap.load(tmp_path / "map.npz")
    np.testing.assert_array_equal(loaded.energy, energy)
    np.testing.assert_array_equal(loaded.phi, angles)
    assert loaded.wall_time == 1.5


def test_refine_at_the_path_ends_and_across_psi_180(alanine):
    # Three frames of a drive across psi = +-180 deg at phi = 0: the route is unwrapped along the frames
    # (170 -> 180 -> 190 deg), never the long way round; the window is clipped at both ends.
    system, pos, topology = alanine
    frames, x = [], pos
    for psi in (170.0, 180.0, -170.0):
        x = _drive_minimum(system, x, 0.0, math.radians(psi))[1]  # phi = 0: psi - phi stays below 180 deg
        frames.append(x)
    frames = np.stack(frames)
    quencher = DihedralQuencher(system, PHI, PSI)
    first = refine_relaxed_maximum(quencher, frames, around=0, window=1, substeps=2)
    assert first.window == (0, 1) and len(first.route) == 3
    last = refine_relaxed_maximum(quencher, frames, around=2, window=1, substeps=2)
    assert last.window == (1, 2) and len(last.route) == 3
    whole = refine_relaxed_maximum(quencher, frames, around=1, window=1, substeps=2)
    psi_route = np.degrees(whole.route[:, 1])
    np.testing.assert_allclose(np.diff(psi_route), 5.0, atol=0.5)  # continuous, 5-deg steps
    assert abs(psi_route[-1] - psi_route[0] - 20.0) < 1.0
    with pytest.raises(ValueError, match=r"around: expected a frame index in \[0, 3\), got 3"):
        refine_relaxed_maximum(quencher, frames, around=3)
