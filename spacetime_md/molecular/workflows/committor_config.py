"""The configuration of a committor estimate (:class:`CommittorConfig`).

Units: ps, fs, K, radians; lengths in nm.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CommittorConfig",
]

#: Energies that can pick the highest-energy frame (see :class:`CommittorConfig`).
ENERGIES = ("quenched", "relaxed", "raw")


@dataclass(frozen=True)
class CommittorConfig:
    """Settings of :func:`estimate_committor` (plain numbers in fs, ps, K).

    Parameters
    ----------
    n_frames : int
        Frames evenly spaced along the path (both ends included; 1 means the middle frame).
    n_shots : int
        Unbiased MD shots per frame.
    max_length_ps : float
        A shot in neither state after this long is counted as undecided.
    timestep_fs, friction_per_ps : float
        ``LangevinMiddleIntegrator`` settings of the shots.
    check_interval_steps : int
        Steps between two state checks.
    path : int
        Which path of the set.
    kind : str
        Which curve's paths in a run directory (``"geodesic"`` or ``"straight"``).
    start_state, target_state : str, optional
        State names (of the system's states or the run's endpoint states); default: the states
        of the path's first and last frame, or the endpoint states where those are in none (or
        in the same state).
    include_max_energy : bool
        Also shoot from the frame of highest energy.
    energy : {"quenched", "relaxed", "raw"}
        Which energy picks that frame: ``"quenched"`` minimises each frame with its heavy atoms
        held near their positions (a local quench that keeps every dihedral), ``"relaxed"`` with
        only the torsion CVs held (the adiabatic energy in those torsions; for alanine dipeptide
        (phi, psi)), ``"raw"`` is the OpenMM energy. Without torsion CVs ``"relaxed"`` is n/a and
        ``"quenched"`` is used (recorded as ``energy_used`` with ``energy_na_reason``).
    refine : bool
        Also shoot from the *refined* relaxed-energy maximum: the path's torsion-CV route within
        ``refine_window`` frames of the highest-energy frame, cut into ``refine_substeps`` steps
        per frame interval and minimised with the torsion CVs held, continuously from the start
        side (:func:`~spacetime_md.molecular.paths.relaxed.refine_relaxed_maximum`); the highest of
        those relaxed structures is the transition-state estimate between frames. Needs
        ``include_max_energy`` and at least one torsion CV (otherwise n/a, with the reason).
    refine_window, refine_substeps : int
        See ``refine``.
    saddle : bool
        Also shoot from the force field's first-order saddle point next to the refined maximum
        (:func:`~spacetime_md.molecular.paths.saddle.compute_saddle_from_refined`): every coordinate
        relaxed except the one unstable direction, found by walking uphill along the path's own
        reaction. Needs the refined maximum; n/a (with the reason) where the search does not
        converge or the system has more than
        :data:`~spacetime_md.molecular.paths.saddle.MAX_SADDLE_ATOMS` atoms.
    confidence : float
        Level of the Wilson interval.
    n_workers : int
        Worker processes at most. Shots start in this process; the rest goes to the workers
        once it is projected to take longer than :data:`WORKERS_AFTER_S` here. 1: never.
    seed : int
    """

    n_frames: int = 10
    n_shots: int = 20
    max_length_ps: float = 5.0
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    check_interval_steps: int = 10
    path: int = 0
    kind: str = "geodesic"
    start_state: str | None = None
    target_state: str | None = None
    include_max_energy: bool = True
    energy: str = "relaxed"
    refine: bool = True
    refine_window: int = 2
    refine_substeps: int = 10
    saddle: bool = True
    confidence: float = 0.95
    n_workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_frames", "n_shots", "check_interval_steps", "n_workers", "refine_window", "refine_substeps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("path", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        for name in ("max_length_ps", "timestep_fs", "friction_per_ps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence: expected a level in (0, 1), got {self.confidence!r}")
        if self.energy not in ENERGIES:
            raise ValueError(f"energy: expected one of {', '.join(map(repr, ENERGIES))}, got {self.energy!r}")
        if self.max_steps < self.check_interval_steps:
            raise ValueError(
                f"max_length_ps: expected at least one check interval ({self.check_interval_steps} steps of "
                f"{self.timestep_fs} fs), got {self.max_length_ps} ps"
            )

    @property
    def max_steps(self) -> int:
        """Longest shot in integration steps."""
        return int(round(self.max_length_ps * 1000.0 / self.timestep_fs))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
