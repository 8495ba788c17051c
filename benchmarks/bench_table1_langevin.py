"""Table 1 by Langevin step rule, step size and steps per point, on the same trained models.

The geodesic is fixed by the model; what changes MaxEnergy here is how the annealed-Langevin
chain follows it. Rows (unconstrained variant, 1000 paths, 128 curve points):

- ``ula eps K``: the paper's unadjusted steps (Algorithm 1); ``ula 2e-3 x15`` is the baseline
  (the ``algorithm1`` preset, our default before Metropolis adjustment), measured in the same
  run; ``ula 2e-3 x128`` is the paper's Langevin budget;
- ``mala eps K``: Metropolis-adjusted steps; ``mala 8e-3 x15`` is the default recipe.

Each row prints MaxEnergy with nearest, bilinear and densified-bilinear lookup (the maximum of
the bilinear interpolant along the straight segments between consecutive frames, sampled at a
quarter grid spacing: the frames of large steps are further apart, so the densified value is
the one that cannot skip the barrier), the difference to the baseline, evaluations per path,
the acceptance rate, the mean frame-to-frame jump, and where the paths' maxima lie relative to
the grid saddle. The baseline and the default also run the low-variance and region-avoiding
variants. ``--seeds 0,1`` repeats everything with an independently trained model per seed
(data, training and Langevin noise all change with the seed).

    python benchmarks/bench_table1_langevin.py [--seeds 0,1] [--model PATH] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from spacetime_md._atomic import write_json_atomic
from spacetime_md.toy import table1
from spacetime_md.toy.periodic_model import PeriodicDenoiser

#: (method, step size, steps per point); the first row is the baseline, DEFAULT_ROW the recipe.
ROWS = [("ula", 2e-3, 15), ("ula", 4e-3, 15), ("ula", 2e-3, 31), ("ula", 2e-3, 128),
        ("mala", 2e-3, 15), ("mala", 4e-3, 15), ("mala", 8e-3, 15), ("mala", 1.2e-2, 15),
        ("mala", 8e-3, 8), ("mala", 8e-3, 31)]
DEFAULT_ROW = ("mala", 8e-3, 15)


def summarise(name: str, variant: str, res: dict, baseline: float | None) -> dict:
    m, lang = res["metrics"], res["langevin"]
    out = {
        "name": name, "variant": variant, "method": lang["method"], "step_size": lang["step_size"],
        "n_steps_per_point": lang["n_steps_per_point"], "evaluations_per_path": lang["evaluations_per_path"],
        "acceptance_rate": lang["acceptance_rate"], "wall_time_s": lang["wall_time"],
        "nearest": m["max_energy_nearest"]["mean"], "nearest_std": m["max_energy_nearest"]["std"],
        "bilinear": m["max_energy_bilinear"]["mean"], "densified": m["max_energy_bilinear_densified"]["mean"],
        "mean_jump_rad": m["frame_jump_rad"]["mean"], "hit_rate": m["hit_rate"],
        "distance_to_saddle_median": m["crossing"]["max_distance_to_saddle_rad"]["median"],
    }
    out["nearest_minus_baseline"] = None if baseline is None else out["nearest"] - baseline
    acc = "-" if out["acceptance_rate"] is None else f"{out['acceptance_rate']:.2f}"
    diff = "" if baseline is None else f"{out['nearest_minus_baseline']:+.3f}"
    print(f"{name:<17}{variant:<14}{out['nearest']:>8.3f} +- {out['nearest_std']:.2f}{out['bilinear']:>9.3f}"
          f"{out['densified']:>10.3f}{diff:>8}{out['evaluations_per_path']:>7d}{acc:>6}{out['mean_jump_rad']:>7.3f}"
          f"{out['distance_to_saddle_median']:>8.2f}{out['hit_rate']:>6.2f}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one trained model each (default 0)")
    parser.add_argument("--model", help="checkpoint for a single seed (default: train the recipe here)")
    parser.add_argument("--quick", action="store_true", help="smoke-test preset and three rows (seconds)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "table1_langevin.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.model and (len(seeds) != 1 or not Path(args.model).is_file()):
        raise SystemExit(f"bench_table1_langevin: --model: expected an existing checkpoint and one seed, "
                         f"got {args.model!r} with seeds {seeds}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = ROWS[:1] + [DEFAULT_ROW] + [("mala", 8e-3, 8)] if args.quick else ROWS
    preset = table1.TABLE1_PRESETS["quick" if args.quick else "default"]()
    results = []
    for seed in seeds:
        base = dataclasses.replace(preset, seed=seed, evaluate_model=False, plots=False, save_paths=False)
        if args.model:
            model = PeriodicDenoiser.load(args.model)
            train_s = 0.0
        else:
            # exactly the model `spacetime-md benchmark table1 --seed S` trains
            t_train = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / "model.pt")
                table1.run_table1(dataclasses.replace(base, variants=("unconstrained",), n_paths=2, model_path=path),
                                  None)
                model = PeriodicDenoiser.load(path)
            train_s = time.perf_counter() - t_train
        print(f"\nseed {seed} (model {'loaded' if args.model else f'trained in {train_s:.0f} s'})")
        print(f"{'row':<17}{'variant':<14}{'nearest':>17}{'bilinear':>9}{'densified':>10}{'vs base':>8}"
              f"{'evals':>7}{'acc':>6}{'jump':>7}{'saddle':>8}{'hit':>6}")
        baseline = None
        for method, eps, k in rows:
            variants = table1.VARIANTS if (method, eps, k) in (ROWS[0], DEFAULT_ROW) else ("unconstrained",)
            if args.quick:
                k = min(k, preset.n_steps_per_point)
            name = f"{method} {eps:g} x{k}"
            config = dataclasses.replace(base, variants=variants, langevin_method=method, step_size=eps,
                                         n_steps_per_point=k)
            report = table1.run_table1(config, None, denoiser=model)
            for variant, res in report["variants"].items():
                row = summarise(name, variant, res, baseline if variant == "unconstrained" else None)
                row["seed"] = seed
                results.append(row)
                if baseline is None and variant == "unconstrained":
                    baseline = row["nearest"]
    default = [r for r in results if (r["method"], r["step_size"], r["n_steps_per_point"]) == DEFAULT_ROW
               and r["variant"] == "unconstrained"]
    report = {"benchmark": "table1_langevin", "quick": args.quick, "seeds": seeds, "rows": results,
              "target": 36.9, "published": 37.36, "wall_time_s": time.perf_counter() - t0,
              "summary": {}}
    for r in default:
        report["summary"].update({f"default_nearest_seed{r['seed']}": r["nearest"],
                                  f"default_densified_seed{r['seed']}": r["densified"],
                                  f"default_minus_baseline_seed{r['seed']}": r["nearest_minus_baseline"]})
    out = write_json_atomic(args.out, report)
    print(f"\nwritten {out} ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
