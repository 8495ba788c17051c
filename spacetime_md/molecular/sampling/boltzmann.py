"""Boltzmann samples at the system temperature by temperature replica exchange.

Method
------
``R`` copies of the system (replicas) run Langevin dynamics (OpenMM
``LangevinMiddleIntegrator``) at a geometric temperature ladder ``T_0 < T_1 < ... < T_{R-1}``
with ``T_0`` the system temperature. Every ``exchange_interval`` each replica runs
``exchange_interval / timestep`` steps, then neighbouring pairs ``(i, i+1)`` -- the even pairs
on even exchanges, the odd pairs on odd exchanges -- swap configurations with the Metropolis
probability ``min(1, exp((beta_i - beta_{i+1}) (U_i - U_{i+1})))``; velocities are rescaled by
``sqrt(T_new / T_old)``. This move leaves the product of the Boltzmann distributions invariant,
so the configurations at ``T_0`` are Boltzmann samples at ``T_0`` while hot replicas carry them
over the phi barrier. One sample (the ``T_0`` configuration and its potential energy) is taken
after every exchange attempt.

The ladder (``n_replicas="auto"``, the default) is the geometric one from ``T_0`` to
``max_temperature`` with the fewest replicas (at least 4) whose neighbour swap acceptance,
predicted from a short pilot run's energy mean and spread, reaches ``target_acceptance``
(0.2); see :mod:`spacetime_md.molecular.sampling.ladder`. The pilot and the predictions are recorded in
``config.json`` (``ladder``); a resumed run keeps its ladder. The report warns when a
neighbour pair's measured acceptance is low or no walker made a round trip.

Runs are cut into chunks of ``chunk_size`` samples. Each chunk creates fresh OpenMM Contexts whose
integrator seeds, like the swap random numbers, derive from ``(seed, chunk index)``, and starts
from the positions and velocities saved at the end of the previous chunk; a chunk is therefore a
deterministic function of the seed and the checkpoint, and a run that is killed and resumed gives
exactly the frames of an uninterrupted run (on the Reference platform; other platforms may sum
forces in a different order). After each chunk its samples are written to ``chunks/`` and then
the replica state to ``checkpoint.npz``, both atomically; a kill loses at most the running chunk.

Outputs in ``out_dir``: ``samples.h5`` (mdtraj HDF5: topology, coordinates in nm (float32),
time in ps, potential energies in kJ/mol), ``energies.npy`` (kJ/mol, float64), ``config.json``
(the resolved config), ``system.json`` (:meth:`MolecularSystem.spec`: PDB text, force field,
solvent, CVs, states; :meth:`MolecularSystem.from_spec` rebuilds the system, and training
records it in the checkpoint), ``report.json`` (exchange statistics, populations of the
system's states with errors, throughput) and a free-energy plot in the collective variables:
``ramachandran.png`` (one panel per residue) for a peptide, ``cvs.png`` (the first two CVs)
otherwise, none for a molecule without CVs.

Units inside: nm, ps, kJ/mol, K. The public function takes ``openmm.unit`` quantities.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import openmm.unit as unit

from spacetime_md.errors import CheckpointError
from spacetime_md.molecular._io import atomic_path, save_npy_atomic, save_npz_atomic, write_json_atomic
from spacetime_md.molecular.sampling.ladder import (
    DEFAULT_TARGET_ACCEPTANCE, MIN_REPLICAS, choose_temperatures, exchange_warnings, pilot_energy_statistics,
)
from spacetime_md.molecular.sampling.replica_exchange import _chunk_rng, _config_hash, _Engine, _ReplicaState
from spacetime_md.molecular.system.units import KELVIN, KJ_PER_MOL, NM, PS, to_md_array, to_md_float

if TYPE_CHECKING:
    import mdtraj

    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "SamplingConfig",
    "BoltzmannSamples",
    "sample_boltzmann",
    "resolve_config",
    "load_samples",
    "geometric_temperatures",
    "resolve_run_config",
    "DEFAULT_N_REPLICAS",
    "DEFAULT_MAX_TEMPERATURE",
    "SYSTEM_FILE",
    "plot_file_name",
]

logger = logging.getLogger(__name__)

#: Replicas of a fixed ladder when ``n_replicas`` is an integer nobody gave: the automatic ladder
#: (``"auto"``) is the default and never uses fewer.
DEFAULT_N_REPLICAS = 4
DEFAULT_MAX_TEMPERATURE = 800.0 * unit.kelvin
DEFAULT_EXCHANGE_INTERVAL = 0.25 * unit.picosecond
#: The system the samples belong to (``MolecularSystem.spec()``), next to the samples; training
#: reads it to record the system in its checkpoint.
SYSTEM_FILE = "system.json"
_FORMAT_VERSION = 1


def geometric_temperatures(t_min_k: float, t_max_k: float, n: int) -> tuple[float, ...]:
    """``n`` temperatures (K) spaced geometrically from ``t_min_k`` to ``t_max_k``."""
    if n < 1:
        raise ValueError(f"n_replicas: expected >= 1, got {n}")
    if n == 1:
        return (float(t_min_k),)
    if t_max_k <= t_min_k:
        raise ValueError(f"max_temperature: expected > {t_min_k} K (the system temperature), got {t_max_k} K")
    return tuple(float(t_min_k * (t_max_k / t_min_k) ** (k / (n - 1))) for k in range(n))


@dataclass(frozen=True)
class SamplingConfig:
    """Resolved replica-exchange settings (md units); written to ``config.json``.

    Attributes
    ----------
    n_samples : int
        Samples at ``temperatures_k[0]``.
    temperatures_k : tuple of float
        Replica temperatures (K), increasing; the first is the sampling temperature.
    exchange_interval_ps : float
        MD time per replica between exchange attempts (one sample per attempt).
    timestep_fs, friction_per_ps : float
        Langevin integrator settings.
    equilibration_ps : float
        Replica-exchange time discarded before the first sample.
    chunk_size : int
        Samples per checkpoint.
    seed : int
    platform : str
    system : dict
        :meth:`MolecularSystem.fingerprint` (checked on resume).
    ladder : dict
        How an automatic ladder was chosen (target, pilot energies, predicted acceptance);
        empty for a ladder given by hand or a fixed number of replicas.
    """

    n_samples: int
    temperatures_k: tuple[float, ...]
    exchange_interval_ps: float = 0.5
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    equilibration_ps: float = 20.0
    chunk_size: int = 1000
    seed: int = 0
    platform: str = "Reference"
    system: dict = field(default_factory=dict)
    format_version: int = _FORMAT_VERSION
    ladder: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, (int, np.integer)) or self.n_samples < 1:
            raise ValueError(f"n_samples: expected a positive integer, got {self.n_samples!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, (int, np.integer)) or self.chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {self.chunk_size!r}")
        temps = tuple(self.temperatures_k)
        if not temps or any(not (t > 0) for t in temps) or any(b <= a for a, b in zip(temps, temps[1:])):
            raise ValueError(f"temperatures: expected positive, strictly increasing values (K), got {temps}")
        if self.timestep_fs <= 0 or self.timestep_fs > 5:
            raise ValueError(f"timestep: expected a value in (0, 5] fs, got {self.timestep_fs} fs")
        if self.friction_per_ps <= 0:
            raise ValueError(f"friction: expected > 0 /ps, got {self.friction_per_ps} /ps")
        if self.steps_per_exchange < 1:
            raise ValueError(
                f"exchange_interval: expected at least one time step ({self.timestep_fs} fs), "
                f"got {self.exchange_interval_ps} ps"
            )
        if self.equilibration_ps < 0:
            raise ValueError(f"equilibration: expected >= 0 ps, got {self.equilibration_ps} ps")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")

    @property
    def n_replicas(self) -> int:
        return len(self.temperatures_k)

    @property
    def steps_per_exchange(self) -> int:
        return int(round(self.exchange_interval_ps * 1000.0 / self.timestep_fs))

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    @property
    def n_equilibration_exchanges(self) -> int:
        return int(round(self.equilibration_ps / self.exchange_interval_ps))

    def chunk_length(self, chunk: int) -> int:
        """Samples in production chunk ``chunk`` (1-based)."""
        return min(self.chunk_size, self.n_samples - (chunk - 1) * self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["temperatures_k"] = list(self.temperatures_k)
        d["n_replicas"] = self.n_replicas
        d["steps_per_exchange"] = self.steps_per_exchange
        d["method"] = "temperature replica exchange (neighbour swaps, alternating even/odd pairs)"
        d["integrator"] = "LangevinMiddleIntegrator"
        if not self.ladder:  # fixed ladders keep the config (and checkpoint hash) of earlier versions
            del d["ladder"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplingConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["temperatures_k"] = tuple(kw["temperatures_k"])
        return cls(**kw)


@dataclass
class BoltzmannSamples:
    """Samples at the system temperature.

    Attributes
    ----------
    coordinates_nm : ndarray, shape=(F, N, 3)
        Positions (nm, float32).
    energies_kj_per_mol : ndarray, shape=(F,)
        Potential energies (kJ/mol) of the samples (float64, from the double-precision state).
    config : SamplingConfig
    report : dict
        Exchange acceptance, round trips, throughput, state populations.
    out_dir : Path or None
    complete : bool
        ``False`` when the run stopped early (``max_chunks``); resume it to finish.
    topology : mdtraj.Topology or None
    """

    coordinates_nm: np.ndarray
    energies_kj_per_mol: np.ndarray
    config: SamplingConfig
    report: dict
    out_dir: Path | None = None
    complete: bool = True
    topology: Any = None

    @property
    def n_frames(self) -> int:
        return len(self.coordinates_nm)

    @property
    def coordinates(self) -> unit.Quantity:
        return self.coordinates_nm * NM

    @property
    def energies(self) -> unit.Quantity:
        return self.energies_kj_per_mol * KJ_PER_MOL

    def to_mdtraj(self) -> "mdtraj.Trajectory":
        import mdtraj

        if self.topology is None:
            raise ValueError("topology: expected samples with a topology, got None")
        dt = self.config.exchange_interval_ps
        return mdtraj.Trajectory(self.coordinates_nm, self.topology, time=np.arange(self.n_frames) * dt)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def resolve_config(
    system: "MolecularSystem",
    n_samples: int,
    *,
    temperatures: Any = None,
    n_replicas: int | str = "auto",
    target_acceptance: float = DEFAULT_TARGET_ACCEPTANCE,
    max_temperature: unit.Quantity = DEFAULT_MAX_TEMPERATURE,
    exchange_interval: unit.Quantity = DEFAULT_EXCHANGE_INTERVAL,
    timestep: unit.Quantity = 2.0 * unit.femtosecond,
    friction: unit.Quantity = 1.0 / unit.picosecond,
    equilibration: unit.Quantity = 20.0 * unit.picosecond,
    chunk_size: int = 1000,
    seed: int = 0,
) -> SamplingConfig:
    """The :class:`SamplingConfig` that :func:`sample_boltzmann` would run (same arguments).

    With ``n_replicas="auto"`` (and no ``temperatures``) this runs the pilot of
    :mod:`spacetime_md.molecular.sampling.ladder` (seconds) after every other setting was checked.
    """
    auto = isinstance(n_replicas, str)
    if auto and n_replicas != "auto":
        raise ValueError(f"n_replicas: expected an integer or 'auto', got {n_replicas!r}")
    if (isinstance(target_acceptance, bool) or not isinstance(target_acceptance, (int, float))
            or not 0.0 < target_acceptance < 1.0):
        raise ValueError(f"target_acceptance: expected a number in (0, 1), got {target_acceptance!r}")
    if temperatures is not None:
        temps = tuple(float(t) for t in to_md_array("temperatures", temperatures, KELVIN))
        if abs(temps[0] - system.temperature_k) > 1e-6:
            raise ValueError(
                f"temperatures: expected the first temperature to be the system temperature "
                f"{system.temperature_k} K, got {temps[0]} K"
            )
    else:
        t_max = to_md_float("max_temperature", max_temperature, KELVIN)
        if not auto and (isinstance(n_replicas, bool) or not isinstance(n_replicas, (int, np.integer))):
            raise TypeError(f"n_replicas: expected an integer or 'auto', got {type(n_replicas).__name__}")
        temps = geometric_temperatures(system.temperature_k, t_max, MIN_REPLICAS if auto else int(n_replicas))
    config = SamplingConfig(
        n_samples=n_samples,
        temperatures_k=temps,
        exchange_interval_ps=to_md_float("exchange_interval", exchange_interval, PS),
        timestep_fs=to_md_float("timestep", timestep, unit.femtosecond),
        friction_per_ps=to_md_float("friction", friction, PS**-1),
        equilibration_ps=to_md_float("equilibration", equilibration, PS),
        chunk_size=chunk_size,
        seed=seed,
        platform=system.platform_name,
        system=system.fingerprint(),
    )
    if not auto or temperatures is not None:
        return config
    stats = pilot_energy_statistics(
        system, geometric_temperatures(config.temperatures_k[0], config.temperatures_k[-1], 3),
        timestep_fs=config.timestep_fs, friction_per_ps=config.friction_per_ps, seed=config.seed,
    )
    temps, predicted = choose_temperatures(stats, config.temperatures_k[0], config.temperatures_k[-1],
                                           float(target_acceptance))
    ladder = {"method": "geometric, fewest replicas (>= 4) with predicted neighbour acceptance >= target "
                        "(pilot energies, Gaussian overlap)",
              "target_acceptance": float(target_acceptance), "predicted_acceptance": predicted, "pilot": stats}
    logger.info("ladder: %d replicas %s K, predicted acceptance %s", len(temps),
                ", ".join(f"{t:.0f}" for t in temps), ", ".join(f"{a:.2f}" for a in predicted))
    return dataclasses.replace(config, temperatures_k=temps, ladder=ladder)


def resolve_run_config(system: "MolecularSystem", n_samples: int, out_dir: str | Path | None, *,
                       resume: bool = False, **kwargs: Any) -> SamplingConfig:
    """:func:`resolve_config`, except that resuming the automatic-ladder run in ``out_dir``
    reuses its saved ladder (no new pilot; other settings are still checked on resume)."""
    saved_path = None if out_dir is None else Path(out_dir) / "config.json"
    auto = kwargs.get("temperatures") is None and kwargs.get("n_replicas", "auto") == "auto"
    if resume and auto and saved_path is not None and saved_path.exists() and (saved_path.parent / "checkpoint.npz").exists():
        import json

        try:
            saved = json.loads(saved_path.read_text())
            temps = [float(t) for t in saved["temperatures_k"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{saved_path}: expected the config of the run to resume, got error: {exc}") from exc
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in ("temperatures", "n_replicas", "target_acceptance", "max_temperature")}
        config = resolve_config(system, n_samples, temperatures=temps * unit.kelvin, **kwargs)
        return dataclasses.replace(config, ladder=saved.get("ladder") or {})
    return resolve_config(system, n_samples, **kwargs)


def sample_boltzmann(
    system: "MolecularSystem",
    n_samples: int,
    out_dir: str | Path | None = None,
    *,
    temperatures: Any = None,
    n_replicas: int | str = "auto",
    target_acceptance: float = DEFAULT_TARGET_ACCEPTANCE,
    max_temperature: unit.Quantity = DEFAULT_MAX_TEMPERATURE,
    exchange_interval: unit.Quantity = DEFAULT_EXCHANGE_INTERVAL,
    timestep: unit.Quantity = 2.0 * unit.femtosecond,
    friction: unit.Quantity = 1.0 / unit.picosecond,
    equilibration: unit.Quantity = 20.0 * unit.picosecond,
    chunk_size: int = 1000,
    seed: int = 0,
    resume: bool = False,
    max_chunks: int | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    plot: bool = True,
    config: SamplingConfig | None = None,
) -> BoltzmannSamples:
    """Boltzmann samples at ``system.temperature`` by temperature replica exchange.

    Parameters
    ----------
    system : MolecularSystem
    n_samples : int
        Samples to produce (one per exchange attempt, ``exchange_interval`` apart).
    out_dir : str or Path, optional
        Output and checkpoint directory (see the module docstring). ``None`` keeps
        everything in memory (no checkpoints, no resume).
    temperatures : Quantity (kelvin) sequence, optional
        Explicit ladder; the first must be the system temperature. Default: ``n_replicas``
        geometric temperatures from the system temperature to ``max_temperature``.
    n_replicas : int or "auto"
        ``"auto"`` (default): the fewest geometric replicas (at least 4) up to ``max_temperature``
        whose neighbour acceptance, predicted by a short pilot run, reaches
        ``target_acceptance`` (module docstring). An integer gives that many geometric
        replicas (4 was the fixed default of earlier versions; 1 gives plain Langevin MD).
    target_acceptance : float
        Target of the smallest neighbour swap acceptance of the automatic ladder (default 0.2).
    max_temperature : Quantity (kelvin)
        Hottest replica of the default ladder (default 800 K; at 1000 K the peptide bonds
        start to flip to cis).
    exchange_interval, timestep, friction, equilibration : Quantity
        Time between exchange attempts (0.25 ps), Langevin time step (2 fs) and friction
        (1/ps), and the discarded replica-exchange time before the first sample (20 ps).
    chunk_size : int
        Samples per checkpoint (default 1000).
    seed : int
        Same seed, same samples (on the Reference platform).
    resume : bool
        Continue the run in ``out_dir``; its config must match.
    max_chunks : int, optional
        Stop after this many new chunks (the result has ``complete=False``).
    progress : bool
        tqdm progress bar.
    callback : callable, optional
        Called after each checkpointed chunk with a dict (``chunk``, ``n_done``,
        ``n_samples``, ``acceptance``, ``wall_time``). An exception it raises stops the run;
        the checkpoint is already written, so it can be resumed.
    plot : bool
        Write ``ramachandran.png`` (peptides: one panel per residue) or ``cvs.png`` (other CVs).
    config : SamplingConfig, optional
        Settings resolved beforehand by :func:`resolve_run_config` / :func:`resolve_config` (for
        ``system`` and ``n_samples``); the sampling settings above are then not used.

    Returns
    -------
    BoltzmannSamples
    """
    if config is not None:
        if config.n_samples != n_samples or config.system != system.fingerprint():
            raise ValueError("config: expected a config resolved for this system and n_samples, got one for "
                             f"{config.system.get('name')!r} and {config.n_samples} samples")
    else:
        config = resolve_run_config(
            system, n_samples, out_dir, resume=resume, temperatures=temperatures, n_replicas=n_replicas,
            target_acceptance=target_acceptance, max_temperature=max_temperature, exchange_interval=exchange_interval,
            timestep=timestep, friction=friction, equilibration=equilibration, chunk_size=chunk_size, seed=seed,
        )
    if max_chunks is not None and (isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or max_chunks < 0):
        raise ValueError(f"max_chunks: expected a non-negative integer or None, got {max_chunks!r}")
    config_hash = _config_hash(config)
    out = Path(out_dir) if out_dir is not None else None
    memory_chunks: dict[int, dict[str, np.ndarray]] = {}

    st: _ReplicaState | None = None
    if out is not None:
        ckpt = out / "checkpoint.npz"
        if ckpt.exists():
            if not resume:
                raise ValueError(
                    f"out_dir: expected an empty or new directory, got {str(out)!r} which already holds a "
                    "sampling run; pass resume=True (--resume) to continue it or choose another directory"
                )
            _check_resume_config(out / "config.json", config)
            st = _ReplicaState.load(ckpt, config_hash)
            logger.info("resuming %s at chunk %d (%d/%d samples)", out, st.next_chunk, st.n_done, n_samples)
        elif resume:
            logger.warning("resume requested but %s holds no checkpoint; starting a new run", out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "chunks").mkdir(exist_ok=True)
        if st is None:
            write_json_atomic(out / "config.json", config.to_dict())
        if st is None or not (out / SYSTEM_FILE).exists():
            write_json_atomic(out / SYSTEM_FILE, system.spec())

    R = config.n_replicas
    platform = system.platform
    if st is None:
        # Equilibration ("chunk 0"): minimise, assign velocities, run exchanges without sampling.
        x0 = system.minimize().value_in_unit(NM)
        st = _ReplicaState(
            positions=np.repeat(x0[None], R, axis=0), velocities=np.zeros((R, system.n_atoms, 3)),
            walkers=np.arange(R), last_end=np.full(R, -1), n_attempted=np.zeros(max(R - 1, 0), dtype=np.int64),
            n_accepted=np.zeros(max(R - 1, 0), dtype=np.int64), round_trips=0, exchange_index=0,
            next_chunk=0, n_done=0, production_seconds=0.0,
        )
    if st.next_chunk == 0:
        seeds, rng = _chunk_rng(config.seed, 0, R)
        engine = _Engine(system, config, platform, seeds, rng)
        for r, ctx in enumerate(engine.contexts):
            ctx.setPositions(st.positions[r])
            ctx.applyConstraints(1e-8)
            ctx.setVelocitiesToTemperature(config.temperatures_k[r] * KELVIN, int(seeds[r]))
            s = ctx.getState(getPositions=True, getVelocities=True)
            st.positions[r] = s.getPositions(asNumpy=True)._value
            st.velocities[r] = s.getVelocities(asNumpy=True)._value
        for _ in range(config.n_equilibration_exchanges):
            engine.exchange(st)
        engine.close()
        # Exchange statistics count production only.
        st.n_attempted[:] = 0
        st.n_accepted[:] = 0
        st.round_trips = 0
        st.next_chunk = 1
        if out is not None:
            st.save(out / "checkpoint.npz", config_hash)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples, initial=st.n_done, unit="sample", desc=f"replica exchange ({R} replicas)")
    chunks_run = 0
    try:
        while st.next_chunk <= config.n_chunks:
            if max_chunks is not None and chunks_run >= max_chunks:
                break
            chunk = st.next_chunk
            length = config.chunk_length(chunk)
            t_start = time.perf_counter()
            seeds, rng = _chunk_rng(config.seed, chunk, R)
            engine = _Engine(system, config, platform, seeds, rng)
            engine.set_state(st.positions, st.velocities)
            xs = np.empty((length, system.n_atoms, 3), dtype=np.float32)
            es = np.empty(length, dtype=np.float64)
            ws = np.empty(length, dtype=np.int64)
            shown = 0
            for k in range(length):
                es[k] = engine.exchange(st)
                xs[k] = st.positions[0]
                ws[k] = st.walkers[0]
                if bar is not None and ((k + 1) % 50 == 0 or k == length - 1):
                    bar.update(k + 1 - shown)
                    shown = k + 1
            engine.close()
            st.n_done += length
            st.next_chunk += 1
            st.production_seconds += time.perf_counter() - t_start
            if out is not None:
                save_npz_atomic(out / "chunks" / f"chunk_{chunk:06d}.npz", coordinates=xs, energies=es, walkers=ws)
                st.save(out / "checkpoint.npz", config_hash)
            else:
                memory_chunks[chunk] = {"coordinates": xs, "energies": es, "walkers": ws}
            chunks_run += 1
            if bar is not None:
                bar.set_postfix(acc=f"{_acceptance(st).min() if R > 1 else 1.0:.2f}")
            if callback is not None:
                callback({"chunk": chunk, "n_done": st.n_done, "n_samples": n_samples,
                          "acceptance": _acceptance(st).tolist(), "wall_time": st.production_seconds})
    finally:
        if bar is not None:
            bar.close()

    complete = st.next_chunk > config.n_chunks
    done_chunks = range(1, st.next_chunk)
    if out is not None:
        parts = []
        for c in done_chunks:
            path = out / "chunks" / f"chunk_{c:06d}.npz"
            if not path.exists():
                raise CheckpointError(f"{path}: expected the samples of chunk {c} (checkpoint says it is done), missing")
            with np.load(path) as d:
                parts.append({k: d[k].copy() for k in ("coordinates", "energies", "walkers")})
    else:
        parts = [memory_chunks[c] for c in done_chunks]
    coords = np.concatenate([p["coordinates"] for p in parts]) if parts else np.empty((0, system.n_atoms, 3), np.float32)
    energies = np.concatenate([p["energies"] for p in parts]) if parts else np.empty(0)
    report = _make_report(system, config, st, coords)
    samples = BoltzmannSamples(coords, energies, config, report, out, complete, system.mdtraj_topology)
    for warning in report["warnings"]:
        logger.warning("replica exchange: %s", warning)
    if config.ladder:
        report["predicted_acceptance"] = config.ladder["predicted_acceptance"]
    if out is not None:
        write_json_atomic(out / "report.json", report)
        if complete:
            _write_outputs(system, samples, out, plot)
    return samples


def _acceptance(st: _ReplicaState) -> np.ndarray:
    return st.n_accepted / np.maximum(st.n_attempted, 1)


def _check_resume_config(path: Path, config: SamplingConfig) -> None:
    import json

    if not path.exists():
        raise CheckpointError(f"{path}: expected the config of the run to resume, missing")
    saved = json.loads(path.read_text())
    new = config.to_dict()
    diffs = [k for k in new if k in saved and _norm(saved[k]) != _norm(new[k])]
    if diffs:
        details = "; ".join(f"{k}: saved {saved[k]!r}, now {new[k]!r}" for k in diffs[:4])
        raise CheckpointError(f"resume: expected the same settings as the saved run in {path.parent}, got {details}")


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def _make_report(system: "MolecularSystem", config: SamplingConfig, st: _ReplicaState, coords: np.ndarray) -> dict:
    from spacetime_md.molecular.sampling.populations import state_populations

    n = len(coords)
    secs = st.production_seconds
    sim_ps = n * config.exchange_interval_ps
    report: dict[str, Any] = {
        "system": system.name,
        "solvent": system.solvent,
        "n_samples": n,
        "n_samples_requested": config.n_samples,
        "complete": n >= config.n_samples,
        "temperatures_k": list(config.temperatures_k),
        "exchange_acceptance": _acceptance(st).tolist(),
        "n_exchange_attempts": st.n_attempted.tolist(),
        "round_trips": st.round_trips,
        "warnings": exchange_warnings(_acceptance(st), st.round_trips, n,
                                      config.ladder.get("target_acceptance"), st.n_attempted) if config.n_replicas > 1 else [],
        "production_seconds": secs,
        "samples_per_minute": 60.0 * n / secs if secs > 0 else float("nan"),
        "ns_per_day_T0": sim_ps * 1e-3 / (secs / 86400.0) if secs > 0 else float("nan"),
        "ns_per_day_all_replicas": config.n_replicas * sim_ps * 1e-3 / (secs / 86400.0) if secs > 0 else float("nan"),
    }
    report["cv_names"] = list(system.cvs.names)
    if not system.states:
        report["populations_na_reason"] = "no states defined for this molecule; pass a --states file"
    elif n < 2:
        report["populations_na_reason"] = f"fewer than 2 samples ({n})"
    else:
        report["populations"] = state_populations(system.compute_cvs(coords), system.states, system.cvs)
        from spacetime_md.molecular.sampling.populations import compare_to_reference
        from spacetime_md.molecular.sampling.reference import reference_populations

        ref = reference_populations(system)
        if ref is not None:
            report["reference"] = {"method": ref["method"], "populations": ref["populations"]}
            report["comparison"] = compare_to_reference(report["populations"], ref["populations"])
    return report


def _write_outputs(system: "MolecularSystem", samples: BoltzmannSamples, out: Path, plot: bool) -> None:
    from mdtraj.formats import HDF5TrajectoryFile

    coords = samples.coordinates_nm
    dt = samples.config.exchange_interval_ps
    with atomic_path(out / "samples.h5") as tmp:
        with HDF5TrajectoryFile(str(tmp), "w") as fh:
            fh.topology = system.mdtraj_topology
            fh.title = f"{system.name} Boltzmann samples at {samples.config.temperatures_k[0]:g} K (replica exchange)"
            fh.write(
                coordinates=coords,
                time=(np.arange(len(coords)) + 1) * dt,
                potentialEnergy=samples.energies_kj_per_mol.astype(np.float32),
            )
    save_npy_atomic(out / "energies.npy", samples.energies_kj_per_mol)
    if plot and len(coords) > 1:
        name = plot_file_name(system)
        if name is None:
            logger.info("no collective variables to plot for %s; no plot written", system.name)
            return
        from spacetime_md.molecular.sampling.populations import plot_cvs

        r = samples.report
        title = f"{system.name} ({system.solvent}), {len(coords)} samples at {samples.config.temperatures_k[0]:g} K"
        if "populations" in r and "C7ax" in r["populations"]:
            p = r["populations"]["C7ax"]
            title += f"\nC7ax {p['fraction']:.4f} +- {p['error']:.4f}"
        plot_cvs(system.compute_cvs(coords), system.cvs, out / name, system.states, title=title)


def plot_file_name(system: "MolecularSystem") -> str | None:
    """``ramachandran.png`` for a peptide, ``cvs.png`` for other CVs, ``None`` without CVs."""
    if system.cvs.ramachandran_pairs():
        return "ramachandran.png"
    return "cvs.png" if len(system.cvs) else None


def load_samples(out_dir: str | Path) -> BoltzmannSamples:
    """Read the outputs of a finished :func:`sample_boltzmann` run."""
    import json

    import mdtraj

    out = Path(out_dir)
    path = out / "samples.h5"
    if not path.exists():
        raise FileNotFoundError(f"{out}: expected samples.h5 of a finished sampling run, not found")
    traj = mdtraj.load_hdf5(str(path))
    config = SamplingConfig.from_dict(json.loads((out / "config.json").read_text()))
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    energies = np.load(out / "energies.npy")
    return BoltzmannSamples(traj.xyz, energies, config, report, out, True, traj.topology)
