"""Annealed-Langevin paths of the main command in 1 vs W processes, interleaved, same frames.

Samples the paths of the straight spacetime line of the main command (alanine dipeptide,
C7eq -> C7ax, the default ``PathConfig``: 8 paths x 64 points x 300 steps, Reference
platform) with ``RestrainedLangevinSampler(workers=1)`` and ``workers=W``, alternating the
order each round; the worker processes are started (and their start-up paid) before the
timing, as in ``spacetime-md paths``, where they start before the geodesic solve. Prints the
wall time of each call, the load average, the ratio of the best times, and checks that the
frames are bitwise equal.

    python benchmarks/bench_paths_workers.py [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import openmm.unit as unit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from spacetime_md.molecular.model.pretrained import load_pretrained
    from spacetime_md.molecular.paths.config import PathConfig
    from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler, restraint_schedule
    from spacetime_md.molecular.paths.transition import prepare_geodesic_problem, straight_line
    from spacetime_md.molecular.system.build import load_system

    config = PathConfig()
    system = load_system("alanine-dipeptide")
    model = load_pretrained("alanine-dipeptide")
    problem = prepare_geodesic_problem(system, model, "C7eq", "C7ax", config)
    centres, k = restraint_schedule(*straight_line(problem.start, problem.end, config.n_points),
                                    model.length_scale_nm, system.temperature_k)
    samplers = {w: RestrainedLangevinSampler(system.openmm_system, temperature=system.temperature,
                                             timestep=config.timestep_fs * unit.femtosecond,
                                             friction=config.friction_per_ps / unit.picosecond,
                                             platform=system.platform_name, workers=w)
                for w in (1, args.workers)}
    for sampler in samplers.values():
        sampler.start_workers()
    samplers[args.workers].sample(centres[:2], k[:2], problem.start_nm, n_paths=args.workers, n_steps=1)  # started
    best: dict[int, float] = {}
    frames: dict[int, np.ndarray] = {}
    for r in range(args.rounds):
        for w in ((1, args.workers) if r % 2 == 0 else (args.workers, 1)):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = samplers[w].sample(centres, k, problem.start_nm, n_paths=config.n_paths, n_steps=config.n_steps,
                                     seed=config.seed, record_every=config.record_every)
            wall = time.perf_counter() - t0
            best[w] = min(best.get(w, np.inf), wall)
            frames[w] = out.frames
            print(f"round {r}: workers {w}: {wall:.2f} s (load average {load:.2f})")
    for sampler in samplers.values():
        sampler.close()
    print(f"best: workers 1 {best[1]:.2f} s, workers {args.workers} {best[args.workers]:.2f} s, "
          f"ratio {best[1] / best[args.workers]:.2f}x; frames bitwise equal: "
          f"{np.array_equal(frames[1], frames[args.workers])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
