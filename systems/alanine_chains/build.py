"""Build longer capped alanine chains Ace-(Ala)n-Nme for the scaling benchmarks.

Build-time only; needs (besides the project's OpenMM, mdtraj and numpy)::

    .venv/bin/pip install PeptideBuilder      # PeptideBuilder 1.1, pulls Biopython

Run from the repository root (rewrites the PDBs next to this file)::

    .venv/bin/python systems/alanine_chains/build.py

Writes ``ala9.pdb`` (Ace-(Ala)9-Nme, 102 atoms) and ``ala16.pdb`` (Ace-(Ala)16-Nme, 172 atoms),
residues ACE 1, ALA 2..n+1, NME n+2, every ALA an alpha helix ((phi, psi) target (-60, -45) deg;
compact, so a distance-cutoff graph has more neighbours per atom than for an extended chain).

Same method as ``systems/alanine_tetrapeptide/build.py`` (whose functions are reused):
PeptideBuilder backbone with glycines turned into ACE/NME caps, OpenMM ``Modeller.addHydrogens``,
minimisation with amber99sbildn in vacuum (NoCutoff, HBonds, Reference platform), dihedrals
dragged to the targets by a harmonic ``CustomTorsionForce`` and released (or held lightly if the
free minimum drifts more than 20 deg). Every PDB is re-read, parameterised, its energy
evaluated and its dihedrals measured with mdtraj.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import openmm.app as app

HERE = Path(__file__).resolve().parent
_SPEC = importlib.util.spec_from_file_location(
    "alanine_tetrapeptide_build", HERE.parent / "alanine_tetrapeptide" / "build.py")
builder = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(builder)

HELIX = (-60.0, -45.0)
CHAINS = {"ala9.pdb": 9, "ala16.pdb": 16}


def main() -> int:
    forcefield = app.ForceField(builder.FORCEFIELD)
    for filename, n in CHAINS.items():
        topology, x = builder.protonate(*builder.build_heavy("A" * n, [HELIX[0]] * n, [HELIX[1]] * n), forcefield)
        if topology.getNumAtoms() != 12 + 10 * n:
            raise RuntimeError(f"{filename}: {topology.getNumAtoms()} atoms, expected {12 + 10 * n}")
        minimizer = builder.Minimizer(topology, forcefield, builder.backbone_quads(topology))
        targets = np.ravel([HELIX] * n)
        x_out, how = minimizer.settle(x, targets)
        builder.write_pdb(topology, x_out, HERE / filename,
                          f"ACE-(ALA){n}-NME alpha helix, amber99sbildn vacuum minimum ({how}); build.py")
        info = builder.verify(HERE / filename)
        builder.report(info, how)
        builder.check(info, [HELIX] * n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
