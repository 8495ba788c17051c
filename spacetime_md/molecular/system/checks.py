"""Physical checks of user structures, run before any expensive work.

:func:`check_structure` is the one check every entry point (CLI, Python API, batch,
committor) applies to structures it is given:

- shape, finite values and units (coordinates 10x too large look like Angstrom given as nm,
  10x too small like nm given as Angstrom);
- every bond of the topology within 30 % of its force-field length (swapped atoms, another
  atom order or a broken structure);
- no two atoms closer than 0.07 nm unless bonded or sharing a bonded neighbour (collapsed
  or overlapping atoms);
- the chirality of every stereocentre equal to the system's reference structure (the
  structure the model's training data was sampled from): a mirror image is refused unless
  ``allow_mirror``.

Units inside: nm.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from spacetime_md.errors import TopologyMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = ["check_structure", "equilibrium_bond_lengths", "BOND_TOLERANCE", "MIN_NONBONDED_NM"]

#: Largest accepted relative deviation of a bond from its force-field length.
BOND_TOLERANCE = 0.3
#: Smallest accepted distance (nm) between atoms that are neither bonded nor 1-3 neighbours.
MIN_NONBONDED_NM = 0.07


def equilibrium_bond_lengths(system: "MolecularSystem") -> np.ndarray:
    """Force-field length (nm) of every topology bond, shape=(B,) (NaN where none is defined).

    From the ``HarmonicBondForce`` and, for rigid bonds, the constraint distances.
    """
    import openmm

    cached = getattr(system, "_equilibrium_bonds", None)
    if cached is not None:
        return cached
    lengths: dict[tuple[int, int], float] = {}
    omm = system.openmm_system
    for force in omm.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, _ = force.getBondParameters(k)
                lengths[(min(i, j), max(i, j))] = r0.value_in_unit(openmm.unit.nanometer)
    for k in range(omm.getNumConstraints()):
        i, j, d = omm.getConstraintParameters(k)
        lengths[(min(i, j), max(i, j))] = d.value_in_unit(openmm.unit.nanometer)
    bonds = system.bonds
    out = np.array([lengths.get((min(a, b), max(a, b)), np.nan) for a, b in bonds], dtype=np.float64)
    system._equilibrium_bonds = out
    return out


def _atom_label(system: "MolecularSystem", i: int) -> str:
    atom = list(system.topology.atoms())[i]
    return f"{atom.name} (atom {i}, {atom.residue.name}{atom.residue.id})"


def _close_pairs_mask(system: "MolecularSystem") -> np.ndarray:
    """Boolean (N, N): pairs allowed to be close (same atom, bonded, or sharing a neighbour)."""
    cached = getattr(system, "_close_pairs", None)
    if cached is not None:
        return cached
    n = system.n_atoms
    adj = np.zeros((n, n), dtype=bool)
    b = system.bonds
    adj[b[:, 0], b[:, 1]] = adj[b[:, 1], b[:, 0]] = True
    two = (adj.astype(np.int32) @ adj.astype(np.int32)) > 0
    allowed = adj | two | np.eye(n, dtype=bool)
    system._close_pairs = allowed
    return allowed


def check_structure(
    system: "MolecularSystem",
    coordinates: Any,
    what: str,
    *,
    allow_mirror: bool = False,
    reference_nm: np.ndarray | None = None,
) -> np.ndarray:
    """Validate structures for ``system`` and return them as float64 nm, shape=(F, N, 3).

    Parameters
    ----------
    system : MolecularSystem
    coordinates : array (nm), Quantity, Tensor or mdtraj.Trajectory, shape=(F, N, 3) or (N, 3)
    what : str
        Name used in messages (``"start"``, ``"end structure C7ax.pdb"``).
    allow_mirror : bool
        Accept stereocentres whose chirality differs from the reference structure.
    reference_nm : ndarray, shape=(N, 3), optional
        Chirality reference (default: the system's own structure).

    Raises
    ------
    ValueError
        Units, NaN, collapsed/overlapping atoms, or a mirror image.
    TopologyMismatchError
        Bonds far from their force-field lengths (another atom order, swapped atoms).
    """
    from spacetime_md.molecular.system.energies import coordinates_to_nm

    x = coordinates_to_nm(what, coordinates, system)
    bonds = system.bonds
    if len(bonds):
        r0 = equilibrium_bond_lengths(system)
        lengths = np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)  # (F, B)
        known = np.isfinite(r0)
        if known.any():
            ratio = np.median(lengths[:, known] / r0[known], axis=1)
            if (ratio < 0.2).any():
                f = int(np.flatnonzero(ratio < 0.2)[0])
                if ratio[f] > 0.05:
                    raise ValueError(
                        f"{what}: expected nm, got coordinates about 10x too small (median bond "
                        f"{ratio[f]:.2f} of its force-field length in frame {f}): nm given as Angstrom? "
                        "Multiply by 10 or pass an openmm.unit.Quantity"
                    )
                raise ValueError(
                    f"{what}: expected a molecular structure, got collapsed coordinates (median bond "
                    f"{ratio[f]:.3f} of its force-field length in frame {f})"
                )
            dev = np.abs(lengths / np.where(known, r0, 1.0) - 1.0)
            dev[:, ~known] = 0.0
            bad = dev > BOND_TOLERANCE
            if bad.any():
                f, k = (int(v) for v in np.argwhere(bad)[0])
                a, b = (int(v) for v in bonds[k])
                raise TopologyMismatchError(
                    f"{what}: expected bonds near their force-field lengths, got bond "
                    f"{_atom_label(system, a)}-{_atom_label(system, b)} of {lengths[f, k]:.3f} nm "
                    f"(force field {r0[k]:.3f} nm) in frame {f}, and {int(bad.sum()) - 1} more: "
                    "swapped atoms, another atom order or a broken structure?"
                )
    n = system.n_atoms
    if n <= 3000:
        allowed = _close_pairs_mask(system)
        for f in range(len(x)):
            d = np.linalg.norm(x[f, :, None, :] - x[f, None, :, :], axis=-1)
            d[allowed] = np.inf
            if d.min() < MIN_NONBONDED_NM:
                i, j = np.unravel_index(int(np.argmin(d)), d.shape)
                raise ValueError(
                    f"{what}: expected no overlapping atoms, got {_atom_label(system, int(i))} and "
                    f"{_atom_label(system, int(j))} {d[i, j]:.3f} nm apart in frame {f} "
                    f"(non-bonded atoms are at least ~{MIN_NONBONDED_NM} nm apart)"
                )
    if not allow_mirror:
        _check_chirality(system, x, what, system.positions_nm if reference_nm is None else reference_nm)
    return x


def _check_chirality(system: "MolecularSystem", x: np.ndarray, what: str, reference: np.ndarray) -> None:
    import spacetime_md.molecular.system.chirality as chirality

    finder = getattr(chirality, "chiral_centres_from_topology", None)
    if finder is None:  # pragma: no cover - older chirality module
        return
    centres = finder(system.mdtraj_topology)
    if not centres:
        return
    atoms = np.array([c.atoms for c in centres], dtype=np.int64)

    def signs(xyz: np.ndarray) -> np.ndarray:
        p0, p1, p2, p3 = (xyz[..., atoms[:, k], :] for k in range(4))
        v = np.einsum("...i,...i->...", p1 - p0, np.cross(p2 - p0, p3 - p0))
        return np.sign(v)

    ref = signs(np.asarray(reference, dtype=np.float64)[None])[0]
    got = signs(x)
    bad = (got != ref) & (ref != 0)
    if bad.any():
        f, k = (int(v) for v in np.argwhere(bad)[0])
        n_bad = int(bad[f].sum())
        mirror = "a mirror image" if n_bad == len(centres) else f"{n_bad} of {len(centres)} centres inverted"
        raise ValueError(
            f"{what}: expected the chirality of {system.name}'s reference structure, got {mirror} "
            f"(frame {f}, centre {centres[k].name}); pass allow_mirror=True / --allow-mirror to use it anyway"
        )


def _fraction(x: float) -> str:  # pragma: no cover - formatting helper
    return f"{100 * x:.0f} %" if math.isfinite(x) else "n/a"
