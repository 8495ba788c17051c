"""Metastable states as regions in collective-variable (CV) space.

A :class:`MetastableState` is a conjunction of :class:`Region` s, each over some CVs of a
:class:`~spacetime_md.molecular.system.cvs.CollectiveVariables` set:

- ``disc``: periodic Euclidean distance of the CVs to a centre at most ``radius``;
- ``box``: each CV within ``[low, high]`` (for angles, the arc from ``low`` to ``high``);

Values in files and in :class:`Region` are **degrees for angle CVs and nm otherwise**; inside
they are converted to radians. A state "by RMSD to a structure" adds an RMSD CV to the
system's set and is a box ``[0, max_nm]`` on it. A frame's state is the first state that
contains it, ``-1`` if none.

State file (JSON or YAML; structure paths are relative to the file)::

    {"cvs": [...optional, see spacetime_md.molecular.system.cvs...],
     "states": [
       {"name": "C7eq", "disc": {"phi 2": -120, "psi 2": 100}, "radius": 100,
        "representative_pdb": "C7eq.pdb", "aliases": ["C5"]},
       {"name": "mid_C7ax", "regions": [
            {"disc": {"phi 2": -120, "psi 2": 100}, "radius": 100},
            {"box": {"phi 3": [20, 120], "psi 3": [-90, 60]}}]},
       {"name": "folded", "rmsd": {"structure": "folded.pdb", "max_nm": 0.1}}
     ]}

The short legacy form ``{"name", "phi_deg", "psi_deg", "radius_deg"}`` is a disc on
``("phi", "psi")``, which resolve to a molecule's only backbone pair (alanine dipeptide).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "Region",
    "MetastableState",
    "load_states",
    "assign_states",
    "endpoint_state",
    "periodic_distance",
    "ALANINE_DIPEPTIDE_STATES_FILE",
]

ALANINE_DIPEPTIDE_STATES_FILE = "alanine_dipeptide/states.json"


@dataclass(frozen=True)
class Region:
    """One condition of a state: a disc or a box over named CVs (degrees for angles, nm else).

    Attributes
    ----------
    cvs : tuple of str
        CV names.
    centre : tuple of float or None
        Disc centre, one value per CV.
    radius : float or None
        Disc radius (degrees if the CVs are angles, nm otherwise; not mixed).
    bounds : tuple of (low, high) or None
        Box bounds per CV.
    """

    cvs: tuple[str, ...]
    centre: tuple[float, ...] | None = None
    radius: float | None = None
    bounds: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cvs", tuple(str(c) for c in self.cvs))
        if not self.cvs:
            raise ValueError("region: expected at least one CV name, got none")
        if (self.centre is None) == (self.bounds is None):
            raise ValueError(f"region on {list(self.cvs)}: expected either a disc (centre, radius) or a box (bounds)")
        if self.centre is not None:
            centre = tuple(float(v) for v in self.centre)
            if len(centre) != len(self.cvs) or not all(math.isfinite(v) for v in centre):
                raise ValueError(f"region on {list(self.cvs)}: expected {len(self.cvs)} finite centre values, got {list(self.centre)}")
            if self.radius is None or not (float(self.radius) > 0) or not math.isfinite(float(self.radius)):
                raise ValueError(f"region on {list(self.cvs)}: expected a finite radius > 0, got {self.radius}")
            object.__setattr__(self, "centre", centre)
            object.__setattr__(self, "radius", float(self.radius))
        else:
            bounds = tuple((float(lo), float(hi)) for lo, hi in self.bounds)
            if len(bounds) != len(self.cvs):
                raise ValueError(f"region on {list(self.cvs)}: expected {len(self.cvs)} (low, high) pairs, got {len(bounds)}")
            object.__setattr__(self, "bounds", bounds)

    @property
    def kind(self) -> str:
        return "disc" if self.centre is not None else "box"

    def _columns(self, cvs: "CollectiveVariables") -> tuple[list[int], np.ndarray]:
        idx = [cvs.index(n) for n in self.cvs]
        periodic = cvs.periodic[idx]
        if self.kind == "disc" and periodic.any() and not periodic.all():
            raise ValueError(f"region on {list(self.cvs)}: a disc mixes angle and length CVs; use a box")
        return idx, periodic

    def contains(self, values: np.ndarray, cvs: "CollectiveVariables") -> np.ndarray:
        """Boolean mask, shape=(F,), of CV values (radians / nm), shape=(F, K)."""
        idx, periodic = self._columns(cvs)
        v = values[:, idx]
        scale = np.where(periodic, math.pi / 180.0, 1.0)
        if self.kind == "disc":
            d = v - np.asarray(self.centre) * scale
            d = np.where(periodic, (d + np.pi) % (2 * np.pi) - np.pi, d)
            r = self.radius * scale[0]
            return np.sqrt((d**2).sum(-1)) <= r + 1e-12
        lo = np.array([b[0] for b in self.bounds]) * scale
        hi = np.array([b[1] for b in self.bounds]) * scale
        width = np.where(periodic, np.where(hi - lo >= 2 * np.pi, 2 * np.pi, (hi - lo) % (2 * np.pi)), hi - lo)
        off = np.where(periodic, (v - lo) % (2 * np.pi), v - lo)
        return ((off >= -1e-12) & (off <= width + 1e-12)).all(-1)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "disc":
            return {"disc": dict(zip(self.cvs, self.centre)), "radius": self.radius}
        return {"box": {c: list(b) for c, b in zip(self.cvs, self.bounds)}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Region":
        if "disc" in data:
            disc = data["disc"]
            if not isinstance(disc, dict) or not disc:
                raise ValueError(f"region: expected 'disc' to map CV names to centre values, got {disc!r}")
            if "radius" not in data:
                raise ValueError(f"region: expected a 'radius' with the disc {disc}")
            return cls(tuple(disc), centre=tuple(disc.values()), radius=data["radius"])
        if "box" in data:
            box = data["box"]
            if not isinstance(box, dict) or not box or not all(
                isinstance(b, (list, tuple)) and len(b) == 2 for b in box.values()
            ):
                raise ValueError(f"region: expected 'box' to map CV names to [low, high], got {box!r}")
            return cls(tuple(box), bounds=tuple(tuple(b) for b in box.values()))
        raise ValueError(f"region: expected a 'disc' or a 'box', got keys {sorted(data)}")


@dataclass(frozen=True)
class MetastableState:
    """A metastable state: the frames whose CV values lie in every one of its regions.

    ``MetastableState("C7eq", -120, 100, 100)`` is the legacy single disc in (phi, psi)
    (degrees); general states pass ``regions``.

    Attributes
    ----------
    name : str
        Identifier used in files and on the command line.
    phi_deg, psi_deg, radius_deg : float, optional
        Legacy disc in the (phi, psi) plane (degrees).
    label : str
        Display name.
    representative_pdb : str or None
        Structure file of the state (absolute, or relative to the state file it came from).
    target_deg : tuple of float or None
        CV values the representative structure was restrained to (informative).
    aliases : tuple of str
        Other accepted names (case-insensitive).
    regions : tuple of Region
    """

    name: str
    phi_deg: float | None = None
    psi_deg: float | None = None
    radius_deg: float | None = None
    label: str = ""
    representative_pdb: str | None = None
    target_deg: tuple[float, ...] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    regions: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: expected a non-empty state name, got ''")
        legacy = (self.phi_deg, self.psi_deg, self.radius_deg)
        if any(v is not None for v in legacy):
            if any(v is None for v in legacy):
                raise ValueError(f"state {self.name!r}: expected phi_deg, psi_deg and radius_deg together")
            if not (0 < self.radius_deg <= 180):
                raise ValueError(f"radius_deg: expected a value in (0, 180], got {self.radius_deg}")
            for attr in ("phi_deg", "psi_deg"):
                v = getattr(self, attr)
                if not (-180 <= v <= 180):
                    raise ValueError(f"{attr}: expected degrees in [-180, 180], got {v}")
            disc = Region(("phi", "psi"), centre=(self.phi_deg, self.psi_deg), radius=self.radius_deg)
            object.__setattr__(self, "regions", (disc, *tuple(self.regions)))
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if not self.regions:
            raise ValueError(f"state {self.name!r}: expected at least one region (disc, box or rmsd), got none")

    # ------------------------------------------------------------------ legacy single-disc view
    def _single_disc(self) -> Region:
        if len(self.regions) != 1 or self.regions[0].kind != "disc":
            raise ValueError(f"state {self.name!r}: expected a single disc, got {len(self.regions)} region(s)")
        return self.regions[0]

    @property
    def centre(self) -> np.ndarray:
        """Centre of a single-disc state in radians (angles) or nm, shape=(K,)."""
        disc = self._single_disc()
        c = np.asarray(disc.centre, dtype=np.float64)
        return np.radians(c) if self.phi_deg is not None or _looks_angular(disc.cvs) else c

    @property
    def radius(self) -> float:
        """Radius of a single-disc state, radians (angles) or nm."""
        disc = self._single_disc()
        return math.radians(disc.radius) if self.phi_deg is not None or _looks_angular(disc.cvs) else disc.radius

    @property
    def cv_names(self) -> tuple[str, ...]:
        """Every CV the state's regions use."""
        out: list[str] = []
        for r in self.regions:
            out.extend(c for c in r.cvs if c not in out)
        return tuple(out)

    # ------------------------------------------------------------------ membership
    def contains(self, values: Any, cvs: "CollectiveVariables | None" = None) -> np.ndarray:
        """Boolean mask, shape=(F,), of frames in this state.

        ``values`` are CV values (radians / nm), shape=(F, K) (or (K,)), in the order of
        ``cvs``; without ``cvs`` they are (phi, psi) pairs.
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        cvs = _phi_psi_cvs() if cvs is None else cvs
        if x.ndim != 2 or x.shape[1] != len(cvs):
            raise ValueError(f"values: expected shape (F, {len(cvs)}) for CVs {list(cvs.names)}, got {x.shape}")
        mask = np.ones(len(x), dtype=bool)
        for r in self.regions:
            mask &= r.contains(x, cvs)
        return mask

    def matches(self, name: str) -> bool:
        key = name.lower().replace("/", "_")
        return key in {n.lower().replace("/", "_") for n in (self.name, self.label, *self.aliases) if n}

    def check(self, cvs: "CollectiveVariables") -> None:
        """Raise ``ValueError`` unless every CV the state uses is in ``cvs``."""
        for r in self.regions:
            try:
                r._columns(cvs)
            except KeyError as exc:
                raise ValueError(f"state {self.name!r}: {exc.args[0]}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.label:
            out["label"] = self.label
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.representative_pdb:
            out["representative_pdb"] = self.representative_pdb
        if self.target_deg is not None:
            out["target_deg"] = list(self.target_deg)
        out["regions"] = [r.to_dict() for r in self.regions]
        return out


def _looks_angular(names: Sequence[str]) -> bool:
    return all(n.split()[0].lower() in ("phi", "psi", "omega", "chi1", "chi2") for n in names)


_PHI_PSI = None


def _phi_psi_cvs() -> "CollectiveVariables":
    """Two placeholder torsions called phi and psi: the CV order of legacy (phi, psi) arrays."""
    global _PHI_PSI
    if _PHI_PSI is None:
        from spacetime_md.molecular.system.cvs import CollectiveVariables, Torsion

        _PHI_PSI = CollectiveVariables([Torsion("phi", (0, 1, 2, 3)), Torsion("psi", (0, 1, 2, 3))])
    return _PHI_PSI


def periodic_distance(phi_psi: Any, centre: Any) -> np.ndarray:
    """Periodic Euclidean distance (radians) between angle vectors, broadcasting over frames."""
    d = np.asarray(phi_psi, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    d = (d + np.pi) % (2 * np.pi) - np.pi
    return np.sqrt((d**2).sum(-1))


def _check_no_overlap(states: Sequence[MetastableState]) -> None:
    """Single discs on the same CVs must not overlap (so a frame is in at most one)."""
    for i, a in enumerate(states):
        for b in states[i + 1:]:
            if len(a.regions) != 1 or len(b.regions) != 1:
                continue
            ra, rb = a.regions[0], b.regions[0]
            if ra.kind != "disc" or rb.kind != "disc" or ra.cvs != rb.cvs or not _looks_angular(ra.cvs):
                continue
            dist = float(periodic_distance(np.radians(ra.centre), np.radians(rb.centre)))
            if dist < math.radians(ra.radius + rb.radius):
                raise ValueError(
                    f"states: expected non-overlapping discs, got {a.name} and {b.name} "
                    f"(centres {math.degrees(dist):.1f} deg apart, radii {ra.radius:g} + {rb.radius:g} deg)"
                )


def _state_from_dict(entry: dict[str, Any], base: Path | None, system: "MolecularSystem | None",
                     extra_cvs: list) -> MetastableState:
    entry = dict(entry)
    name = entry.get("name")
    if not name:
        raise ValueError(f"states file: expected a 'name' in every state, got {entry}")
    regions = [Region.from_dict(r) for r in entry.pop("regions", [])]
    if "disc" in entry or "box" in entry:
        regions.append(Region.from_dict({k: entry.pop(k) for k in ("disc", "box", "radius") if k in entry}))
    if "rmsd" in entry:
        spec = entry.pop("rmsd")
        if not isinstance(spec, dict) or "structure" not in spec or "max_nm" not in spec:
            raise ValueError(f"state {name!r}: expected 'rmsd': {{'structure': file, 'max_nm': value}}, got {spec!r}")
        if system is None:
            raise ValueError(f"state {name!r}: an RMSD state needs the system (load_states(path, system))")
        from spacetime_md.molecular.system.cvs import parse_cv

        cv_name = f"rmsd {name}"
        extra_cvs.append(parse_cv({"type": "rmsd", "name": cv_name, "reference": spec["structure"],
                                   "atoms": spec.get("atoms", "heavy")}, system, base))
        max_nm = float(spec["max_nm"])
        if not max_nm > 0:
            raise ValueError(f"state {name!r}: expected rmsd max_nm > 0, got {max_nm}")
        regions.append(Region((cv_name,), bounds=((0.0, max_nm),)))
        entry.setdefault("representative_pdb", spec["structure"])
    rep = entry.get("representative_pdb")
    if rep and base is not None and not Path(rep).is_absolute():
        entry["representative_pdb"] = str(Path(base) / rep)
    if entry.get("target_deg") is not None:
        entry["target_deg"] = tuple(float(v) for v in entry["target_deg"])
    entry["aliases"] = tuple(entry.get("aliases", ()))
    allowed = {"name", "phi_deg", "psi_deg", "radius_deg", "label", "representative_pdb", "target_deg", "aliases"}
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"state {name!r}: unknown keys {sorted(unknown)}")
    return MetastableState(**entry, regions=tuple(regions))


def load_states(
    source: str | Path | None = None,
    system: "MolecularSystem | None" = None,
) -> tuple[MetastableState, ...]:
    """Load state definitions from a JSON/YAML file (default: the alanine-dipeptide states).

    Structure files (``representative_pdb``, RMSD references) are resolved relative to the
    file. With ``system``, RMSD states add their RMSD CVs to ``system.cvs`` and every state is
    checked against the system's CVs.
    """
    from spacetime_md.molecular.system.cvs import _read_mapping

    if source is None:
        ref = resources.files("spacetime_md").joinpath("data", ALANINE_DIPEPTIDE_STATES_FILE)
        path = Path(str(ref))
    else:
        path = Path(source)
    data = _read_mapping(path, "states file")
    if not isinstance(data, dict) or "states" not in data:
        raise ValueError(f"states file {path.name}: expected a top-level key 'states'")
    if not isinstance(data["states"], list) or not data["states"]:
        raise ValueError(f"states file {path.name}: expected a non-empty list of states")
    extra: list = []
    if system is not None and data.get("cvs"):
        from spacetime_md.molecular.system.cvs import CollectiveVariables

        user_cvs = CollectiveVariables.from_spec(data["cvs"], system, base=path.resolve().parent)
        system.cvs = user_cvs
    states = tuple(_state_from_dict(e, path.resolve().parent, system, extra) for e in data["states"])
    names = [s.name for s in states]
    if len(set(names)) != len(names):
        raise ValueError(f"states file {path.name}: expected unique state names, got {names}")
    _check_no_overlap(states)
    if system is not None:
        if extra:
            system.cvs = system.cvs + extra
        for s in states:
            s.check(system.cvs)
    return states


def assign_states(
    values: Any, states: Sequence[MetastableState], cvs: "CollectiveVariables | None" = None
) -> np.ndarray:
    """Index of the first state containing each frame, or ``-1``.

    Parameters
    ----------
    values : array-like, shape=(F, K)
        CV values (radians / nm) in the order of ``cvs``; without ``cvs``, (phi, psi) pairs.
    states : sequence of MetastableState
    cvs : CollectiveVariables, optional

    Returns
    -------
    ndarray of int, shape=(F,)
    """
    x = np.asarray(values, dtype=np.float64)
    k = 2 if cvs is None else len(cvs)
    if x.ndim != 2 or x.shape[1] != k:
        what = "phi_psi" if cvs is None else "values"
        raise ValueError(f"{what}: expected shape (F, {k}), got {x.shape}")
    out = np.full(len(x), -1, dtype=np.int64)
    for j in range(len(states) - 1, -1, -1):
        out[states[j].contains(x, cvs)] = j
    return out


def endpoint_state(
    cvs: "CollectiveVariables",
    values: Any,
    name: str,
    angle_radius: float = 0.75,
    length_tolerance: float = 0.05,
) -> MetastableState:
    """A state around one structure's CV values: one disc per residue's backbone torsions (and
    per other angle CV) of ``angle_radius`` radians, and ``value +- length_tolerance`` nm for
    length CVs (``[0, tolerance]`` for an RMSD to this very structure).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) != len(cvs) or len(cvs) == 0:
        raise ValueError(f"values: expected {len(cvs)} CV values (at least one CV), got {len(v)}")
    regions = []
    for group in cvs.residue_groups():
        names = tuple(cvs[k].name for k in group)
        if cvs[group[0]].periodic:
            centre = tuple(math.degrees(v[k]) for k in group)
            regions.append(Region(names, centre=centre, radius=math.degrees(angle_radius)))
        else:
            (k,) = group
            lo = max(0.0, v[k] - length_tolerance)
            regions.append(Region(names, bounds=((lo, v[k] + length_tolerance),)))
    return MetastableState(name, regions=tuple(regions))


def states_to_json(states: Sequence[MetastableState]) -> list[dict[str, Any]]:
    return [s.to_dict() for s in states]


def dumps(states: Sequence[MetastableState]) -> str:  # pragma: no cover - convenience
    return json.dumps({"states": states_to_json(states)}, indent=2)
