"""Annealed-Langevin throughput (Algorithm 1) on the alanine dipeptide (phi, psi) grid potential.

Ours: ``sample_annealed_langevin_grid`` (all paths in one batch, analytic spline gradient;
same paths as the core sampler for the same seed). Baselines measured in the same process:
the same sampler called once per path in a Python loop (what a per-path implementation
costs), and the generic core ``sample_annealed_langevin`` (autograd gradient of the spline).
Reference figure (BENCHMARKS.md, the paper's code on a 2-core CPU): 8 paths x 128 steps x
128 curve points in 3.6 s.

The curve is a fixed synthetic spacetime curve between the Table-1 endpoints (log_snr
4 -> 0 -> 4); throughput does not depend on how it was obtained. Medians of repeats.

    python benchmarks/bench_langevin.py [--quick] [--out FILE] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from spacetime_md.core import alpha_sigma, sample_annealed_langevin
from spacetime_md.toy.landscape import alanine_dipeptide_fes
from spacetime_md.toy.langevin import sample_annealed_langevin_grid

REFERENCE_8x128x128_S = 3.6


def synthetic_curve(n_points: int):
    s = torch.linspace(0, 1, n_points, dtype=torch.float64)
    log_snr = 4.0 - 16.0 * s * (1 - s)  # 4 -> 0 -> 4
    start = torch.tensor([-2.55, 2.7], dtype=torch.float64)
    end = torch.tensor([0.95, -0.4], dtype=torch.float64)
    centres = (1 - s)[:, None] * start + s[:, None] * end
    x = alpha_sigma(log_snr)[0][:, None] * centres
    return log_snr, x, start


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs and fewer repeats")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "langevin.json"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1; a second thread stalls when the other core is busy)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pot = alanine_dipeptide_fes()
    fast_u = pot.as_autograd_function()
    repeats = 1 if args.quick else 3
    n_points, n_steps = (32, 32) if args.quick else (128, 128)
    log_snr, x, start = synthetic_curve(n_points)

    def run(sampler, n_paths, n_pts=n_points, k=n_steps, ls=log_snr, xx=x, seed=0):
        gen = torch.Generator().manual_seed(seed)
        if sampler == "grid":
            return sample_annealed_langevin_grid(pot, ls, xx, start, n_paths=n_paths, n_steps=k,
                                                 step_size=2e-3, generator=gen)
        return sample_annealed_langevin(fast_u, ls, xx, start, n_paths=n_paths, n_steps=k,
                                        step_size=2e-3, generator=gen)

    rows: dict = {"benchmark": "langevin", "n_points": n_points, "n_steps_per_point": n_steps,
                  "repeats": repeats, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    # 8 paths, batched vs loop over paths (the reference's configuration)
    batched, _ = timed(lambda: run("grid", 8), repeats)
    looped, _ = timed(lambda: [run("grid", 1, seed=i) for i in range(8)], repeats)
    core_sampler, _ = timed(lambda: run("core", 8), repeats)
    scale = (128 * 128) / (n_points * n_steps)
    rows["paths8"] = {
        "batched_s": batched, "loop_over_paths_s": looped, "core_sampler_s": core_sampler,
        "speedup_vs_loop": looped / batched, "speedup_vs_core_sampler": core_sampler / batched,
        "batched_scaled_to_128x128_s": batched * scale,
        "reference_8x128x128_s": REFERENCE_8x128x128_S,
        "speedup_vs_reference": REFERENCE_8x128x128_S / (batched * scale),
    }
    # 1000 paths with our Table-1 budget (128 points x 15 steps)
    n_many = 200 if args.quick else 1000
    ls2, x2, _ = synthetic_curve(128)
    many, _ = timed(lambda: run("grid", n_many, 128, 15, ls2, x2), repeats)
    many_core, _ = timed(lambda: run("core", n_many, 128, 15, ls2, x2), 1)
    evals = n_many * 128 * 15
    rows["table1_budget"] = {
        "n_paths": n_many, "n_points": 128, "n_steps_per_point": 15, "wall_s": many,
        "evaluations_per_s": evals / many, "scaled_to_1000_paths_s": many * 1000 / n_many,
        "core_sampler_s": many_core, "speedup_vs_core_sampler": many_core / many,
        "ratio_per_path_vs_reference": (REFERENCE_8x128x128_S / 8 / (128 * 128)) / (many / evals),
    }
    rows["summary"] = {
        "8_paths_speedup_vs_loop": rows["paths8"]["speedup_vs_loop"],
        "8x128x128_s": rows["paths8"]["batched_scaled_to_128x128_s"],
        "speedup_vs_reference_3.6s": rows["paths8"]["speedup_vs_reference"],
        "1000_paths_table1_budget_s": rows["table1_budget"]["scaled_to_1000_paths_s"],
        "speedup_vs_core_sampler_1000_paths": rows["table1_budget"]["speedup_vs_core_sampler"],
        "evaluations_per_s": rows["table1_budget"]["evaluations_per_s"],
    }
    p8 = rows["paths8"]
    print(f"Annealed Langevin on the phi/psi grid ({n_points} points x {n_steps} steps, median of {repeats}, "
          f"{rows['torch_threads']} threads)")
    print(f"{'configuration':<44}{'time (s)':>10}{'ratio':>9}")
    print(f"{'8 paths, batched (ours)':<44}{p8['batched_s']:>10.3f}{1.0:>9.2f}")
    print(f"{'8 paths, Python loop over paths':<44}{p8['loop_over_paths_s']:>10.3f}{p8['speedup_vs_loop']:>9.2f}")
    print(f"{'8 paths, core sampler (autograd gradient)':<44}{p8['core_sampler_s']:>10.3f}"
          f"{p8['speedup_vs_core_sampler']:>9.2f}")
    print(f"{'8 x 128 x 128 (scaled) vs reference 3.6 s':<44}{p8['batched_scaled_to_128x128_s']:>10.3f}"
          f"{p8['speedup_vs_reference']:>9.2f}")
    tb = rows["table1_budget"]
    print(f"{f'{n_many} paths x 128 points x 15 steps':<44}{tb['wall_s']:>10.3f}"
          f"   ({tb['evaluations_per_s'] / 1e6:.2f} M evaluations/s; 1000 paths: {tb['scaled_to_1000_paths_s']:.1f} s)")
    print(f"{'  same, core sampler (autograd gradient)':<44}{tb['core_sampler_s']:>10.3f}"
          f"{tb['speedup_vs_core_sampler']:>9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
