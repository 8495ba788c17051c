"""Chirality of the alanine C-alpha from a signed volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spacetime_md.molecular.chirality import (
    ALANINE_DIPEPTIDE_CHIRAL_ATOMS,
    chiral_atoms_from_topology,
    compute_chirality,
    compute_signed_volume,
    fraction_l,
)

from ._model_helpers import _one_torch_thread, alanine_trajectory


def test_pdb_structure_is_l_and_its_mirror_is_d():
    xyz = alanine_trajectory().xyz.astype(np.float64)
    mirror = xyz * np.array([1.0, 1.0, -1.0])
    assert compute_chirality(xyz)[0] == 1
    assert compute_chirality(mirror)[0] == -1
    assert np.isclose(compute_signed_volume(mirror)[0], -compute_signed_volume(xyz)[0])
    assert fraction_l(np.concatenate([xyz, xyz, mirror])) == pytest.approx(2 / 3)


def test_signed_volume_agrees_with_corn_rule():
    """Looking from H-alpha onto C-alpha, CO -> R -> N runs clockwise for L-amino acids."""
    x = alanine_trajectory().xyz[0].astype(np.float64)
    ca, c, cb, ha = x[8], x[14], x[10], x[9]
    assert np.dot(np.cross(c - ca, cb - ca), ha - ca) < 0
    assert compute_signed_volume(x[None])[0] > 0


def test_rotation_invariance_and_input_forms():
    xyz = alanine_trajectory().xyz.astype(np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))
    rotated = xyz @ q.T + 0.7
    assert np.isclose(compute_signed_volume(rotated)[0], compute_signed_volume(xyz)[0])
    flat = torch.as_tensor(xyz.reshape(1, -1))
    assert compute_chirality(flat)[0] == 1


def test_atoms_from_topology():
    assert chiral_atoms_from_topology(alanine_trajectory().topology) == ALANINE_DIPEPTIDE_CHIRAL_ATOMS
    with pytest.raises(ValueError, match="topology: expected atoms CA, N, C and CB in residue 0, got none"):
        chiral_atoms_from_topology(alanine_trajectory().topology, residue=0)


def test_messages():
    with pytest.raises(ValueError, match=r"xyz: expected shape \(n_frames, N, 3\) or \(n_frames, 3N\), got \(5,\)"):
        compute_signed_volume(np.zeros(5))
    with pytest.raises(ValueError, match=r"atoms: expected 4 indices \(CA, N, C, CB\), got 3"):
        compute_signed_volume(np.zeros((1, 22, 3)), (1, 2, 3))
    with pytest.raises(ValueError, match=r"atoms: expected indices in \[0, 5\), got \(8, 6, 14, 10\)"):
        compute_signed_volume(np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match="xyz: expected at least one frame, got 0"):
        fraction_l(np.zeros((0, 22, 3)))
