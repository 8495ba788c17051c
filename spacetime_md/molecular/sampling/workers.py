"""Replica groups: the OpenMM contexts of a fixed set of temperature slots, run in this process
or in a worker process, so that ``workers`` processes propagate the replicas in parallel.

:class:`ReplicaGroup` owns the contexts of some slots and runs one exchange interval of MD on
them; :class:`WorkerGroup` is the same group in a worker process (``multiprocessing`` "spawn"
context: the parent may have imported torch, whose threads make ``fork`` unsafe), driven over
a pipe. The worker receives the serialized OpenMM ``System`` (XML) and the platform name, and
imports only numpy and OpenMM. Exchanges are decided in the parent
(:mod:`spacetime_md.molecular.sampling.replica_exchange`), so the swap random numbers are
one stream whatever the number of workers.

Random streams
--------------
OpenMM's Reference platform draws the Langevin noise of every Context in a process from one
process-wide generator, reseeded whenever a Langevin kernel is initialised (a Context created).
Replicas that share a process therefore share that stream, and which numbers a replica gets
would depend on which other replicas run in its process, and in what order. A group therefore
reseeds the generator before each replica's steps with that replica's seed for this exchange
(drawn in the parent from ``(seed, chunk)``): it re-initialises a one-particle Context whose
integrator carries the seed (about 40 us, against milliseconds of MD). Every replica's noise
is then a function of the seed, the chunk, the exchange and the slot only, and a run gives
bitwise the same samples with any number of workers (on the Reference platform; other
platforms keep a generator per Context and are not bitwise reproducible anyway).

Units inside: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any, Sequence

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md._cpu import usable_cores
from spacetime_md.errors import SpacetimeMDError

__all__ = [
    "ReplicaGroup",
    "ReplicaWorkerError",
    "WorkerGroup",
    "main_is_spawn_safe",
    "resolve_workers",
    "usable_cores",
]

logger = logging.getLogger(__name__)

#: OpenMM's own fill of a (N, 3) float64 array from a State (what ``getPositions(asNumpy=True)``
#: calls before wrapping the result in units), where this OpenMM version has it.
_FILL = getattr(openmm.State, "_getVectorAsNumpy", None)

#: Seconds a worker gets to exit after "stop" before it is terminated (then killed).
_JOIN_SECONDS = 5.0


class ReplicaWorkerError(SpacetimeMDError, RuntimeError):
    """A replica-exchange worker process died or failed; the last checkpoint is intact."""


def main_is_spawn_safe() -> bool:
    """Whether a ``spawn``-ed worker can import this program's ``__main__`` without running it
    again: true for an interactive session or notebook (no ``__main__`` file) and for a main
    script or ``-m`` module whose top level has an ``if __name__ == "__main__":`` block; false
    for a script without one (a worker would re-run it from the top and fail) or one that
    cannot be read. ``"auto"`` worker counts use one process when this is false."""
    import ast
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:
        return True
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False

    def is_guard(test: ast.expr) -> bool:
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
            return False
        sides = [test.left, test.comparators[0]]
        names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
        consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
        return len(names) == 1 and len(consts) == 1

    return any(isinstance(node, ast.If) and is_guard(node.test) for node in tree.body)


def resolve_workers(workers: int | str, n_replicas: int) -> int:
    """Processes that propagate replicas (or paths): ``"auto"`` is the usable cores, or 1 when
    the main script lacks the ``if __name__ == "__main__":`` block that ``spawn``-ed workers
    need (:func:`main_is_spawn_safe`; a worker would re-run the script and fail); any value is
    capped by ``n_replicas`` (a process owns at least one replica); ``1`` runs all replicas in
    this process."""
    if isinstance(workers, str):
        if workers != "auto":
            raise ValueError(f"workers: expected a positive integer or 'auto', got {workers!r}")
        n = usable_cores()
        if n > 1 and not main_is_spawn_safe():
            logger.info("one process (workers='auto'): the main script has no `if __name__ == '__main__':` "
                        "block, which worker processes need")
            n = 1
    elif isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers: expected a positive integer or 'auto', got {workers!r}")
    else:
        n = int(workers)
    return max(1, min(n, int(n_replicas)))


class ReplicaGroup:
    """The OpenMM contexts of the temperature slots ``slots`` (this process).

    Parameters
    ----------
    system_xml : str
        ``openmm.XmlSerializer.serialize(system)``.
    platform_name : str
    temperatures_k : sequence of float
        Temperatures of ``slots`` (K), in order.
    friction_per_ps, timestep_fs : float
    steps_per_exchange : int
    """

    def __init__(self, system_xml: str, platform_name: str, temperatures_k: Sequence[float], friction_per_ps: float,
                 timestep_fs: float, steps_per_exchange: int) -> None:
        self.system = openmm.XmlSerializer.deserialize(system_xml)
        self.platform = openmm.Platform.getPlatformByName(platform_name)
        self.temperatures_k = [float(t) for t in temperatures_k]
        self.friction_per_ps = float(friction_per_ps)
        self.timestep_fs = float(timestep_fs)
        self.steps_per_exchange = int(steps_per_exchange)
        self.integrators: list[openmm.Integrator] = []
        self.contexts: list[openmm.Context] = []
        # Re-initialising this Context reseeds the Reference platform's process-wide generator.
        dummy = openmm.System()
        dummy.addParticle(1.0)
        self._seed_integrator = self._integrator(300.0)
        self._seed_context = openmm.Context(dummy, self._seed_integrator,
                                            openmm.Platform.getPlatformByName("Reference"))

    def _integrator(self, temperature_k: float) -> openmm.LangevinMiddleIntegrator:
        return openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, self.friction_per_ps / unit.picosecond,
                                               self.timestep_fs * unit.femtosecond)

    def start(self, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Fresh contexts (one per slot) at these positions and velocities, shape=(S, N, 3)."""
        self.close()
        for t, x, v in zip(self.temperatures_k, positions, velocities):
            integ = self._integrator(t)
            ctx = openmm.Context(self.system, integ, self.platform)
            ctx.setPositions(x)
            ctx.setVelocities(v)
            self.integrators.append(integ)
            self.contexts.append(ctx)

    def initialize_velocities(self, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Constrain the positions and draw Maxwell-Boltzmann velocities (one seed per slot);
        returns positions and velocities, shape=(S, N, 3)."""
        for ctx, t, s in zip(self.contexts, self.temperatures_k, seeds):
            ctx.applyConstraints(1e-8)
            ctx.setVelocitiesToTemperature(t * unit.kelvin, int(s))
        xs, vs, _ = self._states()
        return xs, vs

    def step(self, seeds: Sequence[int], updates: dict[int, tuple[np.ndarray, np.ndarray]]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply swapped-in states (local index -> (positions, velocities)), run one exchange
        interval on every slot, each after reseeding the noise with its seed; returns positions,
        velocities (S, N, 3) and potential energies (S,) in kJ/mol."""
        for i, (x, v) in updates.items():
            self.contexts[i].setPositions(x)
            self.contexts[i].setVelocities(v)
        for integ, s in zip(self.integrators, seeds):
            self._seed_integrator.setRandomNumberSeed(int(s))
            self._seed_context.reinitialize()
            integ.step(self.steps_per_exchange)
        return self._states()

    def _states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.system.getNumParticles()
        xs = np.empty((len(self.contexts), n, 3))
        vs = np.empty((len(self.contexts), n, 3))
        es = np.empty(len(self.contexts))
        for r, ctx in enumerate(self.contexts):
            s = ctx.getState(getPositions=True, getVelocities=True, getEnergy=True)
            if _FILL is not None:  # straight into the arrays, without unit wrapping (about 2 % of a run)
                _FILL(s, openmm.State.Positions, xs[r])
                _FILL(s, openmm.State.Velocities, vs[r])
            else:
                xs[r] = s.getPositions(asNumpy=True)._value
                vs[r] = s.getVelocities(asNumpy=True)._value
            es[r] = s.getPotentialEnergy()._value
        return xs, vs, es

    def process_cpu_seconds(self) -> float:
        """CPU time of the process this group runs in (benchmarks)."""
        return time.process_time()

    def close(self) -> None:
        del self.contexts[:]
        del self.integrators[:]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _worker_main(conn: Any, group_kwargs: dict, factory: Any = None) -> None:
    """A worker process: build the group (``factory(**group_kwargs)``, default a
    :class:`ReplicaGroup`), then answer (method, args) requests until "stop" or until the
    parent goes away (its end of the pipe closes)."""
    # Ctrl-C reaches the whole process group: the parent decides and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        group = (ReplicaGroup if factory is None else factory)(**group_kwargs)
        conn.send(("ok", None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", _one_line(exc)))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request[0] == "stop":
            return
        try:
            result = getattr(group, request[0])(*request[1:])
            reply = ("ok", result)
        except Exception as exc:  # noqa: BLE001
            reply = ("error", _one_line(exc))
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class WorkerGroup:
    """A :class:`ReplicaGroup` in a worker process: ``call`` sends a request, ``result`` waits
    for its answer (so that several workers run at once); a worker that dies or fails raises
    :class:`ReplicaWorkerError` naming it, never hangs. ``factory`` (a picklable class or
    function, default :class:`ReplicaGroup`) builds the group in the worker from ``group_kwargs``;
    ``label`` names the process."""

    def __init__(self, index: int, slots: Sequence[int], group_kwargs: dict, factory: Any = None,
                 label: str = "replica") -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.index = index
        self.slots = list(slots)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, group_kwargs, factory), daemon=True,
                                   name=f"spacetime-md {label} worker {index}")
        self.process.start()
        child.close()  # only the worker holds its end: its death closes the pipe
        self._pending = True  # the "ready" answer
        self._started = False

    def _describe(self) -> str:
        slots = f"{self.slots[0]}-{self.slots[-1]}" if len(self.slots) > 1 else f"{self.slots[0]}"
        return f"replica-exchange worker {self.index} (pid {self.process.pid}, temperature slots {slots})"

    def call(self, method: str, *args: Any) -> None:
        if self._pending:
            self.result()
        try:
            self.conn.send((method, *args))
        except (BrokenPipeError, OSError):
            self._died()
        self._pending = True

    def result(self) -> Any:
        from multiprocessing.connection import wait

        self._pending = False
        while True:
            ready = wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                try:
                    status, value = self.conn.recv()
                except (EOFError, OSError):
                    self._died()
                if status == "error":
                    raise ReplicaWorkerError(f"{self._describe()} failed: {value}")
                self._started = True
                return value
            if self.process.sentinel in ready:
                self._died()

    def _died(self) -> None:
        self.process.join(_JOIN_SECONDS)
        code = self.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        if not self._started:
            raise ReplicaWorkerError(
                f"{self._describe()} {how} while starting (its traceback is above; a script that samples with "
                "workers > 1 must guard its main code with `if __name__ == '__main__':`, as multiprocessing's "
                "'spawn' start method requires)")
        raise ReplicaWorkerError(f"{self._describe()} {how}; the last checkpoint is intact: rerun with --resume "
                                 "(or --workers 1)")

    def close(self) -> None:
        """Stop the worker: ask, then terminate, then kill; never leaves it running."""
        if self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(_JOIN_SECONDS)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(_JOIN_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
