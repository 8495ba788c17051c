"""Batch mode throughput: endpoint pairs per minute, serially and on 1 and 2 local Dask workers.

Runs the same batch of alanine dipeptide endpoint pairs (all 6 ordered pairs of C7eq, C7ax and
alpha_R, repeated ``--repeat`` times with distinct ids, hence distinct seeds) three ways in
this process: serially without Dask (``workers=0``, the baseline), and on an in-process
LocalCluster with 1 and with 2 worker processes. Prints pairs per minute and the ratios to
the baseline, the measured per-task cost (inside the workers) and the cluster's fixed
overhead (start, worker imports, shutdown), and projects the wall time and throughput of a
batch on N workers as ``overhead + ceil(n_pairs / N) * per_task`` (independent tasks, one
core per worker).

Uses the shipped model when it exists, otherwise a randomly initialised model of the default
architecture (same cost per evaluation; the paths are then meaningless, the timings are not).

    python benchmarks/bench_batch.py [--quick] [--repeat 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spacetime_md.core import GeodesicConfig
from spacetime_md.molecular import load_system
from spacetime_md.molecular.workflows.batch import run_batch
from spacetime_md.molecular.workflows.batch_tasks import BatchTask
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.model.pretrained import pretrained_path, save_checkpoint
from spacetime_md.molecular.model.train_config import TrainConfig

STATES = ("C7eq", "C7ax", "alpha_R")


def model_checkpoint(workdir: Path) -> tuple[str, str]:
    shipped = pretrained_path("alanine-dipeptide")
    if shipped.is_file():
        return str(shipped), f"shipped model ({shipped.name})"
    system = load_system("alanine-dipeptide")
    defaults = TrainConfig(data="", out="")
    torch.manual_seed(0)
    model = EquivariantDenoiser(["X"] * system.n_atoms, system.bonds.tolist(), atom_names=list(system.atom_names),
                                **defaults.architecture())
    path = save_checkpoint(workdir / "random.pt", model)
    return str(path), (f"random model, default architecture ({defaults.hidden_channels} channels, "
                       f"{defaults.n_layers} layers): shipped model not found")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller geodesic and paths")
    parser.add_argument("--repeat", type=int, default=1, help="copies of the 6 ordered state pairs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "batch.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.quick:
        config = PathConfig(n_paths=2, n_points=16, n_steps=50, baseline=False,
                            geodesic=GeodesicConfig(n_nodes=4, n_points=(8,), divergence="hutchinson", n_probes=1,
                                                    max_steps=3))
    else:
        config = PathConfig(n_paths=4, n_points=32, n_steps=100, baseline=False,
                            geodesic=GeodesicConfig(n_nodes=8, n_points=(16,), divergence="hutchinson", n_probes=1,
                                                    max_steps=10))
    pairs = [(a, b) for a, b in itertools.permutations(STATES, 2)]
    tasks = [BatchTask(f"r{r}-{a}-{b}", a, b) for r in range(args.repeat) for a, b in pairs]
    workdir = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    results: dict[str, dict] = {}
    try:
        checkpoint, model_note = model_checkpoint(workdir)
        print(f"model: {model_note}")
        print(f"{len(tasks)} pairs; per pair: geodesic {config.geodesic.n_nodes} nodes x {config.geodesic.max_steps} "
              f"steps, {config.n_paths} paths x {config.n_points} points x {config.n_steps} OpenMM steps")
        for label, workers in (("serial (no Dask)", 0), ("1 worker", 1), ("2 workers", 2)):
            out = workdir / f"w{workers}"
            t0 = time.perf_counter()
            result = run_batch(tasks, out, config=config, checkpoint=checkpoint, plots=False, workers=workers,
                               dashboard=False)
            wall = time.perf_counter() - t0
            if result.failed:
                raise SystemExit(f"bench_batch: {len(result.failed)} pairs failed: {result.records[result.failed[0]]['error']}")
            task_s = [r["wall_s"] for r in result.records.values()]
            cpu_s = [r["cpu_s"] for r in result.records.values()]
            results[label] = {
                "workers": workers, "wall_s": wall, "pairs": len(tasks),
                "pairs_per_min": 60.0 * len(tasks) / wall,
                "task_s_median": statistics.median(task_s), "task_s_mean": statistics.fmean(task_s),
                "task_cpu_s_mean": statistics.fmean(cpu_s),
            }
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base = results["serial (no Dask)"]
    print(f"\n{'run':<18}{'wall (s)':>10}{'pairs/min':>11}{'vs serial':>11}{'task wall (s)':>15}{'task CPU (s)':>14}")
    for label, r in results.items():
        print(f"{label:<18}{r['wall_s']:>10.1f}{r['pairs_per_min']:>11.2f}{r['pairs_per_min'] / base['pairs_per_min']:>10.2f}x"
              f"{r['task_s_median']:>15.2f}{r['task_cpu_s_mean']:>14.2f}")

    # Projection from the measured per-task cost on one worker process and the cluster overhead.
    # The CPU time per task is what a dedicated core needs (it does not grow when other
    # processes share the cores, as the wall time does on a busy machine).
    one = results["1 worker"]
    per_task = one["task_s_mean"]
    per_task_cpu = one["task_cpu_s_mean"]
    overhead = max(one["wall_s"] - len(tasks) * per_task, 0.0)
    projection = {}
    print(f"\nprojection: per task {per_task:.2f} s wall / {per_task_cpu:.2f} s CPU (1 worker), fixed cluster "
          f"overhead {overhead:.1f} s; one core per worker")
    print(f"{'workers':>8}{'pairs/min (wall)':>18}{'pairs/min (CPU)':>17}{'1000 pairs (min, CPU)':>23}")
    for n in (1, 2, 4, 8, 16, 32, 64, 128):
        steady = 60.0 * n / per_task
        steady_cpu = 60.0 * n / per_task_cpu
        batch_min = (overhead + math.ceil(1000 / n) * per_task_cpu) / 60.0
        projection[n] = {"pairs_per_min": steady, "pairs_per_min_cpu": steady_cpu, "minutes_for_1000_pairs_cpu": batch_min}
        print(f"{n:>8}{steady:>18.1f}{steady_cpu:>17.1f}{batch_min:>23.1f}")

    summary = {
        "pairs_per_min_serial": base["pairs_per_min"],
        "pairs_per_min_1_worker": one["pairs_per_min"],
        "pairs_per_min_2_workers": results["2 workers"]["pairs_per_min"],
        "speedup_2_vs_1_worker": results["2 workers"]["pairs_per_min"] / one["pairs_per_min"],
        "per_task_s": per_task,
        "per_task_cpu_s": per_task_cpu,
        "cluster_overhead_s": overhead,
    }
    payload = {"summary": summary, "runs": results, "projection": projection, "model": model_note,
               "path_config": config.to_dict(), "n_pairs": len(tasks), "cpu_count": os.cpu_count(),
               "quick": args.quick, "load_average_1min": os.getloadavg()[0]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
