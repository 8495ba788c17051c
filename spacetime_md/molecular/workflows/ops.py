"""Seed OpenPathSampling (OPS) transition path sampling with a spacetime transition path.

TPS needs an initial trajectory that connects the two states; :func:`to_openpathsampling`
turns one of our paths into one:

1. **States.** Each metastable state of the project (regions in the space of the system's
   collective variables: torsions, distances, RMSDs; :mod:`spacetime_md.molecular.system.states`)
   becomes an OPS ``CVDefinedVolume`` on a 0/1 indicator CV (:func:`state_indicator`, an OPS
   ``MDTrajFunctionCV``) that computes the CVs of each frame and tests the state's regions.
   Frames are in the same state for OPS as for :meth:`MetastableState.contains` (and
   :meth:`MolecularSystem.assign_states`).
2. **Trim.** The path is cut to the segment from the last frame in the start state (before
   the first frame in the target state) to that first frame in the target state, so it
   begins in A, ends in B and is in neither in between: exactly what OPS's TPS ensemble
   accepts.
3. **Wrap.** Frames become OPS OpenMM snapshots of an ``openpathsampling.engines.openmm``
   engine on the system's force field (``LangevinMiddleIntegrator`` at the system's
   temperature), with Maxwell-Boltzmann velocities (or zero).

:func:`sample_tps` then runs shooting moves from the seed and counts accepted and
decorrelated paths. ``openpathsampling`` (and ``six``, which it imports) is an optional
dependency: ``pip install spacetime-md[ops]``. It is imported only when these functions run.

Units inside: nm, ps, K, radians; the public arguments are ``openmm.unit`` quantities.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm.unit as unit

from spacetime_md.molecular.system.units import to_md_float

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.states import MetastableState
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "OPSSeed",
    "TPSResult",
    "to_openpathsampling",
    "state_volume",
    "sample_tps",
    "trim_to_transition",
    "state_indicator",
]

logger = logging.getLogger(__name__)


def _import_ops():
    try:
        import openpathsampling
        import openpathsampling.engines.openmm  # noqa: F401 - registers the OpenMM engine
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "openpathsampling: expected the optional dependency to be installed "
            f"(pip install 'spacetime-md[ops]'), got: {exc}"
        ) from exc
    return openpathsampling


_CONSTRAINED_RANDOM_VELOCITIES = None


def _constrained_random_velocities_class():
    """``RandomVelocities`` that applies OpenMM velocity constraints itself (built on first use)."""
    global _CONSTRAINED_RANDOM_VELOCITIES
    if _CONSTRAINED_RANDOM_VELOCITIES is None:
        paths = _import_ops()

        class ConstrainedRandomVelocities(paths.RandomVelocities):
            """Boltzmann velocities projected onto the engine's constraints (OpenMM engines)."""

            def __call__(self, snapshot):
                new = super().__call__(snapshot)
                if self.engine is None or not self.engine.has_constraints():
                    return new
                context = self.engine.simulation.context
                context.setPositions(new.coordinates)
                context.setVelocities(new.velocities)
                context.applyVelocityConstraints(1e-8)
                velocities = context.getState(getVelocities=True).getVelocities(asNumpy=True)
                self.engine._changed()  # the context no longer holds the engine's cached snapshot
                return new.copy_with_replacement(velocities=velocities)

        ConstrainedRandomVelocities.__module__ = __name__
        _CONSTRAINED_RANDOM_VELOCITIES = ConstrainedRandomVelocities
    return _CONSTRAINED_RANDOM_VELOCITIES


@functools.lru_cache(maxsize=64)
def _checker(spec: str):
    """CVs and state of a :func:`state_indicator` spec, built once per spec string."""
    from spacetime_md.molecular.workflows.shots import _cv_from_dict
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.system.states import _state_from_dict

    data = json.loads(spec)
    cvs = CollectiveVariables(_cv_from_dict(c) for c in data["cvs"])
    state = _state_from_dict(data["state"], None, None, [])
    state.check(cvs)
    return cvs, state


def state_indicator(traj, spec: str) -> np.ndarray:
    """1.0 for each frame in the state, 0.0 otherwise; shape=(F, 1).

    The collective variable behind :func:`state_volume` (an OPS ``MDTrajFunctionCV``: it
    receives an ``mdtraj.Trajectory``; the trailing singleton axis makes OPS treat it as a
    scalar). ``spec`` is a JSON string ``{"cvs": [...], "state": {...}}``: the CVs the state
    uses (self-contained dictionaries, RMSD references inline) and the state's name and regions.
    """
    cvs, state = _checker(spec)
    values = np.atleast_2d(cvs.compute(np.asarray(traj.xyz, dtype=np.float64)))
    return state.contains(values, cvs).astype(np.float64)[:, None]


def _indicator_spec(state: "MetastableState", system: "MolecularSystem") -> str:
    from spacetime_md.molecular.workflows.shots import _cv_dict, _state_dict

    try:
        state.check(system.cvs)
    except ValueError as exc:
        raise ValueError(f"state: expected a state over the CVs of {system.name}, got {exc}") from None
    used = sorted({system.cvs.index(name) for name in state.cv_names})
    return json.dumps({"cvs": [_cv_dict(system.cvs[k]) for k in used], "state": _state_dict(state)}, sort_keys=True)


def state_volume(state: "MetastableState", system: "MolecularSystem", topology=None):
    """An OPS volume of the frames in ``state`` (any regions in the system's CV space).

    Parameters
    ----------
    state : MetastableState
        Over ``system.cvs`` (torsions, distances, RMSDs; e.g. a state of ``system.states`` or
        one built by :func:`~spacetime_md.molecular.system.states.endpoint_state`).
    system : MolecularSystem
        Provides the collective variables and (unless ``topology`` is given) the topology.
    topology : openpathsampling.engines.MDTrajTopology, optional

    Returns
    -------
    openpathsampling.CVDefinedVolume
        Named ``state.name``: the frames where :func:`state_indicator` is 1.
    """
    paths = _import_ops()
    spec = _indicator_spec(state, system)
    topology = topology if topology is not None else paths.engines.MDTrajTopology(system.mdtraj_topology)
    cv = paths.MDTrajFunctionCV(f"in_{state.name}", state_indicator, topology, spec=spec)
    return paths.CVDefinedVolume(cv, 0.5, 1.5).named(state.name)


def trim_to_transition(states: np.ndarray, start: int, target: int) -> tuple[int, int]:
    """First and last frame (inclusive) of the A -> B segment of a path.

    Parameters
    ----------
    states : ndarray of int, shape=(T,)
        State index of each frame (``-1`` for none).
    start, target : int
        State indices of A and B.

    Returns
    -------
    (i, j)
        ``j`` is the first frame in B; ``i`` the last frame in A before it.
    """
    states = np.asarray(states)
    in_target = np.flatnonzero(states == target)
    if in_target.size == 0:
        raise ValueError("path: expected a frame in the target state, got none (the path never reaches it)")
    j = int(in_target[0])
    in_start = np.flatnonzero(states[:j] == start)
    if in_start.size == 0:
        raise ValueError(f"path: expected a frame in the start state before frame {j} (first in the target), got none")
    return int(in_start[-1]), j


@dataclass
class OPSSeed:
    """An initial TPS path for OpenPathSampling and what it needs.

    Attributes
    ----------
    trajectory : openpathsampling.Trajectory
        The trimmed path: first frame in ``start_state``, last in ``target_state``.
    engine : openpathsampling.engines.openmm.Engine
    start_state, target_state : openpathsampling.Volume
    network : openpathsampling.TPSNetwork
        ``start_state -> target_state``.
    frame_range : (int, int)
        First and last frame of the source path kept (inclusive).
    temperature_k : float
    """

    trajectory: Any
    engine: Any
    start_state: Any
    target_state: Any
    network: Any
    frame_range: tuple[int, int]
    temperature_k: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ensemble(self):
        """The TPS ensemble the seed must satisfy."""
        return self.network.sampling_ensembles[0]

    def velocity_randomizer(self):
        """Maxwell-Boltzmann velocities at the seed's temperature, with the engine's constraints.

        An OPS ``RandomVelocities`` whose result is passed through OpenMM's velocity
        constraints. (OPS 1.7's ``OpenMMEngine.apply_constraints`` returns its cached,
        unconstrained snapshot for snapshots of its own engine, so the plain modifier leaves
        the constrained bond directions hot: about 390 K instead of 300 K for alanine
        dipeptide with rigid X-H bonds.)
        """
        # OPS OpenMM snapshots give per-particle masses, so beta uses k_B per particle.
        beta = 1.0 / (self.temperature_k * unit.kelvin * unit.BOLTZMANN_CONSTANT_kB)
        return _constrained_random_velocities_class()(beta=beta, engine=self.engine)

    def move_scheme(self, shooting: str = "one-way"):
        """An OPS move scheme with uniform shooting-point selection.

        ``"one-way"``: OPS's ``OneWayShootingMoveScheme`` (stochastic dynamics, velocities kept).
        ``"two-way"``: ``TwoWayShootingStrategy`` with Maxwell-Boltzmann velocities drawn at the
        shooting point (``RandomVelocities`` at the seed's temperature).
        """
        paths = _import_ops()
        if shooting == "one-way":
            return paths.OneWayShootingMoveScheme(self.network, selector=paths.UniformSelector(), engine=self.engine)
        if shooting == "two-way":
            modifier = self.velocity_randomizer()
            scheme = paths.MoveScheme(self.network)
            scheme.append(paths.strategies.TwoWayShootingStrategy(
                modifier=modifier, selector=paths.UniformSelector(), engine=self.engine))
            scheme.append(paths.strategies.OrganizeByMoveGroupStrategy())
            return scheme
        raise ValueError(f"shooting: expected 'one-way' or 'two-way', got {shooting!r}")

    def initial_conditions(self, scheme=None):
        """The OPS ``SampleSet`` holding the seed trajectory as replica 0 of the TPS ensemble.

        With ``scheme``, OPS checks that it is exactly the initial condition the scheme needs.
        """
        paths = _import_ops()
        sample_set = paths.SampleSet([paths.Sample(replica=0, trajectory=self.trajectory, ensemble=self.ensemble)])
        if scheme is not None:
            scheme.assert_initial_conditions(sample_set)
        return sample_set


def to_openpathsampling(
    path: Any,
    system: "MolecularSystem",
    *,
    path_index: int = 0,
    start_state: "str | MetastableState | None" = None,
    target_state: "str | MetastableState | None" = None,
    timestep: unit.Quantity = 2.0 * unit.femtosecond,
    collision_rate: unit.Quantity = 1.0 / unit.picosecond,
    n_steps_per_frame: int = 10,
    n_frames_max: int = 2000,
    velocities: str = "maxwell-boltzmann",
    seed: int = 0,
) -> OPSSeed:
    """Trim a transition path to its A -> B segment and wrap it for OpenPathSampling.

    Parameters
    ----------
    path : TransitionPaths, mdtraj.Trajectory or array-like, shape=(T, N, 3)
        The path (``path_index`` picks one from a set); coordinates in nm.
    system : MolecularSystem
        Force field, temperature, platform, collective variables and states.
    start_state, target_state : str or MetastableState, optional
        State names (of ``system.states``) or states over ``system.cvs`` (e.g. built with
        :func:`~spacetime_md.molecular.system.states.endpoint_state` for a system without states);
        default: the states of the path's first and last frame.
    timestep, collision_rate : Quantity
        ``LangevinMiddleIntegrator`` of the OPS engine (femtosecond, 1/picosecond).
    n_steps_per_frame, n_frames_max : int
        OPS engine options: MD steps between saved frames, longest trial trajectory.
    velocities : {"maxwell-boltzmann", "zero"}
        Velocities of the seed's snapshots (drawn at the system's temperature, constrained).
    seed : int
        Seed of the velocities and of the engine's Langevin noise (OPS itself draws from
        ``numpy.random``; seed that for a repeatable TPS run).

    Returns
    -------
    OPSSeed
    """
    paths = _import_ops()
    import openmm
    from openpathsampling.engines.openmm import Engine, Snapshot

    from spacetime_md.molecular.paths.transition import TransitionPaths

    dt_ps = to_md_float("timestep", timestep, unit.picosecond)
    gamma = to_md_float("collision_rate", collision_rate, unit.picosecond**-1)
    if not dt_ps > 0 or not gamma >= 0:
        raise ValueError(f"timestep and collision_rate: expected > 0 and >= 0, got {timestep} and {collision_rate}")
    for name, value in (("n_steps_per_frame", n_steps_per_frame), ("n_frames_max", n_frames_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if velocities not in ("maxwell-boltzmann", "zero"):
        raise ValueError(f"velocities: expected 'maxwell-boltzmann' or 'zero', got {velocities!r}")

    if isinstance(path, TransitionPaths):
        if not 0 <= path_index < path.n_paths:
            raise ValueError(f"path_index: expected an index in [0, {path.n_paths}), got {path_index}")
        frames = path.frames[path_index]
    else:
        from spacetime_md.molecular.system.energies import coordinates_to_nm

        frames = coordinates_to_nm("path", path, system)
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or len(frames) < 2:
        raise ValueError(f"path: expected at least 2 frames of shape ({system.n_atoms}, 3), got shape {frames.shape}")
    from spacetime_md.molecular.system.states import MetastableState

    given = (start_state, target_state)
    if not system.states and not all(isinstance(g, MetastableState) for g in given):
        raise ValueError(
            f"system: expected metastable-state definitions for {system.name}, it has none; pass start_state and "
            "target_state as MetastableState objects (e.g. endpoint_state(system.cvs, values, name))"
        )
    values = np.atleast_2d(system.compute_cvs(frames))
    assigned = (system.assign_states(frames) if system.states else np.full(len(frames), -1))
    chosen = []
    for which, name, k, where in (("start_state", start_state, assigned[0], "first"),
                                  ("target_state", target_state, assigned[-1], "last")):
        if isinstance(name, MetastableState):
            name.check(system.cvs)
            chosen.append(name)
        elif name is not None:
            chosen.append(system.get_state(name))
        elif k < 0:
            raise ValueError(f"{which}: the path's {where} frame is in no state; expected it in one, or name the state")
        else:
            chosen.append(system.states[k])
    a, b = chosen
    if a.name == b.name:
        raise ValueError(f"start_state and target_state: expected two different states, got {a.name} twice")
    # A -> B membership of every frame (0: A, 1: B, -1: neither; a frame in both counts as B).
    in_a, in_b = a.contains(values, system.cvs), b.contains(values, system.cvs)
    i, j = trim_to_transition(np.where(in_b, 1, np.where(in_a, 0, -1)), 0, 1)
    segment = frames[i : j + 1]

    topology = paths.engines.MDTrajTopology(system.mdtraj_topology)
    integrator = openmm.LangevinMiddleIntegrator(system.temperature_k, gamma, dt_ps)
    integrator.setRandomNumberSeed(int(seed) % (2**31 - 2) + 1)  # 0 would mean "pick one"
    engine = Engine(topology, system.openmm_system, integrator,
                    options={"n_steps_per_frame": n_steps_per_frame, "n_frames_max": n_frames_max})
    engine.initialize(system.platform_name)
    context = engine.simulation.context
    snapshots = []
    nm, nm_ps = unit.nanometer, unit.nanometer / unit.picosecond
    for k, x in enumerate(segment):
        context.setPositions(x)
        context.applyConstraints(1e-8)
        if velocities == "maxwell-boltzmann":
            context.setVelocitiesToTemperature(system.temperature_k, int(seed) * 100_003 + k + 1)
        else:
            context.setVelocities(np.zeros_like(x))
        state = context.getState(getPositions=True, getVelocities=True)
        snapshots.append(Snapshot.construct(
            coordinates=state.getPositions(asNumpy=True).value_in_unit(nm) * nm,
            # Box vectors like the engine's own snapshots (OpenMM's default box without PBC), so
            # mixed trajectories convert with Trajectory.to_mdtraj().
            box_vectors=state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nm) * nm,
            velocities=state.getVelocities(asNumpy=True).value_in_unit(nm_ps) * nm_ps,
            engine=engine,
        ))
    engine._changed()  # the context moved: OPS must not reuse its cached current snapshot
    trajectory = paths.Trajectory(snapshots)
    vol_a, vol_b = state_volume(a, system, topology), state_volume(b, system, topology)
    network = paths.TPSNetwork(vol_a, vol_b)
    seed_obj = OPSSeed(trajectory, engine, vol_a, vol_b, network, (i, j), system.temperature_k,
                       {"start_state": a.name, "target_state": b.name, "n_source_frames": len(frames)})
    if not seed_obj.ensemble(trajectory):  # pragma: no cover - guaranteed by the trim
        raise RuntimeError("trimmed path is not in the TPS ensemble; please report this")
    logger.info("OPS seed: frames %d..%d of %d (%s -> %s)", i, j, len(frames), a.name, b.name)
    return seed_obj


# --------------------------------------------------------------------------- TPS run


@dataclass
class TPSResult:
    """Summary of a short TPS run from an :class:`OPSSeed`.

    Attributes
    ----------
    n_trials, n_accepted : int
    acceptance : float
    n_decorrelated : int
        Accepted paths sharing no configuration with the previous decorrelated path (the
        seed counts as the first; it is not included in the count).
    path_lengths : list of int
        Frames of the current path after every trial.
    final_trajectory : openpathsampling.Trajectory
    wall_time_s : float
    """

    n_trials: int
    n_accepted: int
    n_decorrelated: int
    path_lengths: list[int]
    final_trajectory: Any
    shooting: str
    wall_time_s: float

    @property
    def acceptance(self) -> float:
        return self.n_accepted / self.n_trials if self.n_trials else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"shooting": self.shooting, "n_trials": self.n_trials, "n_accepted": self.n_accepted,
                "acceptance": self.acceptance, "n_decorrelated": self.n_decorrelated,
                "mean_path_length_frames": float(np.mean(self.path_lengths)) if self.path_lengths else None,
                "wall_time_s": self.wall_time_s}


def _configurations(trajectory) -> set[bytes]:
    return {np.asarray(s.xyz, dtype=np.float32).tobytes() for s in trajectory}


def sample_tps(
    seed: OPSSeed,
    n_steps: int,
    *,
    shooting: str = "two-way",
    random_seed: int | None = None,
    progress: bool = False,
) -> TPSResult:
    """Run ``n_steps`` OPS shooting moves from ``seed`` (no storage) and count the results.

    Each trial is checked against the TPS ensemble by OPS; the accepted path after every step
    is compared with the last decorrelated one by shared configurations (coordinates).

    Parameters
    ----------
    seed : OPSSeed
    n_steps : int
        Monte Carlo steps (shooting trials).
    shooting : {"two-way", "one-way"}
        See :meth:`OPSSeed.move_scheme`.
    random_seed : int, optional
        Reseeds OPS's shared generator (``openpathsampling.rng``: shooting points, move
        choices, acceptance) and numpy's global one (OPS's velocity draws). With the engine's
        own seed (:func:`to_openpathsampling`) this makes a run repeatable.
    progress : bool
        Let OPS print its progress lines.
    """
    paths = _import_ops()
    from openpathsampling.beta.hooks import PathSimulatorHook

    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps: expected an integer >= 1, got {n_steps!r}")
    if random_seed is not None:
        from openpathsampling.rng import default_rng

        default_rng().bit_generator.state = np.random.default_rng(random_seed).bit_generator.state
        np.random.seed(random_seed)
    scheme = seed.move_scheme(shooting)
    init = seed.initial_conditions(scheme)
    sampler = paths.PathSampling(storage=None, move_scheme=scheme, sample_set=init)
    sampler.live_visualizer = None
    if not progress:
        import io

        sampler.output_stream = io.StringIO()
    counts = {"accepted": 0, "decorrelated": 0}
    lengths: list[int] = []
    reference = _configurations(seed.trajectory)

    class _Counter(PathSimulatorHook):
        def after_step(self, sim, step_number, step_info, state, results, hook_state):
            nonlocal reference
            if results.change.accepted:
                counts["accepted"] += 1
            current = state[seed.ensemble].trajectory
            lengths.append(len(current))
            configs = _configurations(current)
            if not configs & reference:
                counts["decorrelated"] += 1
                reference = configs

    sampler.attach_hook(_Counter())
    t0 = time.perf_counter()
    sampler.run(n_steps)
    final = sampler.sample_set[seed.ensemble].trajectory
    return TPSResult(n_steps, counts["accepted"], counts["decorrelated"], lengths, final, shooting,
                     time.perf_counter() - t0)
