"""Metastable states as discs in the periodic (phi, psi) plane.

A state is a centre ``(phi, psi)`` and a radius; a frame belongs to a state when the periodic
Euclidean distance of its (phi, psi) to the centre is at most the radius. Definitions are
stored in degrees (JSON, ``spacetime_md/data/alanine_dipeptide/states.json``) and used in
radians. Discs of one system must not overlap (checked), so each frame is in at most one
state; frames in no state get index ``-1``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "MetastableState",
    "load_states",
    "assign_states",
    "periodic_distance",
    "ALANINE_DIPEPTIDE_STATES_FILE",
]

ALANINE_DIPEPTIDE_STATES_FILE = "alanine_dipeptide/states.json"


@dataclass(frozen=True)
class MetastableState:
    """A disc in the (phi, psi) torus.

    Attributes
    ----------
    name : str
        Identifier used in files and on the command line (``"C7eq"``, ``"C7ax"``, ``"alpha_R"``).
    phi_deg, psi_deg : float
        Centre (degrees).
    radius_deg : float
        Radius (degrees) of the disc, periodic Euclidean distance.
    label : str
        Display name (``"C7eq/C5"``).
    representative_pdb : str or None
        File name (next to the JSON) of the energy-minimised representative structure.
    target_deg : (float, float) or None
        (phi, psi) the representative structure was restrained to before release.
    aliases : tuple of str
        Other accepted names (case-insensitive).
    """

    name: str
    phi_deg: float
    psi_deg: float
    radius_deg: float
    label: str = ""
    representative_pdb: str | None = None
    target_deg: tuple[float, float] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: expected a non-empty state name, got ''")
        if not (0 < self.radius_deg <= 180):
            raise ValueError(f"radius_deg: expected a value in (0, 180], got {self.radius_deg}")
        for attr in ("phi_deg", "psi_deg"):
            v = getattr(self, attr)
            if not (-180 <= v <= 180):
                raise ValueError(f"{attr}: expected degrees in [-180, 180], got {v}")

    @property
    def centre(self) -> np.ndarray:
        """Centre ``(phi, psi)`` in radians, shape=(2,)."""
        return np.radians([self.phi_deg, self.psi_deg])

    @property
    def radius(self) -> float:
        """Radius in radians."""
        return math.radians(self.radius_deg)

    def contains(self, phi_psi: Any) -> np.ndarray:
        """Boolean mask, shape=(F,), of frames (phi, psi in radians, shape=(F, 2)) in this state."""
        return periodic_distance(phi_psi, self.centre) <= self.radius

    def matches(self, name: str) -> bool:
        key = name.lower().replace("/", "_")
        return key in {n.lower().replace("/", "_") for n in (self.name, self.label, *self.aliases) if n}


def periodic_distance(phi_psi: Any, centre: Any) -> np.ndarray:
    """Periodic Euclidean distance (radians) between angle pairs, broadcasting over frames."""
    d = np.asarray(phi_psi, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    d = (d + np.pi) % (2 * np.pi) - np.pi
    return np.sqrt((d**2).sum(-1))


def _check_no_overlap(states: Sequence[MetastableState]) -> None:
    for i, a in enumerate(states):
        for b in states[i + 1 :]:
            dist = float(periodic_distance(a.centre, b.centre))
            if dist < a.radius + b.radius:
                raise ValueError(
                    f"states: expected non-overlapping discs, got {a.name} and {b.name} "
                    f"(centres {math.degrees(dist):.1f} deg apart, radii {a.radius_deg} + {b.radius_deg} deg)"
                )


def load_states(source: str | Path | None = None) -> tuple[MetastableState, ...]:
    """Load state definitions from a JSON file (default: the alanine-dipeptide states).

    The JSON holds ``{"states": [{"name": ..., "phi_deg": ..., "psi_deg": ..., "radius_deg": ...,
    "label": ..., "representative_pdb": ..., "target_deg": [phi, psi], "aliases": [...]}]}``.
    """
    if source is None:
        text = resources.files("spacetime_md").joinpath("data", ALANINE_DIPEPTIDE_STATES_FILE).read_text()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"states file: expected an existing JSON file, got {str(path)!r}")
        text = path.read_text()
    data = json.loads(text)
    if "states" not in data:
        raise ValueError("states file: expected a top-level key 'states'")
    states = []
    for entry in data["states"]:
        entry = dict(entry)
        if entry.get("target_deg") is not None:
            entry["target_deg"] = tuple(float(v) for v in entry["target_deg"])
        entry["aliases"] = tuple(entry.get("aliases", ()))
        states.append(MetastableState(**entry))
    _check_no_overlap(states)
    return tuple(states)


def assign_states(phi_psi: Any, states: Sequence[MetastableState]) -> np.ndarray:
    """Index of the state each frame is in, or ``-1``.

    Parameters
    ----------
    phi_psi : array-like, shape=(F, 2)
        Radians.
    states : sequence of MetastableState

    Returns
    -------
    ndarray of int, shape=(F,)
    """
    x = np.asarray(phi_psi, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"phi_psi: expected shape (F, 2), got {x.shape}")
    out = np.full(len(x), -1, dtype=np.int64)
    for k, state in enumerate(states):
        out[state.contains(x)] = k
    return out
