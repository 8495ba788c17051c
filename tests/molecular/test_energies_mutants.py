"""The bond-length input check at its exact boundaries, on hand-built molecules.

Killing the mutation run's survivors of ``energies.py``: a molecule with a single bond is
checked too (Angstrom coordinates refused, a median bond of exactly 0.5 included), and exactly
25 % broken bonds (1 of the 4 C-H bonds of methane) is not yet a wrong atom order, 2 of 4 are.
Expected outcomes by hand from the rules (median bond in [0.5, 3] = Angstrom; more than 25 % of
bonds over 0.3 nm = wrong order).

Units: nm.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.app as app
import pytest

from spacetime_md.errors import TopologyMismatchError
from spacetime_md.molecular.system.energies import check_bond_lengths
from spacetime_md.molecular.system.build import MolecularSystem


def _molecule(name, elements, bonds, positions_nm) -> MolecularSystem:
    """A real MolecularSystem from a hand-made topology and a particles-only OpenMM System."""
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    atoms = [top.addAtom(f"{e}{i}", app.Element.getBySymbol(e), res) for i, e in enumerate(elements)]
    for i, j in bonds:
        top.addBond(atoms[i], atoms[j])
    omm = openmm.System()
    for e in elements:
        omm.addParticle(app.Element.getBySymbol(e).mass)
    return MolecularSystem(top, np.asarray(positions_nm, dtype=np.float64), omm, name=name, solvent="vacuum",
                           forcefield_files=(), constraints="none", temperature_k=300.0, platform="Reference")


def test_a_single_bond_in_angstrom_is_refused():
    co = _molecule("co", ["C", "O"], [(0, 1)], [[0.0, 0.0, 0.0], [0.113, 0.0, 0.0]])
    assert co.bonds.tolist() == [[0, 1]]
    check_bond_lengths("x", co.positions_nm[None], co)  # 0.113 nm: fine
    angstrom = r"x: expected nm, got coordinates that look like Angstrom \(median bond length 1\.130"
    with pytest.raises(ValueError, match=angstrom):
        check_bond_lengths("x", 10.0 * co.positions_nm[None], co)


def test_exactly_a_quarter_of_the_bonds_broken_is_not_a_wrong_order():
    h = 0.109 / np.sqrt(3.0)
    methane = np.array([[0, 0, 0], [h, h, h], [h, -h, -h], [-h, h, -h], [-h, -h, h]])
    ch4 = _molecule("methane", ["C", "H", "H", "H", "H"], [(0, 1), (0, 2), (0, 3), (0, 4)], methane)
    one = methane.copy()
    one[1] += [1.0, 0.0, 0.0]  # 1 of 4 bonds over 0.3 nm: 25 %, not more than 25 %
    check_bond_lengths("x", np.stack([methane, one]), ch4)
    two = methane.copy()
    two[1:3] += [10.0, 0.0, 0.0]  # 2 of 4: 50 % (10 nm away, so the median bond is not Angstrom-like)
    with pytest.raises(TopologyMismatchError, match=r"in frame 1, 50% of the 4 topology bonds are longer than 0.3 nm"):
        check_bond_lengths("x", np.stack([one, two]), ch4)


@pytest.mark.parametrize("bond", [0.5, 0.75])
def test_a_bond_of_0_5_to_3_is_angstrom_including_the_lower_edge(bond):
    # A 0.05-0.075 nm bond written in Angstrom: median in [0.5, 3] (0.5 exactly at the edge).
    co = _molecule("co", ["C", "O"], [(0, 1)], [[0.0, 0.0, 0.0], [0.113, 0.0, 0.0]])
    x = np.array([[[0.0, 0.0, 0.0], [bond, 0.0, 0.0]]])
    with pytest.raises(ValueError, match=rf"look like Angstrom \(median bond length {bond:.3f}"):
        check_bond_lengths("x", x, co)
