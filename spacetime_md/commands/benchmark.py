"""``spacetime-md benchmark``: reproducible benchmarks (table1: the paper's Table 1 on the phi/psi grid).

Run a benchmark and print it next to the published numbers.

Reproducible benchmark runs.

``spacetime-md benchmark table1 --n-paths 1000 --out DIR`` runs the paper's Table 1 on the
(phi, psi) grid of alanine dipeptide (see :mod:`spacetime_md.toy.table1`), writes
``report.json``, ``config.json``, the paths (``paths_<variant>.npz``) and figures to ``DIR``
and prints our rows next to the published ones.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    t1 = sub.add_parser(
        "table1",
        help="Table 1: transition paths on the alanine dipeptide (phi, psi) free-energy grid",
        description="Train a periodic diffusion model on Boltzmann samples of the (phi, psi) grid, "
        "solve the spacetime geodesics (unconstrained, low-variance, region-avoiding) and sample "
        "transition paths by annealed Langevin; report MaxEnergy next to the paper's Table 1.",
    )
    t1.add_argument("--out", required=True, help="output directory (refused if it holds another command's results)")
    t1.add_argument("--n-paths", type=int, default=None, help="paths per variant (default 1000)")
    t1.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    t1.add_argument("--quick", action="store_true", help="tiny smoke-test settings (seconds)")
    t1.add_argument("--preset", default=None, choices=("default", "algorithm1", "paper", "quick"),
                    help="named settings; 'algorithm1': the paper's unadjusted Langevin steps on our "
                    "budget; 'paper': unadjusted steps on the paper's 128 x 128 budget")
    t1.add_argument("--model", default=None, metavar="PATH",
                    help="model checkpoint: loaded if it exists, else trained and saved there")
    t1.add_argument("--variants", default=None,
                    help="comma-separated subset of unconstrained,low_variance,avoid_region")
    t1.add_argument("--frames", default=None, choices=("steps", "points"),
                    help="path frames: every Langevin step (default) or one per curve point")
    t1.add_argument("--curve-points", type=int, default=None, help="curve points T")
    t1.add_argument("--steps-per-point", type=int, default=None, help="Langevin steps per point K")
    t1.add_argument("--step-size", type=float, default=None, help="Langevin step size eps")
    t1.add_argument("--langevin", default=None, choices=("ula", "mala"),
                    help="Langevin steps: unadjusted (the paper's Algorithm 1) or Metropolis-adjusted "
                    "(default)")
    t1.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: the work is many small tensor ops, and on a "
                    "shared 2-core machine a second thread stalls whenever the other core is busy; "
                    "2 speeds training up about 1.4x on an idle machine)")
    t1.add_argument("--no-plots", action="store_true", help="skip the figures")
    t1.add_argument("--no-save-paths", action="store_true", help="do not write paths_*.npz")
    t1.add_argument("--progress", action="store_true", help="show progress bars")
    t1.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t1.set_defaults(_benchmark=_run_table1)
    p.set_defaults(_parser=p)


def run(args: argparse.Namespace) -> int:
    handler = getattr(args, "_benchmark", None)
    if handler is None:
        args._parser.print_help()
        return 2
    return handler(args)


def resolve_table1_config(args: argparse.Namespace):
    """The :class:`~spacetime_md.toy.table1.Table1Config` selected by the CLI arguments."""
    import dataclasses

    from spacetime_md.toy.table1 import TABLE1_PRESETS

    preset = args.preset or ("quick" if args.quick else "default")
    if args.quick and args.preset not in (None, "quick"):
        raise ValueError(f"--quick: expected no other --preset, got --preset {args.preset}")
    config = TABLE1_PRESETS[preset]()
    changes = {}
    for field, value in (("n_paths", args.n_paths), ("seed", args.seed), ("model_path", args.model),
                         ("frames", args.frames), ("n_curve_points", args.curve_points),
                         ("n_steps_per_point", args.steps_per_point), ("step_size", args.step_size),
                         ("langevin_method", args.langevin)):
        if value is not None:
            changes[field] = value
    if args.variants is not None:
        changes["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.no_plots:
        changes["plots"] = False
    if args.no_save_paths:
        changes["save_paths"] = False
    return dataclasses.replace(config, **changes) if changes else config


#: Files ``benchmark table1`` writes into ``--out``.
TABLE1_OUTPUTS = ("report.json", "config.json", "paths_*.npz", "*.png", "model.pt")


def _run_table1(args: argparse.Namespace) -> int:
    from spacetime_md._outputs import finish_output_dir, list_outputs, prepare_output_dir

    config = resolve_table1_config(args)
    # A rerun replaces the benchmark's own files; another command's results are refused.
    prepare_output_dir(args.out, "benchmark table1", resume=True, outputs=TABLE1_OUTPUTS, dry_run=args.dry_run)
    if args.dry_run:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    import torch

    from spacetime_md.toy.table1 import format_table1, run_table1

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected an integer >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    report = run_table1(config, args.out, progress=args.progress)
    finish_output_dir(args.out, list_outputs(args.out, TABLE1_OUTPUTS))
    print(format_table1(report))
    best = min(
        report["variants"].items(), key=lambda kv: kv[1]["metrics"]["max_energy_nearest"]["mean"]
    )
    res = best[1]
    target = report["targets"]
    nearest = res["metrics"]["max_energy_nearest"]["mean"]
    densified = res["metrics"]["max_energy_bilinear_densified"]["mean"]
    evals = res["langevin"]["evaluations_per_path"]
    t_paths = res["geodesic"]["wall_time"] + res["langevin"]["wall_time"] * 1000 / max(res["langevin"]["n_paths"], 1)
    print(
        f"targets (best variant: {best[0]}): MaxEnergy <= {target['max_energy']}: "
        f"{'met' if nearest <= target['max_energy'] else 'missed'} ({nearest:.2f}; densified bilinear "
        f"{densified:.2f}); "
        f"evaluations/path <= {target['evaluations_per_path']}: "
        f"{'met' if evals <= target['evaluations_per_path'] else 'missed'} ({evals}); "
        f"geodesic + 1000 paths <= {target['wall_time_1000_paths_s']:.0f} s: "
        f"{'met' if t_paths <= target['wall_time_1000_paths_s'] else 'missed'} ({t_paths:.1f} s)"
    )
    print(f"wrote {args.out}/report.json, config.json, paths_*.npz and figures ({report['wall_time']:.1f} s)")
    return 0
