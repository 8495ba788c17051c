"""The main command's geodesic: old solver settings vs the shipped ones, interleaved (issue 23).

Solves the geodesic of ``spacetime-md paths`` (alanine dipeptide, shipped model, C7eq ->
C7ax) with each configuration in turn, per seed, in one process, and scores every final
curve with probes the solver never saw and (``--exact``) with the exact divergence at
T = 64 (66 denoiser rows per point; what the acceptance target is stated in): segment-clamped
("exact64 E") and with negative terms counted by magnitude ("exact64 |t|", the quantity the
shipped ``clamp="abs"`` optimises). Reports solve
time, denoiser rows, the solver's own energy, the held-out energy and the exact energy.
``--paths`` also runs the whole paths job for each configuration (seed 0) and reports hit
rate, chirality and max energy; ``--threads`` times one solver call at 1 and 2 torch
threads; ``--paths-repeats N`` runs each paths job N times, interleaved. Absolute times depend on the load of the machine: compare ratios.

    python benchmarks/bench_geodesic_main.py [--seeds 0 1 2] [--exact] [--paths [--paths-repeats N]] [--threads]
        [--configs old shipped no-clamp] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from spacetime_md.core import GeodesicConfig, optimize_geodesic
from spacetime_md.core.estimates import estimate_curve_energy
from spacetime_md.core.geometry import expectation_params, natural_params
try:  # molecular/ laid out in sub-packages
    from spacetime_md.molecular.model.pretrained import load_checkpoint
    from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC, PathConfig
    from spacetime_md.molecular.paths.run import resolve_paths_system, run_paths, shipped_checkpoint
    from spacetime_md.molecular.paths.transition import prepare_geodesic_problem
except ImportError:  # the flat layout
    from spacetime_md.molecular.paths import DEFAULT_GEODESIC, PathConfig, prepare_geodesic_problem
    from spacetime_md.molecular.pretrained import load_checkpoint
    from spacetime_md.molecular.run_paths import resolve_paths_system, run_paths, shipped_checkpoint

#: The settings before issue 23: one fixed probe per point and stage, the last curve kept.
OLD = GeodesicConfig(n_nodes=8, n_points=(16, 32), divergence="hutchinson", n_probes=1, max_steps=60, rtol=1e-3,
                     num_threads=1)
CONFIGS = {
    "old": OLD,
    "shipped": DEFAULT_GEODESIC,
    # The shipped settings before the molecular default moved to clamp="abs" (2026-12-05).
    "segment": dataclasses.replace(DEFAULT_GEODESIC, clamp="segment"),
    "no-clamp": dataclasses.replace(DEFAULT_GEODESIC, clamp="none"),
    "curve-probes": dataclasses.replace(DEFAULT_GEODESIC, probe_layout="curve"),
    "coarse": dataclasses.replace(DEFAULT_GEODESIC, n_points=(12, 24)),
    # The two initial curves one after the other (the shipped default before 2026-12-06 runs them in threads).
    "sequential-starts": dataclasses.replace(DEFAULT_GEODESIC, start_threads=1),
    # Plain Adam on the same curve class, fresh probes every step, held-out stopping test.
    "adam": dataclasses.replace(DEFAULT_GEODESIC, optimizer="adam", lr=0.05, max_steps=150, patience=20),
}


def time_calls(model, problem, n_points: int = 32, repeats: int = 3) -> dict[str, float]:
    """Median seconds of one solver evaluation (forward, one-probe divergence, double backward)."""
    curve_l = torch.linspace(float(problem.start.log_snr), 0.0, n_points)
    x = problem.start.x.expand(n_points, -1).clone() * 0.9
    out = {}
    before = torch.get_num_threads()
    for threads in (1, 2, 1, 2):  # interleaved
        torch.set_num_threads(threads)
        times = []
        for _ in range(repeats):
            xs = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            mu = expectation_params(model, curve_l, xs, divergence="hutchinson", n_probes=1, create_graph=True)
            eta = natural_params(curve_l, xs)
            ((eta[0] * mu[0]).sum() + (eta[1] * mu[1]).sum()).backward()
            times.append(time.perf_counter() - t0)
        out.setdefault(f"threads_{threads}_s", []).append(sorted(times)[len(times) // 2])
    torch.set_num_threads(before)
    return {k: min(v) for k, v in out.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=["old", "shipped"], choices=sorted(CONFIGS))
    parser.add_argument("--exact", action="store_true", help="also score with the exact divergence at T = 64")
    parser.add_argument("--paths", action="store_true", help="also run the whole paths job (seed 0) per config")
    parser.add_argument("--paths-repeats", type=int, default=1, help="paths jobs per config (interleaved)")
    parser.add_argument("--threads", action="store_true", help="time one solver call at 1 and 2 threads")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "geodesic_main.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    mol = resolve_paths_system(None)
    model = load_checkpoint(shipped_checkpoint(mol))
    problem = prepare_geodesic_problem(mol, model, "C7eq", "C7ax", PathConfig())
    rows: list[dict] = []
    print(f"{'config':<14}{'seed':>5}{'solve s':>9}{'rows':>7}{'steps':>6}{'fail':>5}{'own E':>9}"
          f"{'held-out E':>12}{'unclamped +- se':>18}{'neg':>5}{'exact64 E':>11}{'exact64 |t|':>12}")
    for seed in args.seeds:
        for name in args.configs:  # interleaved per seed
            config = dataclasses.replace(CONFIGS[name], seed=seed)
            t0 = time.perf_counter()
            geo = optimize_geodesic(model, problem.start, problem.end, config, problem.constraints)
            solve_s = time.perf_counter() - t0
            with torch.no_grad():
                log_snr, x = geo.curve.evaluate(64)
            held = estimate_curve_energy(model, log_snr, x, n_probes=16, probe_layout="curve",
                                         generator=torch.Generator().manual_seed(10_000 + seed))
            exact = estimate_curve_energy(model, log_snr, x, divergence="exact") if args.exact else None
            row = {"config": name, "seed": seed, "solve_s": solve_s, "rows": geo.n_denoiser_evals,
                   "steps": geo.n_steps, "failed_searches": geo.n_failed_searches, "own_energy": geo.energy,
                   "held_out_64": held.to_dict(), "exact_64": None if exact is None else exact.to_dict(),
                   "log_snr_min": float(log_snr.min())}
            rows.append(row)
            print(f"{name:<14}{seed:>5}{solve_s:>9.1f}{geo.n_denoiser_evals:>7}{geo.n_steps:>6}"
                  f"{geo.n_failed_searches:>5}{geo.energy:>9.1f}{held.energy:>12.1f}"
                  f"{held.energy_unclamped:>10.1f} +- {held.energy_se:<5.1f}{held.n_negative_segments:>5}"
                  f"{'' if exact is None else f'{exact.energy:.1f}':>11}"
                  f"{'' if exact is None else f'{exact.energy_abs:.1f}':>12}", flush=True)
    result = {"benchmark": "geodesic_main", "rows": rows, "torch_threads": 1}
    if args.threads:
        result["call_cost"] = time_calls(model, problem)
        print("one solver call at T = 32:", {k: round(v, 4) for k, v in result["call_cost"].items()})
    if args.paths:
        result["paths"] = {}
        for name in [c for _ in range(args.paths_repeats) for c in args.configs]:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                report = run_paths(Path(tmp) / "out", config=PathConfig(geodesic=CONFIGS[name]), plots=False)
                wall = time.perf_counter() - t0
            m = report["geodesic"]
            result["paths"].setdefault(name, []).append({"wall_s": wall, "timings": report["timings"], "hit": m["target_hit_rate"],
                                     "chirality": m["chirality_kept_fraction"],
                                     "max_energy_kj_mol": m["max_energy_kj_mol"],
                                     "barrier_kj_mol": m["barrier_kj_mol"]})
            print(f"paths [{name}] wall {wall:.1f} s (geodesic {report['timings']['geodesic_s']:.1f} s): hit "
                  f"{m['target_hit_rate']:.0%}, chiral {m['chirality_kept_fraction']:.0%}, max E "
                  f"{m['max_energy_kj_mol']['mean']:.1f} +- {m['max_energy_kj_mol']['std']:.1f} kJ/mol", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
