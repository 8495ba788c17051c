"""The main command's geodesic solve: a baseline commit's solver vs the current one, interleaved.

Extracts ``spacetime_md/core`` of ``--baseline`` (a git commit) into a temporary package,
then solves the geodesic of ``spacetime-md paths`` (alanine dipeptide, shipped model, C7eq ->
C7ax, the shipped ``DEFAULT_GEODESIC`` settings) with both solvers in one process, alternating
the order each round (baseline, current, current, baseline, ...). Every final curve is scored
with the exact divergence at T = 64 (66 denoiser rows per point; the acceptance measure of
issue 23 and the quantity the speed-up is claimed at). Prints, per seed, the best wall time
and the best CPU time (``time.process_time``: one torch thread, so it counts the solve's own
work and is far less disturbed by other jobs on a shared machine than the wall time) of each
solver, the ratios, denoiser rows, steps and exact energies. Absolute times depend on the
load of the machine: compare ratios. The shipped stopping test makes the number of steps a
random variable (a different line-search decision early on changes when the held-out values
stall); ``--fixed-steps N`` disables it (``patience = N + 1``) and runs exactly ``N`` steps per stage
with both solvers, a controlled comparison of the cost per step at equal work.

    python benchmarks/bench_geodesic_speed.py [--seeds 0 1 2] [--rounds 2] [--fixed-steps N] [--baseline COMMIT]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from spacetime_md.core import optimize_geodesic
from spacetime_md.core.estimates import estimate_curve_energy

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before the Armijo value-only line search of the honest solver.
DEFAULT_BASELINE = "8698c45"


def load_baseline_core(commit: str, into: Path):
    """Import ``spacetime_md/core`` of ``commit`` as the package ``_baseline_core``."""
    tar = subprocess.run(["git", "archive", commit, "spacetime_md/core"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    package = into / "_baseline_core"
    (into / "spacetime_md" / "core").rename(package)
    for path in package.glob("*.py"):
        text = re.sub(r"spacetime_md\.core\b", "_baseline_core", path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("_baseline_core.geodesic")


def main_problem():
    """The shipped model and the C7eq -> C7ax geodesic problem of the main command."""
    try:  # molecular/ laid out in sub-packages
        from spacetime_md.molecular.model.pretrained import load_checkpoint
        from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC, PathConfig
        from spacetime_md.molecular.paths.run import resolve_paths_system, shipped_checkpoint
        from spacetime_md.molecular.paths.transition import prepare_geodesic_problem
    except ImportError:  # the flat layout
        from spacetime_md.molecular.paths import DEFAULT_GEODESIC, PathConfig, prepare_geodesic_problem
        from spacetime_md.molecular.pretrained import load_checkpoint
        from spacetime_md.molecular.run_paths import resolve_paths_system, shipped_checkpoint
    mol = resolve_paths_system(None)
    model = load_checkpoint(shipped_checkpoint(mol))
    return model, prepare_geodesic_problem(mol, model, "C7eq", "C7ax", PathConfig()), DEFAULT_GEODESIC


def solve(name, geodesic_module, model, problem, config, seed) -> dict:
    config = dataclasses.replace(config, seed=seed)
    if geodesic_module is not None:
        fields = dataclasses.fields(geodesic_module.GeodesicConfig)
        config = geodesic_module.GeodesicConfig(**{f.name: getattr(config, f.name) for f in fields})
    fn = optimize_geodesic if geodesic_module is None else geodesic_module.optimize_geodesic
    t0, c0 = time.perf_counter(), time.process_time()
    geo = fn(model, problem.start, problem.end, config, problem.constraints)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        log_snr, x = geo.curve.evaluate(64)
    exact = estimate_curve_energy(model, log_snr, x, divergence="exact")
    return {"solver": name, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds, "rows": geo.n_denoiser_evals, "steps": geo.n_steps,
            "failed_searches": geo.n_failed_searches, "own_energy": geo.energy, "exact_64": exact.energy,
            "exact_64_negative_segments": exact.n_negative_segments}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=2, help="solves per solver and seed (order alternates)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git commit of the baseline solver")
    parser.add_argument("--fixed-steps", type=int, default=None,
                        help="controlled run: no stopping test, exactly this many steps per stage for both solvers")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "geodesic_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, problem, config = main_problem()
    if args.fixed_steps is not None:
        config = dataclasses.replace(config, max_steps=args.fixed_steps, patience=args.fixed_steps + 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_baseline_core(args.baseline, Path(tmp))
        solvers = {"baseline": baseline, "current": None}
        print(f"{'seed':>4} {'solver':<9}{'best s':>8}{'cpu s':>8}{'rows':>6}{'steps':>6}{'fail':>5}{'exact64 E':>11}")
        for seed in args.seeds:
            runs = {"baseline": [], "current": []}
            for r in range(args.rounds):
                order = ("baseline", "current") if r % 2 == 0 else ("current", "baseline")
                for name in order:
                    runs[name].append(solve(name, solvers[name], model, problem, config, seed))
            for name, got in runs.items():
                best = min(got, key=lambda g: g["seconds"])
                row = {**best, "cpu_seconds": min(g["cpu_seconds"] for g in got),
                       "all_seconds": [g["seconds"] for g in got], "all_cpu_seconds": [g["cpu_seconds"] for g in got]}
                rows.append(row)
                print(f"{seed:>4} {name:<9}{best['seconds']:>8.2f}{row['cpu_seconds']:>8.2f}{best['rows']:>6}"
                      f"{best['steps']:>6}{best['failed_searches']:>5}{best['exact_64']:>11.1f}", flush=True)
            ratio = min(g["seconds"] for g in runs["baseline"]) / min(g["seconds"] for g in runs["current"])
            cpu_ratio = min(g["cpu_seconds"] for g in runs["baseline"]) / min(g["cpu_seconds"] for g in runs["current"])
            print(f"{seed:>4} speed-up {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time", flush=True)
    total = {name: sum(r["seconds"] for r in rows if r["solver"] == name) for name in ("baseline", "current")}
    cpu = {name: sum(r["cpu_seconds"] for r in rows if r["solver"] == name) for name in ("baseline", "current")}
    energy = {name: [r["exact_64"] for r in rows if r["solver"] == name] for name in ("baseline", "current")}
    print(f"total best seconds: baseline {total['baseline']:.2f}, current {total['current']:.2f}, "
          f"speed-up {total['baseline'] / total['current']:.2f}x; CPU seconds: baseline {cpu['baseline']:.2f}, current "
          f"{cpu['current']:.2f}, speed-up {cpu['baseline'] / cpu['current']:.2f}x; exact E (T = 64) baseline "
          f"{[round(e, 1) for e in energy['baseline']]}, current {[round(e, 1) for e in energy['current']]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "geodesic_speed", "baseline": args.baseline, "rows": rows,
                               "fixed_steps": args.fixed_steps,
                               "torch_threads": 1}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
