"""Annealed Langevin along a spacetime curve inside OpenMM (DESIGN.md section 5).

For curve point ``n`` the target is ``U(x)/kT + SNR_n/2 |x - x_n/alpha_n|^2`` in model units.
In OpenMM units (nm, kJ/mol) with model length scale ``s`` (``x_model = x_nm / s``) this is the
force field plus a per-particle harmonic restraint

    E_restraint = k_n / 2 * sum_i |r_i - c_{n,i}|^2,   k_n = kT * SNR_n / s^2 (kJ/mol/nm^2),
                                                         c_n = s * x_n / alpha_n (nm),

implemented as one ``CustomExternalForce`` in its own force group whose targets and force
constant are updated per curve point; OpenMM's ``LangevinMiddleIntegrator`` runs the
``n_steps`` steps per point. :func:`restraint_schedule` turns a curve in model units into these
centres and force constants. Units inside: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.molecular._seeds import openmm_seed
from spacetime_md.molecular.sampling.workers import ReplicaWorkerError, WorkerGroup, resolve_workers

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["Arrival", "PendingPaths", "RestrainedLangevinSampler", "RestrainedPaths", "resolve_path_workers", "RESTRAINT_FORCE_GROUP", "restraint_schedule"]

logger = logging.getLogger(__name__)

#: Force group of the moving restraint (so energies can be evaluated with or without it).
RESTRAINT_FORCE_GROUP = 31


@dataclass
class RestrainedPaths:
    """Frames of annealed-Langevin paths.

    Attributes
    ----------
    frames : ndarray, shape=(P, F, N, 3)
        Positions (nm) every ``record_every`` steps (``F = T * n_steps / record_every``; with the
        default one frame per curve point, after its last step).
    n_force_evals : int
        Force evaluations by the integrator (one per MD step, all paths).
    wall_time : float
        Seconds.
    """

    frames: np.ndarray
    n_force_evals: int
    wall_time: float


@dataclass(frozen=True)
class Arrival:
    """Raise a path's friction once it has arrived across the curve's largest jump.

    From global step ``from_step`` on, every ``check_every`` steps, the frame's ``atoms`` are
    compared (Kabsch RMSD) with ``target`` (the last restrained minimum of the curve) and
    ``before`` (the restrained minimum just before the largest jump); once the frame is closer to
    ``target``, the Langevin friction becomes ``friction_per_ps`` for the rest of that path. The
    path crosses at the sampler's friction and is cooled where it arrives
    (:func:`~spacetime_md.molecular.paths.budget.arrival_rule`). Positions in nm.
    """

    friction_per_ps: float
    from_step: int
    atoms: np.ndarray
    target: np.ndarray
    before: np.ndarray
    check_every: int = 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.friction_per_ps) and self.friction_per_ps > 0):
            raise ValueError(f"friction_per_ps: expected a finite number > 0, got {self.friction_per_ps!r}")
        for name, lowest in (("from_step", 0), ("check_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
                raise ValueError(f"{name}: expected an integer >= {lowest}, got {value!r}")
        n = len(np.asarray(self.atoms))
        for name in ("target", "before"):
            if np.shape(getattr(self, name)) != (n, 3):
                raise ValueError(f"{name}: expected shape ({n}, 3) for the {n} atoms, got {np.shape(getattr(self, name))}")

    def has_arrived(self, positions: np.ndarray) -> bool:
        """Whether ``positions (N, 3)`` are closer to ``target`` than to ``before``."""
        from spacetime_md.molecular.paths.structures import kabsch_rmsd

        x = np.asarray(positions)[np.asarray(self.atoms)]
        return bool(kabsch_rmsd(x, self.target) < kabsch_rmsd(x, self.before))


def restraint_schedule(
    log_snr: Tensor,
    x_model: Tensor,
    length_scale_nm: float,
    temperature_k: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Restraint centres and force constants in OpenMM units for a curve in model units.

    The model-unit target ``SNR_n/2 |x - x_n/alpha_n|^2`` (in units of kT) of curve point ``n``
    becomes, with ``x_model = x_nm / s``, the harmonic restraint
    ``k_n/2 |r - c_n|^2`` (kJ/mol) with (DESIGN.md section 5)

        c_n = s * x_n / alpha_n               (nm)
        k_n = kT * exp(log_snr_n) / s^2       (kJ/mol/nm^2)

    where ``alpha_n^2 = sigmoid(log_snr_n)`` (VP schedule, :func:`spacetime_md.core.alpha_sigma`).

    Parameters
    ----------
    log_snr : Tensor, shape=(T,)
        Curve log-SNR (of model units).
    x_model : Tensor, shape=(T, 3N) or (T, N, 3)
        Curve points in model units (:func:`spacetime_md.molecular.model.denoiser.to_model`).
    length_scale_nm : float
        Model length scale ``s`` (nm per model unit), > 0.
    temperature_k : float
        Temperature (K), > 0.

    Returns
    -------
    centres : ndarray of float64, shape=(T, N, 3)
        Restraint centres ``c_n`` (nm).
    force_constants : ndarray of float64, shape=(T,)
        Restraint force constants ``k_n`` (kJ/mol/nm^2), as :meth:`RestrainedLangevinSampler.sample`
        takes them.

    Raises
    ------
    TypeError, ValueError
        Non-tensor inputs, wrong shapes, non-finite values, or a length scale or temperature
        that is not a finite number > 0.
    """
    from spacetime_md.core._validation import check_tensor
    from spacetime_md.core.schedule import alpha_sigma
    from spacetime_md.molecular.model.denoiser import from_model
    from spacetime_md.molecular.system.units import kT_kj_per_mol

    for name, value in (("length_scale_nm", length_scale_nm), ("temperature_k", temperature_k)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
            raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    log_snr = check_tensor("log_snr", log_snr, ("T",))
    n_points = log_snr.shape[0]
    x_model = check_tensor("x_model", x_model)
    if x_model.ndim == 3 and x_model.shape[0] == n_points and x_model.shape[2] == 3:
        x_model = x_model.reshape(n_points, -1)
    if x_model.ndim != 2 or x_model.shape[0] != n_points or x_model.shape[1] % 3:
        raise ValueError(f"x_model: expected shape ({n_points}, 3N) or ({n_points}, N, 3), got {tuple(x_model.shape)}")
    alpha, _ = alpha_sigma(log_snr)
    centres = from_model((x_model / alpha[:, None]).detach().cpu(), length_scale_nm).double().numpy()
    force_constants = kT_kj_per_mol(temperature_k) * log_snr.detach().exp().cpu().double().numpy() / length_scale_nm**2
    return centres, force_constants


def resolve_path_workers(workers: int | str, n_paths: int) -> int:
    """Processes for ``n_paths`` independent paths: an integer as given, ``"auto"`` every usable
    core (the affinity mask, as ``sample --workers auto``), or 1 when the main script lacks the
    ``if __name__ == "__main__":`` block that ``spawn``-ed workers need
    (:func:`~spacetime_md.molecular.sampling.workers.main_is_spawn_safe`); capped by ``n_paths``.

    A path worker imports only numpy and OpenMM (ready about 0.15 s after it is started), so a
    second process pays off even for the 8 paths of the main command on an idle machine, and on
    a busy one it was measured as fast as one process (docs/geodesic.md).
    """
    return resolve_workers(workers, n_paths)


def _in_units(value: Any, target: unit.Unit, name: str) -> float:
    if not unit.is_quantity(value):
        raise TypeError(f"{name}: expected an openmm.unit.Quantity in {target}, got bare {type(value).__name__}")
    if not value.unit.is_compatible(target):
        raise TypeError(f"{name}: expected a quantity compatible with {target}, got {value.unit}")
    return float(value.value_in_unit(target))


class RestrainedLangevinSampler:
    """Run annealed Langevin paths on an OpenMM system with a moving harmonic restraint.

    Parameters
    ----------
    system : openmm.System
        The physical system (copied; the copy gets the restraint force).
    temperature : Quantity
        Thermostat temperature (e.g. ``300 * kelvin``).
    timestep : Quantity
        Integrator step (e.g. ``1 * femtosecond``).
    friction : Quantity
        Langevin collision rate (e.g. ``1 / picosecond``).
    platform : str
        OpenMM platform name (``"Reference"`` is the fastest for small molecules on CPU).
    workers : int or "auto"
        Processes that run the independent paths of one call (default 1: all in this
        process); ``"auto"``: the usable cores (:func:`resolve_path_workers`). With ``W > 1`` the paths are split into
        ``W`` contiguous blocks, the first run here, the others in ``W - 1`` worker processes
        (``spawn``; started on first use, given the serialized ``System``; stopped by
        :meth:`close`). Path ``p`` is seeded by ``(seed, p)`` wherever it runs, and every
        path reseeds the Reference platform's noise generator, so the frames are bitwise
        those of ``workers=1``.
    """

    def __init__(
        self,
        system: openmm.System,
        temperature: unit.Quantity = 300 * unit.kelvin,
        timestep: unit.Quantity = 1.0 * unit.femtosecond,
        friction: unit.Quantity = 1.0 / unit.picosecond,
        platform: str = "Reference",
        workers: int | str = 1,
    ):
        if not isinstance(system, openmm.System):
            raise TypeError(f"system: expected an openmm.System, got {type(system).__name__}")
        self.workers = resolve_path_workers(workers, 2**31)
        self._spec = {"system_xml": None, "temperature_k": _in_units(temperature, unit.kelvin, "temperature"),
                      "timestep_ps": _in_units(timestep, unit.picosecond, "timestep"),
                      "friction_per_ps": _in_units(friction, unit.picosecond**-1, "friction"), "platform": platform}
        self._source = system
        self._pool: list = []
        self._outstanding: PendingPaths | None = None
        self._abort = threading.Event()
        self.temperature = _in_units(temperature, unit.kelvin, "temperature")
        self.timestep = _in_units(timestep, unit.picosecond, "timestep")
        self.friction = _in_units(friction, unit.picosecond**-1, "friction")
        self.n_atoms = system.getNumParticles()
        self.kT = float((unit.MOLAR_GAS_CONSTANT_R * self.temperature * unit.kelvin).value_in_unit(unit.kilojoule_per_mole))
        self.system = copy.deepcopy(system)
        # The restraint breaks translation invariance: a CMMotionRemover would cancel the
        # centre-of-mass motion the restraint asks for, so it is removed from the copy.
        for index in reversed(range(self.system.getNumForces())):
            if isinstance(self.system.getForce(index), openmm.CMMotionRemover):
                self.system.removeForce(index)
        for force in self.system.getForces():
            if force.getForceGroup() == RESTRAINT_FORCE_GROUP:
                raise ValueError(f"system: force group {RESTRAINT_FORCE_GROUP} is reserved for the restraint")
        self.restraint = openmm.CustomExternalForce("0.5*k_restraint*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        self.restraint.addGlobalParameter("k_restraint", 0.0)
        for name in ("x0", "y0", "z0"):
            self.restraint.addPerParticleParameter(name)
        for i in range(self.n_atoms):
            self.restraint.addParticle(i, [0.0, 0.0, 0.0])
        self.restraint.setForceGroup(RESTRAINT_FORCE_GROUP)
        self.system.addForce(self.restraint)
        self.integrator = openmm.LangevinMiddleIntegrator(self.temperature, self.friction, self.timestep)
        self.platform = openmm.Platform.getPlatformByName(platform)
        self.context = openmm.Context(self.system, self.integrator, self.platform)
        self.n_force_evals = 0

    def _set_restraint(self, centre: np.ndarray, k: float) -> None:
        for i in range(self.n_atoms):
            self.restraint.setParticleParameters(i, i, centre[i].tolist())
        self.restraint.updateParametersInContext(self.context)
        self.context.setParameter("k_restraint", k)

    def sample(
        self,
        centres: np.ndarray,
        force_constants: np.ndarray,
        x_init: np.ndarray,
        *,
        n_paths: int = 1,
        n_steps: int = 100,
        seed: int = 0,
        record_every: int | None = None,
        progress: bool = False,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> RestrainedPaths:
        """Run ``n_paths`` paths along the restraint schedule.

        Parameters
        ----------
        centres : ndarray, shape=(T, N, 3)
            Restraint centres (nm) per curve point.
        force_constants : ndarray, shape=(T,)
            Restraint force constants (kJ/mol/nm^2) per curve point.
        x_init : ndarray, shape=(N, 3) or (P, N, 3)
            Starting positions (nm).
        n_paths : int
        n_steps : int
            Integrator steps per curve point.
        seed : int
            Path ``p`` seeds its velocities and the integrator's noise with
            ``openmm_seed(seed, p)`` (mixed, so runs with different seeds share no path).
        record_every : int, optional
            Record a frame every this many steps (must divide ``n_steps``); default
            ``n_steps``, i.e. one frame per curve point. Frames are ``T * n_steps / record_every``.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps: expected an integer >= 1, got {n_steps!r}")
        record_every = int(n_steps) if record_every is None else record_every
        if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1 or n_steps % record_every:
            raise ValueError(f"record_every: expected a divisor of n_steps ({n_steps}), got {record_every!r}")
        n_points = np.shape(centres)[0] if np.ndim(centres) >= 1 else 0
        # The uniform schedule is the time-budget sampler with n_steps at every point: the same
        # integrator calls in the same order, so the paths are the same bit for bit.
        return self.sample_schedule(centres, force_constants, np.full(n_points, int(n_steps)), x_init,
                                    n_paths=n_paths, seed=seed, record_every=record_every, progress=progress,
                                    callback=callback)

    def restrained_minima(self, centres: np.ndarray, force_constants: np.ndarray, x_init: np.ndarray,
                          tolerance: float = 1.0, return_energies: bool = False):
        """Minima of force field + restraint at each point, each minimised from the previous one.

        Parameters
        ----------
        centres : ndarray, shape=(T, N, 3)
        force_constants : ndarray, shape=(T,)
        x_init : ndarray, shape=(N, 3)
            Start of the first minimisation (nm).
        tolerance : float
            ``LocalEnergyMinimizer`` tolerance (kJ/mol/nm).
        return_energies : bool
            Also return each minimum's force-field energy (the restraint excluded), kJ/mol.

        Returns
        -------
        ndarray, shape=(T, N, 3)
            Positions (nm). Used only to schedule steps (:mod:`spacetime_md.molecular.paths.budget`);
            the OpenMM evaluations are not counted as integrator steps.
        ndarray, shape=(T,)
            With ``return_energies``: the force-field energies.
        """
        centres = np.asarray(centres, dtype=float)
        k = np.asarray(force_constants, dtype=float)
        x = np.asarray(x_init, dtype=float)
        out = np.empty_like(centres)
        energies = np.empty(centres.shape[0])
        force_field = set(range(32)) - {RESTRAINT_FORCE_GROUP}
        for n in range(centres.shape[0]):
            self._set_restraint(centres[n], float(k[n]))
            self.context.setPositions(x)
            openmm.LocalEnergyMinimizer.minimize(self.context, tolerance)
            x = self.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            out[n] = x
            if return_energies:
                state = self.context.getState(getEnergy=True, groups=force_field)
                energies[n] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return (out, energies) if return_energies else out

    def sample_schedule(
        self,
        centres: np.ndarray,
        force_constants: np.ndarray,
        steps_per_point: np.ndarray,
        x_init: np.ndarray,
        *,
        n_paths: int = 1,
        seed: int = 0,
        record_every: int = 1,
        progress: bool = False,
        callback: Callable[[dict[str, Any]], None] | None = None,
        arrival: Arrival | None = None,
    ) -> RestrainedPaths:
        """Like :meth:`sample`, with ``steps_per_point[n]`` steps at point ``n`` (a time budget).

        A frame is recorded every ``record_every`` steps of the whole path (a divisor of
        ``sum(steps_per_point)``), so a path has ``sum(steps_per_point) / record_every`` frames
        whatever the split; the frame after global step ``j`` was run under the restraint of the
        point that step belongs to. With ``arrival`` (:class:`Arrival`) each path's friction rises
        once it has arrived across the curve's largest jump (default: the sampler's friction
        throughout). Seeds as in :meth:`sample`.
        """
        pending = self.start_schedule(centres, force_constants, steps_per_point, x_init, n_paths=n_paths, seed=seed,
                                      record_every=record_every, arrival=arrival)
        return pending.result(progress=progress, callback=callback)

    def start_schedule(
        self,
        centres: np.ndarray,
        force_constants: np.ndarray,
        steps_per_point: np.ndarray,
        x_init: np.ndarray,
        *,
        n_paths: int = 1,
        seed: int = 0,
        record_every: int = 1,
        background: bool = False,
        arrival: Arrival | None = None,
    ) -> "PendingPaths":
        """Hand the paths of :meth:`sample_schedule` to the worker processes and return at once.

        With ``background=True`` every path goes to a worker process (``workers > 1``) or, with
        ``workers=1``, to one background thread of this process (OpenMM releases the GIL while it
        integrates), so the calling thread is free for other work (e.g. solving the geodesic
        while the straight-line baseline runs); otherwise the first block is run by
        :meth:`PendingPaths.result` here, and with ``workers=1`` everything runs in ``result()``.
        Only one call's paths are in flight at a time: a new call first waits for the previous
        one's (the Reference platform draws its noise from one generator per process, so two
        threads integrating at once would not give reproducible paths). Until the background
        paths are collected, the calling thread must not integrate with other OpenMM contexts.
        """
        job = self._job(centres, force_constants, steps_per_point, x_init, n_paths, seed, record_every, arrival)
        parts = [np.arange(n_paths)]
        if self.workers > 1 and n_paths > 1:
            n_procs = min(self.workers, n_paths)
            if background:
                parts = [np.arange(0)] + np.array_split(np.arange(n_paths), n_procs - 1)
            else:
                parts = np.array_split(np.arange(n_paths), n_procs)
        if self._outstanding is not None:
            self._outstanding._collect()
        if background and len(parts) == 1:
            pending = PendingPaths(self, job, np.arange(0), [(_PathThread(self, job, parts[0]), parts[0])])
            self._outstanding = pending
            return pending
        assigned = []
        if len(parts) > 1:
            self._start_workers(len(parts) - 1)
            for worker, indices in zip(self._pool, parts[1:]):
                worker.call("run_paths", {**job, "x_init": job["x_init"][indices], "indices": indices})
                assigned.append((worker, indices))
        pending = PendingPaths(self, job, parts[0], assigned)
        self._outstanding = pending if assigned else None
        return pending

    def _job(self, centres, force_constants, steps_per_point, x_init, n_paths, seed, record_every,
             arrival=None) -> dict[str, Any]:
        centres = np.asarray(centres, dtype=float)
        k = np.asarray(force_constants, dtype=float)
        if centres.ndim != 3 or centres.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"centres: expected shape (T, {self.n_atoms}, 3), got {centres.shape}")
        if k.shape != (centres.shape[0],):
            raise ValueError(f"force_constants: expected shape ({centres.shape[0]},), got {k.shape}")
        if not (np.isfinite(centres).all() and np.isfinite(k).all()) or (k < 0).any():
            raise ValueError("centres/force_constants: expected finite values and force constants >= 0")
        steps = np.asarray(steps_per_point)
        if steps.shape != (centres.shape[0],) or not np.issubdtype(steps.dtype, np.integer) or (steps < 1).any():
            raise ValueError(f"steps_per_point: expected {centres.shape[0]} integers >= 1, got {steps!r}")
        total = int(steps.sum())
        if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1 or total % record_every:
            raise ValueError(f"record_every: expected a divisor of the path's {total} steps, got {record_every!r}")
        x_init = np.asarray(x_init, dtype=float)
        if x_init.shape == (self.n_atoms, 3):
            x_init = np.broadcast_to(x_init, (n_paths, self.n_atoms, 3))
        if x_init.shape != (n_paths, self.n_atoms, 3):
            raise ValueError(f"x_init: expected shape ({self.n_atoms}, 3) or ({n_paths}, {self.n_atoms}, 3), got {x_init.shape}")
        if arrival is not None and not isinstance(arrival, Arrival):
            raise TypeError(f"arrival: expected an Arrival or None, got {type(arrival).__name__}")
        if arrival is not None and np.size(arrival.atoms) and np.max(arrival.atoms) >= self.n_atoms:
            raise ValueError(f"arrival: expected atom indices below {self.n_atoms}, got {int(np.max(arrival.atoms))}")
        return {"centres": centres, "force_constants": k, "steps_per_point": steps, "x_init": x_init,
                "seed": int(seed), "record_every": record_every, "arrival": arrival}

    def run_paths(self, job: dict[str, Any], on_point: Callable[[], None] | None = None) -> np.ndarray:
        """Frames ``(len(indices), F, N, 3)`` of the paths ``job["indices"]`` (global path numbers,
        which seed them), run one after another in this process; no finiteness check."""
        centres, k, steps = job["centres"], job["force_constants"], job["steps_per_point"]
        record_every, x_init, indices = job["record_every"], job["x_init"], job["indices"]
        arrival = job.get("arrival")
        total = int(steps.sum())
        bounds = np.cumsum(steps)
        frames = np.empty((len(indices), total // record_every, self.n_atoms, 3))
        for row, p in enumerate(indices):
            path_seed = openmm_seed(job["seed"], int(p))
            self.integrator.setRandomNumberSeed(path_seed)
            self.context.reinitialize()
            self.context.setPositions(x_init[row])
            self.context.setVelocitiesToTemperature(self.temperature, path_seed)
            done, point, f = 0, 0, 0
            self._set_restraint(centres[0], k[0])
            waiting = arrival is not None  # for this path to arrive (then its friction rises)
            if waiting:
                self.integrator.setFriction(self.friction)
            while done < total:
                if self._abort.is_set():
                    raise _Stopped("the sampler was closed")
                if done == bounds[point]:
                    point += 1
                    self._set_restraint(centres[point], k[point])
                    if on_point is not None:
                        on_point()
                chunk = min(int(bounds[point]) - done, record_every - done % record_every)
                checking = waiting and done + chunk >= arrival.from_step
                if checking:
                    chunk = min(chunk, arrival.check_every - done % arrival.check_every)
                self.integrator.step(chunk)
                done += chunk
                pos = None
                if checking and done >= arrival.from_step and done % arrival.check_every == 0:
                    pos = self.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                    if arrival.has_arrived(pos):
                        waiting = False
                        self.integrator.setFriction(arrival.friction_per_ps)
                if done % record_every == 0:
                    if pos is None:
                        pos = self.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(
                            unit.nanometer)
                    frames[row, f] = pos
                    f += 1
            self.n_force_evals += total
            if on_point is not None:
                on_point()  # the path's last point
        if arrival is not None:
            self.integrator.setFriction(self.friction)
        return frames

    def _start_workers(self, n: int) -> None:
        if len(self._pool) >= n:
            return
        if self._spec["system_xml"] is None:
            self._spec["system_xml"] = openmm.XmlSerializer.serialize(self._source)
        while len(self._pool) < n:
            index = len(self._pool) + 1
            self._pool.append(_PathWorker(index, [index], self._spec, factory=_worker_sampler, label="paths"))

    def start_workers(self) -> None:
        """Start the ``workers - 1`` worker processes now (they start in the background: a few
        seconds of imports that can overlap other work); otherwise they start on first use."""
        if self.workers > 1:
            self._start_workers(self.workers - 1)

    def close(self) -> None:
        """Stop the worker processes (if any) and a background thread's paths (at their next
        frame); the sampler still runs paths in this process."""
        outstanding, self._outstanding = self._outstanding, None
        if outstanding is not None:
            threads = [worker for worker, _ in outstanding._assigned if isinstance(worker, _PathThread)]
            if threads:
                self._abort.set()
                for thread in threads:
                    thread.join()
                self._abort.clear()
        pool, self._pool = self._pool, []
        for worker in pool:
            worker.close()

    def __enter__(self) -> "RestrainedLangevinSampler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class PendingPaths:
    """Paths handed to worker processes by :meth:`RestrainedLangevinSampler.start_schedule`."""

    def __init__(self, sampler: RestrainedLangevinSampler, job: dict[str, Any], local: np.ndarray,
                 assigned: list) -> None:
        self._sampler = sampler
        self._job = job
        self._local = local
        self._assigned = assigned
        self._remote: dict[int, np.ndarray] = {}
        self._t0 = time.perf_counter()

    def wait(self) -> None:
        """Wait until the paths handed to worker processes or a background thread are done
        (:meth:`result` then only runs this thread's block, if any, and checks)."""
        self._collect()

    def _collect(self) -> None:
        """Wait for the worker blocks (once)."""
        for index, (worker, indices) in enumerate(self._assigned):
            if index not in self._remote:
                self._remote[index] = worker.result()
        if self._sampler._outstanding is self:
            self._sampler._outstanding = None

    def result(self, progress: bool = False, callback: Callable[[dict[str, Any]], None] | None = None
               ) -> RestrainedPaths:
        """Run this process's block, wait for the workers' and check every path (in path order)."""
        job, sampler = self._job, self._sampler
        n_paths, n_points = job["x_init"].shape[0], len(job["steps_per_point"])
        total = int(job["steps_per_point"].sum())
        frames = np.empty((n_paths, total // job["record_every"], sampler.n_atoms, 3))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_paths * n_points, desc="OpenMM paths", unit="point")
        try:
            if len(self._local):
                local_job = {**job, "x_init": job["x_init"][self._local], "indices": self._local}
                on_point = None if bar is None else (lambda: bar.update(1))
                if not self._assigned:  # one process: check and report each path as soon as it is done
                    for row, p in enumerate(self._local):
                        frames[p] = sampler.run_paths({**local_job, "x_init": local_job["x_init"][row:row + 1],
                                                       "indices": self._local[row:row + 1]}, on_point)[0]
                        self._check(frames, int(p), callback)
                    return RestrainedPaths(frames=frames, n_force_evals=n_paths * total,
                                           wall_time=time.perf_counter() - self._t0)
                frames[self._local] = sampler.run_paths(local_job, on_point)
            self._collect()
            for index, (_, indices) in enumerate(self._assigned):
                frames[indices] = self._remote[index]
                sampler.n_force_evals += len(indices) * total
                if bar is not None:
                    bar.update(len(indices) * n_points)
            for p in range(n_paths):
                self._check(frames, p, callback)
        finally:
            if bar is not None:
                bar.close()
        return RestrainedPaths(frames=frames, n_force_evals=n_paths * total, wall_time=time.perf_counter() - self._t0)

    def _check(self, frames: np.ndarray, p: int, callback) -> None:
        if not np.isfinite(frames[p]).all():
            from spacetime_md.errors import NonFiniteError

            k = self._job["force_constants"]
            raise NonFiniteError(
                f"path {p}: OpenMM produced non-finite positions; lower the timestep "
                f"({self._sampler.timestep} ps) or the largest restraint constant ({k.max():.3g} kJ/mol/nm^2)"
            )
        if callback is not None:
            callback({"path": p, "frames": frames[p]})


class _Stopped(RuntimeError):
    """A background thread's paths were stopped by :meth:`RestrainedLangevinSampler.close`."""


class _PathThread:
    """The paths ``indices`` of ``job`` run by ``sampler`` in one background thread; ``result``
    waits for their frames (and re-raises the thread's error)."""

    def __init__(self, sampler: RestrainedLangevinSampler, job: dict[str, Any], indices: np.ndarray) -> None:
        self._out: dict[str, Any] = {}
        block = {**job, "x_init": job["x_init"][indices], "indices": indices}

        def run() -> None:
            try:
                self._out["frames"] = sampler.run_paths(block)
            except BaseException as exc:  # noqa: BLE001 - handed to result()
                self._out["error"] = exc

        self._thread = threading.Thread(target=run, name="spacetime-md paths", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def result(self) -> np.ndarray:
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["frames"]


def _worker_sampler(system_xml: str, temperature_k: float, timestep_ps: float, friction_per_ps: float,
                    platform: str) -> RestrainedLangevinSampler:
    """The sampler of a worker process (built there from the serialized ``System``)."""
    return RestrainedLangevinSampler(openmm.XmlSerializer.deserialize(system_xml),
                                     temperature=temperature_k * unit.kelvin, timestep=timestep_ps * unit.picosecond,
                                     friction=friction_per_ps / unit.picosecond, platform=platform)


class _PathWorker(WorkerGroup):
    """A :class:`~spacetime_md.molecular.sampling.workers.WorkerGroup` whose group is a
    :class:`RestrainedLangevinSampler` (:func:`_worker_sampler`); its errors name the path worker."""

    def _describe(self) -> str:
        return f"OpenMM path worker {self.index} (pid {self.process.pid})"

    def _died(self) -> None:
        self.process.join(5.0)
        code = self.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        hint = ("a script that runs paths with workers > 1 must guard its main code with "
                "`if __name__ == '__main__':`, as multiprocessing's 'spawn' start method requires"
                if not self._started else "rerun with workers=1 (--workers 1) to run the paths in one process")
        raise ReplicaWorkerError(f"{self._describe()} {how} ({hint})")
