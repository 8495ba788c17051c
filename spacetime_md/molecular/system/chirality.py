"""Chirality of tetrahedral centres from signed volumes, and the chiral centres of a topology.

A centre is four atoms ``(X, a, b, c)``: the centre ``X`` and three of its bonded neighbours.
Its signed volume

    V = (x_a - x_X) . ((x_b - x_X) x (x_c - x_X))

changes sign under a reflection and under no rotation or translation. For the C-alpha of an
amino acid the atoms are ``(CA, N, C, CB)`` and ``V > 0`` is L, ``V < 0`` is D (equivalently
the "CORN" rule: looking from H-alpha onto C-alpha, CO -> R -> N runs clockwise for L).
Coordinates are in nm (any length unit works: only the sign is used).

:func:`chiral_centres_from_topology` finds every stereocentre of a molecule from its bond graph
(an atom with four bonded neighbours, no two of which are topologically equivalent): the
C-alpha of every amino acid except glycine (as ``(CA, N, C, CB)``), and other centres such as
the C-beta of threonine and isoleucine (with their neighbours in atom order). Glycine and
N-methylacetamide have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

__all__ = [
    "ChiralCentre",
    "chiral_centres_from_topology",
    "chiral_atoms_from_topology",
    "compute_signed_volume",
    "compute_chirality",
    "fraction_l",
    "NO_CHIRAL_CENTRE",
]

#: Why chirality numbers are n/a for a molecule without stereocentres.
NO_CHIRAL_CENTRE = "no chiral centre in the topology"


@dataclass(frozen=True)
class ChiralCentre:
    """One tetrahedral stereocentre.

    Attributes
    ----------
    name : str
        ``"CA ALA2"`` (atom name, residue name and number as in the PDB).
    atoms : tuple of 4 int
        ``(centre, a, b, c)`` for :func:`compute_signed_volume`; ``(CA, N, C, CB)`` for a
        C-alpha.
    residue : int or None
        Residue number (PDB ``resSeq``).
    alpha : bool
        An amino-acid C-alpha: a positive volume is L, a negative one D.
    """

    name: str
    atoms: tuple[int, int, int, int]
    residue: int | None = None
    alpha: bool = False

    def label(self, sign: int) -> str:
        """Handedness label of a sign: ``"L"``/``"D"`` for a C-alpha, ``"+"``/``"-"`` otherwise."""
        if sign == 0:
            return "planar"
        if self.alpha:
            return "L" if sign > 0 else "D"
        return "+" if sign > 0 else "-"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "atoms": list(self.atoms), "residue": self.residue, "alpha": self.alpha}


def _graph(topology: Any) -> tuple[list[str], list[list[int]]]:
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    elements = [a.element.symbol if a.element is not None else a.name for a in topology.atoms]
    neighbours: list[list[int]] = [[] for _ in elements]
    for bond in topology.bonds:
        i, j = bond[0].index, bond[1].index
        neighbours[i].append(j)
        neighbours[j].append(i)
    return elements, neighbours


def _atom_classes(elements: Sequence[str], neighbours: Sequence[Sequence[int]]) -> list[int]:
    """Topological equivalence classes (colour refinement / 1-WL on the bond graph, elements as
    initial colours): atoms in different classes are never equivalent."""
    colours = _relabel([(e,) for e in elements])
    for _ in range(len(elements)):
        new = _relabel([(colours[i], tuple(sorted(colours[j] for j in neighbours[i]))) for i in range(len(elements))])
        if len(set(new)) == len(set(colours)):
            return new
        colours = new
    return colours


def _relabel(keys: Sequence[Any]) -> list[int]:
    table = {k: n for n, k in enumerate(sorted(set(keys)))}
    return [table[k] for k in keys]


def chiral_centres_from_topology(topology: Any) -> tuple[ChiralCentre, ...]:
    """Every tetrahedral stereocentre of a molecule, in atom order (empty if there is none).

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology
        With bonds (a PDB's CONECT records or standard residues).

    Returns
    -------
    tuple of ChiralCentre
        Amino-acid C-alphas as ``(CA, N, C, CB)`` (L is positive); any other atom with four
        topologically distinct neighbours as ``(centre, n1, n2, n3)``, its three
        lowest-index neighbours.
    """
    import mdtraj

    top = topology if isinstance(topology, mdtraj.Topology) else mdtraj.Topology.from_openmm(topology)
    elements, neighbours = _graph(top)
    classes = _atom_classes(elements, neighbours)
    out = []
    for atom in top.atoms:
        nb = sorted(neighbours[atom.index])
        if len(nb) != 4 or len({classes[j] for j in nb}) != 4:
            continue
        res = atom.residue
        names = {a.name: a.index for a in res.atoms}
        label = f"{atom.name} {res.name}{res.resSeq}"
        if atom.name == "CA" and all(k in names and names[k] in nb for k in ("N", "C", "CB")):
            quad = (atom.index, names["N"], names["C"], names["CB"])
            out.append(ChiralCentre(label, quad, int(res.resSeq), alpha=True))
        else:
            out.append(ChiralCentre(label, (atom.index, nb[0], nb[1], nb[2]), int(res.resSeq), alpha=False))
    return tuple(out)


def chiral_atoms_from_topology(topology: "mdtraj.Topology", residue: int | None = None) -> tuple[int, int, int, int]:
    """``(CA, N, C, CB)`` atom indices of one amino-acid residue found by atom name.

    Legacy single-centre helper; :func:`chiral_centres_from_topology` finds every centre.

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


def compute_signed_volume(xyz: np.ndarray | torch.Tensor, atoms: Sequence[int]) -> np.ndarray:
    """Signed volume ``(a - X) . ((b - X) x (c - X))`` per frame for ``atoms = (X, a, b, c)``.

    Parameters
    ----------
    xyz : array, shape=(n_frames, N, 3) or (n_frames, 3N)
    atoms : (X, a, b, c) indices, e.g. ``(CA, N, C, CB)`` of an amino acid

    Returns
    -------
    ndarray, shape=(n_frames,)
        In the cube of the input's length unit; > 0 for an L C-alpha.
    """
    if isinstance(xyz, torch.Tensor):
        xyz = xyz.detach().cpu().numpy()
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 2 and xyz.shape[1] % 3 == 0:
        xyz = xyz.reshape(xyz.shape[0], -1, 3)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3) or (n_frames, 3N), got {xyz.shape}")
    atoms = tuple(int(a) for a in atoms)
    if len(atoms) != 4:
        raise ValueError(f"atoms: expected 4 indices (centre and three neighbours), got {len(atoms)}")
    if max(atoms) >= xyz.shape[1] or min(atoms) < 0:
        raise ValueError(f"atoms: expected indices in [0, {xyz.shape[1]}), got {atoms}")
    x0, a, b, c = (xyz[:, k] for k in atoms)
    return np.einsum("fi,fi->f", a - x0, np.cross(b - x0, c - x0))


def compute_chirality(xyz: np.ndarray | torch.Tensor, atoms: Sequence[int]) -> np.ndarray:
    """Per-frame sign of the signed volume: ``+1`` (L for a C-alpha), ``-1`` (D), ``0`` if planar."""
    return np.sign(compute_signed_volume(xyz, atoms)).astype(np.int64)


def fraction_l(xyz: np.ndarray | torch.Tensor, atoms: Sequence[int]) -> float:
    """Fraction of frames whose centre ``atoms`` has a positive signed volume (L for a C-alpha)."""
    labels = compute_chirality(xyz, atoms)
    if labels.size == 0:
        raise ValueError("xyz: expected at least one frame, got 0")
    return float(np.mean(labels > 0))
