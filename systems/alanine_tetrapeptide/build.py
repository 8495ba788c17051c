"""Build the capped alanine tetrapeptide Ace-Ala-Ala-Ala-Nme and three more conformations of it.

Build-time only; needs (besides the project's OpenMM, mdtraj and numpy)::

    .venv/bin/pip install PeptideBuilder      # PeptideBuilder 1.1, pulls Biopython

Run from the repository root (rewrites the PDBs next to this file)::

    .venv/bin/python systems/alanine_tetrapeptide/build.py

Writes (same 42 atoms in the same order in every file, residues ACE 1, ALA 2-4, NME 5):

* ``alanine-tetrapeptide.pdb``: extended/C5-like, every ALA restrained to (phi, psi) = (-150, 155)
  deg, then released (unrestrained minimisation).
* ``C7eq_all.pdb``: every ALA at C7eq, target (-83, 73).
* ``mid_C7ax.pdb``: ALA2 and ALA4 at C7eq (-83, 73), the middle ALA3 at C7ax (65, -40).
* ``nterm_alpha_R.pdb``: ALA2 and ALA3 at alpha_R (-75, -40), ALA4 at C7eq (-83, 73).

Method: PeptideBuilder builds Gly-Ala-Ala-Ala-Gly heavy atoms at the requested (phi, psi)
(omega 180); the first glycine becomes the ACE cap (CA -> CH3, its N dropped) and the last the NME
cap (CA -> C, its C and O dropped); OpenMM ``Modeller.addHydrogens`` adds hydrogens.
Minimisation: amber99sbildn.xml, vacuum, NoCutoff, HBonds constraints, Reference platform,
``LocalEnergyMinimizer`` to 1 kJ/mol/nm. A conformation is reached by dragging the restrained
dihedrals (harmonic ``CustomTorsionForce``, 2000 kJ/mol/rad^2) to the targets in steps of at most
10 deg, then minimising without restraint. If the released structure drifts more than 20 deg from
a target, a lightly restrained minimum (100 kJ/mol/rad^2) is written instead (reported).
Every written PDB is re-read, parameterised, its energy evaluated and its dihedrals measured with
mdtraj. ``systems/test_molecules/build.py`` reuses the functions of this file.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit
from PeptideBuilder import PeptideBuilder

HERE = Path(__file__).resolve().parent
FORCEFIELD = "amber99sbildn.xml"
K_STRONG = 2000.0  # kJ/mol/rad^2
K_LIGHT = 100.0
TOLERANCE_DEG = 20.0
STEP_DEG = 10.0
# Heavy-atom order per residue (hydrogens are inserted after their parent by addHydrogens).
ORDER = {
    "ACE": ("CH3", "C", "O"),
    "NME": ("N", "C"),
    "GLY": ("N", "CA", "C", "O"),
    "ALA": ("N", "CA", "CB", "C", "O"),
    "VAL": ("N", "CA", "CB", "CG1", "CG2", "C", "O"),
}


def build_heavy(sequence: str, phi_deg, psi_deg) -> tuple[app.Topology, np.ndarray]:
    """Heavy atoms of ACE-<sequence>-NME (one-letter codes) at the given (phi, psi) per residue."""
    n = len(sequence)
    phi = [float(p) for p in phi_deg] + [180.0]  # residues 2..n+2 (the last one becomes NME)
    psi_im1 = [180.0] + [float(p) for p in psi_deg]  # psi of residues 1..n+1 (residue 1 -> ACE)
    structure = PeptideBuilder.make_structure("G" + sequence + "G", phi, psi_im1)
    topology = app.Topology()
    chain = topology.addChain("A")
    xyz = []
    for k, res in enumerate(structure.get_residues()):
        if k == 0:
            name, source = "ACE", {"CH3": "CA", "C": "C", "O": "O"}
        elif k == n + 1:
            name, source = "NME", {"N": "N", "C": "CA"}
        else:
            name = res.get_resname()
            source = {a: a for a in ORDER[name]}
        residue = topology.addResidue(name, chain, id=str(k + 1))
        for atom_name in ORDER[name]:
            topology.addAtom(atom_name, app.Element.getBySymbol(atom_name[0]), residue)
            xyz.append(res[source[atom_name]].coord)
    topology.createStandardBonds()
    return topology, np.asarray(xyz, dtype=float) / 10.0  # Angstrom -> nm


def protonate(topology: app.Topology, x_nm: np.ndarray, forcefield: app.ForceField):
    """Add hydrogens with OpenMM's Modeller (templates of the force field); seeded, it uses ``random``."""
    random.seed(2024)
    modeller = app.Modeller(topology, x_nm * unit.nanometer)
    modeller.addHydrogens(forcefield, platform=mm.Platform.getPlatformByName("Reference"))
    return modeller.topology, np.array(modeller.getPositions().value_in_unit(unit.nanometer))


def dihedrals_deg(x_nm: np.ndarray, quads) -> np.ndarray:
    """Dihedral angles (deg) of atom quadruples, vectorised (same convention as mdtraj)."""
    p = x_nm[np.asarray(quads)]
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=1, keepdims=True) * b1n
    return np.degrees(np.arctan2(np.sum(np.cross(b1n, v) * w, axis=1), np.sum(v * w, axis=1)))


def wrap(d: np.ndarray) -> np.ndarray:
    return (np.asarray(d) + 180.0) % 360.0 - 180.0


def backbone_quads(topology: app.Topology) -> list:
    """mdtraj's phi then psi quadruples, interleaved per residue: [phi_1, psi_1, phi_2, ...]."""
    traj = md.Trajectory(np.zeros((1, topology.getNumAtoms(), 3)), md.Topology.from_openmm(topology))
    phi, psi = md.compute_phi(traj)[0], md.compute_psi(traj)[0]
    return [q.tolist() for pair in zip(phi, psi) for q in pair]


class Minimizer:
    """Reference-platform context with a switchable harmonic dihedral restraint (force group 31)."""

    def __init__(self, topology: app.Topology, forcefield: app.ForceField, quads):
        system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
        self.restraint = mm.CustomTorsionForce(
            "0.5*k_restraint*d^2; d = min(dt, 2*pi - dt); dt = abs(theta - theta0); pi = 3.141592653589793")
        self.restraint.addGlobalParameter("k_restraint", 0.0)
        self.restraint.addPerTorsionParameter("theta0")
        self.quads = [tuple(q) for q in quads]
        for q in self.quads:
            self.restraint.addTorsion(*q, [0.0])
        self.restraint.setForceGroup(31)
        system.addForce(self.restraint)
        platform = mm.Platform.getPlatformByName("Reference")
        self.context = mm.Context(system, mm.VerletIntegrator(0.001), platform)

    def minimize(self, x_nm: np.ndarray, targets_deg=None, k: float = 0.0) -> np.ndarray:
        if targets_deg is not None:
            for i, (q, t) in enumerate(zip(self.quads, targets_deg)):
                self.restraint.setTorsionParameters(i, *q, [math.radians(float(t))])
            self.restraint.updateParametersInContext(self.context)
        self.context.setParameter("k_restraint", k)
        self.context.setPositions(x_nm * unit.nanometer)
        mm.LocalEnergyMinimizer.minimize(self.context, 1.0, 0)
        return self.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def settle(self, x_nm: np.ndarray, targets_deg) -> tuple[np.ndarray, str]:
        """Drag the restrained dihedrals to the targets, then release (or hold lightly)."""
        targets = np.asarray(targets_deg, dtype=float)
        start = dihedrals_deg(x_nm, self.quads)
        delta = wrap(targets - start)
        n_steps = max(1, int(math.ceil(np.abs(delta).max() / STEP_DEG)))
        for s in range(1, n_steps + 1):
            x_nm = self.minimize(x_nm, wrap(start + delta * s / n_steps), K_STRONG)
        for label, k in (("released", 0.0), (f"light restraint {K_LIGHT:g} kJ/mol/rad^2", K_LIGHT)):
            x_out = self.minimize(x_nm, targets, k)
            if np.abs(wrap(dihedrals_deg(x_out, self.quads) - targets)).max() <= TOLERANCE_DEG:
                return x_out, label
        return x_nm, f"strong restraint {K_STRONG:g} kJ/mol/rad^2"


def write_pdb(topology: app.Topology, x_nm: np.ndarray, path: Path, remark: str) -> None:
    tmp = path.with_suffix(".pdb.tmp")
    with open(tmp, "w") as fh:
        fh.write(f"REMARK   1 {remark}\n")
        app.PDBFile.writeFile(topology, x_nm * unit.nanometer, fh, keepIds=True)
    tmp.replace(path)


def verify(path: Path, extra_quads: dict | None = None) -> dict:
    """Re-read a PDB: createSystem (amber99sbildn, NoCutoff, HBonds), energy, mdtraj dihedrals."""
    pdb = app.PDBFile(str(path))
    system = app.ForceField(FORCEFIELD).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                     constraints=app.HBonds)
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    traj = md.load(str(path))
    phi = np.degrees(md.compute_phi(traj)[1][0])
    psi = np.degrees(md.compute_psi(traj)[1][0])
    info = {"file": path.name, "atoms": traj.n_atoms,
            "residues": " ".join(f"{r.name}{r.resSeq}" for r in traj.topology.residues),
            "energy_kj_per_mol": round(float(energy), 2),
            "phi_psi_deg": [(round(float(a), 1), round(float(b), 1)) for a, b in zip(phi, psi)]}
    for name, quad in (extra_quads or {}).items():
        info[f"{name}_deg"] = round(float(np.degrees(md.compute_dihedrals(traj, [quad])[0, 0])), 1)
    return info


def report(info: dict, how: str = "") -> None:
    extras = {k: v for k, v in info.items() if k not in ("file", "atoms", "residues", "energy_kj_per_mol")}
    print(f"{info['file']:26s} {info['atoms']:3d} atoms  E = {info['energy_kj_per_mol']:9.2f} kJ/mol  "
          f"{extras}  [{info['residues']}]" + (f"  ({how})" if how else ""))


def check(info: dict, targets) -> None:
    got = np.asarray(info["phi_psi_deg"], dtype=float).ravel()
    err = np.abs(wrap(got - np.asarray(targets, dtype=float).ravel())).max()
    if err > TOLERANCE_DEG:
        raise RuntimeError(f"{info['file']}: dihedrals {info['phi_psi_deg']} are {err:.1f} deg off {targets}")


def main() -> int:
    forcefield = app.ForceField(FORCEFIELD)
    extended, c7eq, c7ax, alpha_r = (-150.0, 155.0), (-83.0, 73.0), (65.0, -40.0), (-75.0, -40.0)
    topology, x = protonate(*build_heavy("AAA", [extended[0]] * 3, [extended[1]] * 3), forcefield)
    names = [r.name for r in topology.residues()]
    if topology.getNumAtoms() != 42 or names != ["ACE", "ALA", "ALA", "ALA", "NME"]:
        raise RuntimeError(f"unexpected topology: {topology.getNumAtoms()} atoms, residues {names}")
    minimizer = Minimizer(topology, forcefield, backbone_quads(topology))
    jobs = [("alanine-tetrapeptide.pdb", [extended] * 3, "extended/C5-like"),
            ("C7eq_all.pdb", [c7eq] * 3, "all ALA C7eq"),
            ("mid_C7ax.pdb", [c7eq, c7ax, c7eq], "ALA2/ALA4 C7eq, ALA3 C7ax"),
            ("nterm_alpha_R.pdb", [alpha_r, alpha_r, c7eq], "ALA2/ALA3 alpha_R, ALA4 C7eq")]
    base = None
    for filename, targets, title in jobs:
        start = x if base is None else base
        x_out, how = minimizer.settle(start, np.ravel(targets))
        if base is None:
            base = x_out
        write_pdb(topology, x_out, HERE / filename,
                  f"ACE-ALA-ALA-ALA-NME {title}, amber99sbildn vacuum minimum ({how}); build.py")
        info = verify(HERE / filename)
        report(info, how)
        check(info, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
