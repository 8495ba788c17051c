"""Physical checks of structures (issue 20): each case fails loudly, before expensive work."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest

from spacetime_md.errors import NonFiniteError, TopologyMismatchError
from spacetime_md.molecular import evaluate_energies, load_system
from spacetime_md.molecular.system.checks import check_structure, equilibrium_bond_lengths
from spacetime_md.molecular.system.build import MolecularSystem

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ala():
    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def gly():
    return MolecularSystem.from_pdb(ROOT / "systems" / "test_molecules" / "glycine-dipeptide.pdb")


def test_good_structures_pass(ala):
    x = check_structure(ala, ala.positions_nm, "start")
    assert x.shape == (1, 22, 3)
    for state in ala.states:
        check_structure(ala, mdtraj.load(state.representative_pdb).xyz, state.name)


def test_equilibrium_lengths_are_the_force_field_ones(ala):
    r0 = equilibrium_bond_lengths(ala)
    assert r0.shape == (len(ala.bonds),) and np.isfinite(r0).all()
    # amber99sbildn: C-H bonds are rigid at 0.109 nm, the peptide C-N bond is 0.1335 nm.
    names = [(a.name, b.name) for a, b in ala.topology.bonds()]
    assert r0[names.index(("C", "N"))] == pytest.approx(0.1335, abs=1e-4)
    assert r0[names.index(("CA", "HA"))] == pytest.approx(0.109, abs=1e-4)


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda x: x * np.array([-1.0, 1.0, 1.0]), ValueError, "got a mirror image .* centre CA ALA2"),
        (lambda x: x[[0, 1, 2, 3, 4, 5, 6, 7, 10, 9, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]],
         TopologyMismatchError, "expected bonds near their force-field lengths"),
        (lambda x: np.zeros_like(x) + 0.5, ValueError, "collapsed coordinates"),
        (lambda x: x * 10.0, ValueError, "look like Angstrom"),
        (lambda x: x / 10.0, ValueError, "about 10x too small"),
        (lambda x: np.where(np.arange(22)[:, None] == 21, x[0] + 0.01, x), None, None),
    ],
    ids=["mirror", "swapped-atoms", "collapsed", "angstrom", "nm-as-angstrom", "overlap"],
)
def test_bad_structures_are_refused(ala, mutate, error, message):
    x = mutate(ala.positions_nm.copy())
    if error is None:  # one H moved onto another atom: an overlap (or a broken bond) is named
        with pytest.raises(ValueError, match="overlapping atoms|force-field lengths"):
            check_structure(ala, x, "end")
        return
    with pytest.raises(error, match=message):
        check_structure(ala, x, "end")


def test_overlap_of_nonbonded_atoms(ala):
    x = ala.positions_nm.copy()
    # Put the two methyl groups' carbons onto each other by translating the NME cap as a whole.
    nme = [a.index for a in ala.topology.atoms() if a.residue.name == "NME"]
    x[nme] += x[1] - x[nme[2]] + 0.02
    with pytest.raises(ValueError, match="(no overlapping atoms|force-field lengths)"):
        check_structure(ala, x, "end")


def test_mirror_allowed_and_glycine_has_no_centre(ala, gly):
    mirrored = ala.positions_nm * np.array([-1.0, 1.0, 1.0])
    check_structure(ala, mirrored, "end", allow_mirror=True)
    check_structure(gly, gly.positions_nm * np.array([-1.0, 1.0, 1.0]), "end")  # achiral: nothing to refuse


def test_non_finite_energy_is_an_error(ala):
    # All atoms at one point: OpenMM gives NaN, which must never be returned as a result.
    with pytest.raises(NonFiniteError, match="non-finite energy for 1 of 2 frames"):
        evaluate_energies(ala, np.stack([ala.positions_nm, np.zeros((22, 3))]))
