"""Table 1 of the paper on the alanine dipeptide (phi, psi) grid, with an in-process baseline.

Runs :func:`spacetime_md.toy.table1.run_table1` (data, training, three geodesic variants,
1000 annealed-Langevin paths each) and then, on the same trained model and geodesic solver,
the paper's Langevin budget (128 curve points x 128 steps = 16 384 evaluations per path) for
the unconstrained variant. Prints MaxEnergy (nearest and bilinear lookup), evaluations and
wall times next to the published Table 1, with ratios against the paper-budget run.

    python benchmarks/bench_table1.py [--quick] [--out FILE] [--run-dir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch

from spacetime_md.toy.table1 import TABLE1_PRESETS, format_table1, run_table1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds, not meaningful)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "table1.json"))
    parser.add_argument("--run-dir", default=None, help="keep the run outputs here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1; a second thread stalls when the other core is busy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = "quick" if args.quick else "default"
    config = dataclasses.replace(TABLE1_PRESETS[preset](), seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp)
        ours = run_table1(config, run_dir / "ours")
        paper_budget = dataclasses.replace(
            config, variants=("unconstrained",), n_curve_points=128, n_steps_per_point=128 if not args.quick else 32,
            model_path=str(run_dir / "ours" / "model.pt"), evaluate_model=False, plots=False, save_paths=False,
        )
        base = run_table1(paper_budget, run_dir / "paper_budget")
    print(format_table1(ours))
    o, b = ours["variants"]["unconstrained"], base["variants"]["unconstrained"]
    rows = {
        "benchmark": "table1",
        "quick": args.quick,
        "torch_threads": torch.get_num_threads(),
        "ours": ours,
        "paper_budget_baseline": {k: b[k] for k in ("geodesic", "langevin", "metrics")},
    }
    on, bn = o["metrics"]["max_energy_nearest"], b["metrics"]["max_energy_nearest"]
    ob, bb = o["metrics"]["max_energy_bilinear"], b["metrics"]["max_energy_bilinear"]
    rows["summary"] = {
        "max_energy_nearest": on["mean"],
        "max_energy_nearest_std": on["std"],
        "max_energy_bilinear": ob["mean"],
        "max_energy_paper_budget_nearest": bn["mean"],
        "evaluations_per_path": o["langevin"]["evaluations_per_path"],
        "evaluation_ratio_vs_paper_budget": b["langevin"]["evaluations_per_path"] / o["langevin"]["evaluations_per_path"],
        "langevin_1000_paths_s": o["langevin"]["wall_time"] * 1000 / o["langevin"]["n_paths"],
        "langevin_speedup_vs_paper_budget": b["langevin"]["wall_time"] / o["langevin"]["wall_time"],
        "geodesic_s": o["geodesic"]["wall_time"],
        "training_s": ours["model"].get("train_time", 0.0),
        "data_evaluations": ours["model"].get("data_evaluations", 0),
        "published_max_energy": 37.36,
    }
    s = rows["summary"]
    print()
    print(f"{'unconstrained variant':<36}{'MaxEnergy nearest':>20}{'bilinear':>10}{'evals/path':>12}{'paths (s)':>11}")
    print(f"{'ours (T=128, K=' + str(o['langevin']['n_steps_per_point']) + ')':<36}"
          f"{on['mean']:>12.2f} +- {on['std']:.2f}{ob['mean']:>10.2f}{o['langevin']['evaluations_per_path']:>12d}"
          f"{o['langevin']['wall_time']:>11.1f}")
    print(f"{'paper budget (T=128, K=' + str(b['langevin']['n_steps_per_point']) + '), same model':<36}"
          f"{bn['mean']:>12.2f} +- {bn['std']:.2f}{bb['mean']:>10.2f}{b['langevin']['evaluations_per_path']:>12d}"
          f"{b['langevin']['wall_time']:>11.1f}")
    print(f"ratios: {s['evaluation_ratio_vs_paper_budget']:.1f}x fewer evaluations, "
          f"{s['langevin_speedup_vs_paper_budget']:.1f}x faster paths, MaxEnergy "
          f"{on['mean'] - bn['mean']:+.2f} vs paper budget, {on['mean'] - 37.36:+.2f} vs published 37.36")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(rows, indent=2))
    os.replace(tmp_out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
