"""Potential energies (and forces) of a batch of configurations through one reused OpenMM Context.

Coordinates are in nm. Accepted: an ``openmm.unit.Quantity`` of length (converted to nm), an
``mdtraj.Trajectory`` (its topology is checked against the system's), or a bare numpy array /
torch tensor, which is taken to be in **nm** (mdtraj's and OpenMM's convention). Because a bare
array carries no unit, it is checked: a median bonded distance of 0.5-3 is almost surely
Angstrom and raises ``ValueError``; coordinates where many bonded atoms are far apart do not
follow the system's atom order and raise :class:`~spacetime_md.errors.TopologyMismatchError`.
Energies are returned in kJ/mol and forces in kJ/mol/nm (as quantities).

OpenMM has no batched energy call, so frames are evaluated one at a time in a Context that is
created once per system (``MolecularSystem._energy_context``) and reused; each frame adds one
to ``system.n_energy_evaluations``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.errors import TopologyMismatchError
from spacetime_md.molecular.system.units import KJ_PER_MOL, NM

if TYPE_CHECKING:
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = ["evaluate_energies", "coordinates_to_nm", "check_bond_lengths"]

#: A median bonded distance in this range (in the caller's units) means Angstrom, not nm.
_ANGSTROM_MEDIAN_BOND = (0.5, 3.0)
#: Bonds longer than this (nm) count as broken for the topology check.
_BROKEN_BOND_NM = 0.3
#: More than this fraction of broken bonds in a frame means the atom order does not match.
_MISMATCH_FRACTION = 0.25


def _topology_signature(top) -> list[tuple[str, str, str]]:
    return [
        (a.residue.name, a.name, a.element.symbol if a.element is not None else "X")
        for a in top.atoms
    ]


def coordinates_to_nm(name: str, coordinates: Any, system: "MolecularSystem") -> np.ndarray:
    """Convert coordinates to a float64 array in nm of shape (F, N, 3) and validate them.

    Raises
    ------
    TypeError
        Not an array, tensor, quantity or trajectory; or a quantity that is not a length.
    TopologyMismatchError
        Wrong number of atoms, an ``mdtraj.Trajectory`` with another topology, or bonded
        atoms far apart (atom order differs from the system's).
    ValueError
        Wrong shape, NaN/inf, or coordinates that look like Angstrom.
    """
    import mdtraj

    if isinstance(coordinates, mdtraj.Trajectory):
        if coordinates.n_atoms != system.n_atoms:
            raise TopologyMismatchError(
                f"{name}: expected a trajectory of {system.n_atoms} atoms ({system.name}), "
                f"got {coordinates.n_atoms}"
            )
        got, want = _topology_signature(coordinates.topology), _topology_signature(system.mdtraj_topology)
        if got != want:
            i = next(k for k, (g, w) in enumerate(zip(got, want)) if g != w)
            raise TopologyMismatchError(
                f"{name}: expected the topology of {system.name}; atom {i} is {got[i]} (residue, name, "
                f"element), expected {want[i]}"
            )
        x = np.asarray(coordinates.xyz, dtype=np.float64)
    elif unit.is_quantity(coordinates):
        if not coordinates.unit.is_compatible(NM):
            raise TypeError(f"{name}: expected a length quantity (nm), got unit {coordinates.unit}")
        x = np.asarray(coordinates.value_in_unit(NM), dtype=np.float64)
    else:
        if hasattr(coordinates, "detach"):
            coordinates = coordinates.detach().cpu().numpy()
        if not isinstance(coordinates, (np.ndarray, list, tuple)):
            raise TypeError(
                f"{name}: expected an array (nm), an openmm.unit.Quantity or an mdtraj.Trajectory, "
                f"got {type(coordinates).__name__}"
            )
        x = np.asarray(coordinates, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (F, {system.n_atoms}, 3) or ({system.n_atoms}, 3), got {x.shape}")
    if x.shape[1] != system.n_atoms:
        raise TopologyMismatchError(
            f"{name}: expected {system.n_atoms} atoms ({system.name}), got {x.shape[1]} "
            f"(shape {x.shape})"
        )
    finite = np.isfinite(x)
    if not finite.all():
        bad_frames = np.flatnonzero(~finite.all(axis=(1, 2)))
        raise ValueError(
            f"{name}: expected finite coordinates, got NaN/inf in {len(bad_frames)} of {len(x)} frames "
            f"(first: frame {int(bad_frames[0])})"
        )
    check_bond_lengths(name, x, system)
    return x


def check_bond_lengths(name: str, x_nm: np.ndarray, system: "MolecularSystem") -> None:
    """Raise if bonded distances say the coordinates are Angstrom or in another atom order."""
    bonds = system.bonds
    if len(bonds) == 0 or len(x_nm) == 0:
        return
    lengths = np.linalg.norm(x_nm[:, bonds[:, 0]] - x_nm[:, bonds[:, 1]], axis=-1)  # (F, B)
    median = np.median(lengths, axis=1)
    lo, hi = _ANGSTROM_MEDIAN_BOND
    angstrom = (median >= lo) & (median <= hi)
    if angstrom.any():
        f = int(np.flatnonzero(angstrom)[0])
        raise ValueError(
            f"{name}: expected nm, got coordinates that look like Angstrom (median bond length "
            f"{median[f]:.3f} in frame {f}; bonds are about 0.1-0.16 nm). Divide by 10 or pass an "
            "openmm.unit.Quantity"
        )
    broken = (lengths > _BROKEN_BOND_NM).mean(axis=1)
    bad = broken > _MISMATCH_FRACTION
    if bad.any():
        f = int(np.flatnonzero(bad)[0])
        raise TopologyMismatchError(
            f"{name}: expected coordinates in the atom order of {system.name}; in frame {f}, "
            f"{broken[f]:.0%} of the {bonds.shape[0]} topology bonds are longer than {_BROKEN_BOND_NM} nm"
        )


def _energy_context(system: "MolecularSystem") -> openmm.Context:
    ctx = getattr(system, "_energy_context", None)
    if ctx is None:
        ctx = system.create_context(openmm.VerletIntegrator(0.001))
        system._energy_context = ctx
    return ctx


def evaluate_energies(
    system: "MolecularSystem",
    coordinates: Any,
    forces: bool = False,
) -> unit.Quantity | tuple[unit.Quantity, unit.Quantity]:
    """Potential energy (and forces) of each frame.

    Parameters
    ----------
    system : MolecularSystem
    coordinates : ndarray, Tensor, Quantity or mdtraj.Trajectory, shape=(F, N, 3) or (N, 3)
        Positions; bare arrays are in nm (see the module docstring for the checks).
    forces : bool
        Also return forces.

    Returns
    -------
    energies : Quantity (kJ/mol), shape=(F,)
    forces : Quantity (kJ/mol/nm), shape=(F, N, 3)
        Only when ``forces=True``.
    """
    x = coordinates_to_nm("coordinates", coordinates, system)
    ctx = _energy_context(system)
    n = len(x)
    energies = np.empty(n, dtype=np.float64)
    out_forces = np.empty_like(x) if forces else None
    for i in range(n):
        ctx.setPositions(x[i])
        state = ctx.getState(getEnergy=True, getForces=forces)
        # OpenMM returns md_unit_system values (kJ/mol, kJ/mol/nm); skip unit arithmetic.
        energies[i] = state.getPotentialEnergy()._value
        if forces:
            out_forces[i] = state.getForces(asNumpy=True)._value
        system.n_energy_evaluations += 1
    if not np.isfinite(energies).all():
        from spacetime_md.errors import NonFiniteError

        bad = np.flatnonzero(~np.isfinite(energies))
        raise NonFiniteError(
            f"coordinates: OpenMM returned a non-finite energy for {len(bad)} of {n} frames (first: frame "
            f"{int(bad[0])}); overlapping or collapsed atoms? spacetime_md.molecular.system.checks.check_structure "
            "names the problem"
        )
    if forces:
        return energies * KJ_PER_MOL, out_forces * (KJ_PER_MOL / NM)
    return energies * KJ_PER_MOL
