"""Chirality of a tetrahedral centre from a signed volume.

For the alanine C-alpha with neighbours N, C (carbonyl) and C-beta, the signed volume

    V = (x_N - x_CA) . ((x_C - x_CA) x (x_CB - x_CA))

is positive for L-alanine and negative for D-alanine (equivalently, the "CORN" rule: looking
from H-alpha onto C-alpha, CO -> R -> N runs clockwise for L). A reflection flips the sign.
Coordinates are in nm (any length unit works: only the sign is used).

Alanine dipeptide (ACE-ALA-NME, 22 atoms, zero-based): CA = 8, N = 6, C = 14, CB = 10.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

__all__ = [
    "ALANINE_DIPEPTIDE_CHIRAL_ATOMS",
    "chiral_atoms_from_topology",
    "compute_signed_volume",
    "compute_chirality",
    "fraction_l",
]

#: ``(CA, N, C, CB)`` indices of alanine dipeptide in the usual atom order.
ALANINE_DIPEPTIDE_CHIRAL_ATOMS: tuple[int, int, int, int] = (8, 6, 14, 10)


def chiral_atoms_from_topology(topology: "mdtraj.Topology", residue: int | None = None) -> tuple[int, int, int, int]:
    """``(CA, N, C, CB)`` atom indices of an amino-acid residue found by atom name.

    Parameters
    ----------
    topology : mdtraj.Topology
    residue : int, optional
        Residue index; default the first residue that has all of CA, N, C, CB.
    """
    for res in topology.residues:
        if residue is not None and res.index != residue:
            continue
        names = {atom.name: atom.index for atom in res.atoms}
        if all(k in names for k in ("CA", "N", "C", "CB")):
            return names["CA"], names["N"], names["C"], names["CB"]
    where = "any residue" if residue is None else f"residue {residue}"
    raise ValueError(f"topology: expected atoms CA, N, C and CB in {where}, got none")


def compute_signed_volume(
    xyz: np.ndarray | torch.Tensor,
    atoms: tuple[int, int, int, int] = ALANINE_DIPEPTIDE_CHIRAL_ATOMS,
) -> np.ndarray:
    """Signed volume ``(N-CA) . ((C-CA) x (CB-CA))`` per frame.

    Parameters
    ----------
    xyz : array, shape=(n_frames, N, 3) or (n_frames, 3N)
    atoms : (CA, N, C, CB) indices

    Returns
    -------
    ndarray, shape=(n_frames,)
        In the cube of the input's length unit; > 0 for L.
    """
    if isinstance(xyz, torch.Tensor):
        xyz = xyz.detach().cpu().numpy()
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 2 and xyz.shape[1] % 3 == 0:
        xyz = xyz.reshape(xyz.shape[0], -1, 3)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3) or (n_frames, 3N), got {xyz.shape}")
    if len(atoms) != 4:
        raise ValueError(f"atoms: expected 4 indices (CA, N, C, CB), got {len(atoms)}")
    if max(atoms) >= xyz.shape[1] or min(atoms) < 0:
        raise ValueError(f"atoms: expected indices in [0, {xyz.shape[1]}), got {tuple(atoms)}")
    ca, n, c, cb = (xyz[:, k] for k in atoms)
    return np.einsum("fi,fi->f", n - ca, np.cross(c - ca, cb - ca))


def compute_chirality(
    xyz: np.ndarray | torch.Tensor,
    atoms: tuple[int, int, int, int] = ALANINE_DIPEPTIDE_CHIRAL_ATOMS,
) -> np.ndarray:
    """Per-frame label: ``+1`` for L, ``-1`` for D, ``0`` for an exactly planar centre."""
    return np.sign(compute_signed_volume(xyz, atoms)).astype(np.int64)


def fraction_l(
    xyz: np.ndarray | torch.Tensor,
    atoms: tuple[int, int, int, int] = ALANINE_DIPEPTIDE_CHIRAL_ATOMS,
) -> float:
    """Fraction of frames whose chiral centre is L."""
    labels = compute_chirality(xyz, atoms)
    if labels.size == 0:
        raise ValueError("xyz: expected at least one frame, got 0")
    return float(np.mean(labels > 0))
