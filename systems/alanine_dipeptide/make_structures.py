"""Produce the alanine-dipeptide structures shipped in ``spacetime_md/data/alanine_dipeptide/``.

Run from the repository root:

    python systems/alanine_dipeptide/make_structures.py

Input: ``systems/alanine_dipeptide/raw/alanine-dipeptide-openmmtools.pdb`` (the ACE-ALA-NME
structure from openmmtools' package data, 22 atoms in the common order, an idealised extended
geometry). State definitions: ``spacetime_md/data/alanine_dipeptide/states.json``.

Steps (amber99sbildn, vacuum, NoCutoff, HBonds constraints; our
:meth:`MolecularSystem.minimize`, i.e. OpenMM's ``LocalEnergyMinimizer`` to an RMS force of
1 kJ/mol/nm):

1. Minimise the raw structure -> ``alanine-dipeptide.pdb`` (lands in C5, phi/psi about
   -147/159 deg); this is the default structure of ``load_system("alanine-dipeptide")``.
2. For every state: starting from structure 1, drag (phi, psi) to the state's ``target_deg`` in
   steps of at most 10 deg, each a minimisation with a harmonic ``CustomTorsionForce``
   restraint (2000 kJ/mol/rad^2) on phi and psi; then release the restraint and
   minimise again. If the released structure stays in the state it is written; if it leaves
   (alpha_R is not a local minimum of amber99sbildn in vacuum: it relaxes to C7eq) the
   restrained minimum is written instead and flagged ``"restrained": true``.
3. ``structures.json`` records energies (kJ/mol) and (phi, psi) of every written structure.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from spacetime_md.molecular._io import write_atomic, write_json_atomic  # noqa: E402
from spacetime_md.molecular.system.energies import evaluate_energies  # noqa: E402
from spacetime_md.molecular.system.states import load_states  # noqa: E402
from spacetime_md.molecular.system.build import MolecularSystem  # noqa: E402

RAW = ROOT / "systems" / "alanine_dipeptide" / "raw" / "alanine-dipeptide-openmmtools.pdb"
DATA = ROOT / "spacetime_md" / "data" / "alanine_dipeptide"


def _write_pdb(system: MolecularSystem, x_nm: np.ndarray, path: Path, remark: str) -> None:
    def writer(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write(f"REMARK   1 {remark}\n")
            app.PDBFile.writeFile(system.topology, x_nm * unit.nanometer, fh, keepIds=False)

    write_atomic(path, writer)


def main() -> int:
    states = load_states(DATA / "states.json")
    system = MolecularSystem.from_pdb(RAW, states=states, name="alanine-dipeptide")
    if system.phi_indices != (4, 6, 8, 14) or system.psi_indices != (6, 8, 14, 16):
        raise RuntimeError(f"expected phi (4, 6, 8, 14), psi (6, 8, 14, 16); got {system.phi_indices}, {system.psi_indices}")
    record: dict = {"forcefield": list(system.forcefield_files), "solvent": "vacuum", "constraints": "hbonds",
                    "restraint_constant_kj_per_mol_rad2": 2000.0, "source": str(RAW.relative_to(ROOT)),
                    "structures": {}}

    def describe(x: np.ndarray) -> dict:
        energy = float(evaluate_energies(system, x)[0].value_in_unit(unit.kilojoule_per_mole))
        phi, psi = np.degrees(system.compute_phi_psi(x[None])[0])
        return {"energy_kj_per_mol": round(energy, 4), "phi_deg": round(float(phi), 2), "psi_deg": round(float(psi), 2)}

    x0 = system.minimize().value_in_unit(unit.nanometer)
    _write_pdb(system, x0, DATA / "alanine-dipeptide.pdb", "ACE-ALA-NME minimised (amber99sbildn, vacuum) by make_structures.py")
    record["structures"]["alanine-dipeptide.pdb"] = {**describe(x0), "restrained": False}

    for index, state in enumerate(states):
        phi_t, psi_t = state.target_deg
        x_r = x0
        # Drag (phi, psi) to the target in steps of at most 10 degrees (shortest periodic way), so
        # the minimiser follows a continuous path instead of jumping over a clash.
        start = np.degrees(system.compute_phi_psi(x0[None])[0])
        delta = (np.array([phi_t, psi_t]) - start + 180.0) % 360.0 - 180.0
        n_steps = max(1, int(math.ceil(np.abs(delta).max() / 10.0)))
        for k in range(1, n_steps + 1):
            phi_k, psi_k = start + delta * k / n_steps
            restraints = [(system.phi_indices, phi_k * unit.degree), (system.psi_indices, psi_k * unit.degree)]
            x_r = system.minimize(x_r * unit.nanometer, dihedral_restraints=restraints).value_in_unit(unit.nanometer)
        x_f = system.minimize(x_r * unit.nanometer).value_in_unit(unit.nanometer)
        released_ok = int(system.assign_states(x_f[None])[0]) == index
        x = x_f if released_ok else x_r
        rep = Path(state.representative_pdb).name
        _write_pdb(
            system, x, DATA / rep,
            f"{state.label} representative (amber99sbildn, vacuum), "
            + ("restrained then released minimum" if released_ok else "restrained minimum (not a free minimum)"),
        )
        record["structures"][rep] = {
            **describe(x), "state": state.name, "target_deg": [phi_t, psi_t], "restrained": not released_ok,
        }
        print(f"{state.name:8s} -> {rep}: {record['structures'][rep]}")
    write_json_atomic(DATA / "structures.json", record)
    print(f"wrote {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
