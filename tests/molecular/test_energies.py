"""evaluate_energies on the real OpenMM: agreement with a direct call, counting, input checks."""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch

from spacetime_md.errors import TopologyMismatchError
from spacetime_md.molecular import evaluate_energies, load_system

KJ = unit.kilojoule_per_mole


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def frames(system):
    rng = np.random.default_rng(0)
    return system.positions_nm[None] + rng.normal(scale=0.005, size=(5, 22, 3))


def _direct(system, x_nm, platform="Reference"):
    """Energy and forces from a fresh OpenMM Context (the baseline)."""
    ctx = openmm.Context(system.openmm_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(x_nm * unit.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return st.getPotentialEnergy().value_in_unit(KJ), st.getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)


def test_minimised_energy_matches_direct_openmm(system):
    x = system.positions_nm  # minimised with amber99sbildn in vacuum
    energies, forces = evaluate_energies(system, x, forces=True)
    e_ref, f_ref = _direct(system, x)
    assert energies.unit == KJ and forces.unit == KJ / unit.nanometer
    assert energies.shape == (1,) and forces.shape == (1, 22, 3)
    assert abs(energies.value_in_unit(KJ)[0] - e_ref) < 1e-8
    np.testing.assert_allclose(forces.value_in_unit(KJ / unit.nanometer)[0], f_ref, atol=1e-8)
    # The C5 minimum, about -88.4 kJ/mol (forces are not small: the PDB rounds to 0.001 nm).
    assert -90 < e_ref < -85


def test_batch_counts_and_inputs(system, frames):
    before = system.n_energy_evaluations
    e = evaluate_energies(system, frames).value_in_unit(KJ)
    assert system.n_energy_evaluations == before + 5
    np.testing.assert_allclose(e, [_direct(system, f)[0] for f in frames], atol=1e-8)
    # Quantity in Angstrom, torch tensor and mdtraj.Trajectory give the same numbers.
    np.testing.assert_allclose(evaluate_energies(system, (frames * 10) * unit.angstrom).value_in_unit(KJ), e, atol=1e-8)
    np.testing.assert_allclose(evaluate_energies(system, torch.tensor(frames)).value_in_unit(KJ), e, atol=1e-8)
    traj = mdtraj.Trajectory(frames, system.mdtraj_topology)
    np.testing.assert_allclose(evaluate_energies(system, traj).value_in_unit(KJ), e, atol=1e-3)
    assert system.n_energy_evaluations == before + 20


def test_cpu_platform_agrees(frames):
    cpu = load_system("alanine-dipeptide", platform="CPU")
    assert cpu.platform_name == "CPU"
    e_cpu = evaluate_energies(cpu, frames[:1]).value_in_unit(KJ)[0]
    assert abs(e_cpu - _direct(cpu, frames[0])[0]) < 1e-3
    assert abs(e_cpu - _direct(cpu, frames[0], "Reference")[0]) < 1e-3


def test_errors(system, frames):
    with pytest.raises(TopologyMismatchError, match=r"coordinates: expected 22 atoms \(alanine-dipeptide\), got 21"):
        evaluate_energies(system, frames[:, :21])
    bad = frames.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="expected finite coordinates, got NaN/inf in 1 of 5 frames .first: frame 2"):
        evaluate_energies(system, bad)
    bad[2, 3, 1] = np.inf
    with pytest.raises(ValueError, match="expected finite coordinates"):
        evaluate_energies(system, bad)
    with pytest.raises(ValueError, match="expected nm, got coordinates that look like Angstrom"):
        evaluate_energies(system, frames * 10.0)
    permuted = frames[:, np.random.default_rng(0).permutation(22)]
    with pytest.raises(TopologyMismatchError, match="expected coordinates in the atom order of alanine-dipeptide"):
        evaluate_energies(system, permuted)
    # An mdtraj trajectory of another topology (one atom renamed).
    top = system.mdtraj_topology.copy()
    top.atom(5).name = "OXT"
    traj = mdtraj.Trajectory(frames, top)
    with pytest.raises(TopologyMismatchError, match="expected the topology of alanine-dipeptide; atom 5 is .'ACE', 'OXT'"):
        evaluate_energies(system, traj)
    with pytest.raises(TopologyMismatchError, match="expected a trajectory of 22 atoms"):
        evaluate_energies(system, traj.atom_slice(range(10)))
    with pytest.raises(TypeError, match="expected a length quantity"):
        evaluate_energies(system, frames * unit.kelvin)
    with pytest.raises(TypeError, match="expected an array .nm., an openmm.unit.Quantity or an mdtraj.Trajectory"):
        evaluate_energies(system, "frames.xyz")
    with pytest.raises(ValueError, match=r"expected shape \(F, 22, 3\)"):
        evaluate_energies(system, frames[..., :2])
