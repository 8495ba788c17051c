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

Runs are cut into chunks of ``chunk_size`` samples. Each chunk creates fresh OpenMM Contexts and
starts from the positions and velocities saved at the end of the previous chunk; the swap random
numbers and each replica's Langevin noise seed for each exchange derive from ``(seed, chunk
index)``. A chunk is therefore a deterministic function of the seed and the checkpoint, and a
run that is killed and resumed gives exactly the frames of an uninterrupted run (on the
Reference platform; other platforms may sum forces in a different order).

The replicas run in ``workers`` processes (:mod:`spacetime_md.molecular.sampling.workers`): this
process and ``workers - 1`` worker processes each own the contexts of a fixed block of
temperature slots and run the exchange interval's steps in parallel; the swaps are decided
here. The noise is reseeded per replica and exchange, so the samples are bitwise the same for
any number of workers, and a run may be resumed with another.

After each chunk its samples are written to ``chunks/`` and then the replica state to
``checkpoint.npz``, both atomically; a kill loses at most the running chunk.

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

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import openmm.unit as unit

from spacetime_md.errors import CheckpointError
from spacetime_md.molecular._io import save_npz_atomic, write_json_atomic
from spacetime_md.molecular.sampling.ladder import DEFAULT_TARGET_ACCEPTANCE, exchange_warnings
from spacetime_md.molecular.sampling.replica_exchange import _config_hash, _Engine, _ReplicaState
from spacetime_md.molecular.sampling.samples import BoltzmannSamples, _write_outputs
from spacetime_md.molecular.sampling.sampling_config import (
    DEFAULT_EXCHANGE_INTERVAL,
    DEFAULT_MAX_TEMPERATURE,
    SYSTEM_FILE,
    SamplingConfig,
    _check_resume_config,
    resolve_run_config,
)
from spacetime_md.molecular.sampling.workers import resolve_workers
from spacetime_md.molecular.system.units import NM

if TYPE_CHECKING:
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "sample_boltzmann",
]

logger = logging.getLogger(__name__)


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
    workers: int | str = 1,
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
    workers : int or "auto"
        Processes that propagate the replicas (default 1: all in this process). ``"auto"``
        uses the usable cores; any value is capped by the number of replicas. Each worker
        process owns the contexts of a fixed block of temperature slots; the swaps are decided
        here. The samples are bitwise the same for any number of workers (Reference platform),
        so a run may be resumed with another. A worker that dies raises
        :class:`~spacetime_md.molecular.sampling.workers.ReplicaWorkerError` (the checkpoint is
        intact).

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
    n_workers = resolve_workers(workers, config.n_replicas)
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
    if st is None:
        # Equilibration ("chunk 0"): minimise, assign velocities, run exchanges without sampling.
        x0 = system.minimize().value_in_unit(NM)
        st = _ReplicaState(
            positions=np.repeat(x0[None], R, axis=0), velocities=np.zeros((R, system.n_atoms, 3)),
            walkers=np.arange(R), last_end=np.full(R, -1), n_attempted=np.zeros(max(R - 1, 0), dtype=np.int64),
            n_accepted=np.zeros(max(R - 1, 0), dtype=np.int64), round_trips=0, exchange_index=0,
            next_chunk=0, n_done=0, production_seconds=0.0,
        )
    engine: _Engine | None = None
    bar = None
    chunks_run = 0
    try:
        if st.next_chunk <= config.n_chunks and (max_chunks is None or max_chunks > 0 or st.next_chunk == 0):
            engine = _Engine(system, config, n_workers)
        if st.next_chunk == 0:
            # Equilibration ("chunk 0"): assign velocities, run exchanges without sampling.
            slot_seeds = engine.start_chunk(0, st)
            engine.initialize_velocities(st, slot_seeds)
            for _ in range(config.n_equilibration_exchanges):
                engine.exchange(st)
            # Exchange statistics count production only.
            st.n_attempted[:] = 0
            st.n_accepted[:] = 0
            st.round_trips = 0
            st.next_chunk = 1
            if out is not None:
                st.save(out / "checkpoint.npz", config_hash)

        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_samples, initial=st.n_done, unit="sample",
                       desc=f"replica exchange ({R} replicas, {n_workers} process{'es' if n_workers > 1 else ''})")
        while st.next_chunk <= config.n_chunks:
            if max_chunks is not None and chunks_run >= max_chunks:
                break
            chunk = st.next_chunk
            length = config.chunk_length(chunk)
            t_start = time.perf_counter()
            engine.start_chunk(chunk, st)
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
        if engine is not None:
            engine.close()

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
    report["workers"] = n_workers
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
