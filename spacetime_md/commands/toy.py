"""``spacetime-md toy``: 1-D mixture demo: PF-ODE trajectories vs spacetime geodesics (exact denoiser).

Compare probability-flow trajectories with spacetime geodesics on the paper's 1-D Gaussian mixture;
writes report.json, config.json and PNG figures.

The 1-D Gaussian-mixture demo (paper Fig. 1 and Fig. 3-left).
"""

from __future__ import annotations

import argparse

from spacetime_md.commands._checks import SEED_MAX, add_numeric, check_options, int_range

RANGES = {
    "n_trajectories": int_range(1, 1000, default=8, help="PF-ODE trajectories compared with geodesics (default 8)"),
    "seed": int_range(0, SEED_MAX, default=0, help="random seed (default 0)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (refused if it holds another command's results)")
    add_numeric(p, RANGES, "n_trajectories", "seed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")


def run(args: argparse.Namespace) -> int:
    from spacetime_md._outputs import finish_output_dir, list_outputs, prepare_output_dir
    from spacetime_md.toy.demo import run_toy_demo

    check_options(args, RANGES)
    outputs = ("config.json", "report.json", "*.png")
    # A rerun replaces the toy run's own files; another command's results are refused.
    prepare_output_dir(args.out, "toy", resume=True, outputs=outputs)
    report = run_toy_demo(args.out, n_trajectories=args.n_trajectories, seed=args.seed, plots=not args.no_plots)
    finish_output_dir(args.out, list_outputs(args.out, outputs))
    print(f"{'traj':>4} {'PF-ODE energy':>14} {'geodesic energy':>16} {'ratio':>7}")
    for r in report["pf_ode_vs_geodesic"]:
        print(f"{r['trajectory']:>4} {r['pf_ode_energy']:>14.4g} {r['geodesic_energy']:>16.4g} {r['ratio']:>7.3f}")
    print(f"mean geodesic/PF-ODE energy ratio: {report['mean_energy_ratio']:.3f}")
    g = report["data_geodesic"]
    print(f"geodesic between data points -2.5 and 2.5 at log_snr 4: energy {g['energy']:.4g}, "
          f"min log_snr {g['log_snr_min']:.2f}, {g['n_steps']} steps")
    print(f"wrote {args.out}/report.json, config.json and figures ({report['wall_time']:.1f} s)")
    return 0
