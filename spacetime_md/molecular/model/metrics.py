"""Distribution metrics between two sets of structures: (phi, psi) and CV histograms,
Jensen-Shannon divergences, the C7ax population and bond-length errors.

Units: nm in, radians for angles; bond-length errors in Angstrom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.cvs import CollectiveVariables

__all__ = [
    "phi_psi",
    "ramachandran_histogram",
    "cv_histogram",
    "jensen_shannon",
    "ramachandran_jsd",
    "ramachandran_jsd_by_residue",
    "cv_jsd",
    "c7ax_population",
    "bond_length_errors",
]


def _preset_phi_psi_atoms() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The alanine-dipeptide preset's (phi 2, psi 2) atoms (legacy defaults, see :mod:`.presets`)."""
    from spacetime_md.molecular.system.presets import ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI

    return ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI


def phi_psi(
    xyz: np.ndarray, phi_atoms: Sequence[int] | None = None, psi_atoms: Sequence[int] | None = None
) -> np.ndarray:
    """``(n_frames, 2)`` dihedrals in radians of two atom quadruples from ``(n_frames, N, 3)``.

    Legacy helper for one (phi, psi) pair; the default atoms are the alanine-dipeptide preset's
    (:mod:`.presets`). Any molecule: ``system.compute_cvs`` and
    :meth:`~spacetime_md.molecular.system.cvs.CollectiveVariables.ramachandran_pairs`.
    """
    from spacetime_md.molecular.system.dihedrals import compute_dihedrals

    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3), got {xyz.shape}")
    if phi_atoms is None or psi_atoms is None:
        default_phi, default_psi = _preset_phi_psi_atoms()
        phi_atoms = default_phi if phi_atoms is None else phi_atoms
        psi_atoms = default_psi if psi_atoms is None else psi_atoms
    return np.asarray(compute_dihedrals(xyz, [tuple(phi_atoms), tuple(psi_atoms)]))


def ramachandran_histogram(angles: np.ndarray, bins: int = 36) -> np.ndarray:
    """Normalised ``(bins, bins)`` histogram of ``(phi, psi)`` radians over ``[-pi, pi)^2``."""
    angles = np.asarray(angles)
    if angles.ndim != 2 or angles.shape[1] != 2:
        raise ValueError(f"angles: expected shape (n_frames, 2), got {angles.shape}")
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    wrapped = (angles + np.pi) % (2 * np.pi) - np.pi
    hist, _, _ = np.histogram2d(wrapped[:, 0], wrapped[:, 1], bins=[edges, edges])
    total = hist.sum()
    if total == 0:
        raise ValueError("angles: expected at least one frame, got 0")
    return hist / total


def _cv_edges(reference: np.ndarray, periodic: bool, bins: int) -> np.ndarray:
    """Bin edges of one CV: ``[-pi, pi)`` for an angle; else the reference's range (10 % margin)
    between two overflow bins, so mass the reference never visits still counts."""
    if periodic:
        return np.linspace(-np.pi, np.pi, bins + 1)
    lo, hi = float(np.min(reference)), float(np.max(reference))
    margin = 0.1 * (hi - lo) if hi > lo else max(1e-3, 1e-3 * abs(lo))
    inner = np.linspace(lo - margin, hi + margin, bins + 1)
    return np.concatenate([[-np.inf], inner, [np.inf]])


def cv_histogram(values: np.ndarray, edges: Sequence[np.ndarray], periodic: Sequence[bool]) -> np.ndarray:
    """Normalised histogram of CV values ``(n_frames, K)`` (K = 1 or 2) on the given edges.

    Periodic columns (radians) are wrapped into ``[-pi, pi)`` first.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] not in (1, 2) or v.shape[1] != len(edges):
        raise ValueError(f"values: expected shape (n_frames, {len(edges)}) with 1 or 2 columns, got {v.shape}")
    v = v.copy()
    for k, p in enumerate(periodic):
        if p:
            v[:, k] = (v[:, k] + np.pi) % (2 * np.pi) - np.pi
    hist, _ = np.histogramdd(v, bins=list(edges))
    total = hist.sum()
    if total == 0:
        raise ValueError("values: expected at least one frame, got 0")
    return hist / total


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) between two histograms of equal shape."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"q: expected the shape of p {p.shape}, got {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def ramachandran_jsd(xyz_a: np.ndarray, xyz_b: np.ndarray, bins: int = 36) -> float:
    """JSD (nats) between the Ramachandran histograms of two coordinate sets (legacy: the
    alanine-dipeptide preset's one pair; any molecule: :func:`ramachandran_jsd_by_residue`)."""
    return jensen_shannon(ramachandran_histogram(phi_psi(xyz_a), bins), ramachandran_histogram(phi_psi(xyz_b), bins))


def ramachandran_jsd_by_residue(
    values_a: np.ndarray, values_b: np.ndarray, cvs: "CollectiveVariables", bins: int = 36
) -> list[dict[str, Any]]:
    """Per-residue Ramachandran JSD (nats) between two sets of CV values.

    Parameters
    ----------
    values_a, values_b : ndarray, shape=(F, K)
        CV values (radians / nm) in the order of ``cvs``.
    cvs : CollectiveVariables
    bins : int

    Returns
    -------
    list of dict
        ``{"residue", "cvs": [phi name, psi name], "jsd"}`` for every residue of
        :meth:`~spacetime_md.molecular.system.cvs.CollectiveVariables.ramachandran_pairs`.
    """
    out = []
    for residue, i, j in cvs.ramachandran_pairs():
        jsd = jensen_shannon(ramachandran_histogram(values_a[:, [i, j]], bins),
                             ramachandran_histogram(values_b[:, [i, j]], bins))
        out.append({"residue": int(residue), "cvs": [cvs[i].name, cvs[j].name], "jsd": jsd})
    return out


def cv_jsd(
    values_a: np.ndarray,
    values_b: np.ndarray,
    cvs: "CollectiveVariables",
    columns: Sequence[int] = (0, 1),
    bins: int = 36,
    reference: np.ndarray | None = None,
) -> float:
    """JSD (nats) between histograms of some CVs (one or two columns) of two value sets.

    Angles are binned on ``[-pi, pi)``, other CVs on the range of ``reference`` (default
    ``values_b``) with two overflow bins (see :func:`cv_histogram`).
    """
    columns = [c for c in columns if c < len(cvs)]
    if not columns:
        raise ValueError(f"columns: expected at least one CV column of {len(cvs)}, got none")
    ref = values_b if reference is None else reference
    periodic = [bool(cvs.periodic[c]) for c in columns]
    edges = [_cv_edges(ref[:, c], p, bins) for c, p in zip(columns, periodic)]
    return jensen_shannon(cv_histogram(values_a[:, columns], edges, periodic),
                          cv_histogram(values_b[:, columns], edges, periodic))


def c7ax_population(xyz: np.ndarray, phi_atoms: Sequence[int] | None = None) -> float:
    """Fraction of frames with ``phi > 0`` (C7ax side of the Ramachandran plane; legacy default:
    the alanine-dipeptide preset's phi)."""
    from spacetime_md.molecular.system.dihedrals import compute_dihedrals

    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3), got {xyz.shape}")
    atoms = _preset_phi_psi_atoms()[0] if phi_atoms is None else tuple(phi_atoms)
    return float(np.mean(np.asarray(compute_dihedrals(xyz, [atoms]))[:, 0] > 0))


def bond_length_errors(xyz: np.ndarray, reference: np.ndarray, bonds: Sequence[Sequence[int]]) -> dict[str, float]:
    """Bond-length statistics of ``xyz`` against ``reference`` (both nm), reported in Angstrom.

    Returns
    -------
    dict
        ``mean_abs_error`` / ``max_abs_error``: over bonds, ``|<d>_xyz - <d>_ref|``;
        ``rms_deviation``: RMS over frames and bonds of ``d_xyz - <d>_ref``;
        ``reference_rms_deviation``: the same for the reference itself (thermal spread).
    """
    bonds = np.asarray(bonds, dtype=np.int64)
    if bonds.ndim != 2 or bonds.shape[1] != 2 or len(bonds) == 0:
        raise ValueError(f"bonds: expected shape (n_bonds, 2), got {bonds.shape}")

    def lengths(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)

    d, d_ref = lengths(xyz), lengths(reference)
    ref_mean = d_ref.mean(0)
    err = np.abs(d.mean(0) - ref_mean)
    return {
        "mean_abs_error": float(err.mean() * 10),
        "max_abs_error": float(err.max() * 10),
        "rms_deviation": float(np.sqrt(np.mean((d - ref_mean) ** 2)) * 10),
        "reference_rms_deviation": float(np.sqrt(np.mean((d_ref - ref_mean) ** 2)) * 10),
    }
