"""Build small force-field-ready test molecules (amber99sbildn.xml, vacuum) and their conformations.

Build-time only; needs (besides the project's OpenMM, mdtraj and numpy)::

    .venv/bin/pip install PeptideBuilder      # PeptideBuilder 1.1, pulls Biopython

Run from the repository root (rewrites the PDBs next to this file)::

    .venv/bin/python systems/test_molecules/build.py

Writes (files of one molecule share the same atoms in the same order):

* Glycine dipeptide Ace-Gly-Nme (ACE 1, GLY 2, NME 3; 19 atoms, no chiral centre):
  ``glycine-dipeptide.pdb`` (fully extended C5, (phi, psi) = (180, 180) deg, released),
  ``gly_C7eq.pdb`` (target (-83, 73)) and ``gly_C7ax.pdb`` (target (75, -55)).
* Valine dipeptide Ace-Val-Nme (ACE 1, VAL 2, NME 3; 28 atoms): ``valine-dipeptide.pdb``
  (extended, (-150, 155), released).
* N-methylacetamide as ACE 1 + NME 2 (12 atoms, no backbone phi/psi):
  ``n-methylacetamide.pdb`` (as built, trans, minimised), ``nma_trans.pdb`` (omega
  CH3-C-N-C = 180) and ``nma_cis.pdb`` (omega = 0, dragged there under restraint, released).

Same method as ``systems/alanine_tetrapeptide/build.py`` (whose functions are reused): PeptideBuilder
backbone with glycines turned into ACE/NME caps, OpenMM ``Modeller.addHydrogens``, minimisation
with amber99sbildn in vacuum (NoCutoff, HBonds, Reference platform), dihedrals dragged to targets
by a harmonic ``CustomTorsionForce`` in steps of at most 10 deg and released (or held lightly if
the free minimum lies more than 20 deg from the target). Every PDB is re-read, parameterised,
its energy evaluated and its dihedrals measured with mdtraj.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app as app

HERE = Path(__file__).resolve().parent
_SPEC = importlib.util.spec_from_file_location(
    "alanine_tetrapeptide_build", HERE.parent / "alanine_tetrapeptide" / "build.py")
builder = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(builder)

EXTENDED, GLY_C5, C7EQ, GLY_C7AX = (-150.0, 155.0), (180.0, 180.0), (-83.0, 73.0), (75.0, -55.0)


def omega_quad(topology: app.Topology) -> list[int]:
    """CH3(ACE)-C(ACE)-N(NME)-C(NME) of N-methylacetamide."""
    index = {(a.residue.name, a.name): a.index for a in topology.atoms()}
    return [index["ACE", "CH3"], index["ACE", "C"], index["NME", "N"], index["NME", "C"]]


def dipeptide(forcefield, code: str, name: str, n_atoms: int, jobs) -> None:
    """Ace-X-Nme: base structure plus conformations, each (filename, (phi, psi), title)."""
    topology, x = builder.protonate(*builder.build_heavy(code, [EXTENDED[0]], [EXTENDED[1]]), forcefield)
    if topology.getNumAtoms() != n_atoms:
        raise RuntimeError(f"{name}: {topology.getNumAtoms()} atoms, expected {n_atoms}")
    minimizer = builder.Minimizer(topology, forcefield, builder.backbone_quads(topology))
    base = None
    for filename, target, title in jobs:
        x_out, how = minimizer.settle(x if base is None else base, target)
        base = x_out if base is None else base
        builder.write_pdb(topology, x_out, HERE / filename,
                          f"{name} {title}, amber99sbildn vacuum minimum ({how}); build.py")
        info = builder.verify(HERE / filename)
        builder.report(info, how)
        builder.check(info, [target])


def n_methylacetamide(forcefield) -> None:
    """ACE + NME: as built (trans), trans and cis; checks that mdtraj finds no phi/psi."""
    topology, x = builder.protonate(*builder.build_heavy("", [], []), forcefield)
    if topology.getNumAtoms() != 12:
        raise RuntimeError(f"N-methylacetamide: {topology.getNumAtoms()} atoms, expected 12")
    quad = omega_quad(topology)
    minimizer = builder.Minimizer(topology, forcefield, [quad])
    x_base = minimizer.minimize(x)
    structures = [("n-methylacetamide.pdb", x_base, "trans, unrestrained minimum", None)]
    for filename, target in (("nma_trans.pdb", 180.0), ("nma_cis.pdb", 0.0)):
        x_out, how = minimizer.settle(x_base, [target])
        structures.append((filename, x_out, f"omega {target:g} deg ({how})", target))
    for filename, x_out, title, target in structures:
        builder.write_pdb(topology, x_out, HERE / filename,
                          f"N-methylacetamide ACE-NME {title}, amber99sbildn vacuum; build.py")
        info = builder.verify(HERE / filename, {"omega": quad})
        builder.report(info)
        traj = md.load(str(HERE / filename))
        if md.compute_phi(traj)[0].size or md.compute_psi(traj)[0].size or info["phi_psi_deg"]:
            raise RuntimeError(f"{filename}: mdtraj found backbone phi/psi in N-methylacetamide")
        if target is not None and abs(builder.wrap(info["omega_deg"] - target)) > builder.TOLERANCE_DEG:
            raise RuntimeError(f"{filename}: omega {info['omega_deg']} deg, target {target}")


def main() -> int:
    forcefield = app.ForceField(builder.FORCEFIELD)
    dipeptide(forcefield, "G", "ACE-GLY-NME", 19, [
        ("glycine-dipeptide.pdb", GLY_C5, "fully extended C5"),
        ("gly_C7eq.pdb", C7EQ, "C7eq"),
        ("gly_C7ax.pdb", GLY_C7AX, "C7ax"),
    ])
    dipeptide(forcefield, "V", "ACE-VAL-NME", 28, [("valine-dipeptide.pdb", EXTENDED, "extended/C5-like")])
    n_methylacetamide(forcefield)
    return 0


if __name__ == "__main__":
    sys.exit(main())
