"""Vectorised dihedrals against mdtraj; torch path; argument errors."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest
import torch

from spacetime_md.molecular import ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI, compute_dihedrals, compute_phi_psi, load_system
from spacetime_md.molecular.system.build import system_data_path


@pytest.fixture(scope="module")
def frames():
    traj = mdtraj.load(str(system_data_path("alanine_dipeptide/alanine-dipeptide.pdb")))
    rng = np.random.default_rng(1)
    xyz = traj.xyz + rng.normal(scale=0.04, size=(64, traj.n_atoms, 3)).astype(np.float32)
    return mdtraj.Trajectory(xyz, traj.topology)


def test_phi_psi_indices_are_the_common_ones():
    assert ALANINE_DIPEPTIDE_PHI == (4, 6, 8, 14)
    assert ALANINE_DIPEPTIDE_PSI == (6, 8, 14, 16)
    traj = mdtraj.load(str(system_data_path("alanine_dipeptide/alanine-dipeptide.pdb")))
    assert tuple(mdtraj.compute_phi(traj)[0][0]) == ALANINE_DIPEPTIDE_PHI
    assert tuple(mdtraj.compute_psi(traj)[0][0]) == ALANINE_DIPEPTIDE_PSI


def test_phi_psi_matches_mdtraj(frames):
    ours = compute_phi_psi(frames.xyz, ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI)
    assert ours.shape == (64, 2)
    ref_phi = mdtraj.compute_phi(frames)[1][:, 0]
    ref_psi = mdtraj.compute_psi(frames)[1][:, 0]
    # Compare on the circle (both conventions give (-pi, pi]).
    d = np.angle(np.exp(1j * (ours - np.stack([ref_phi, ref_psi], 1))))
    np.testing.assert_allclose(d, 0.0, atol=1e-5)
    # Covers all quadrants so a sign error could not hide.
    assert ours[:, 0].min() < -1 and ours.max() > 1


def test_general_dihedrals_match_mdtraj(frames):
    quads = [(0, 1, 4, 6), (1, 4, 6, 8), (8, 14, 16, 18), (10, 8, 14, 15)]
    np.testing.assert_allclose(
        np.angle(np.exp(1j * (compute_dihedrals(frames.xyz, quads) - mdtraj.compute_dihedrals(frames, quads)))),
        0.0, atol=1e-5,
    )


def test_torch_input_stays_torch_and_differentiable(frames):
    x = torch.tensor(frames.xyz[:4], dtype=torch.float64, requires_grad=True)
    angles = compute_phi_psi(x, ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI)
    assert isinstance(angles, torch.Tensor) and angles.shape == (4, 2)
    np.testing.assert_allclose(angles.detach().numpy(), compute_phi_psi(frames.xyz[:4], ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI), atol=1e-6)
    angles.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_single_frame_and_system_helper(frames):
    system = load_system("alanine-dipeptide")
    one = compute_phi_psi(frames.xyz[0], ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI)
    assert one.shape == (2,)
    np.testing.assert_allclose(system.compute_phi_psi(frames.xyz[:1])[0], one)


def test_errors():
    with pytest.raises(ValueError, match=r"indices: expected shape \(K, 4\)"):
        compute_dihedrals(np.zeros((2, 5, 3)), [(0, 1, 2)])
    with pytest.raises(ValueError, match=r"coordinates: expected shape \(F, N, 3\)"):
        compute_dihedrals(np.zeros((2, 5, 2)), [(0, 1, 2, 3)])
    with pytest.raises(ValueError, match=r"indices: expected atom indices in \[0, 5\)"):
        compute_dihedrals(np.zeros((2, 5, 3)), [(0, 1, 2, 7)])
