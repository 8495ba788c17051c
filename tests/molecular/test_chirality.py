"""Chirality from signed volumes, and the chiral centres of a topology."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from spacetime_md.molecular.system.chirality import (
    ChiralCentre,
    chiral_atoms_from_topology,
    chiral_centres_from_topology,
    compute_chirality,
    compute_signed_volume,
    fraction_l,
)

from ._model_helpers import _one_torch_thread, alanine_trajectory

ROOT = Path(__file__).resolve().parents[2]
#: (CA, N, C, CB) of alanine dipeptide in its usual atom order (the test's own oracle).
ALA_CENTRE = (8, 6, 14, 10)


def test_pdb_structure_is_l_and_its_mirror_is_d():
    xyz = alanine_trajectory().xyz.astype(np.float64)
    mirror = xyz * np.array([1.0, 1.0, -1.0])
    assert compute_chirality(xyz, ALA_CENTRE)[0] == 1
    assert compute_chirality(mirror, ALA_CENTRE)[0] == -1
    assert np.isclose(compute_signed_volume(mirror, ALA_CENTRE)[0], -compute_signed_volume(xyz, ALA_CENTRE)[0])
    assert fraction_l(np.concatenate([xyz, xyz, mirror]), ALA_CENTRE) == pytest.approx(2 / 3)


def test_signed_volume_agrees_with_corn_rule():
    """Looking from H-alpha onto C-alpha, CO -> R -> N runs clockwise for L-amino acids."""
    x = alanine_trajectory().xyz[0].astype(np.float64)
    ca, c, cb, ha = x[8], x[14], x[10], x[9]
    assert np.dot(np.cross(c - ca, cb - ca), ha - ca) < 0
    assert compute_signed_volume(x[None], ALA_CENTRE)[0] > 0


def test_rotation_invariance_and_input_forms():
    xyz = alanine_trajectory().xyz.astype(np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))
    rotated = xyz @ q.T + 0.7
    assert np.isclose(compute_signed_volume(rotated, ALA_CENTRE)[0], compute_signed_volume(xyz, ALA_CENTRE)[0])
    flat = torch.as_tensor(xyz.reshape(1, -1))
    assert compute_chirality(flat, ALA_CENTRE)[0] == 1


def test_atoms_from_topology():
    assert chiral_atoms_from_topology(alanine_trajectory().topology) == ALA_CENTRE
    with pytest.raises(ValueError, match="topology: expected atoms CA, N, C and CB in residue 0, got none"):
        chiral_atoms_from_topology(alanine_trajectory().topology, residue=0)


@pytest.mark.parametrize("pdb, expected", [
    ("systems/alanine_tetrapeptide/alanine-tetrapeptide.pdb",
     [("CA ALA2", (8, 6, 14, 10)), ("CA ALA3", (18, 16, 24, 20)), ("CA ALA4", (28, 26, 34, 30))]),
    ("systems/test_molecules/valine-dipeptide.pdb", [("CA VAL2", (8, 6, 20, 10))]),  # CB has two methyls
    ("systems/test_molecules/glycine-dipeptide.pdb", []),
    ("systems/test_molecules/n-methylacetamide.pdb", []),
    ("spacetime_md/data/alanine_dipeptide/alanine-dipeptide.pdb", [("CA ALA2", ALA_CENTRE)]),
])
def test_every_chiral_centre_of_a_topology(pdb, expected):
    top = mdtraj.load(str(ROOT / pdb)).topology
    centres = chiral_centres_from_topology(top)
    assert [(c.name, c.atoms) for c in centres] == expected
    assert all(c.alpha for c in centres)
    for c in centres:  # (CA, N, C, CB) by atom name
        assert [top.atom(i).name for i in c.atoms] == ["CA", "N", "C", "CB"]
    # The OpenMM topology of the same file gives the same centres.
    assert chiral_centres_from_topology(top.to_openmm()) == centres


def test_centres_of_a_peptide_are_l_and_flip_in_the_mirror():
    traj = mdtraj.load(str(ROOT / "systems/alanine_tetrapeptide/alanine-tetrapeptide.pdb"))
    x = traj.xyz.astype(np.float64)
    mirror = x * np.array([-1.0, 1.0, 1.0])
    for c in chiral_centres_from_topology(traj.topology):
        assert compute_chirality(x, c.atoms)[0] == 1 and c.label(1) == "L"
        assert compute_chirality(mirror, c.atoms)[0] == -1 and c.label(-1) == "D"


def _small_molecule(ethyl: bool) -> mdtraj.Topology:
    """H-C(OH)(CH3)(R) with R = ethyl (butan-2-ol: a stereocentre) or methyl (propan-2-ol: none)."""
    top = mdtraj.Topology()
    res = top.add_residue("UNK", top.add_chain(), resSeq=7)
    el = mdtraj.element

    def atom(name, element, *bonded):
        a = top.add_atom(name, element, res)
        for b in bonded:
            top.add_bond(a, b)
        return a

    c0 = atom("C0", el.carbon)
    atom("H0", el.hydrogen, c0)
    oh = atom("O1", el.oxygen, c0)
    atom("HO", el.hydrogen, oh)
    methyl = atom("C2", el.carbon, c0)
    other = atom("C3", el.carbon, c0)
    ends = [methyl, atom("C4", el.carbon, other) if ethyl else other]
    if ethyl:
        atom("H31", el.hydrogen, other)
        atom("H32", el.hydrogen, other)
    for carbon in ends:
        for k in range(3):
            atom(f"H{carbon.name}{k}", el.hydrogen, carbon)
    return top


def test_a_non_alpha_stereocentre_is_found():
    centres = chiral_centres_from_topology(_small_molecule(ethyl=True))
    assert centres == (ChiralCentre("C0 UNK7", (0, 1, 2, 4), 7, alpha=False),)
    assert centres[0].label(1) == "+" and centres[0].label(-1) == "-" and centres[0].label(0) == "planar"
    assert centres[0].to_dict() == {"name": "C0 UNK7", "atoms": [0, 1, 2, 4], "residue": 7, "alpha": False}
    assert chiral_centres_from_topology(_small_molecule(ethyl=False)) == ()


def test_messages():
    with pytest.raises(ValueError, match=r"xyz: expected shape \(n_frames, N, 3\) or \(n_frames, 3N\), got \(5,\)"):
        compute_signed_volume(np.zeros(5), ALA_CENTRE)
    with pytest.raises(ValueError, match=r"atoms: expected 4 indices \(centre and three neighbours\), got 3"):
        compute_signed_volume(np.zeros((1, 22, 3)), (1, 2, 3))
    with pytest.raises(ValueError, match=r"atoms: expected indices in \[0, 5\), got \(8, 6, 14, 10\)"):
        compute_signed_volume(np.zeros((1, 5, 3)), ALA_CENTRE)
    with pytest.raises(ValueError, match="xyz: expected at least one frame, got 0"):
        fraction_l(np.zeros((0, 22, 3)), ALA_CENTRE)
