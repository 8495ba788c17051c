"""Several endpoint pairs: geodesics solved together, then transition paths for each pair.

    python examples/batched_geodesics.py [--device cuda]

``optimize_geodesics`` makes one denoiser call per evaluation on the curve points of all pairs
(what fills a GPU), while each pair keeps its own optimiser, so a pair's geodesic does not depend
on the others. ``compute_transition_paths(..., geodesic=...)`` then runs the OpenMM paths of each
pair on its own geodesic. ``spacetime-md batch pairs.csv --group-size K`` does the same on Dask.
"""

from __future__ import annotations

import argparse
import time

import torch

from spacetime_md.core import optimize_geodesics
from spacetime_md.molecular import (PathConfig, compute_transition_paths, load_pretrained, load_system,
                                    prepare_geodesic_problem)

PAIRS = [("C7eq", "C7ax"), ("C7eq", "alpha_R"), ("alpha_R", "C7ax")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device of the geodesic solve (cpu or cuda)")
    parser.add_argument("--n-paths", type=int, default=2)
    args = parser.parse_args(argv)

    system = load_system("alanine-dipeptide")
    model = load_pretrained("alanine-dipeptide")
    config = PathConfig(n_paths=args.n_paths, baseline=False, device=args.device, seed=0)

    torch.manual_seed(config.seed)
    problems = [prepare_geodesic_problem(system, model, a, b, config) for a, b in PAIRS]
    t0 = time.perf_counter()
    geodesics = optimize_geodesics(problems[0].model, [p.start for p in problems], [p.end for p in problems],
                                   config.geodesic, [p.constraints for p in problems])
    print(f"{len(PAIRS)} geodesics solved together in {time.perf_counter() - t0:.1f} s on {args.device}")

    for (a, b), geo in zip(PAIRS, geodesics):
        result = compute_transition_paths(system, model, a, b, config, geodesic=geo)
        m = result["report"]["geodesic"]
        print(f"{a:>8} -> {b:<8} geodesic energy {geo.energy:7.1f}, {geo.n_steps:3d} steps; paths hit "
              f"{m['target_hit_rate']:.0%}, max energy {m['max_energy_kj_mol']['mean']:.1f} kJ/mol")


if __name__ == "__main__":
    main()
