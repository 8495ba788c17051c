"""Unbiased shots from a frame, the state test that stops them, and their statistics.

:class:`CVStateChecker` decides A / B / neither from the collective variables; every shot has its
own seed from ``(seed, frame, shot)`` and its own OpenMM Context, so worker processes
reproduce the calling process exactly. :func:`wilson_interval` is the p_B confidence interval.

Units inside: nm, ps, kJ/mol, K, radians.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from spacetime_md.molecular._seeds import openmm_seed
from spacetime_md.molecular.workflows.committor_config import CommittorConfig

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.system.states import MetastableState

__all__ = [
    "wilson_interval",
    "select_frames",
    "CVStateChecker",
]

logger = logging.getLogger(__name__)


#: Outcome codes of one shot.
START, TARGET, UNDECIDED = 0, 1, -1


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
    (:func:`~spacetime_md.molecular.paths.relaxed.heavy_atom_quencher`, 10 000 kJ/mol/nm^2)."""
    from spacetime_md.molecular.paths.relaxed import heavy_atom_quencher

    return heavy_atom_quencher(system).quench_frames(frames)

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
