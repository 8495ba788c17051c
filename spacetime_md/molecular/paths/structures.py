"""Endpoint structures: Kabsch alignment and RMSD, resolving a state name or PDB file to
coordinates, and checking that a model fits a system.

Units: nm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import openmm.unit as unit

from spacetime_md.errors import TopologyMismatchError
from spacetime_md.molecular.paths.relaxed import HEAVY_ATOM_QUENCH_K

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "ENDPOINT_QUENCH_K",
    "ENDPOINT_QUENCH_MIN_GAIN_KT",
    "kabsch_align",
    "kabsch_rmsd",
    "quench_endpoints",
    "resolve_structure",
]

#: Force constant (kJ/mol/nm^2) of the harmonic restraint that holds every heavy atom of an
#: endpoint structure at its given position while :func:`quench_endpoints` minimises it: thermal
#: noise in bond lengths, angles and hydrogens is removed, the conformation is kept (heavy atoms
#: move by about 0.1 A for a 300 K MD snapshot of alanine dipeptide). The same constant as the
#: committor's ``"quenched"`` energy.
ENDPOINT_QUENCH_K = HEAVY_ATOM_QUENCH_K
#: A quenched endpoint replaces the given one only if quenching lowers its energy by at least this
#: many kT (2 kT = 5.0 kJ/mol at 300 K). A 300 K MD snapshot of alanine dipeptide gains 50-67
#: kJ/mol; the shipped (restrained-)minimised state structures gain at most 3.2 kJ/mol and are
#: used exactly as given.
ENDPOINT_QUENCH_MIN_GAIN_KT = 2.0

# --------------------------------------------------------------------------- structures


def kabsch_align(mobile: np.ndarray, reference: np.ndarray, atoms: Sequence[int] | None = None) -> np.ndarray:
    """Rigidly superpose ``mobile (..., N, 3)`` onto ``reference (N, 3)`` (proper rotations only).

    The fit uses ``atoms`` (default all); the whole structure is moved. Both are centred on
    the fitted atoms' centre of geometry; the result is centred like ``reference``.
    """
    mobile = np.asarray(mobile, dtype=float)
    reference = np.asarray(reference, dtype=float)
    idx = slice(None) if atoms is None else np.asarray(atoms)
    ref_c = reference[idx].mean(axis=0)
    mob_c = mobile[..., idx, :].mean(axis=-2, keepdims=True)
    a = mobile[..., idx, :] - mob_c
    b = reference[idx] - ref_c
    h = np.einsum("...ni,nj->...ij", a, b)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("...ij,...jk->...ik", u, vt)))
    u[..., :, -1] *= d[..., None]
    rot = np.einsum("...ij,...jk->...ik", u, vt)
    return np.einsum("...ni,...ij->...nj", mobile - mob_c, rot) + ref_c


def kabsch_rmsd(mobile: np.ndarray, reference: np.ndarray, atoms: Sequence[int] | None = None) -> np.ndarray:
    """RMSD (same unit as the input) after optimal superposition on ``atoms``; ``(...,)``."""
    aligned = kabsch_align(mobile, reference, atoms)
    idx = slice(None) if atoms is None else np.asarray(atoms)
    diff = aligned[..., idx, :] - np.asarray(reference, dtype=float)[idx]
    return np.sqrt((diff**2).sum(-1).mean(-1))


def _is_state_name(spec: Any) -> bool:
    """A plain string that is not a ``.pdb`` path names a state; paths and ``*.pdb`` are files."""
    return isinstance(spec, str) and not spec.lower().endswith(".pdb")


def resolve_structure(
    system: "MolecularSystem", spec: Any, what: str, *, allow_mirror: bool = False
) -> tuple[np.ndarray, str]:
    """Coordinates (nm, ``(N, 3)``) and a label for a state name, PDB path or coordinates.

    Every structure passes :func:`~spacetime_md.molecular.system.checks.check_structure` (units,
    bond lengths, overlaps, chirality against the system's reference unless ``allow_mirror``).
    """
    from spacetime_md.molecular.system.checks import check_structure

    def coordinates_to_nm(label, x, system):
        return check_structure(system, x, label, allow_mirror=allow_mirror)

    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and not _is_state_name(spec)):
        import openmm.app as app

        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"{what}: expected a PDB file, got missing path {str(path)!r}")
        try:
            pdb = app.PDBFile(str(path))
        except Exception as exc:  # OpenMM raises assorted errors for malformed files
            raise ValueError(f"{what}: expected a readable PDB file, got {path.name} ({type(exc).__name__}: {exc})") from None
        names = [a.name for a in pdb.topology.atoms()]
        if len(names) != system.n_atoms:
            raise TopologyMismatchError(
                f"{what}: expected {system.n_atoms} atoms like {system.name}, got {len(names)} in {path.name}"
            )
        if tuple(names) != tuple(system.atom_names):
            bad = next(i for i, (a, b) in enumerate(zip(names, system.atom_names)) if a != b)
            raise TopologyMismatchError(
                f"{what}: expected atom order of {system.name} (atom {bad} {system.atom_names[bad]!r}), "
                f"got {names[bad]!r} in {path.name}"
            )
        x = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=float)
        return coordinates_to_nm(what, x, system)[0], path.name
    if _is_state_name(spec):
        state = system.get_state(spec)
        if not state.representative_pdb:
            raise ValueError(f"{what}: state {state.name!r} has no representative structure")
        pdb_path = Path(state.representative_pdb)
        if not pdb_path.is_file():
            raise FileNotFoundError(f"{what}: representative structure of {state.name} missing: {pdb_path}")
        return resolve_structure(system, str(pdb_path), what, allow_mirror=allow_mirror)[0], state.name
    x = coordinates_to_nm(what, spec, system)
    if x.shape[0] != 1:
        raise ValueError(f"{what}: expected one structure of shape ({system.n_atoms}, 3), got {x.shape[0]} frames")
    return x[0], "coordinates"


def quench_endpoints(
    system: "MolecularSystem", structures: Sequence[np.ndarray], *, k_restraint: float = ENDPOINT_QUENCH_K
) -> tuple[list[np.ndarray], list[dict[str, float]]]:
    """Minimise endpoint structures with their heavy atoms held where they are.

    An MD snapshot carries its thermal noise: stretched bonds, bent angles, hydrogens off their
    minimum, tens of kJ/mol above the structure's local minimum (the 300 K C7ax snapshot of the
    field's alanine-dipeptide protocol: -3.9 kJ/mol, quenched -70.6). Paths that end restrained
    to such a snapshot pay that strain at their last frames (docs/peer_protocol.md). Each
    structure is minimised (OpenMM ``LocalEnergyMinimizer``, tolerance 1 kJ/mol/nm) with every
    heavy atom (every atom if there is none) restrained to its own position by
    ``k_restraint / 2 |r - r_0|^2``; the conformation, dihedrals included, is kept.

    Parameters
    ----------
    system : MolecularSystem
    structures : sequence of ndarray, shape=(N, 3)
        Structures in nm.
    k_restraint : float
        Restraint force constant, kJ/mol/nm^2 (> 0).

    Returns
    -------
    quenched : list of ndarray, shape=(N, 3)
        The minimised structures (nm), in the frame of the given ones; a given structure that
        quenching lowers by less than :data:`ENDPOINT_QUENCH_MIN_GAIN_KT` kT (already minimised)
        is returned unchanged.
    info : list of dict
        Per structure: ``energy_given_kj_mol``, ``energy_quenched_kj_mol`` (force field only),
        ``heavy_atom_shift_angstrom`` (heavy-atom RMSD between the two, after superposition),
        ``used`` (whether the quenched structure was returned) and ``min_gain_kj_mol``.
    """
    from spacetime_md.molecular.paths.relaxed import heavy_atom_quencher
    from spacetime_md.molecular.system.energies import evaluate_energies
    from spacetime_md.molecular.system.units import kT_kj_per_mol

    quencher = heavy_atom_quencher(system, k_restraint)  # refuses a bad k_restraint
    given = np.stack([np.asarray(x, dtype=float) for x in structures])
    before = np.asarray(evaluate_energies(system, given).value_in_unit(unit.kilojoule_per_mole), dtype=float)
    min_gain = ENDPOINT_QUENCH_MIN_GAIN_KT * kT_kj_per_mol(system.temperature_k)
    quenched, info = [], []
    for x, energy_given in zip(given, before):
        energy, q = quencher.quench(x)
        q = np.asarray(q, dtype=float)
        used = bool(energy_given - energy >= min_gain)
        quenched.append(q if used else x)
        info.append({"energy_given_kj_mol": float(energy_given), "energy_quenched_kj_mol": float(energy),
                     "heavy_atom_shift_angstrom": float(10.0 * kabsch_rmsd(q, x, quencher.atoms)), "used": used,
                     "min_gain_kj_mol": float(min_gain)})
    return quenched, info


def check_model_matches_system(model: "EquivariantDenoiser", system: "MolecularSystem") -> None:
    """Raise :class:`TopologyMismatchError` unless the model was trained for this topology, and
    ``ValueError`` for a guided denoiser with a hard interval (a geodesic cannot differentiate it)."""
    if not getattr(model, "smooth", True):
        raise ValueError(
            "model: expected a denoiser smooth in log_snr, got a guided one with a hard interval (edge_width 0), "
            "which a geodesic cannot differentiate; make it with `spacetime-md guide ... --edge-width 0.5`"
        )
    if model.n_atoms != system.n_atoms:
        raise TopologyMismatchError(
            f"model: expected a model for {system.n_atoms} atoms ({system.name}), got one for {model.n_atoms}"
        )
    if model.atom_names is not None and tuple(model.atom_names) != tuple(system.atom_names):
        bad = next(i for i, (a, b) in enumerate(zip(model.atom_names, system.atom_names)) if a != b)
        raise TopologyMismatchError(
            f"model: expected atom {bad} named {system.atom_names[bad]!r} as in {system.name}, "
            f"got {model.atom_names[bad]!r} (a model trained for another system?)"
        )
