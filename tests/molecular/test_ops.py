"""Seeding OpenPathSampling: OPS accepts the trimmed path for its TPS ensemble and shoots from it."""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm.unit as unit
import pytest

pytest.importorskip("openpathsampling")

from spacetime_md.molecular.workflows.ops import (  # noqa: E402
    sample_tps,
    state_volume,
    to_openpathsampling,
    trim_to_transition,
)
from spacetime_md.molecular.system.units import kT_kj_per_mol  # noqa: E402


@pytest.fixture(scope="module")
def seed(system, drive_path):
    return to_openpathsampling(drive_path, system)


def test_trim_to_transition():
    # A, none, A, none, B, none, B: the segment is the last A before the first B up to it.
    assert trim_to_transition(np.array([0, -1, 0, -1, 1, -1, 1]), 0, 1) == (2, 4)
    assert trim_to_transition(np.array([0, 2, 1]), 0, 1) == (0, 2)
    with pytest.raises(ValueError, match="expected a frame in the target state, got none"):
        trim_to_transition(np.array([0, -1, 0]), 0, 1)
    with pytest.raises(ValueError, match="expected a frame in the start state before frame 1"):
        trim_to_transition(np.array([-1, 1, 0]), 0, 1)


def test_ops_volumes_agree_with_project_states(system, seed, drive_path):
    import openpathsampling as paths

    assert seed.start_state.name == "C7eq" and seed.target_state.name == "C7ax"
    frames = drive_path.frames[0]
    states = system.assign_states(frames)
    # Frames of the source path wrapped without trimming: each OPS volume says what assign_states says.
    traj = paths.engines.openmm.tools.trajectory_from_mdtraj(mdtraj.Trajectory(frames, system.mdtraj_topology))
    alpha = state_volume(system.get_state("alpha_R"), system)
    for snap, k in zip(traj, states):
        assert bool(seed.start_state(snap)) == (k == 0)
        assert bool(seed.target_state(snap)) == (k == 1)
        assert not alpha(snap)


def test_seed_is_a_valid_tps_path(system, seed, drive_path):
    i, j = seed.frame_range
    states = system.assign_states(drive_path.frames[0])
    assert states[i] == 0 and states[j] == 1 and np.all(states[i + 1 : j] == -1)
    assert len(seed.trajectory) == j - i + 1
    np.testing.assert_allclose(seed.trajectory.xyz[0], drive_path.frames[0, i], atol=1e-4)
    assert seed.ensemble(seed.trajectory)
    assert not seed.ensemble(seed.trajectory[:-1])  # without its B frame it is no TPS path
    # OPS's own check of the initial conditions for both shooting schemes.
    for shooting in ("one-way", "two-way"):
        scheme = seed.move_scheme(shooting)
        seed.initial_conditions(scheme)
    with pytest.raises(ValueError, match="shooting: expected 'one-way' or 'two-way', got 'sideways'"):
        seed.move_scheme("sideways")


def test_seed_velocities_are_thermal(system, seed):
    masses = system.masses_dalton
    # Neither OpenMM's setVelocitiesToTemperature nor OPS removes the centre-of-mass motion.
    n_dof = 3 * system.n_atoms - system.openmm_system.getNumConstraints()
    kT = kT_kj_per_mol(system.temperature_k)

    def temperature(snap):
        v = np.asarray(snap.velocities.value_in_unit(unit.nanometer / unit.picosecond))
        return (masses[:, None] * v**2).sum() / (n_dof * kT) * system.temperature_k

    temps = np.array([temperature(s) for s in seed.trajectory])
    randomize = seed.velocity_randomizer()
    np.random.seed(1)
    drawn = np.array([temperature(randomize(seed.trajectory[3])) for _ in range(200)])
    # Each draw is a chi-square with n_dof degrees of freedom: relative std sqrt(2 / n_dof).
    # Unconstrained velocities (all 3N directions) would read 3N / n_dof * 300 K = 367 K.
    sigma = system.temperature_k * np.sqrt(2.0 / n_dof)
    assert abs(drawn.mean() - system.temperature_k) < 5 * sigma / np.sqrt(len(drawn))
    assert abs(temps.mean() - system.temperature_k) < 5 * sigma / np.sqrt(len(temps))


@pytest.mark.parametrize("shooting", ["one-way", "two-way"])
def test_ops_completes_shooting_moves(seed, shooting):
    result = sample_tps(seed, 20, shooting=shooting, random_seed=0)
    assert result.n_trials == 20 and len(result.path_lengths) == 20
    assert 0 <= result.n_accepted <= 20 and 0 <= result.n_decorrelated <= result.n_accepted
    # Whatever was accepted, the current path is still a TPS path: A at the start, B at the end.
    final = result.final_trajectory
    assert seed.ensemble(final)
    assert seed.start_state(final[0]) and seed.target_state(final[-1])
    # Seed frames and engine frames mix in one trajectory that converts back to mdtraj.
    assert final.to_mdtraj().n_frames == len(final)
    if shooting == "one-way":
        assert result.n_accepted > 0  # measured about 50 % on this path


def test_errors(system, drive_path):
    with pytest.raises(ValueError, match="target_state: the path's last frame is in no state"):
        to_openpathsampling(drive_path.frames[0, :14], system)
    with pytest.raises(ValueError, match="path: expected a frame in the target state, got none"):
        to_openpathsampling(drive_path.frames[0, :14], system, target_state="C7ax")
    with pytest.raises(ValueError, match=r"path_index: expected an index in \[0, 1\), got 2"):
        to_openpathsampling(drive_path, system, path_index=2)
    with pytest.raises(TypeError, match="timestep: expected an openmm.unit.Quantity"):
        to_openpathsampling(drive_path, system, timestep=2.0)
    with pytest.raises(ValueError, match="velocities: expected 'maxwell-boltzmann' or 'zero', got 'hot'"):
        to_openpathsampling(drive_path, system, velocities="hot")
    with pytest.raises(ValueError, match="start_state and target_state: expected two different states"):
        to_openpathsampling(drive_path, system, start_state="C7ax")
    zero = to_openpathsampling(drive_path, system, velocities="zero")
    assert np.all(np.asarray(zero.trajectory[0].velocities._value) == 0)
    with pytest.raises(ValueError, match="n_steps: expected an integer >= 1, got 0"):
        sample_tps(zero, 0)


def test_seeded_tps_runs_repeat(system, drive_path):
    runs = [sample_tps(to_openpathsampling(drive_path, system, seed=3), 15, shooting="two-way", random_seed=5)
            for _ in range(2)]
    assert runs[0].path_lengths == runs[1].path_lengths and runs[0].n_accepted == runs[1].n_accepted
    np.testing.assert_array_equal(runs[0].final_trajectory.xyz, runs[1].final_trajectory.xyz)


# --------------------------------------------------------------------------- other molecules


@pytest.fixture(scope="module")
def nma():
    from tests.molecular.test_own_molecule_committor import nma_path

    from spacetime_md.molecular.system.states import endpoint_state

    system, frames = nma_path()
    values = system.compute_cvs(frames[[0, -1]])
    # +-0.015 nm boxes leave frames 2-5 in neither state (see test_own_molecule_committor).
    ends = [endpoint_state(system.cvs, v, name, length_tolerance=0.015) for v, name in zip(values, ("trans", "cis"))]
    return system, frames, ends


def test_volumes_of_cv_states_agree_with_contains(nma):
    import openpathsampling as paths

    from tests.molecular.test_own_molecule_committor import glycine_path

    from spacetime_md.molecular.system.states import endpoint_state

    gly, gly_frames = glycine_path()
    gly_values = gly.compute_cvs(gly_frames)
    gly_states = [endpoint_state(gly.cvs, gly_values[k], name) for k, name in ((0, "C7eq"), (-1, "C7ax"))]
    nma_system, nma_frames, nma_states = nma
    for system, frames, states in ((gly, gly_frames, gly_states), (nma_system, nma_frames, nma_states)):
        traj = paths.engines.openmm.tools.trajectory_from_mdtraj(mdtraj.Trajectory(frames, system.mdtraj_topology))
        values = system.compute_cvs(frames)
        for state in states:
            volume = state_volume(state, system)
            assert volume.name == state.name
            want = state.contains(values, system.cvs)
            assert [bool(volume(snap)) for snap in traj] == want.tolist()
            assert want.any() and not want.all()
    with pytest.raises(ValueError, match="state: expected a state over the CVs of n-methylacetamide"):
        state_volume(gly_states[0], nma_system)


def test_seed_from_rmsd_states_of_a_molecule_without_backbone(nma):
    system, frames, (trans, cis) = nma
    with pytest.raises(ValueError, match="system: expected metastable-state definitions for n-methylacetamide"):
        to_openpathsampling(frames, system)
    seed = to_openpathsampling(frames, system, start_state=trans, target_state=cis)
    assert seed.frame_range == (1, 6) and seed.ensemble(seed.trajectory)
    assert seed.start_state.name == "trans" and seed.target_state.name == "cis"
    result = sample_tps(seed, 3, shooting="two-way", random_seed=0)
    assert result.n_trials == 3 and seed.ensemble(result.final_trajectory)
