"""Replica exchange with the replicas in 1 vs 2 (or more) processes, side by side on one system.

    OMP_NUM_THREADS=1 python benchmarks/bench_sampling_workers.py [--system alanine-tetrapeptide]
        [--n-samples 300] [--rounds 2] [--workers 1 2] [--out FILE.json]

Same system, same automatic ladder (chosen once from the pilot run), same seed, in memory (no
checkpoint files), 2 ps equilibration untimed: the timed part is the production of
``--n-samples`` samples (``report["production_seconds"]``). Rounds alternate the worker counts;
medians are reported with the ratio to the first count, the load average before and after
(other jobs share the machine), whether the samples are bitwise identical across worker counts
(they must be), and the 50 000-sample time extrapolated from this rate.

On a loaded machine the wall-clock ratio says little (two processes get about the CPU share of
one when other jobs fill the cores), so each round also runs ``--engine-exchanges`` exchanges
on the engine alone and reads the CPU time of every process: the busiest process's CPU time per
exchange is what an idle machine with a core per process would need (plus the pipe round trip),
printed as "CPU-bound estimate", an estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import openmm.unit as unit


def run(system, temps, n_samples: int, seed: int, workers: int) -> tuple[dict, np.ndarray]:
    from spacetime_md.molecular import sample_boltzmann

    res = sample_boltzmann(system, n_samples, None, temperatures=list(temps) * unit.kelvin,
                           equilibration=2.0 * unit.picosecond, chunk_size=n_samples, seed=seed,
                           progress=False, plot=False, workers=workers)
    r = res.report
    return ({"workers": r["workers"], "seconds": r["production_seconds"],
             "samples_per_min": 60.0 * n_samples / r["production_seconds"],
             "acceptance": r["exchange_acceptance"]}, res.coordinates_nm)


def run_engine(system, config, n_exchanges: int, workers: int) -> dict:
    """Wall and CPU time per exchange of the engine alone (after 5 untimed exchanges)."""
    from spacetime_md.molecular.sampling.replica_exchange import _Engine, _ReplicaState

    R = config.n_replicas
    x0 = system.minimize().value_in_unit(unit.nanometer)
    st = _ReplicaState(np.repeat(x0[None], R, axis=0), np.zeros((R, system.n_atoms, 3)), np.arange(R),
                       np.full(R, -1), np.zeros(R - 1, np.int64), np.zeros(R - 1, np.int64), 0, 0, 0, 0, 0.0)
    engine = _Engine(system, config, workers)
    try:
        engine.initialize_velocities(st, engine.start_chunk(0, st))
        for _ in range(5):
            engine.exchange(st)
        cpu0, t0 = engine.process_cpu_seconds(), time.perf_counter()
        for _ in range(n_exchanges):
            engine.exchange(st)
        wall, cpu1 = time.perf_counter() - t0, engine.process_cpu_seconds()
    finally:
        engine.close()
    cpu_ms = [1e3 * (b - a) / n_exchanges for a, b in zip(cpu0, cpu1)]
    return {"wall_ms_per_exchange": 1e3 * wall / n_exchanges, "cpu_ms_per_exchange_per_process": cpu_ms,
            "cpu_bound_samples_per_min": 60e3 / max(cpu_ms)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="alanine-tetrapeptide")
    parser.add_argument("--n-samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engine-exchanges", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from spacetime_md.molecular import load_system
    from spacetime_md.molecular.sampling.sampling_config import resolve_config
    from spacetime_md.molecular.sampling.workers import usable_cores

    system = load_system(args.system)
    config = resolve_config(system, args.n_samples, seed=args.seed)
    temps = config.temperatures_k
    load_before = os.getloadavg()
    print(f"{args.system} ({system.n_atoms} atoms, {system.platform_name}), {len(temps)} replicas "
          + ", ".join(f"{t:.0f}" for t in temps) + f" K; {usable_cores()} usable cores; "
          f"load average {load_before[0]:.2f}, {load_before[1]:.2f}, {load_before[2]:.2f}", flush=True)
    results: dict[int, list[dict]] = {w: [] for w in args.workers}
    coords: dict[int, np.ndarray] = {}
    t0 = time.time()
    for r in range(args.rounds):
        for w in args.workers:
            res, xyz = run(system, temps, args.n_samples, args.seed, w)
            res["engine"] = run_engine(system, config, args.engine_exchanges, w)
            results[w].append(res)
            coords.setdefault(w, xyz)
            e = res["engine"]
            print(f"  round {r + 1} workers={w} ({res['workers']} processes): {res['samples_per_min']:7.0f} samples/min "
                  f"({res['seconds']:.1f} s); engine {e['wall_ms_per_exchange']:.1f} ms/exchange wall, CPU ms/exchange "
                  f"per process " + ", ".join(f"{c:.1f}" for c in e["cpu_ms_per_exchange_per_process"])
                  + f"; load average {os.getloadavg()[0]:.2f}", flush=True)
    load_after = os.getloadavg()
    first = args.workers[0]
    base = statistics.median(x["samples_per_min"] for x in results[first])
    identical = all(np.array_equal(coords[first], coords[w]) for w in args.workers)
    base_cpu = statistics.median(x["engine"]["cpu_bound_samples_per_min"] for x in results[first])
    print(f"\n{'workers':>8} {'samples/min':>12} {'x workers=' + str(first):>12} {'50 000 samples (min)':>21}"
          f" {'CPU-bound estimate':>19} {'x':>6} {'50 000 (min)':>13}"
          f"   ({args.n_samples} samples, median of {args.rounds}, {time.strftime('%Y-%m-%d')})")
    summary = {}
    for w, runs in results.items():
        spm = statistics.median(x["samples_per_min"] for x in runs)
        cpu = statistics.median(x["engine"]["cpu_bound_samples_per_min"] for x in runs)
        summary[w] = {"samples_per_min": spm, "ratio": spm / base, "minutes_50k_extrapolated": 50_000 / spm,
                      "cpu_bound_samples_per_min_estimate": cpu, "cpu_bound_ratio": cpu / base_cpu, "runs": runs}
        print(f"{w:>8} {spm:>12.0f} {spm / base:>12.2f} {50_000 / spm:>21.1f} {cpu:>19.0f} {cpu / base_cpu:>6.2f} "
              f"{50_000 / cpu:>13.1f}")
    print(f"samples bitwise identical across worker counts: {identical}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"wall time {time.time() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"system": args.system, "temperatures_k": list(temps),
                                              "load_average_before": load_before, "load_average_after": load_after,
                                              "identical": identical, "results": summary, "args": vars(args)},
                                             indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
