"""Collective variables (CVs): torsions, distances and RMSD to a reference structure.

A :class:`CollectiveVariables` set maps coordinates ``(F, N, 3)`` (nm) to CV values ``(F, K)``:
radians for torsions (periodic, in ``(-pi, pi]``), nm for distances and RMSDs. Every
state-based number of the package (target hit, states, transition region, relaxed barrier,
committor, evaluation, plots) goes through one such set, so any molecule works.

Defaults (:func:`default_cvs`): every backbone (phi, psi) of a peptide, named as in mdtraj's
residue numbering of the PDB (``"phi 2"``, ``"psi 2"`` for residue 2); for a molecule without a
backbone, heavy-atom RMSDs to the path endpoints (added by the path code, which knows them).

File format (JSON, degrees are never used for CV values inside; see :func:`load_cvs`)::

    {"cvs": [
        {"type": "torsion", "name": "phi 2"},                  # by mdtraj name
        {"type": "torsion", "name": "chi1", "atoms": [4, 6, 8, 10]},
        {"type": "distance", "name": "d_OH", "atoms": [5, 17]},
        {"type": "rmsd", "name": "rmsd_folded", "reference": "folded.pdb", "atoms": "heavy"}
    ]}

Reference-structure paths are relative to the JSON file. Units inside: nm, radians.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "CollectiveVariable",
    "Torsion",
    "Distance",
    "RMSD",
    "CollectiveVariables",
    "backbone_torsions",
    "default_cvs",
    "load_cvs",
    "parse_cv",
    "periodic_difference",
]

_NAMED_TORSION = re.compile(r"^\s*(phi|psi|omega|chi1|chi2)\s*[_ ]?\s*(-?\d+)\s*$", re.IGNORECASE)


def periodic_difference(a: Any, b: Any) -> np.ndarray:
    """``a - b`` wrapped into ``[-pi, pi)`` (radians), broadcasting."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return (d + np.pi) % (2 * np.pi) - np.pi


def _dihedral(x: np.ndarray, atoms: Sequence[int]) -> np.ndarray:
    from spacetime_md.molecular.system.dihedrals import compute_dihedrals

    return np.asarray(compute_dihedrals(x, [tuple(atoms)]))[:, 0]


@dataclass(frozen=True)
class CollectiveVariable:
    """Base class: a named scalar function of the coordinates.

    Attributes
    ----------
    name : str
    periodic : bool
        Values are angles in ``(-pi, pi]`` (differences are wrapped).
    unit : str
        ``"rad"`` or ``"nm"``.
    """

    name: str

    periodic = False
    unit = "nm"
    kind = ""

    def compute(self, coordinates: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Values, shape=(F,), of coordinates (nm), shape=(F, N, 3)."""
        raise NotImplementedError

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_atoms(self, n_atoms: int) -> None:
        atoms = np.asarray(getattr(self, "atoms", ()), dtype=np.int64)
        if atoms.size and (atoms.min() < 0 or atoms.max() >= n_atoms):
            raise ValueError(
                f"cv {self.name!r}: expected atom indices in [0, {n_atoms}), got {atoms.tolist()}"
            )


@dataclass(frozen=True)
class Torsion(CollectiveVariable):
    """Dihedral angle of four atoms (radians, mdtraj's sign convention); periodic.

    ``residue`` (the residue's number in the PDB, as mdtraj numbers it) groups a backbone
    (phi, psi) pair for per-residue discs and Ramachandran panels; ``None`` for other torsions.
    """

    atoms: tuple[int, int, int, int] = (0, 1, 2, 3)
    residue: int | None = None
    periodic = True
    unit = "rad"
    kind = "torsion"

    def __post_init__(self) -> None:
        atoms = tuple(int(a) for a in self.atoms)
        if len(atoms) != 4 or len(set(atoms)) != 4:
            raise ValueError(f"cv {self.name!r}: expected 4 distinct atom indices, got {list(self.atoms)}")
        object.__setattr__(self, "atoms", atoms)

    def compute(self, coordinates: np.ndarray) -> np.ndarray:
        return _dihedral(coordinates, self.atoms)

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "torsion", "name": self.name, "atoms": list(self.atoms)}
        if self.residue is not None:
            out["residue"] = self.residue
        return out


@dataclass(frozen=True)
class Distance(CollectiveVariable):
    """Distance between two atoms (nm)."""

    atoms: tuple[int, int] = (0, 1)
    kind = "distance"

    def __post_init__(self) -> None:
        atoms = tuple(int(a) for a in self.atoms)
        if len(atoms) != 2 or atoms[0] == atoms[1]:
            raise ValueError(f"cv {self.name!r}: expected 2 distinct atom indices, got {list(self.atoms)}")
        object.__setattr__(self, "atoms", atoms)

    def compute(self, coordinates: np.ndarray) -> np.ndarray:
        x = np.asarray(coordinates, dtype=np.float64)
        return np.linalg.norm(x[:, self.atoms[0]] - x[:, self.atoms[1]], axis=-1)

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        return {"type": "distance", "name": self.name, "atoms": list(self.atoms)}


@dataclass(frozen=True, eq=False)
class RMSD(CollectiveVariable):
    """RMSD (nm) to a reference structure after optimal superposition (Kabsch) on ``atoms``.

    ``reference`` is ``(N, 3)`` in nm; ``atoms`` the fitted and measured atoms (default: heavy
    atoms, chosen by :meth:`CollectiveVariables.from_spec`). ``source`` records the file the
    reference came from (for configs).
    """

    reference: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    atoms: tuple[int, ...] = ()
    source: str | None = None
    kind = "rmsd"

    def __post_init__(self) -> None:
        ref = np.asarray(self.reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != 3 or not np.isfinite(ref).all():
            raise ValueError(f"cv {self.name!r}: expected a finite reference of shape (N, 3), got {ref.shape}")
        object.__setattr__(self, "reference", ref)
        atoms = tuple(int(a) for a in self.atoms) or tuple(range(len(ref)))
        if len(atoms) < 3:
            raise ValueError(f"cv {self.name!r}: expected at least 3 atoms to fit, got {len(atoms)}")
        object.__setattr__(self, "atoms", atoms)

    def compute(self, coordinates: np.ndarray) -> np.ndarray:
        from spacetime_md.molecular.paths.structures import kabsch_rmsd

        x = np.asarray(coordinates, dtype=np.float64)
        if x.shape[1] != len(self.reference):
            raise ValueError(
                f"cv {self.name!r}: expected coordinates of {len(self.reference)} atoms, got {x.shape[1]}"
            )
        return np.asarray(kabsch_rmsd(x, self.reference, self.atoms))

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "rmsd", "name": self.name, "atoms": list(self.atoms)}
        if self.source is not None:
            out["reference"] = self.source
        else:
            out["reference_nm"] = self.reference.tolist()
        return out


class CollectiveVariables:
    """An ordered set of collective variables.

    Parameters
    ----------
    cvs : sequence of CollectiveVariable
        Names must be unique.

    Examples
    --------
    >>> cvs = CollectiveVariables.from_spec(["phi 2", "psi 2"], system)   # doctest: +SKIP
    >>> values = cvs.compute(frames_nm)    # (F, 2) radians
    """

    def __init__(self, cvs: Iterable[CollectiveVariable] = ()) -> None:
        self.cvs: tuple[CollectiveVariable, ...] = tuple(cvs)
        names = [c.name for c in self.cvs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"cvs: expected unique names, got duplicates {sorted(dup)}")
        for c in self.cvs:
            if not isinstance(c, CollectiveVariable):
                raise TypeError(f"cvs: expected CollectiveVariable objects, got {type(c).__name__}")

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self.cvs)

    def __iter__(self):
        return iter(self.cvs)

    def __getitem__(self, key: int | str) -> CollectiveVariable:
        if isinstance(key, str):
            return self.cvs[self.index(key)]
        return self.cvs[key]

    def __repr__(self) -> str:
        return f"CollectiveVariables({[c.name for c in self.cvs]})"

    def __add__(self, other: "CollectiveVariables | Iterable[CollectiveVariable]") -> "CollectiveVariables":
        return CollectiveVariables((*self.cvs, *other))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cvs)

    @property
    def periodic(self) -> np.ndarray:
        """Boolean mask, shape=(K,), of periodic (angle) CVs."""
        return np.array([c.periodic for c in self.cvs], dtype=bool)

    @property
    def torsions(self) -> tuple[Torsion, ...]:
        return tuple(c for c in self.cvs if isinstance(c, Torsion))

    def index(self, name: str) -> int:
        """Position of the CV called ``name``.

        ``"phi"``/``"psi"`` without a residue number resolve to the only backbone torsion of
        that kind when the set has exactly one (so single-residue state files stay short).
        """
        key = " ".join(str(name).split()).lower()
        for k, c in enumerate(self.cvs):
            if " ".join(c.name.split()).lower() == key:
                return k
        if key in ("phi", "psi"):
            matches = [k for k, c in enumerate(self.cvs) if c.name.lower().startswith(key + " ")]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise KeyError(
                    f"cv: {name!r} is ambiguous for this molecule, expected one of "
                    f"{[self.cvs[k].name for k in matches]}"
                )
        raise KeyError(f"cv: expected one of {list(self.names)}, got {name!r}")

    def residue_groups(self) -> list[tuple[int, ...]]:
        """CV index groups for per-residue regions: each residue's backbone torsions together,
        every other CV alone."""
        groups: dict[Any, list[int]] = {}
        order: list[Any] = []
        for k, c in enumerate(self.cvs):
            key = ("res", c.residue) if isinstance(c, Torsion) and c.residue is not None else ("cv", k)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(k)
        return [tuple(groups[k]) for k in order]

    def ramachandran_pairs(self) -> list[tuple[int, int, int]]:
        """``(residue, phi_index, psi_index)`` for every residue with both backbone torsions."""
        out = []
        for group in self.residue_groups():
            names = [self.cvs[k].name.split()[0].lower() for k in group]
            if "phi" in names and "psi" in names:
                res = self.cvs[group[0]].residue
                out.append((int(res), group[names.index("phi")], group[names.index("psi")]))
        return out

    # ------------------------------------------------------------------ evaluation
    def compute(self, coordinates: Any) -> np.ndarray:
        """CV values, shape=(F, K) (or (K,) for one frame), of coordinates (nm).

        Torsions in radians ``(-pi, pi]``, distances and RMSDs in nm.
        """
        import openmm.unit as unit

        if unit.is_quantity(coordinates):
            coordinates = coordinates.value_in_unit(unit.nanometer)
        if hasattr(coordinates, "detach"):
            coordinates = coordinates.detach().cpu().numpy()
        x = np.asarray(coordinates, dtype=np.float64)
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"coordinates: expected shape (F, N, 3) or (N, 3), got {x.shape}")
        if not self.cvs:
            out = np.zeros((len(x), 0))
        else:
            torsions = [k for k, c in enumerate(self.cvs) if isinstance(c, Torsion)]
            out = np.empty((len(x), len(self.cvs)))
            if torsions:
                from spacetime_md.molecular.system.dihedrals import compute_dihedrals

                out[:, torsions] = np.asarray(compute_dihedrals(x, [self.cvs[k].atoms for k in torsions]))
            for k, c in enumerate(self.cvs):
                if not isinstance(c, Torsion):
                    out[:, k] = c.compute(x)
        return out[0] if single else out

    def difference(self, a: Any, b: Any) -> np.ndarray:
        """``a - b`` per CV with periodic CVs wrapped into ``[-pi, pi)``; broadcasting over ``(..., K)``."""
        d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        mask = self.periodic
        if mask.any():
            d = d.copy()
            d[..., mask] = (d[..., mask] + np.pi) % (2 * np.pi) - np.pi
        return d

    def unwrap(self, values: np.ndarray) -> np.ndarray:
        """Unwrap periodic CVs along the frame axis (axis -2) so a route is continuous."""
        v = np.array(values, dtype=np.float64)
        mask = self.periodic
        if mask.any():
            v[..., mask] = np.unwrap(v[..., mask], axis=-2)
        return v

    def check(self, n_atoms: int) -> None:
        """Raise ``ValueError`` unless every CV's atoms exist in an ``n_atoms`` molecule."""
        for c in self.cvs:
            c.check_atoms(n_atoms)
            if isinstance(c, RMSD) and len(c.reference) != n_atoms:
                raise ValueError(
                    f"cv {c.name!r}: expected a reference structure of {n_atoms} atoms, got {len(c.reference)}"
                )

    # ------------------------------------------------------------------ (de)serialisation
    def to_list(self, base: Path | None = None) -> list[dict[str, Any]]:
        return [c.to_dict(base) for c in self.cvs]

    def to_json(self, path: str | Path) -> None:
        from spacetime_md._atomic import write_json_atomic

        write_json_atomic(Path(path), {"cvs": self.to_list()})

    @classmethod
    def from_spec(
        cls,
        spec: Sequence[str | dict[str, Any] | CollectiveVariable],
        system: "MolecularSystem",
        base: str | Path | None = None,
    ) -> "CollectiveVariables":
        """CVs from names (``"phi 2"``), dictionaries (the file format) or CV objects."""
        return cls(parse_cv(item, system, base) for item in spec)


def backbone_torsions(topology: Any, positions_nm: np.ndarray | None = None) -> list[Torsion]:
    """Every backbone phi and psi of a peptide, ordered by residue, named ``"phi <resSeq>"``.

    ``topology`` is an mdtraj or OpenMM topology. Residues are numbered as in the PDB (mdtraj's
    ``residue.resSeq``), so alanine dipeptide ACE1-ALA2-NME3 has ``"phi 2"`` and ``"psi 2"``.
    """
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    x = np.zeros((1, topology.n_atoms, 3), dtype=np.float32) if positions_nm is None else \
        np.asarray(positions_nm, dtype=np.float32).reshape(1, topology.n_atoms, 3)
    traj = mdtraj.Trajectory(x, topology)
    out: list[tuple[int, int, Torsion]] = []
    for kind, fn, centre in (("phi", mdtraj.compute_phi, 2), ("psi", mdtraj.compute_psi, 1)):
        quads = fn(traj, periodic=False)[0]
        for quad in quads:
            res = topology.atom(int(quad[centre])).residue
            order = 0 if kind == "phi" else 1
            out.append((res.index, order, Torsion(f"{kind} {res.resSeq}", tuple(int(a) for a in quad),
                                                  residue=int(res.resSeq))))
    out.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in out]


def _named_torsion(name: str, system: "MolecularSystem") -> Torsion:
    import mdtraj

    m = _NAMED_TORSION.match(name)
    if m is None:
        raise ValueError(
            f"cv: expected a torsion name like 'phi 2', 'psi 3', 'omega 2', 'chi1 2' (residue number as in "
            f"the PDB), got {name!r}"
        )
    kind, res_seq = m.group(1).lower(), int(m.group(2))
    top = system.mdtraj_topology
    traj = mdtraj.Trajectory(system.positions_nm[None].astype(np.float32), top)
    fn = {"phi": mdtraj.compute_phi, "psi": mdtraj.compute_psi, "omega": mdtraj.compute_omega,
          "chi1": mdtraj.compute_chi1, "chi2": mdtraj.compute_chi2}[kind]
    centre = {"phi": 2, "psi": 1, "omega": 1, "chi1": 1, "chi2": 1}[kind]
    quads = fn(traj, periodic=False)[0]
    available = []
    for quad in quads:
        res = top.atom(int(quad[centre])).residue
        available.append(res.resSeq)
        if res.resSeq == res_seq:
            return Torsion(f"{kind} {res_seq}", tuple(int(a) for a in quad),
                           residue=res_seq if kind in ("phi", "psi") else None)
    raise ValueError(
        f"cv {name!r}: {system.name} has no {kind} in residue {res_seq}; residues with {kind}: {available}"
    )


def _load_reference(path: Path, system: "MolecularSystem", what: str) -> np.ndarray:
    from spacetime_md.molecular.paths.structures import resolve_structure

    return resolve_structure(system, path, what)[0]


def parse_cv(
    item: str | dict[str, Any] | CollectiveVariable,
    system: "MolecularSystem",
    base: str | Path | None = None,
) -> CollectiveVariable:
    """One CV from a name (``"phi 2"``), a file-format dictionary or a CV object.

    Dictionaries: ``{"type": "torsion", "name": ..., "atoms": [i, j, k, l]}`` (or without
    ``atoms``, a name mdtraj knows), ``{"type": "distance", "name": ..., "atoms": [i, j]}``,
    ``{"type": "rmsd", "name": ..., "reference": "file.pdb", "atoms": "heavy" | "all" | [...]}``.
    ``base`` is the folder relative reference paths are read from.
    """
    if isinstance(item, CollectiveVariable):
        cv = item
    elif isinstance(item, str):
        cv = _named_torsion(item, system)
    elif isinstance(item, dict):
        kind = str(item.get("type", "")).lower()
        name = item.get("name")
        if not name:
            raise ValueError(f"cv: expected a 'name' in every CV entry, got {item}")
        atoms = item.get("atoms")
        if kind == "torsion":
            if atoms is None:
                cv = _named_torsion(str(name), system)
            else:
                res = item.get("residue")
                cv = Torsion(str(name), tuple(atoms), residue=None if res is None else int(res))
        elif kind == "distance":
            if atoms is None:
                raise ValueError(f"cv {name!r}: expected 'atoms': [i, j] for a distance")
            cv = Distance(str(name), tuple(atoms))
        elif kind == "rmsd":
            if "reference" in item:
                ref_path = Path(item["reference"])
                if base is not None and not ref_path.is_absolute():
                    ref_path = Path(base) / ref_path
                reference = _load_reference(ref_path, system, f"cv {name!r} reference")
                source = str(ref_path)
            elif "reference_nm" in item:
                reference, source = np.asarray(item["reference_nm"], dtype=np.float64), None
            else:
                raise ValueError(f"cv {name!r}: expected 'reference' (a PDB file) for an RMSD")
            if atoms is None or atoms == "heavy":
                atoms = tuple(int(i) for i in system.heavy_atom_indices)
                if len(atoms) < 3:
                    atoms = tuple(range(system.n_atoms))
            elif atoms == "all":
                atoms = tuple(range(system.n_atoms))
            cv = RMSD(str(name), reference, tuple(atoms), source)
        else:
            raise ValueError(f"cv {name!r}: expected type 'torsion', 'distance' or 'rmsd', got {item.get('type')!r}")
    else:
        raise TypeError(f"cv: expected a name, a dict or a CollectiveVariable, got {type(item).__name__}")
    cv.check_atoms(system.n_atoms)
    if isinstance(cv, RMSD) and len(cv.reference) != system.n_atoms:
        raise ValueError(f"cv {cv.name!r}: expected a reference of {system.n_atoms} atoms, got {len(cv.reference)}")
    return cv


def load_cvs(path: str | Path, system: "MolecularSystem") -> CollectiveVariables:
    """Read a CV file (JSON, or YAML if PyYAML is installed; format in the module docstring)."""
    path = Path(path)
    data = _read_mapping(path, "cvs file")
    entries = data.get("cvs") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"cvs file {path.name}: expected a non-empty list under 'cvs'")
    return CollectiveVariables.from_spec(entries, system, base=path.resolve().parent)


def _read_mapping(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected an existing file, got {str(path)!r}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - optional
            raise ValueError(f"{what} {path.name}: YAML needs PyYAML (pip install pyyaml); or use JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} {path.name}: not valid YAML ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path.name}: not valid JSON ({exc})") from None


def default_cvs(system: "MolecularSystem") -> CollectiveVariables:
    """Every backbone (phi, psi) of a peptide; an empty set for a molecule without backbone.

    The path code adds RMSDs to the endpoints when the set has no CV (see
    :func:`spacetime_md.molecular.system.states.endpoint_state`).
    """
    return CollectiveVariables(backbone_torsions(system.mdtraj_topology, system.positions_nm))


def _deg_or_nm(cv: CollectiveVariable, value: float) -> float:
    """Display value: degrees for angles, nm otherwise."""
    return math.degrees(value) if cv.periodic else value
