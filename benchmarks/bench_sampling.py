"""Replica exchange: our sampler vs ``openmmtools.multistate.ParallelTemperingSampler``, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_sampling.py [--system alanine-tetrapeptide]
        [--n-samples 400] [--rounds 2] [--out FILE.json]

Same system (a preset, amber99sbildn, vacuum, NoCutoff, HBonds; OpenMM Reference platform for
both), same ladder (ours, chosen automatically from the pilot run, whose cost is reported), same
integrator (``LangevinMiddleIntegrator``, 2 fs, 1/ps), 0.25 ps (125 steps) per replica between
exchange attempts, neighbour swaps (even/odd pairs alternating), velocities kept between
iterations, one 300 K configuration stored per exchange:

- ``ours``: :func:`spacetime_md.molecular.sample_boltzmann` with that ladder (in memory, one chunk,
  ``workers=1``: all replicas in this one process, like openmmtools; ``bench_sampling_workers.py``
  measures the worker processes);
- ``openmmtools (like for like)``: ``ParallelTemperingSampler`` with a ``LangevinDynamicsMove``
  (in openmmtools 0.27 the same ``LangevinMiddleIntegrator``, velocities kept), ``replica_mixing_scheme="swap-neighbors"``, a ``MultiStateReporter`` that
  stores every iteration (``checkpoint_interval=1``: positions of all replicas, which it always
  writes together) and no online MBAR analysis; context caches on the Reference platform;
- ``openmmtools (defaults)``: the same with its default mixing (``swap-all``, ``n_replicas^3``
  Gibbs swap attempts per iteration) and online MBAR analysis every 200 iterations.

Both samplers are equilibrated for 2 ps (8 exchanges) untimed from the same minimised
structure; the timed part is ``--n-samples`` exchanges. Rounds alternate the samplers; medians
are reported, with samples per second of wall time and per second of this process's CPU time
(less sensitive to other load on a shared machine), neighbour acceptance and the ratios to ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit


def run_ours(system, temps, n_samples: int, seed: int) -> dict:
    from spacetime_md.molecular import sample_boltzmann

    cpu = {}

    def mark(info):  # called once, right after the (single) production chunk
        cpu["end"] = time.process_time()

    # CPU time of the production chunk: from the end of equilibration (first progress of the run) is not
    # observable from outside, so equilibration is timed separately and subtracted.
    c0 = time.process_time()
    sample_boltzmann(system, 1, None, temperatures=list(temps) * unit.kelvin, equilibration=2.0 * unit.picosecond,
                     chunk_size=1, seed=seed, progress=False, plot=False, workers=1)
    c_equil = time.process_time() - c0
    c0 = time.process_time()
    res = sample_boltzmann(system, n_samples, None, temperatures=list(temps) * unit.kelvin,
                           equilibration=2.0 * unit.picosecond, chunk_size=n_samples, seed=seed,
                           progress=False, plot=False, callback=mark, workers=1)
    r = res.report
    return {"seconds": r["production_seconds"], "samples_per_s": n_samples / r["production_seconds"],
            "cpu_samples_per_s": n_samples / max(cpu["end"] - c0 - c_equil, 1e-9),
            "acceptance": r["exchange_acceptance"], "round_trips": r["round_trips"]}


def run_openmmtools(system, temps, n_samples: int, seed: int, defaults: bool) -> dict:
    from openmmtools import cache, mcmc, multistate, states

    np.random.seed(seed)  # openmmtools draws swap random numbers from numpy's global generator
    reference = openmm.Platform.getPlatformByName("Reference")
    # openmmtools 0.27's LangevinDynamicsMove runs openmm.LangevinMiddleIntegrator at each state's temperature.
    move = mcmc.LangevinDynamicsMove(timestep=2.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond,
                                     n_steps=125, reassign_velocities=False)
    thermo = states.ThermodynamicState(system.openmm_system, temperature=temps[0] * unit.kelvin)
    sampler_state = states.SamplerState(system.minimize())
    kwargs = {} if defaults else {"replica_mixing_scheme": "swap-neighbors"}
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=10**9,
                                                  online_analysis_interval=200 if defaults else None, **kwargs)
    sampler.energy_context_cache = cache.ContextCache(platform=reference)
    sampler.sampler_context_cache = cache.ContextCache(platform=reference)
    with tempfile.TemporaryDirectory() as tmp:
        reporter = multistate.MultiStateReporter(os.path.join(tmp, "pt.nc"), checkpoint_interval=1)
        sampler.create(thermo, sampler_state, reporter, temperatures=[t * unit.kelvin for t in temps],
                       n_temperatures=len(temps))
        sampler.run(n_iterations=8)  # equilibration, untimed
        n_states = len(temps)
        accepted = np.zeros((n_states, n_states))
        proposed = np.zeros((n_states, n_states))
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n_samples):
            sampler.run(n_iterations=1)
            accepted += sampler._n_accepted_matrix
            proposed += sampler._n_proposed_matrix
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        reporter.close()
    acc = [float(accepted[i, i + 1] / max(proposed[i, i + 1], 1)) for i in range(n_states - 1)]
    return {"seconds": seconds, "samples_per_s": n_samples / seconds, "cpu_samples_per_s": n_samples / cpu_seconds,
            "acceptance": acc}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="alanine-tetrapeptide")
    parser.add_argument("--n-samples", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-defaults-variant", action="store_true",
                        help="skip the openmmtools-defaults variant (swap-all, online analysis)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.getLogger("openmmtools").setLevel(logging.ERROR)

    from spacetime_md.molecular import load_system
    from spacetime_md.molecular.sampling.sampling_config import resolve_config

    system = load_system(args.system)
    t0 = time.perf_counter()
    config = resolve_config(system, args.n_samples, seed=args.seed)
    pilot_s = time.perf_counter() - t0
    temps = config.temperatures_k
    print(f"{args.system} ({system.n_atoms} atoms, {system.platform_name}); automatic ladder in {pilot_s:.1f} s: "
          + ", ".join(f"{t:.0f}" for t in temps) + " K; predicted acceptance "
          + ", ".join(f"{a:.2f}" for a in config.ladder["predicted_acceptance"]))
    runners = {"ours": lambda s: run_ours(system, temps, args.n_samples, s),
               "openmmtools (like for like)": lambda s: run_openmmtools(system, temps, args.n_samples, s, False)}
    if not args.no_defaults_variant:
        runners["openmmtools (defaults)"] = lambda s: run_openmmtools(system, temps, args.n_samples, s, True)
    results: dict[str, list[dict]] = {k: [] for k in runners}
    for r in range(args.rounds):
        for name, fn in runners.items():
            res = fn(args.seed + r)
            results[name].append(res)
            print(f"  round {r + 1} {name:<28} {res['samples_per_s']:7.2f} samples/s "
                  f"({res['cpu_samples_per_s']:.2f} per CPU s)  acceptance "
                  + ", ".join(f"{a:.2f}" for a in res["acceptance"]), flush=True)
    ours = statistics.median(x["samples_per_s"] for x in results["ours"])
    ours_cpu = statistics.median(x["cpu_samples_per_s"] for x in results["ours"])
    print(f"\n{'sampler':<28} {'samples/s':>10} {'x ours':>7} {'per CPU s':>10} {'x ours':>7} {'min acc':>8} "
          f"{'mean acc':>9}  ({args.n_samples} exchanges, {len(temps)} replicas, median of {args.rounds})")
    summary = {}
    for name, runs in results.items():
        sps = statistics.median(x["samples_per_s"] for x in runs)
        cps = statistics.median(x["cpu_samples_per_s"] for x in runs)
        acc = np.mean([x["acceptance"] for x in runs], axis=0)
        summary[name] = {"samples_per_s": sps, "cpu_samples_per_s": cps, "acceptance": acc.tolist(), "runs": runs}
        print(f"{name:<28} {sps:>10.2f} {sps / ours:>7.2f} {cps:>10.2f} {cps / ours_cpu:>7.2f} {acc.min():>8.3f} "
              f"{acc.mean():>9.3f}")
    print(f"\nours: 50 000 samples take {50_000 / ours / 60.0:.1f} min at this wall-time rate, "
          f"{50_000 / ours_cpu / 60.0:.1f} min of CPU time (extrapolated from {args.n_samples})")
    if args.out:
        Path(args.out).write_text(json.dumps({"system": args.system, "temperatures_k": list(temps),
                                              "pilot_seconds": pilot_s, "ladder": config.ladder,
                                              "results": summary, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
