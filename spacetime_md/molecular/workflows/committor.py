"""Committor analysis of a transition path: p_B along the path from unbiased OpenMM shots.

The committor ``p_B(x)`` of a configuration ``x`` is the probability that dynamics started
from ``x`` with Maxwell-Boltzmann velocities reaches the target state B before the start
state A. Along a good transition path it rises from 0 (in A) to 1 (in B) and crosses 1/2 at
the transition state. :func:`estimate_committor` measures it for any molecule:

1. **States.** A and B are regions in the space of the system's collective variables
   (:mod:`spacetime_md.molecular.system.cvs`, :mod:`spacetime_md.molecular.system.states`: torsions,
   distances, RMSDs). By default they are the states (of ``system.states``) of the path's first
   and last frame; where the system has no states or a path end is in none, the endpoint states
   of the paths run (built around its start and end structures) are used.
2. **Frames.** ``n_frames`` frames evenly spaced along one path (both ends included), plus
   the frame of highest *relaxed* energy (each frame quenched with all its torsion CVs held, see
   :func:`~spacetime_md.molecular.paths.relaxed.cv_torsion_quencher`) or, with ``energy="raw"``, of
   highest raw OpenMM potential energy (``energy="quenched"``: heavy atoms held). A system whose
   CVs have no torsion has no relaxed energy: the quenched energy is used instead and the
   result says so. With ``refine`` (default) also the *refined* relaxed-energy maximum: the
   path's torsion-CV route around that frame, subdivided and minimised continuously from the
   start side (:func:`~spacetime_md.molecular.paths.relaxed.refine_relaxed_maximum`); at the barrier
   20-fs frames are 20-30 degrees apart in phi, while p_B goes from 0 to 1 within a few degrees.
   Without torsion CVs the refinement is n/a (skipped, with the reason recorded).
3. **Shots.** From each frame, ``n_shots`` unbiased MD runs (``LangevinMiddleIntegrator`` on
   the system's force field at its temperature), each with fresh Maxwell-Boltzmann velocities.
   Every ``check_interval_steps`` steps (and at time 0) the CVs the two states use are computed
   and tested against A and B (:class:`CVStateChecker`); a shot stops when it is in A or B.
   Shots still in neither after ``max_length_ps`` are *undecided*: counted and reported, and
   left out of the estimate.
4. **Estimate.** ``p_B = n_B / (n_A + n_B)`` with a Wilson score interval (:func:`wilson_interval`).
   The frames with ``p_B`` closest to 1/2 are the transition-state candidates; a path whose
   estimates never reach 1/2 from both sides is reported as not crossing.

Each shot has its own seed derived from ``(seed, frame, shot)`` and its own OpenMM Context, so
results do not depend on how shots are scheduled over worker processes and a resumed run
reproduces an uninterrupted one exactly. :func:`run_committor` is the job behind
``spacetime-md committor``: it loads the system of a paths run (``system.json``, or the preset
named in ``config.json`` for older runs), checkpoints every finished batch of shots to
``shots.json`` and skips them when rerun.

Units inside: nm, ps, kJ/mol, K, radians.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from spacetime_md._atomic import atomic_path, write_text_atomic
from spacetime_md.molecular._seeds import openmm_seed

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.paths.transition import TransitionPaths
    from spacetime_md.molecular.system.states import MetastableState
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "CommittorConfig",
    "CommittorResult",
    "estimate_committor",
    "run_committor",
    "plot_committor",
    "wilson_interval",
    "select_frames",
    "compute_dihedral_drive_path",
    "CVStateChecker",
]

logger = logging.getLogger(__name__)

#: Outcome codes of one shot.
START, TARGET, UNDECIDED = 0, 1, -1
SHOTS_FILE = "shots.json"
RESULT_FILE = "committor.json"
CONFIG_FILE = "config.json"
PLOT_FILE = "committor.png"
REFINED_PDB = "ts_refined_max_energy.pdb"
#: Files of a ``spacetime-md paths`` run read here: the system (a ``MolecularSystem.spec()``;
#: older runs have only the preset name in ``config.json``) and the report with the endpoint states.
SYSTEM_FILE = "system.json"
REPORT_FILE = "report.json"
#: 2: states are regions in CV space (version 1 stored (phi, psi) discs; its shots are not reused).
_CHECKPOINT_VERSION = 2
#: Shots run in the calling process first; once the rest is projected to take longer than this
#: (seconds) there, it goes to the worker processes. Starting a worker (spawn, then importing
#: openmm and spacetime_md) costs about 5 s on a busy 2-core machine, and most alanine-dipeptide
#: shots commit within a few hundred steps (about 3 ms), so small jobs never start one.
WORKERS_AFTER_S = 20.0
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


# --------------------------------------------------------------------------- statistics


def _finite_or_none(v: Any) -> float | None:
    """A float for JSON, or None where the value is missing or not finite (no committed shot)."""
    return None if v is None or not np.isfinite(v) else float(v)


def wilson_interval(successes: Any, trials: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    successes, trials : int or array-like of int
        ``0 <= successes <= trials``; where ``trials == 0`` the interval is ``(nan, nan)``.
    confidence : float
        Two-sided level, e.g. 0.95.

    Returns
    -------
    low, high : ndarray
        Bounds in [0, 1], broadcast shape of the inputs.
    """
    from scipy.stats import norm

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"successes: expected 0 <= successes <= trials, got {successes!r} of {trials!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence!r}")
    z = float(norm.ppf(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


# --------------------------------------------------------------------------- frames


def select_frames(n_path_frames: int, n_frames: int) -> np.ndarray:
    """Indices of ``n_frames`` frames evenly spaced over ``n_path_frames`` (ends included).

    One frame means the middle one. Rounding may merge neighbours of a short path; the result
    is sorted and unique.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames: expected an integer >= 1, got {n_frames}")
    if n_frames > n_path_frames:
        raise ValueError(f"n_frames: expected at most the path's {n_path_frames} frames, got {n_frames}")
    if n_frames == 1:
        return np.array([(n_path_frames - 1) // 2])
    return np.unique(np.round(np.linspace(0, n_path_frames - 1, n_frames)).astype(np.int64))


def _relaxed_energies(system: "MolecularSystem", frames: np.ndarray) -> np.ndarray:
    """Energies (kJ/mol) after minimisation with every torsion CV held at each frame's values
    (:func:`~spacetime_md.molecular.paths.relaxed.cv_torsion_quencher`; raises ``ValueError`` if the
    system's CVs have no torsion)."""
    from spacetime_md.molecular.paths.relaxed import cv_torsion_quencher

    return cv_torsion_quencher(system).quench_frames(frames)


def _quenched_energies(system: "MolecularSystem", frames: np.ndarray) -> np.ndarray:
    """Energies (kJ/mol) after minimisation with the heavy atoms held near their positions
    (:class:`~spacetime_md.molecular.paths.relaxed.PositionQuencher`, 10 000 kJ/mol/nm^2)."""
    from spacetime_md.molecular.paths.relaxed import PositionQuencher

    quencher = PositionQuencher(system.openmm_system, system.heavy_atom_indices, k_restraint=QUENCH_K,
                                platform=system.platform_name)
    return quencher.quench_frames(frames)


#: Heavy-atom restraint of the ``"quenched"`` energy (kJ/mol/nm^2).
QUENCH_K = 10_000.0
#: Frame-wise energies that can pick the highest-energy frame (besides ``"raw"``).
RELAXED_ENERGIES = {"relaxed": _relaxed_energies, "quenched": _quenched_energies}


def _resolve_states(system: "MolecularSystem", frames: np.ndarray, config: CommittorConfig,
                    endpoint_states: "Sequence[MetastableState] | None" = None):
    """Start and target states, and where each came from (``"named"``, ``"system"``, ``"endpoints"``).

    Named states are looked up in ``system.states`` and then ``endpoint_states``; otherwise the
    state (of ``system.states``) of the path's first / last frame, or else the endpoint state.
    When both ends fall in the same system state, the endpoint states are used for both.
    """
    endpoints = tuple(endpoint_states) if endpoint_states is not None else ()
    candidates = (*system.states, *endpoints)
    if not candidates:
        raise ValueError(
            f"system: expected metastable-state definitions for {system.name}, it has none (and no endpoint "
            "states of a paths run); pass a states file"
        )
    assigned = system.assign_states(frames[[0, -1]]) if system.states else np.array([-1, -1])
    chosen, sources = [], []
    for i, (which, given, k, where) in enumerate((("start_state", config.start_state, assigned[0], "first"),
                                                  ("target_state", config.target_state, assigned[1], "last"))):
        if given is not None:
            match = [s for s in candidates if s.matches(given)]
            if not match:
                raise KeyError(f"state: expected one of {[s.name for s in candidates]}, got {given!r}")
            chosen.append(match[0])
            sources.append("named")
        elif k >= 0:
            chosen.append(system.states[k])
            sources.append("system")
        elif len(endpoints) == 2:
            chosen.append(endpoints[i])
            sources.append("endpoints")
        else:
            raise ValueError(
                f"{which}: the path's {where} frame is in no state of {[s.name for s in system.states]}; "
                f"expected it in one, or name the state explicitly"
            )
    start, target = chosen
    if start.name == target.name and sources == ["system", "system"] and len(endpoints) == 2:
        # Both ends in one of the system's states (the transition is finer than its states): the
        # states built around the run's end structures tell them apart.
        logger.warning("committor: both ends of the path are in state %s; using the run's endpoint states %s and %s",
                       start.name, endpoints[0].name, endpoints[1].name)
        (start, target), sources = endpoints, ["endpoints", "endpoints"]
    if start.name == target.name:
        raise ValueError(f"start_state and target_state: expected two different states, got {start.name} twice")
    for state in (start, target):
        state.check(system.cvs)
    values = system.compute_cvs(frames[[0, -1]])
    if not start.contains(values[:1], system.cvs)[0]:
        logger.warning("committor: the path's first frame is not in the start state %s", start.name)
    if target.contains(values[:1], system.cvs)[0]:
        logger.warning("committor: the path's first frame is already in the target state %s", target.name)
    return start, target, tuple(sources)


def _cv_dict(cv: Any) -> dict[str, Any]:
    """A CV as a self-contained dictionary (RMSD references inline, in nm)."""
    d = cv.to_dict()
    if d.get("type") == "rmsd":
        d.pop("reference", None)
        d["reference_nm"] = np.asarray(cv.reference).tolist()
    return d


def _cv_from_dict(d: dict[str, Any]) -> Any:
    """Inverse of :func:`_cv_dict` (no system needed: atoms and references are explicit)."""
    from spacetime_md.molecular.system.cvs import RMSD, Distance, Torsion

    kind = d.get("type")
    if kind == "torsion":
        return Torsion(d["name"], tuple(d["atoms"]), residue=d.get("residue"))
    if kind == "distance":
        return Distance(d["name"], tuple(d["atoms"]))
    if kind == "rmsd":
        return RMSD(d["name"], np.asarray(d["reference_nm"], dtype=np.float64), tuple(d["atoms"]))
    raise ValueError(f"cv {d.get('name')!r}: expected type 'torsion', 'distance' or 'rmsd', got {kind!r}")


class CVStateChecker:
    """Which of two states a configuration is in, from collective variables; picklable.

    Built from plain dictionaries (the CVs the two states use, RMSD references inline, and the
    states' :meth:`~spacetime_md.molecular.system.states.MetastableState.to_dict`), so it travels to
    worker processes without OpenMM objects. Works for any CVs: torsions (periodic), distances,
    RMSDs.

    Parameters
    ----------
    cvs : list of dict
        CV dictionaries (``{"type": "torsion", "name", "atoms"}``, ...; RMSDs with ``reference_nm``).
    start, target : dict
        State dictionaries (``{"name", "regions": [...]}``) over those CVs.

    Examples
    --------
    >>> checker = CVStateChecker.from_system(system, start_state, target_state)   # doctest: +SKIP
    >>> checker.outcomes(frames)          # 0 start, 1 target, -1 neither
    """

    def __init__(self, cvs: Sequence[dict[str, Any]], start: dict[str, Any], target: dict[str, Any]) -> None:
        from spacetime_md.molecular.system.cvs import CollectiveVariables
        from spacetime_md.molecular.system.states import _state_from_dict

        self.cv_dicts = [dict(c) for c in cvs]
        self.state_dicts = (dict(start), dict(target))
        self.cvs: CollectiveVariables = CollectiveVariables(_cv_from_dict(c) for c in self.cv_dicts)
        self.start, self.target = (_state_from_dict(d, None, None, []) for d in self.state_dicts)
        for state in (self.start, self.target):
            state.check(self.cvs)

    @classmethod
    def from_system(cls, system: "MolecularSystem", start: "MetastableState",
                    target: "MetastableState") -> "CVStateChecker":
        """The checker of ``start`` and ``target`` over the CVs of ``system`` they use (only those
        are computed during shots)."""
        used = sorted({system.cvs.index(name) for state in (start, target) for name in state.cv_names})
        return cls([_cv_dict(system.cvs[k]) for k in used], _state_dict(start), _state_dict(target))

    def to_spec(self) -> dict[str, Any]:
        """Plain data to rebuild the checker: ``CVStateChecker(**spec)``."""
        return {"cvs": self.cv_dicts, "start": self.state_dicts[0], "target": self.state_dicts[1]}

    def outcomes(self, coordinates: Any) -> np.ndarray:
        """``TARGET`` (1), ``START`` (0) or ``UNDECIDED`` (-1) per frame of coordinates (nm),
        shape=(F, N, 3) -> (F,). A frame in both states counts as the target's."""
        x = np.asarray(coordinates, dtype=np.float64)
        values = np.atleast_2d(self.cvs.compute(x[None] if x.ndim == 2 else x))
        in_b = self.target.contains(values, self.cvs)
        in_a = self.start.contains(values, self.cvs)
        return np.where(in_b, TARGET, np.where(in_a, START, UNDECIDED)).astype(np.int64)

    def __call__(self, positions: np.ndarray) -> int:
        """Outcome code of one configuration (nm), shape=(N, 3)."""
        return int(self.outcomes(np.asarray(positions)[None])[0])


def _state_dict(state: "MetastableState") -> dict[str, Any]:
    """What decides membership: the name and the regions (no structure files)."""
    return {"name": state.name, "regions": [r.to_dict() for r in state.regions]}


# --------------------------------------------------------------------------- shots


def shot_seed(seed: int, frame: int, shot: int) -> int:
    """The OpenMM random seed of one shot (in [1, 2**31 - 1), never 0: OpenMM's 'pick one')."""
    return openmm_seed(seed, frame, shot)


class _ShotRunner:
    """Runs shots on one OpenMM system; built once per worker process from a picklable spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import openmm

        self.spec = spec
        self.system = openmm.XmlSerializer.deserialize(spec["system_xml"])
        self.platform = openmm.Platform.getPlatformByName(spec["platform"])
        self._state = CVStateChecker(**spec["checker"])

    def initial_state(self, positions: np.ndarray) -> int:
        """State of a frame after OpenMM's constraints: where every shot from it starts."""
        import openmm

        context = openmm.Context(self.system, openmm.VerletIntegrator(0.001), self.platform)
        try:
            context.setPositions(positions)
            context.applyConstraints(1e-8)
            return self._state(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        finally:
            del context

    def shoot(self, positions: np.ndarray, seed: int) -> tuple[int, int]:
        """One shot; returns (outcome, number of MD steps run)."""
        import openmm

        spec = self.spec
        integrator = openmm.LangevinMiddleIntegrator(spec["temperature_k"], spec["friction_per_ps"],
                                                     spec["timestep_fs"] / 1000.0)
        integrator.setRandomNumberSeed(seed)
        context = openmm.Context(self.system, integrator, self.platform)
        try:
            context.setPositions(positions)
            context.applyConstraints(1e-8)
            x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
            outcome = self._state(x)
            if outcome != UNDECIDED:
                return outcome, 0
            context.setVelocitiesToTemperature(spec["temperature_k"], seed)
            n_steps = 0
            every = spec["check_interval_steps"]
            while n_steps < spec["max_steps"]:
                step = min(every, spec["max_steps"] - n_steps)
                integrator.step(step)
                n_steps += step
                x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
                if not np.all(np.isfinite(x)):
                    from spacetime_md.errors import NonFiniteError

                    raise NonFiniteError(f"shot with seed {seed}: positions became non-finite after {n_steps} steps")
                outcome = self._state(x)
                if outcome != UNDECIDED:
                    return outcome, n_steps
            return UNDECIDED, n_steps
        finally:
            del context, integrator

    def run(self, frame: int, positions: np.ndarray, shots: Sequence[int]) -> tuple[int, list[tuple[int, int, int]]]:
        seed = self.spec["seed"]
        return frame, [(int(k), *self.shoot(positions, shot_seed(seed, frame, k))) for k in shots]


_WORKER: _ShotRunner | None = None


def _init_worker(spec: dict[str, Any]) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = _ShotRunner(spec)


def _worker_run(frame: int, positions: np.ndarray, shots: Sequence[int]):
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run(frame, positions, shots)


# --------------------------------------------------------------------------- results


@dataclass
class CommittorResult:
    """Committor estimates at selected frames of one path.

    Attributes
    ----------
    frames : ndarray of int, shape=(K,)
        Indices into the path, increasing.
    s : ndarray, shape=(K,)
        Position along the path in [0, 1] (``frame / (n_path_frames - 1)``).
    cv_values : ndarray, shape=(K, C)
        The system's collective variables at each frame (radians for angles, nm otherwise), in
        the order of ``cv_names``.
    energies : ndarray, shape=(K,)
        Raw OpenMM potential energy, kJ/mol.
    relaxed_energies : ndarray or None, shape=(K,)
        The energy that picked the highest-energy frame (``max_energy_source``: relaxed or
        quenched, kJ/mol) when computed.
    n_start, n_target, n_undecided : ndarray of int, shape=(K,)
        Shot outcomes.
    p_b, p_b_low, p_b_high : ndarray, shape=(K,)
        ``n_target / (n_start + n_target)`` and its Wilson interval (nan where all undecided).
    mean_commit_ps : ndarray, shape=(K,)
        Mean time to commitment of the decided shots (ps).
    max_energy_frame : int or None
        The path frame of highest energy, if it was included.
    max_energy_source : str
        The energy used: ``"quenched"``, ``"relaxed"`` or ``"raw"`` (see :class:`CommittorConfig`).
    start_state, target_state : str
    ts_candidates : list of int
        Path frames with ``p_B`` closest to 1/2.
    crosses_half : bool
        Whether the estimates reach 1/2 from both sides (some ``<= 0.5`` and some ``>= 0.5``).
        Frames with all shots in one state are no candidates: a profile that jumps from 0 to 1
        crosses, but only between two frames (``crossing_bracket``), and has no candidate.
    crossing_bracket : (int, int) or None
        The first two neighbouring evaluated frames whose ``p_B`` lie on either side of 1/2 (or
        a frame at exactly 1/2, twice).
    n_shots_run, n_shots_resumed : int
        Shots run by this call and shots taken from a checkpoint.
    n_shots_in_workers : int
        Shots of this call run in worker processes.
    md_steps : int
        Integration steps of all shots.
    cv_names : tuple of str
    cv_periodic : ndarray of bool, shape=(C,)
        Angle CVs (shown in degrees).
    phi_psi_columns : (int, int) or None
        Columns of the backbone (phi, psi) when the CVs hold exactly one residue's pair (a
        dipeptide), else ``None``: :attr:`phi_psi` and ``phi_psi_deg`` are then n/a.
    energy_requested : str
        ``config.energy``.
    energy_na_reason : str or None
        Why the requested energy was not used (``max_energy_source`` differs), else ``None``.
    refined : dict or None
        The refined relaxed-energy maximum (``config.refine``): ``around_frame``, ``window``,
        ``frame_position`` (fractional frame index), ``s``, ``torsions_deg`` (each held torsion
        CV), ``phi_psi_deg`` (``None`` unless the CVs hold one residue's (phi, psi)),
        ``relaxed_energy_kj_mol``, shot counts, ``p_b``, ``p_b_interval``, ``mean_commit_ps``.
    refined_na_reason : str or None
        Why there is no refined maximum (not requested, or no torsion CV to hold).
    refined_positions : ndarray or None, shape=(N, 3)
        Its structure (nm).
    states : dict
        ``{"start": ..., "target": ...}``: the two states (name and regions in CV space).
    state_sources : (str, str)
        Where each state came from: ``"named"``, ``"system"`` (the system's states) or
        ``"endpoints"`` (built around the paths run's start / end structure).
    """

    frames: np.ndarray
    s: np.ndarray
    cv_values: np.ndarray
    energies: np.ndarray
    relaxed_energies: np.ndarray | None
    n_start: np.ndarray
    n_target: np.ndarray
    n_undecided: np.ndarray
    p_b: np.ndarray
    p_b_low: np.ndarray
    p_b_high: np.ndarray
    mean_commit_ps: np.ndarray
    max_energy_frame: int | None
    max_energy_source: str
    start_state: str
    target_state: str
    ts_candidates: list[int]
    crosses_half: bool
    n_shots_run: int
    n_shots_resumed: int
    md_steps: int
    config: CommittorConfig
    crossing_bracket: tuple[int, int] | None = None
    n_shots_in_workers: int = 0
    wall_time_s: float = 0.0
    cv_names: tuple[str, ...] = ()
    cv_periodic: np.ndarray | None = None
    phi_psi_columns: tuple[int, int] | None = None
    energy_requested: str = "relaxed"
    energy_na_reason: str | None = None
    refined: dict[str, Any] | None = None
    refined_na_reason: str | None = None
    refined_positions: np.ndarray | None = None
    states: dict[str, Any] = field(default_factory=dict)
    state_sources: tuple[str, str] = ("system", "system")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def phi_psi(self) -> np.ndarray:
        """(phi, psi) in radians, shape=(K, 2), when the CVs are one residue's backbone pair."""
        if self.phi_psi_columns is None:
            raise ValueError(f"phi_psi: n/a, {_phi_psi_na_reason(self.cv_names)}; use cv_values")
        return self.cv_values[:, list(self.phi_psi_columns)]

    @property
    def n_shots_total(self) -> int:
        """All shots, the refined maximum's included."""
        r = self.refined or {}
        extra = r.get("n_start", 0) + r.get("n_target", 0) + r.get("n_undecided", 0)
        return int(self.n_start.sum() + self.n_target.sum() + self.n_undecided.sum()) + extra

    @property
    def energy_message(self) -> str | None:
        """One line when the requested energy was n/a and another was used."""
        if self.energy_na_reason is None:
            return None
        return f"{self.energy_requested} energy {self.energy_na_reason}; used the {self.max_energy_source} energy"

    @property
    def refined_message(self) -> str | None:
        """One line on p_B at the refined relaxed-energy maximum, or why there is none."""
        r = self.refined
        if r is None:
            if self.refined_na_reason is None or self.refined_na_reason.startswith("not requested"):
                return None
            return f"refined relaxed-energy maximum {self.refined_na_reason}"
        held = ", ".join(f"{name} = {value:.1f}" for name, value in r["torsions_deg"].items())
        where = (f"refined relaxed-energy maximum (frame {r['frame_position']:.1f}, {held} deg, "
                 f"{r['relaxed_energy_kj_mol']:.1f} kJ/mol)")
        if r["p_b"] is None:
            return f"{where}: no shot committed"
        low, high = r["p_b_interval"]
        return f"{where}: p_B = {r['p_b']:.2f} [{low:.2f}, {high:.2f}] from {r['n_start'] + r['n_target']} shots"

    @property
    def message(self) -> str:
        """One line on where (or whether) the path crosses p_B = 1/2."""
        decided = np.isfinite(self.p_b)
        if not decided.any():
            return "no shot committed to either state: p_B is undefined at every frame"
        lo, hi = float(np.nanmin(self.p_b)), float(np.nanmax(self.p_b))
        if not self.crosses_half:
            return (f"p_B never crosses 0.5 along this path (range {lo:.2f} to {hi:.2f}); "
                    f"no transition-state candidate")
        a, b = self.crossing_bracket
        ka, kb = (int(np.flatnonzero(self.frames == f)[0]) for f in (a, b))
        where = (f"at frame {a}" if a == b else
                 f"between frames {a} and {b} (p_B {self.p_b[ka]:.2f} -> {self.p_b[kb]:.2f})")
        if not self.ts_candidates:
            return (f"p_B crosses 0.5 {where}, unresolved: no evaluated frame has shots to both states; "
                    f"evaluate more frames there")
        c = self.ts_candidates[0]
        k = int(np.flatnonzero(self.frames == c)[0])
        return (f"p_B crosses 0.5 {where}; closest frame {c} (s = {self.s[k]:.2f}) has p_B = {self.p_b[k]:.2f} "
                f"[{self.p_b_low[k]:.2f}, {self.p_b_high[k]:.2f}]")

    def _periodic(self) -> np.ndarray:
        if self.cv_periodic is None:
            return np.zeros(len(self.cv_names), dtype=bool)
        return np.asarray(self.cv_periodic, dtype=bool)

    def _display(self, k: int) -> dict[str, float]:
        """CV values of evaluated frame ``k``: degrees for angles, nm otherwise."""
        periodic = self._periodic()
        return {name: float(np.degrees(v) if periodic[j] else v)
                for j, (name, v) in enumerate(zip(self.cv_names, self.cv_values[k]))}

    def to_dict(self) -> dict[str, Any]:
        periodic = self._periodic()
        per_frame = []
        for k, f in enumerate(self.frames):
            per_frame.append({
                "frame": int(f),
                "s": float(self.s[k]),
                "cvs": self._display(k),
                "phi_psi_deg": (None if self.phi_psi_columns is None else
                                [float(v) for v in np.degrees(self.cv_values[k, list(self.phi_psi_columns)])]),
                "energy_kj_mol": float(self.energies[k]),
                "relaxed_energy_kj_mol": None if self.relaxed_energies is None else float(self.relaxed_energies[k]),
                "n_start": int(self.n_start[k]),
                "n_target": int(self.n_target[k]),
                "n_undecided": int(self.n_undecided[k]),
                "p_b": _finite_or_none(self.p_b[k]),
                "p_b_interval": [_finite_or_none(self.p_b_low[k]), _finite_or_none(self.p_b_high[k])],
                "mean_commit_ps": _finite_or_none(self.mean_commit_ps[k]),
                "max_energy_frame": bool(self.max_energy_frame is not None and int(f) == self.max_energy_frame),
            })
        return {
            "start_state": self.start_state,
            "target_state": self.target_state,
            "states": self.states,
            "state_sources": {"start": self.state_sources[0], "target": self.state_sources[1]},
            "cv_names": list(self.cv_names),
            "cv_units": {name: ("deg" if periodic[j] else "nm") for j, name in enumerate(self.cv_names)},
            "phi_psi_na_reason": None if self.phi_psi_columns is not None else _phi_psi_na_reason(self.cv_names),
            "frames": per_frame,
            "max_energy_frame": self.max_energy_frame,
            "max_energy_source": self.max_energy_source,
            "energy_requested": self.energy_requested,
            "energy_used": self.max_energy_source,
            "energy_na_reason": self.energy_na_reason,
            "ts_candidates": list(self.ts_candidates),
            "crosses_half": self.crosses_half,
            "crossing_bracket": None if self.crossing_bracket is None else list(self.crossing_bracket),
            "message": self.message,
            "refined_max_energy": self.refined,
            "refined_max_energy_na_reason": self.refined_na_reason,
            "shots": {
                "total": self.n_shots_total,
                "run": self.n_shots_run,
                "resumed": self.n_shots_resumed,
                "in_workers": self.n_shots_in_workers,
                "undecided": int(self.n_undecided.sum()),
                "md_steps": self.md_steps,
            },
            "confidence": self.config.confidence,
            "wall_time_s": self.wall_time_s,
            **self.extra,
        }

    def format_table(self) -> str:
        """Printable per-frame summary (CV columns in degrees for angles, nm otherwise)."""
        energy = f"E {self.max_energy_source}" if self.relaxed_energies is not None else "E raw"
        periodic = self._periodic()
        widths = [max(8, len(n) + 2) for n in self.cv_names]
        head = "".join(f"{n:>{w}}" for n, w in zip(self.cv_names, widths))
        lines = [f"{'frame':>6}{'s':>6}{head}{energy:>13}{'A':>5}{'B':>5}{'?':>4}{'p_B':>7}  interval"]
        for k, f in enumerate(self.frames):
            e = self.relaxed_energies[k] if self.relaxed_energies is not None else self.energies[k]
            p = "   n/a" if not np.isfinite(self.p_b[k]) else f"{self.p_b[k]:6.2f}"
            ci = "" if not np.isfinite(self.p_b[k]) else f"[{self.p_b_low[k]:.2f}, {self.p_b_high[k]:.2f}]"
            mark = "  <- max energy" if f == self.max_energy_frame else ""
            cvs = "".join(f"{np.degrees(v):>{w}.0f}" if periodic[j] else f"{v:>{w}.3f}"
                          for j, (v, w) in enumerate(zip(self.cv_values[k], widths)))
            lines.append(f"{int(f):>6}{self.s[k]:>6.2f}{cvs}{e:>13.1f}{self.n_start[k]:>5}"
                         f"{self.n_target[k]:>5}{self.n_undecided[k]:>4} {p}  {ci}{mark}")
        if len(self.cv_names) and not periodic.all():
            lines.append("(angles in deg, lengths in nm)")
        lines.append(self.message)
        for extra in (self.energy_message, self.refined_message):
            if extra is not None:
                lines.append(extra)
        lines.append(f"shots: {self.n_shots_total} ({self.n_shots_run} run now, {self.n_shots_resumed} from checkpoint, "
                     f"{int(self.n_undecided.sum())} undecided after {self.config.max_length_ps:g} ps); "
                     f"{self.md_steps} MD steps; {self.wall_time_s:.1f} s")
        return "\n".join(lines)


def _phi_psi_na_reason(cv_names: Sequence[str]) -> str:
    return (f"the collective variables ({', '.join(cv_names) or 'none'}) do not hold exactly one residue's "
            "backbone (phi, psi)")


def _phi_psi_columns(cvs: "CollectiveVariables") -> tuple[int, int] | None:
    pairs = cvs.ramachandran_pairs()
    if len(pairs) != 1:
        return None
    return pairs[0][1], pairs[0][2]


def _summarise(outcomes: dict[int, dict[int, tuple[int, int]]], frames: np.ndarray, timestep_fs: float,
               confidence: float):
    n = len(frames)
    n_a, n_b, n_u = (np.zeros(n, dtype=np.int64) for _ in range(3))
    commit = np.full(n, np.nan)
    steps = 0
    for k, f in enumerate(frames):
        shots = outcomes.get(int(f), {})
        res = np.array(list(shots.values()), dtype=np.int64).reshape(-1, 2)
        n_a[k] = int((res[:, 0] == START).sum())
        n_b[k] = int((res[:, 0] == TARGET).sum())
        n_u[k] = int((res[:, 0] == UNDECIDED).sum())
        decided = res[:, 0] != UNDECIDED
        if decided.any():
            commit[k] = float(res[decided, 1].mean()) * timestep_fs / 1000.0
        steps += int(res[:, 1].sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        p = n_b / (n_a + n_b)
    p = np.where(n_a + n_b > 0, p, np.nan)
    low, high = wilson_interval(n_b, n_a + n_b, confidence)
    return n_a, n_b, n_u, p, low, high, commit, steps


# --------------------------------------------------------------------------- checkpoint


def _load_checkpoint(path: Path, fingerprint: dict[str, Any], refined_key: int | None = None,
                     refined_sha: str | None = None) -> dict[int, dict[int, tuple[int, int]]]:
    """Shot outcomes of a checkpoint made with ``fingerprint``; the refined maximum's shots
    (under ``refined_key``) only if they were shot from the same structure (``refined_sha``)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        from spacetime_md.errors import CheckpointError

        raise CheckpointError(f"{path}: expected a JSON shot checkpoint, got unreadable text ({exc})") from exc
    version = data.get("version")
    if version != _CHECKPOINT_VERSION:
        raise ValueError(
            f"out_dir: expected {path.name} of checkpoint version {_CHECKPOINT_VERSION} to resume, got version "
            f"{version} (written before states were regions in CV space; its shots cannot be reused); use another "
            "output directory or overwrite=True (--overwrite)"
        )
    old = data.get("fingerprint", {})
    if old != fingerprint:
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise ValueError(
            f"out_dir: expected {path.name} of the same committor run to resume, got one made with different "
            f"settings ({', '.join(diff)}); use another output directory or overwrite=True"
        )
    outcomes = {int(f): {int(k): (int(v[0]), int(v[1])) for k, v in shots.items()}
                for f, shots in data["frames"].items()}
    if refined_key is not None and data.get("refined_sha256") != refined_sha:
        outcomes.pop(refined_key, None)  # shot from another structure (other energy or refinement settings)
    return outcomes


def _save_checkpoint(path: Path, fingerprint: dict[str, Any], outcomes: dict[int, dict[int, tuple[int, int]]],
                     refined_sha: str | None = None) -> None:
    data = {
        "version": _CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "frames": {str(f): {str(k): list(v) for k, v in sorted(shots.items())} for f, shots in sorted(outcomes.items())},
        "refined_sha256": refined_sha,
    }
    write_text_atomic(path, json.dumps(data))


# --------------------------------------------------------------------------- main entry


def _path_frames(paths: Any, path: int, system: "MolecularSystem") -> tuple[np.ndarray, np.ndarray | None]:
    from spacetime_md.molecular.paths.transition import TransitionPaths

    if isinstance(paths, TransitionPaths):
        if not 0 <= path < paths.n_paths:
            raise ValueError(f"path: expected an index in [0, {paths.n_paths}), got {path}")
        frames, energies = paths.frames[path], paths.energies[path]
    else:
        from spacetime_md.molecular.system.energies import coordinates_to_nm

        frames, energies = coordinates_to_nm("paths", paths, system), None
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[1:] != (system.n_atoms, 3):
        raise ValueError(f"paths: expected frames of shape (T, {system.n_atoms}, 3), got {frames.shape}")
    if len(frames) < 2:
        raise ValueError(f"paths: expected a path of at least 2 frames, got {len(frames)}")
    return frames, energies


def estimate_committor(
    paths: "TransitionPaths | np.ndarray",
    system: "MolecularSystem",
    config: CommittorConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    endpoint_states: "Sequence[MetastableState] | None" = None,
) -> CommittorResult:
    """Committor ``p_B`` at frames of one transition path from unbiased OpenMM shots.

    Parameters
    ----------
    paths : TransitionPaths or array-like, shape=(T, N, 3)
        A path set (``config.path`` picks the path) or one path's frames (nm).
    system : MolecularSystem
        The system the path belongs to; its temperature, force field, platform, collective
        variables and states are used.
    config : CommittorConfig, optional
    out_dir : path, optional
        Directory for the shot checkpoint ``shots.json``; shots recorded there (by an
        interrupted earlier call with the same settings) are not run again.
    overwrite : bool
        Discard an existing checkpoint made with other settings instead of raising.
    progress : bool
        tqdm bar over shots.
    callback : callable, optional
        Called with ``{"frame", "shots_done", "shots_total"}`` after each finished batch.
    endpoint_states : (MetastableState, MetastableState), optional
        Start and target states to fall back on where the system has no states or the path's
        first / last frame is in none of them (e.g. states built around the path's end
        structures with :func:`~spacetime_md.molecular.system.states.endpoint_state`); over
        ``system.cvs``.

    Returns
    -------
    CommittorResult
    """
    from spacetime_md.molecular.system.energies import evaluate_energies
    from spacetime_md.molecular.paths.relaxed import relaxed_na_reason

    t0 = time.perf_counter()
    config = CommittorConfig() if config is None else config
    if not isinstance(config, CommittorConfig):
        raise TypeError(f"config: expected a CommittorConfig, got {type(config).__name__}")
    if endpoint_states is not None and len(endpoint_states) != 2:
        raise ValueError(f"endpoint_states: expected (start, target), got {len(endpoint_states)} states")
    frames_all, energies_all = _path_frames(paths, config.path, system)
    n_path = len(frames_all)
    start, target, sources = _resolve_states(system, frames_all, config, endpoint_states)
    selected = select_frames(n_path, config.n_frames)
    no_torsion = relaxed_na_reason(system)

    if energies_all is None:
        energies_all = np.asarray(evaluate_energies(system, frames_all)._value, dtype=np.float64)
    relaxed_all = None
    source = "raw"
    energy_na_reason = None
    if config.include_max_energy and config.energy != "raw":
        wanted = config.energy
        if wanted == "relaxed" and no_torsion is not None:
            energy_na_reason = no_torsion
            wanted = "quenched"
            logger.warning("committor: relaxed energy %s; using the quenched energy", no_torsion)
        try:
            relaxed_all = RELAXED_ENERGIES[wanted](system, frames_all)
            source = wanted
        except Exception as exc:  # noqa: BLE001 - any OpenMM failure falls back to raw energies
            logger.warning("%s energies failed (%s); using raw OpenMM energies", wanted, exc)
            energy_na_reason = f"n/a: the {wanted} energies failed ({type(exc).__name__}: {exc})"
    max_frame = None
    if config.include_max_energy:
        ranking = relaxed_all if relaxed_all is not None else energies_all
        max_frame = int(np.argmax(ranking))
        selected = np.unique(np.append(selected, max_frame))
    # Shots are kept per frame index; the refined maximum (a structure between frames) is
    # booked under the index one past the path's last frame.
    positions = {int(f): frames_all[f] for f in selected}
    refined = None
    refined_key = n_path
    if not config.refine:
        refined_na_reason = "not requested (refine=False)"
    elif not config.include_max_energy:
        refined_na_reason = "not requested (include_max_energy=False: no highest-energy frame to refine around)"
    elif no_torsion is not None:
        refined_na_reason = f"{no_torsion}, so no torsion route to refine along; skipped"
        logger.warning("committor: refined relaxed-energy maximum %s", refined_na_reason)
    else:
        from spacetime_md.molecular.paths.relaxed import cv_torsion_quencher, refine_relaxed_maximum

        refined_na_reason = None
        quencher = cv_torsion_quencher(system)
        refined = refine_relaxed_maximum(quencher, frames_all, max_frame, window=config.refine_window,
                                         substeps=config.refine_substeps)
        positions[refined_key] = refined.positions

    import openmm

    checker = CVStateChecker.from_system(system, start, target)
    spec = {
        "system_xml": openmm.XmlSerializer.serialize(system.openmm_system),
        "platform": system.platform_name,
        "checker": checker.to_spec(),
        "temperature_k": system.temperature_k,
        "timestep_fs": float(config.timestep_fs),
        "friction_per_ps": float(config.friction_per_ps),
        "check_interval_steps": config.check_interval_steps,
        "max_steps": config.max_steps,
        "seed": config.seed,
    }
    fingerprint = {
        "path_sha256": hashlib.sha256(np.ascontiguousarray(frames_all).tobytes()).hexdigest(),
        "system_sha256": hashlib.sha256(spec["system_xml"].encode()).hexdigest(),
        "platform": spec["platform"],
        "temperature_k": system.temperature_k,
        "start_state": start.name,
        "target_state": target.name,
        # What decides a shot's outcome: the two states' regions and the CVs they use.
        "states_sha256": hashlib.sha256(json.dumps(spec["checker"], sort_keys=True).encode()).hexdigest(),
        **{k: v for k, v in config.to_dict().items() if k not in ("n_frames", "n_shots", "n_workers", "confidence",
                                                                   "include_max_energy", "energy", "kind", "path",
                                                                   "refine", "refine_window", "refine_substeps")},
    }
    refined_sha = None if refined is None else hashlib.sha256(np.ascontiguousarray(refined.positions).tobytes()).hexdigest()

    checkpoint = None
    outcomes: dict[int, dict[int, tuple[int, int]]] = {}
    if out_dir is not None:
        checkpoint = Path(out_dir) / SHOTS_FILE
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if overwrite and checkpoint.is_file():
            checkpoint.unlink()
        outcomes = _load_checkpoint(checkpoint, fingerprint, refined_key, refined_sha)
    n_resumed = sum(1 for f in positions for k in outcomes.get(f, {}) if k < config.n_shots)

    # Frames already in A or B commit at t = 0: settled here, without MD or worker processes.
    runner = _ShotRunner(spec)
    pending = {f: [k for k in range(config.n_shots) if k not in outcomes.get(f, {})] for f in positions}
    at_start = {f: runner.initial_state(positions[f]) for f, todo in pending.items() if todo}
    n_todo = sum(len(todo) for todo in pending.values())
    # Batches of the others' pending shots: split each frame's shots over the workers.
    tasks = []
    for f, todo in pending.items():
        if not todo or at_start[f] != UNDECIDED:
            continue
        size = max(1, math.ceil(len(todo) / config.n_workers))
        for i in range(0, len(todo), size):
            tasks.append((f, todo[i : i + size]))
    n_md = sum(len(shots) for _, shots in tasks)
    logger.info("committor: %d structures x %d shots; %d to run (%d with MD), %d from checkpoint",
                len(positions), config.n_shots, n_todo, n_md, n_resumed)

    bar = None
    if progress and n_todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_todo, desc="committor shots", unit="shot")
    done = 0

    def finished(frame: int, results: list[tuple[int, int, int]]) -> None:
        nonlocal done
        store = outcomes.setdefault(frame, {})
        for k, outcome, steps in results:
            store[k] = (outcome, steps)
        done += len(results)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, fingerprint, outcomes, refined_sha)
        if bar is not None:
            bar.update(len(results))
        if callback is not None:
            callback({"frame": frame, "shots_done": done, "shots_total": n_todo})

    try:
        for f, todo in pending.items():
            if todo and at_start[f] != UNDECIDED:
                finished(f, [(k, at_start[f], 0) for k in todo])
        # In this process while the rest looks cheap (or with one worker) ...
        t_local, n_local, n_in_workers = time.perf_counter(), 0, 0
        while tasks:
            f, shots = tasks.pop(0)
            finished(*runner.run(f, positions[f], shots))
            n_local += len(shots)
            per_shot = (time.perf_counter() - t_local) / n_local
            if config.n_workers > 1 and per_shot * sum(len(s) for _, s in tasks) > WORKERS_AFTER_S:
                break
        # ... then in worker processes.
        if tasks:
            logger.info("committor: %d shots left to %d worker processes", sum(len(s) for _, s in tasks),
                        min(config.n_workers, len(tasks)))
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(config.n_workers, len(tasks)), mp_context=ctx,
                                                        initializer=_init_worker, initargs=(spec,)) as pool:
                futures = [pool.submit(_worker_run, f, positions[f], shots) for f, shots in tasks]
                try:
                    for fut in concurrent.futures.as_completed(futures):
                        frame, results = fut.result()
                        finished(frame, results)
                        n_in_workers += len(results)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()

    kept = {f: {k: v for k, v in s.items() if k < config.n_shots} for f, s in outcomes.items()}
    n_a, n_b, n_u, p, low, high, commit, steps = _summarise(kept, selected, config.timestep_fs, config.confidence)
    refined_row = None
    phi_psi_cols = _phi_psi_columns(system.cvs)
    if refined is not None:
        ra, rb, ru, rp, rlo, rhi, rc, rsteps = _summarise(kept, np.array([refined_key]), config.timestep_fs,
                                                          config.confidence)
        steps += rsteps
        held = dict(zip((t.name for t in system.cvs.torsions), (float(v) for v in np.degrees(refined.angles))))
        phi_psi_deg = None
        if phi_psi_cols is not None:
            names = [system.cvs[k].name for k in phi_psi_cols]
            phi_psi_deg = [held[n] for n in names]
        refined_row = {
            "around_frame": max_frame,
            "window": list(refined.window),
            "frame_position": refined.frame_position,
            "s": refined.frame_position / (n_path - 1),
            "torsions_deg": held,
            "phi_psi_deg": phi_psi_deg,
            "relaxed_energy_kj_mol": refined.energy,
            "n_start": int(ra[0]), "n_target": int(rb[0]), "n_undecided": int(ru[0]),
            "p_b": _finite_or_none(rp[0]), "p_b_interval": [_finite_or_none(rlo[0]), _finite_or_none(rhi[0])],
            "mean_commit_ps": _finite_or_none(rc[0]),
        }
    decided = np.isfinite(p)
    crosses = bool(decided.any() and np.nanmin(p) <= 0.5 <= np.nanmax(p))
    candidates: list[int] = []
    bracket = None
    if crosses:
        # The first place along the path where p_B reaches 1/2: a frame at 0.5, or two neighbours
        # (among the decided frames) on either side.
        idx = np.flatnonzero(decided)
        for a, b in zip(idx[:-1], idx[1:]):
            if p[a] == 0.5 or (p[a] - 0.5) * (p[b] - 0.5) < 0:
                bracket = (int(selected[a]), int(selected[b]))
                break
        else:
            bracket = (int(selected[idx[-1]]),) * 2
        gap = np.abs(p - 0.5)
        best = np.nanmin(gap)
        # Frames that are all-A or all-B are no transition-state candidates, however close.
        if best < 0.5:
            candidates = [int(selected[k]) for k in np.flatnonzero(decided & np.isclose(gap, best))]
    return CommittorResult(
        frames=selected,
        s=selected / (n_path - 1),
        cv_values=np.atleast_2d(system.compute_cvs(frames_all[selected])).reshape(len(selected), len(system.cvs)),
        energies=energies_all[selected],
        relaxed_energies=None if relaxed_all is None else relaxed_all[selected],
        n_start=n_a, n_target=n_b, n_undecided=n_u,
        p_b=p, p_b_low=low, p_b_high=high, mean_commit_ps=commit,
        max_energy_frame=max_frame, max_energy_source=source,
        start_state=start.name, target_state=target.name,
        ts_candidates=candidates, crosses_half=crosses, crossing_bracket=bracket,
        n_shots_run=n_todo, n_shots_resumed=n_resumed, md_steps=steps, n_shots_in_workers=n_in_workers,
        config=config, wall_time_s=time.perf_counter() - t0,
        cv_names=tuple(system.cvs.names), cv_periodic=system.cvs.periodic, phi_psi_columns=phi_psi_cols,
        energy_requested=config.energy, energy_na_reason=energy_na_reason,
        refined=refined_row, refined_na_reason=refined_na_reason,
        refined_positions=None if refined is None else refined.positions,
        states={"start": start.to_dict(), "target": target.to_dict()}, state_sources=sources,
    )


# --------------------------------------------------------------------------- job


def plot_committor(result: CommittorResult, path: str | os.PathLike, title: str | None = None) -> Path:
    """p_B along the path with Wilson error bars (and the energy profile on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ok = np.isfinite(result.p_b)
    err = np.maximum(np.vstack([result.p_b - result.p_b_low, result.p_b_high - result.p_b]), 0.0)
    ax.errorbar(result.s[ok], result.p_b[ok], yerr=err[:, ok], fmt="o-", color="tab:red", capsize=3,
                label=f"p_B ({result.config.confidence:.0%} Wilson)")
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    if result.max_energy_frame is not None:
        k = int(np.flatnonzero(result.frames == result.max_energy_frame)[0])
        ax.axvline(result.s[k], color="tab:orange", lw=1, ls=":",
                   label=f"highest {result.max_energy_source} energy")
    for c in result.ts_candidates if result.crosses_half else []:
        k = int(np.flatnonzero(result.frames == c)[0])
        ax.plot(result.s[k], result.p_b[k], "*", ms=14, color="tab:green")
    r = result.refined
    if r is not None and r["p_b"] is not None:
        lo, hi = r["p_b_interval"]
        ax.errorbar([r["s"]], [r["p_b"]], yerr=[[r["p_b"] - lo], [hi - r["p_b"]]], fmt="D", color="tab:purple",
                    capsize=3, label="refined relaxed maximum")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("position along the path s")
    ax.set_ylabel(f"p_B (reach {result.target_state} before {result.start_state})")
    ax2 = ax.twinx()
    e = result.relaxed_energies if result.relaxed_energies is not None else result.energies
    ax2.plot(result.s, e, "s-", color="tab:gray", ms=3, lw=0.8, alpha=0.7)
    label = result.max_energy_source if result.relaxed_energies is not None else "raw"
    ax2.set_ylabel(f"{label} energy (kJ/mol)", color="tab:gray")
    ax.legend(loc="upper left", fontsize=8)
    import textwrap

    ax.set_title(textwrap.fill(title or result.message, 100), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path


def _system_for_paths(paths_dir: Path, platform: str | None):
    """The system of a paths run and its ``config.json``.

    From ``system.json`` (a :meth:`MolecularSystem.spec`, with the run's CVs and states) when the
    run wrote one; older runs name a preset system in ``config.json``.
    """
    from spacetime_md.molecular.system.build import MolecularSystem, known_systems, load_system

    cfg = paths_dir / CONFIG_FILE
    if not cfg.is_file():
        raise FileNotFoundError(
            f"paths_dir: expected config.json (written by `spacetime-md paths`) in {paths_dir}, not found"
        )
    data = _read_json(cfg)
    spec_file = paths_dir / SYSTEM_FILE
    if spec_file.is_file():
        spec = _read_json(spec_file)
        if not isinstance(spec, dict):
            raise ValueError(f"{spec_file}: expected a system spec (a JSON object), got {type(spec).__name__}")
        return MolecularSystem.from_spec(spec, platform=platform), data
    if "system" not in data:
        raise ValueError(f"{cfg}: expected a 'system' entry, got keys {sorted(data)}")
    name = str(data["system"]).lower().replace("_", "-")
    if name not in {*known_systems(), "ala2", "ad"}:
        raise FileNotFoundError(
            f"paths_dir: expected {SYSTEM_FILE} (the run's system) in {paths_dir} for system {data['system']!r}, "
            f"which is no preset ({', '.join(known_systems())}); rerun `spacetime-md paths`"
        )
    return load_system(data["system"], solvent=data.get("solvent", "vacuum"), platform=platform), data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: expected JSON, got unreadable text ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: expected a readable JSON file, got {exc.strerror or exc}") from None


def _load_paths(paths_dir: Path, kind: str) -> "TransitionPaths":
    """:meth:`TransitionPaths.load` with one-line errors for a missing, truncated or damaged
    ``paths_<kind>.npz`` (or ``report.json``) instead of zip/pickle tracebacks."""
    import zipfile
    import zlib

    from spacetime_md.molecular.paths.transition import TransitionPaths

    npz = paths_dir / f"paths_{kind}.npz"
    report = paths_dir / REPORT_FILE
    if report.is_file():
        _read_json(report)  # its own message names the file
    try:
        paths = TransitionPaths.load(paths_dir, kind=kind)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ValueError(
            f"paths: expected {npz.name} as written by `spacetime-md paths` in {paths_dir}, got a truncated or "
            f"damaged file ({type(exc).__name__}: {' '.join(str(text).split())})"
        ) from None
    frames = np.asarray(paths.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or frames.shape[1] < 2:
        raise ValueError(f"paths: expected frames of shape (paths, T >= 2, atoms, 3) in {npz}, got {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError(f"paths: expected finite coordinates in {npz}, got NaN or infinity")
    return paths


def load_committor_inputs(
    paths_dir: str | os.PathLike,
    kind: str = "geodesic",
    *,
    platform: str | None = None,
    states: str | os.PathLike | None = None,
) -> "tuple[TransitionPaths, MolecularSystem, dict[str, Any], tuple[MetastableState, MetastableState] | None]":
    """Everything :func:`run_committor` reads from a paths directory, checked, before any shot.

    Returns ``(paths, system, paths_config, endpoint_states)``: the ``paths_<kind>.npz`` path set,
    the run's system (with ``states`` loaded if given), its ``config.json`` and the endpoint
    states of its ``report.json`` (``None`` if it recorded none). Missing or unreadable inputs
    raise ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    paths_dir = Path(paths_dir)
    if not paths_dir.is_dir():
        raise FileNotFoundError(
            f"paths_dir: expected a directory written by `spacetime-md paths`, got missing {str(paths_dir)!r}"
        )
    if kind not in ("geodesic", "straight"):
        raise ValueError(f"kind: expected 'geodesic' or 'straight', got {kind!r}")
    if states is not None and not Path(states).is_file():
        raise FileNotFoundError(f"states: expected an existing state file, got {str(states)!r}")
    paths = _load_paths(paths_dir, kind)
    system, paths_config = _system_for_paths(paths_dir, platform)
    if paths.frames.shape[2] != system.n_atoms:
        from spacetime_md.errors import TopologyMismatchError

        raise TopologyMismatchError(
            f"paths: expected frames of {system.n_atoms} atoms like {system.name}, got {paths.frames.shape[2]}"
        )
    if states is not None:
        from spacetime_md.molecular.system.states import load_states

        system.states = load_states(states, system)
    return paths, system, paths_config, _endpoint_states(paths_dir, system)


def _endpoint_states(paths_dir: Path, system: "MolecularSystem") -> "tuple[MetastableState, MetastableState] | None":
    """The start and target states a paths run built around its end structures (``report.json``
    ``endpoints``), if it recorded them and they fit the system's CVs; else ``None``."""
    from spacetime_md.molecular.system.states import _state_from_dict

    report = paths_dir / REPORT_FILE
    if not report.is_file():
        return None
    endpoints = (_read_json(report) or {}).get("endpoints") or {}
    entries = [endpoints.get("start_state"), endpoints.get("target_state")]
    if not all(isinstance(e, dict) for e in entries):
        return None
    states = tuple(_state_from_dict(e, None, None, []) for e in entries)
    for state in states:
        try:
            state.check(system.cvs)
        except ValueError as exc:
            logger.warning("committor: the run's endpoint state %s does not fit the CVs (%s); not used",
                           state.name, exc)
            return None
    return states


def run_committor(
    paths_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    config: CommittorConfig | None = None,
    *,
    platform: str | None = None,
    states: str | os.PathLike | None = None,
    overwrite: bool = False,
    plot: bool = True,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> CommittorResult:
    """The ``spacetime-md committor`` job: load a paths directory, shoot, write outputs.

    Reads ``paths_<kind>.npz``, ``config.json``, ``system.json`` (the run's system with its
    collective variables and states; older runs name a preset in ``config.json``) and the
    endpoint states in ``report.json`` of a ``spacetime-md paths`` run. ``states`` (a state file,
    see :func:`~spacetime_md.molecular.system.states.load_states`) replaces the system's states. Writes
    into ``out_dir`` (default ``PATHS_DIR/committor_<kind>_path<P>``): ``config.json`` (first),
    the checkpoint ``shots.json`` (after every batch), ``committor.json``, ``committor.png``,
    one PDB per transition-state candidate (``ts_candidate_frame<F>.pdb``) and the refined
    relaxed-energy maximum (``ts_refined_max_energy.pdb``). A rerun with
    the same settings skips the shots already in ``shots.json``.
    """
    config = CommittorConfig() if config is None else config
    if not isinstance(config, CommittorConfig):
        raise TypeError(f"config: expected a CommittorConfig, got {type(config).__name__}")
    paths_dir = Path(paths_dir)
    paths, system, paths_config, endpoints = load_committor_inputs(paths_dir, config.kind, platform=platform,
                                                                    states=states)
    out = Path(out_dir) if out_dir is not None else paths_dir / f"committor_{config.kind}_path{config.path:03d}"
    from spacetime_md._outputs import finish_output_dir, prepare_output_dir

    # Reruns continue from shots.json (resume); another command's results are never overwritten.
    prepare_output_dir(out, "committor", resume=True, overwrite=overwrite)
    resolved = {
        "command": "committor",
        "paths_dir": str(paths_dir.resolve()),
        "system": system.name,
        "system_source": SYSTEM_FILE if (paths_dir / SYSTEM_FILE).is_file() else f"{CONFIG_FILE} (preset)",
        "solvent": system.solvent,
        "temperature_k": system.temperature_k,
        "platform": system.platform_name,
        "cv_names": list(system.cvs.names),
        "states_file": None if states is None else str(Path(states).resolve()),
        "paths_checkpoint": paths_config.get("checkpoint"),
        "committor_config": config.to_dict(),
    }
    write_text_atomic(out / CONFIG_FILE, json.dumps(resolved, indent=2))
    result = estimate_committor(paths, system, config, out_dir=out, overwrite=overwrite, progress=progress,
                                callback=callback, endpoint_states=endpoints)
    files = {"checkpoint": SHOTS_FILE, "ts_candidates": []}
    for c in result.ts_candidates:
        name = f"ts_candidate_frame{c:03d}.pdb"
        with atomic_path(out / name) as tmp:
            system.to_mdtraj(paths.frames[config.path, c]).save_pdb(str(tmp))
        files["ts_candidates"].append(name)
    if result.refined_positions is not None:
        with atomic_path(out / REFINED_PDB) as tmp:
            system.to_mdtraj(result.refined_positions).save_pdb(str(tmp))
        files["refined_max_energy"] = REFINED_PDB
    if plot:
        plot_committor(result, out / PLOT_FILE)
        files["plot"] = PLOT_FILE
    result.extra.update({
        "paths_dir": str(paths_dir.resolve()),
        "system": system.name,
        "kind": config.kind,
        "path": config.path,
        "n_path_frames": int(paths.frames.shape[1]),
        "temperature_k": system.temperature_k,
        "platform": system.platform_name,
        "files": files,
    })
    write_text_atomic(out / RESULT_FILE, json.dumps(result.to_dict(), indent=2))
    finish_output_dir(out, [RESULT_FILE, SHOTS_FILE, CONFIG_FILE, *[f for v in files.values()
                                                                  for f in (v if isinstance(v, list) else [v])]])
    result.extra["out_dir"] = str(out)
    return result


# --------------------------------------------------------------------------- reference path


def compute_dihedral_drive_path(
    system: "MolecularSystem",
    start: Any = "C7eq",
    end: Any = "C7ax",
    n_frames: int = 32,
    *,
    waypoints_deg: Sequence[Sequence[float]] | None = None,
) -> "TransitionPaths":
    """A classical reference path: restrained minimisations along a line in torsion-CV space.

    Frame ``i`` is the structure minimised with every torsion CV of the system (for a peptide
    with the default CVs, every backbone phi and psi; see
    :func:`~spacetime_md.molecular.paths.relaxed.cv_torsion_quencher`) restrained to the ``i``-th point
    of the piecewise-linear route through ``waypoints_deg``, starting from the previous frame.
    Points are degrees, one value per torsion CV in the order of ``system.cvs.torsions``, and
    not wrapped: for alanine dipeptide ``(-150, 160)`` to ``(60, -40)`` goes through phi = 0.
    Default route: the start structure's torsions to the end structure's. Deterministic; about
    4 ms per frame for alanine dipeptide.

    Parameters
    ----------
    system : MolecularSystem
        Needs at least one torsion CV.
    start, end : state name, PDB path or coordinates
        See :func:`~spacetime_md.molecular.paths.transition.resolve_structure`; ``end`` only sets the default
        route.
    n_frames : int
    waypoints_deg : array-like, shape=(W >= 2, K), optional
        Route through the K torsion CVs.

    Returns
    -------
    TransitionPaths
        One path (``kind="dihedral-drive"``); energies are the raw OpenMM energies.
    """
    from spacetime_md.molecular.system.energies import evaluate_energies
    from spacetime_md.molecular.paths.transition import TransitionPaths, resolve_structure
    from spacetime_md.molecular.paths.relaxed import cv_torsion_quencher

    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(f"n_frames: expected an integer >= 2, got {n_frames!r}")
    quencher = cv_torsion_quencher(system)
    names = [t.name for t in system.cvs.torsions]
    columns = [system.cvs.index(n) for n in names]
    x0, _ = resolve_structure(system, start, "start")
    if waypoints_deg is None:
        x1, _ = resolve_structure(system, end, "end")
        values = np.atleast_2d(system.compute_cvs(np.stack([x0, x1])))[:, columns]
        waypoints_deg = np.degrees(values)
    way = np.asarray(waypoints_deg, dtype=np.float64)
    if way.ndim != 2 or way.shape[1] != len(names) or len(way) < 2:
        raise ValueError(f"waypoints_deg: expected at least two points of {len(names)} torsion values "
                         f"({', '.join(names)}), got shape {way.shape}")
    seg = np.linalg.norm(np.diff(way, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, cum[-1], n_frames)
    route = np.radians(np.stack([np.interp(t, cum, way[:, k]) for k in range(way.shape[1])], axis=1))
    frames = []
    x = x0
    for point in route:
        _, x = quencher.quench_at(x, point)
        x = np.asarray(x, dtype=np.float64)
        frames.append(x)
    frames = np.asarray(frames)[None]
    energies = np.asarray(evaluate_energies(system, frames[0])._value)[None]
    return TransitionPaths(frames, np.zeros(n_frames), energies, "dihedral-drive",
                           {"waypoints_deg": way.tolist(), "torsions": names})
