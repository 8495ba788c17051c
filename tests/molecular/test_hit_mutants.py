"""The hit code's atom choice and its zero-RMSD refusal, on a hand-built 5-atom molecule.

Killing the mutation run's survivors of the hit code of ``paths.py`` (now
``molecular/paths/hit.py``: ``compute_target_hit`` and helpers): a molecule with *exactly* 3 heavy
atoms fits on those 3 (not on all atoms), and two structures whose heavy atoms coincide exactly
have a default hit length of exactly 0, which is refused when a CV is not an angle. Reference
values from mdtraj's RMSD and by hand.

Units: nm.
"""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import pytest

from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.paths.hit import _endpoint_states, default_hit_length_nm, path_cvs
from spacetime_md.molecular.system.build import MolecularSystem

# Three heavy atoms (a planar triangle centred exactly on the origin in binary fractions, so
# that the Kabsch fit of the triangle onto itself is exact) and two hydrogens.
HEAVY = np.array([[-0.25, -0.25, 0.0], [0.25, -0.25, 0.0], [0.0, 0.5, 0.0]])
HYDROGENS = np.array([[0.2, 0.0, 0.1], [0.0, 0.1, 0.0]])


def _propane_like() -> MolecularSystem:
    """C-C-C with two hydrogens: a real MolecularSystem (topology and a particles-only System)."""
    elements = ["C", "C", "C", "H", "H"]
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    atoms = [top.addAtom(f"{e}{i}", app.Element.getBySymbol(e), res) for i, e in enumerate(elements)]
    for i, j in ((0, 1), (1, 2), (1, 3), (0, 4)):
        top.addBond(atoms[i], atoms[j])
    omm = openmm.System()
    for e in elements:
        omm.addParticle(app.Element.getBySymbol(e).mass)
    return MolecularSystem(top, np.vstack([HEAVY, HYDROGENS]), omm, name="ccc", solvent="vacuum",
                           forcefield_files=(), constraints="none", temperature_k=300.0, platform="Reference")


def _traj(system, x):
    return mdtraj.Trajectory(np.asarray(x, dtype=np.float32)[None], system.mdtraj_topology)


def test_exactly_three_heavy_atoms_are_the_fit_atoms():
    system = _propane_like()
    assert system.heavy_atom_indices.tolist() == [0, 1, 2]
    start = np.vstack([HEAVY, HYDROGENS])
    end = start.copy()
    end[0] += [0.0, 0.0, 0.2]  # one carbon out of the plane, both hydrogens moved too
    end[3:] += [[0.3, 0.0, 0.0], [0.0, 0.0, 0.3]]
    heavy_rmsd = float(mdtraj.rmsd(_traj(system, end), _traj(system, start), atom_indices=[0, 1, 2])[0])
    all_rmsd = float(mdtraj.rmsd(_traj(system, end), _traj(system, start))[0])
    assert abs(heavy_rmsd - all_rmsd) > 0.02  # the choice of atoms matters
    assert default_hit_length_nm(system, start, end) == pytest.approx(0.3 * heavy_rmsd, rel=1e-4)


def test_heavy_atoms_that_coincide_give_a_zero_hit_length_that_is_refused():
    system = _propane_like()
    start = np.vstack([HEAVY, HYDROGENS])
    end = start.copy()
    end[3:] += [[0.1, 0.0, 0.0], [0.0, 0.0, 0.1]]  # only the hydrogens move
    assert default_hit_length_nm(system, start, end) == 0.0  # exact: the triangle fits onto itself
    cvs = path_cvs(system, start, end)  # no system CVs: RMSDs to the endpoints, not angles
    assert cvs.names == ("rmsd start", "rmsd end") and not cvs.periodic.any()
    with pytest.raises(ValueError, match=r"got an RMSD of 0; pass hit_length_nm"):
        _endpoint_states(system, cvs, start, end, PathConfig())
    # An explicit hit length is used as given.
    hit_length, _, _ = _endpoint_states(system, cvs, start, end, PathConfig(hit_length_nm=0.05))
    assert hit_length == 0.05
