"""The replica-exchange engine of :mod:`spacetime_md.molecular.sampling.boltzmann`: replica state
(checkpointed), per-chunk random streams and :class:`_Engine`, which runs the replicas (in this
process and in worker processes, :mod:`spacetime_md.molecular.sampling.workers`) and decides
the swaps.

See :mod:`spacetime_md.molecular.sampling.boltzmann` for the method. Units inside: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import openmm

from spacetime_md.errors import CheckpointError, NonFiniteError
from spacetime_md.molecular._io import save_npz_atomic
from spacetime_md.molecular.sampling.workers import ReplicaGroup, WorkerGroup
from spacetime_md.molecular.system.units import kT_kj_per_mol

if TYPE_CHECKING:
    from spacetime_md.molecular.sampling.sampling_config import SamplingConfig
    from spacetime_md.molecular.system.build import MolecularSystem


@dataclass
class _ReplicaState:
    positions: np.ndarray  # (R, N, 3) float64, indexed by temperature slot
    velocities: np.ndarray  # (R, N, 3)
    walkers: np.ndarray  # (R,) walker id at each slot
    last_end: np.ndarray  # (R,) per walker: -1 none, 0 last touched coldest, 1 hottest
    n_attempted: np.ndarray  # (R-1,) per neighbour pair
    n_accepted: np.ndarray  # (R-1,)
    round_trips: int
    exchange_index: int  # exchanges done so far (sets even/odd parity)
    next_chunk: int  # production chunk to run next (1-based); 0 = equilibration not done
    n_done: int
    production_seconds: float

    def save(self, path: Path, config_hash: str) -> None:
        save_npz_atomic(
            path,
            positions=self.positions,
            velocities=self.velocities,
            walkers=self.walkers,
            last_end=self.last_end,
            n_attempted=self.n_attempted,
            n_accepted=self.n_accepted,
            scalars=np.array([self.round_trips, self.exchange_index, self.next_chunk, self.n_done], dtype=np.int64),
            production_seconds=np.array(self.production_seconds),
            config_hash=np.array(config_hash),
        )

    @classmethod
    def load(cls, path: Path, config_hash: str) -> "_ReplicaState":
        try:
            with np.load(path) as d:
                if str(d["config_hash"]) != config_hash:
                    raise CheckpointError(f"{path}: checkpoint belongs to another config (hash mismatch)")
                rt, ex, nc, nd = (int(v) for v in d["scalars"])
                return cls(
                    d["positions"].copy(), d["velocities"].copy(), d["walkers"].copy(), d["last_end"].copy(),
                    d["n_attempted"].copy(), d["n_accepted"].copy(), rt, ex, nc, nd, float(d["production_seconds"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: expected a readable sampling checkpoint, got error: {exc}") from exc


def _config_hash(config: "SamplingConfig") -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _chunk_rng(seed: int, chunk: int, n_replicas: int) -> tuple[list[int], np.random.Generator, np.random.Generator]:
    """Random streams of one chunk: one seed per slot (initial velocities), the swap generator,
    and the generator of the per-exchange, per-slot Langevin noise seeds."""
    ss = np.random.SeedSequence([int(seed), int(chunk), 20260101])
    seeds_ss, swap_ss, noise_ss = ss.spawn(3)
    slot_seeds = [int(s) % (2**31 - 2) + 1 for s in seeds_ss.generate_state(n_replicas, dtype=np.uint32)]
    return slot_seeds, np.random.default_rng(swap_ss), np.random.default_rng(noise_ss)


class _Engine:
    """All replicas of a run: the first group of temperature slots in this process, the others
    in ``n_workers - 1`` worker processes (contiguous blocks of slots). One engine serves every
    chunk of a run; each chunk starts fresh contexts from the replica state."""

    def __init__(self, system: "MolecularSystem", config: "SamplingConfig", n_workers: int = 1) -> None:
        self.config = config
        self.betas = np.array([1.0 / kT_kj_per_mol(t) for t in config.temperatures_k])
        R = config.n_replicas
        self.blocks = [b.tolist() for b in np.array_split(np.arange(R), max(1, min(n_workers, R)))]
        xml = openmm.XmlSerializer.serialize(system.openmm_system)
        kwargs = [dict(system_xml=xml, platform_name=config.platform,
                       temperatures_k=[config.temperatures_k[r] for r in block],
                       friction_per_ps=config.friction_per_ps, timestep_fs=config.timestep_fs,
                       steps_per_exchange=config.steps_per_exchange) for block in self.blocks]
        self.remote: list[WorkerGroup] = []
        try:
            # Workers start (seconds: a fresh interpreter imports numpy and OpenMM) while this process builds its group.
            for i, (block, kw) in enumerate(zip(self.blocks[1:], kwargs[1:]), start=1):
                self.remote.append(WorkerGroup(i, block, kw))
            self.local = ReplicaGroup(**kwargs[0])
            for w in self.remote:
                w.result()
        except BaseException:
            self.close()
            raise
        self.rng: np.random.Generator | None = None
        self.noise_rng: np.random.Generator | None = None
        self._updates: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in self.blocks]

    @property
    def n_workers(self) -> int:
        return len(self.blocks)

    def _call(self, method: str, per_block_args: list[tuple]) -> list:
        """``method`` on every group, the workers' running while this process runs its own."""
        for w, args in zip(self.remote, per_block_args[1:]):
            w.call(method, *args)
        results = [getattr(self.local, method)(*per_block_args[0])]
        results.extend(w.result() for w in self.remote)
        return results

    def start_chunk(self, chunk: int, st: _ReplicaState) -> list[int]:
        """Fresh contexts at the replica state; the chunk's random streams. Returns the slot seeds."""
        slot_seeds, self.rng, self.noise_rng = _chunk_rng(self.config.seed, chunk, self.config.n_replicas)
        self._call("start", [(st.positions[b], st.velocities[b]) for b in self.blocks])
        self._updates = [{} for _ in self.blocks]
        return slot_seeds

    def initialize_velocities(self, st: _ReplicaState, slot_seeds: Sequence[int]) -> None:
        """Constrain and draw Maxwell-Boltzmann velocities at each slot's temperature."""
        results = self._call("initialize_velocities", [([slot_seeds[r] for r in b],) for b in self.blocks])
        for b, (xs, vs) in zip(self.blocks, results):
            st.positions[b] = xs
            st.velocities[b] = vs

    def exchange(self, st: _ReplicaState) -> float:
        """Run MD on all replicas, attempt swaps; returns the T_0 potential energy (kJ/mol)."""
        R = self.config.n_replicas
        seeds = self.noise_rng.integers(1, 2**31 - 1, size=R)
        results = self._call("step", [([int(seeds[r]) for r in b], u) for b, u in zip(self.blocks, self._updates)])
        energies = np.empty(R)
        for b, (xs, vs, es) in zip(self.blocks, results):
            st.positions[b] = xs
            st.velocities[b] = vs
            energies[b] = es
        if not np.isfinite(energies).all() or not np.isfinite(st.positions).all():
            raise NonFiniteError(
                f"replica exchange: non-finite energy or positions at exchange {st.exchange_index} "
                f"(energies {energies}); try a smaller timestep or lower max temperature"
            )
        changed = np.zeros(R, dtype=bool)
        temps = self.config.temperatures_k
        for i in range(st.exchange_index % 2, R - 1, 2):
            j = i + 1
            log_acc = (self.betas[i] - self.betas[j]) * (energies[i] - energies[j])
            st.n_attempted[i] += 1
            if log_acc >= 0 or self.rng.random() < math.exp(log_acc):
                st.n_accepted[i] += 1
                st.positions[[i, j]] = st.positions[[j, i]]
                vi = st.velocities[i] * math.sqrt(temps[j] / temps[i])
                vj = st.velocities[j] * math.sqrt(temps[i] / temps[j])
                # Configuration from j arrives at i with its velocities rescaled to T_i, and vice versa.
                st.velocities[i], st.velocities[j] = vj, vi
                energies[[i, j]] = energies[[j, i]]
                st.walkers[[i, j]] = st.walkers[[j, i]]
                changed[[i, j]] = True
        # Round trips: a walker that last touched the hottest slot and now sits at the coldest.
        if R > 1:
            w_cold, w_hot = st.walkers[0], st.walkers[-1]
            if st.last_end[w_cold] == 1:
                st.round_trips += 1
            st.last_end[w_cold] = 0
            st.last_end[w_hot] = 1
        # Swapped-in states reach their contexts with the next step request.
        self._updates = [{k: (st.positions[r].copy(), st.velocities[r].copy()) for k, r in enumerate(b) if changed[r]}
                         for b in self.blocks]
        st.exchange_index += 1
        return float(energies[0])

    def process_cpu_seconds(self) -> list[float]:
        """CPU time so far of this process and of each worker process (benchmarks)."""
        return self._call("process_cpu_seconds", [() for _ in self.blocks])

    def close(self) -> None:
        """Stop the workers (never leaves one running) and free the contexts."""
        errors = []
        for w in getattr(self, "remote", []):
            try:
                w.close()
            except Exception as exc:  # noqa: BLE001 - close every worker, then report
                errors.append(exc)
        self.remote = []
        if getattr(self, "local", None) is not None:
            self.local.close()
        if errors:
            raise errors[0]
