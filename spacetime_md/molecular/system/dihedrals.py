"""Vectorised dihedral angles (numpy or torch) with mdtraj's sign convention.

Coordinates are in nm (any length unit works: angles are scale-free), shape ``(F, N, 3)``
or ``(N, 3)``; angles are radians in ``(-pi, pi]``. Torch inputs stay torch tensors (and
differentiable); everything else is converted to a float64 numpy array.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = [
    "ALANINE_DIPEPTIDE_PHI",
    "ALANINE_DIPEPTIDE_PSI",
    "compute_dihedrals",
    "compute_phi_psi",
    "wrap_angle",
]

# Re-exported for compatibility; they belong to the alanine-dipeptide preset.
from spacetime_md.molecular.system.presets import ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI  # noqa: E402


def _is_torch(x: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(x, torch.Tensor)


def compute_dihedrals(coordinates: Any, indices: Sequence[Sequence[int]]) -> Any:
    """Dihedral angles of quadruplets of atoms.

    Parameters
    ----------
    coordinates : ndarray or Tensor, shape=(F, N, 3) or (N, 3)
        Positions (nm).
    indices : array-like of int, shape=(K, 4)
        Atom quadruplets (zero-based).

    Returns
    -------
    angles : ndarray or Tensor, shape=(F, K) (or (K,) for a single frame)
        Radians in ``(-pi, pi]``; same convention as ``mdtraj.compute_dihedrals``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[1] != 4:
        raise ValueError(f"indices: expected shape (K, 4), got {idx.shape}")
    torch_in = _is_torch(coordinates)
    if torch_in:
        import torch

        x = coordinates

        def cross(a, b):
            return torch.linalg.cross(a, b, dim=-1)

        atan2 = torch.atan2
    else:
        x = np.asarray(coordinates, dtype=np.float64)
        cross, atan2 = np.cross, np.arctan2
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"coordinates: expected shape (F, N, 3) or (N, 3), got {tuple(coordinates.shape)}")
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[1]):
        raise ValueError(
            f"indices: expected atom indices in [0, {x.shape[1]}), got range [{idx.min()}, {idx.max()}]"
        )
    if torch_in:
        idx_t = torch.as_tensor(idx, device=x.device)
        p0, p1, p2, p3 = (x[:, idx_t[:, k]] for k in range(4))
    else:
        p0, p1, p2, p3 = (x[:, idx[:, k]] for k in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1 = cross(b1, b2)
    n2 = cross(b2, b3)
    b2_len = ((b2 * b2).sum(-1)) ** 0.5
    # atan2(|b2| b1 . n2, n1 . n2) is the IUPAC / mdtraj convention.
    y = (cross(n1, n2) * b2).sum(-1) / b2_len
    angles = atan2(y, (n1 * n2).sum(-1))
    return angles[0] if single else angles


def compute_phi_psi(coordinates: Any, phi: Sequence[int], psi: Sequence[int]) -> Any:
    """Backbone (phi, psi) in radians of one residue.

    For any molecule prefer :attr:`MolecularSystem.cvs` (every residue's phi/psi).

    Parameters
    ----------
    coordinates : ndarray or Tensor, shape=(F, N, 3) or (N, 3)
        Positions (nm).
    phi, psi : sequence of 4 int
        Atom quadruplets (zero-based), e.g. ``system.cvs["phi 2"].atoms``.

    Returns
    -------
    ndarray or Tensor, shape=(F, 2) (or (2,) for a single frame)
        ``[..., 0]`` is phi, ``[..., 1]`` is psi, radians in ``(-pi, pi]``.
    """
    return compute_dihedrals(coordinates, [tuple(phi), tuple(psi)])


def wrap_angle(angle: Any) -> Any:
    """Wrap radians into ``[-pi, pi)`` (numpy or torch)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi
