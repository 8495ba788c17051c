"""The replica-exchange engine of :mod:`spacetime_md.molecular.sampling.boltzmann`: replica state
(checkpointed), per-chunk random streams and the OpenMM contexts that run and swap replicas.

See :mod:`spacetime_md.molecular.sampling.boltzmann` for the method. Units inside: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.errors import CheckpointError, NonFiniteError
from spacetime_md.molecular._io import save_npz_atomic
from spacetime_md.molecular.system.units import KELVIN, PS, kT_kj_per_mol

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


def _chunk_rng(seed: int, chunk: int, n_replicas: int) -> tuple[list[int], np.random.Generator]:
    ss = np.random.SeedSequence([int(seed), int(chunk), 20260101])
    seeds_ss, swap_ss = ss.spawn(2)
    integrator_seeds = [int(s) % (2**31 - 2) + 1 for s in seeds_ss.generate_state(n_replicas, dtype=np.uint32)]
    return integrator_seeds, np.random.default_rng(swap_ss)


class _Engine:
    """Replica contexts for one chunk."""

    def __init__(self, system: "MolecularSystem", config: "SamplingConfig", platform: openmm.Platform,
                 integrator_seeds: Sequence[int], rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self.betas = np.array([1.0 / kT_kj_per_mol(t) for t in config.temperatures_k])
        self.integrators = []
        self.contexts = []
        for t, s in zip(config.temperatures_k, integrator_seeds):
            integ = openmm.LangevinMiddleIntegrator(
                t * KELVIN, config.friction_per_ps / PS, config.timestep_fs * unit.femtosecond
            )
            integ.setRandomNumberSeed(int(s))
            self.integrators.append(integ)
            self.contexts.append(openmm.Context(system.openmm_system, integ, platform))

    def set_state(self, positions: np.ndarray, velocities: np.ndarray) -> None:
        for ctx, x, v in zip(self.contexts, positions, velocities):
            ctx.setPositions(x)
            ctx.setVelocities(v)

    def exchange(self, st: _ReplicaState) -> float:
        """Run MD on all replicas, attempt swaps; returns the T_0 potential energy (kJ/mol)."""
        R = len(self.contexts)
        energies = np.empty(R)
        for r, (integ, ctx) in enumerate(zip(self.integrators, self.contexts)):
            integ.step(self.config.steps_per_exchange)
            s = ctx.getState(getPositions=True, getVelocities=True, getEnergy=True)
            st.positions[r] = s.getPositions(asNumpy=True)._value
            st.velocities[r] = s.getVelocities(asNumpy=True)._value
            energies[r] = s.getPotentialEnergy()._value
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
        for r in np.flatnonzero(changed):
            self.contexts[r].setPositions(st.positions[r])
            self.contexts[r].setVelocities(st.velocities[r])
        st.exchange_index += 1
        return float(energies[0])

    def close(self) -> None:
        del self.contexts[:]
        del self.integrators[:]


