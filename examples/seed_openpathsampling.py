"""Seed OpenPathSampling transition path sampling with a spacetime transition path.

Takes one path of a `spacetime-md paths` run, trims it to the C7eq -> C7ax segment, hands it
to OpenPathSampling as the initial TPS path (OPS OpenMM engine, states as OPS volumes on
(phi, psi)), runs a few hundred shooting trials and prints the acceptance rate and the
number of decorrelated paths.

    pip install 'spacetime-md[ops]'
    spacetime-md paths --out runs/c7eq_c7ax            # or any existing run directory
    python examples/seed_openpathsampling.py runs/c7eq_c7ax [--trials 300] [--shooting two-way]

Without PATHS_DIR the example uses a classical reference path instead (restrained
minimisations along a line in (phi, psi), `compute_dihedral_drive_path`), so it runs
without a trained model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths_dir", nargs="?", help="output directory of `spacetime-md paths`")
    parser.add_argument("--kind", choices=("geodesic", "straight"), default="geodesic")
    parser.add_argument("--path", type=int, default=0, help="path index within the set")
    parser.add_argument("--trials", type=int, default=300, help="shooting trials (default 300)")
    parser.add_argument("--shooting", choices=("one-way", "two-way"), default="two-way",
                        help="two-way (default; fresh velocities at the shooting point) or one-way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-final", help="write the last sampled path here (.dcd/.pdb/.h5)")
    args = parser.parse_args(argv)

    from spacetime_md.molecular import load_system, sample_tps, to_openpathsampling

    if args.paths_dir:
        import json
        from pathlib import Path

        from spacetime_md.molecular.paths.transition import TransitionPaths

        config = json.loads((Path(args.paths_dir) / "config.json").read_text())
        system = load_system(config["system"], solvent=config.get("solvent", "vacuum"))
        path = TransitionPaths.load(args.paths_dir, kind=args.kind)
        label = f"{args.kind} path {args.path} of {args.paths_dir}"
    else:
        from spacetime_md.molecular import compute_dihedral_drive_path

        system = load_system("alanine-dipeptide")
        path = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=32)
        label = "dihedral-drive reference path (no PATHS_DIR given)"

    t0 = time.perf_counter()
    seed = to_openpathsampling(path, system, path_index=args.path if args.paths_dir else 0, seed=args.seed)
    i, j = seed.frame_range
    print(f"seed: {label}")
    print(f"  trimmed to frames {i}..{j} of {seed.extra['n_source_frames']} "
          f"({seed.extra['start_state']} -> {seed.extra['target_state']}), {len(seed.trajectory)} frames; "
          f"valid TPS path for OPS: {bool(seed.ensemble(seed.trajectory))}")
    result = sample_tps(seed, args.trials, shooting=args.shooting, random_seed=args.seed)
    lengths = np.asarray(result.path_lengths)
    dt_fs = seed.engine.n_steps_per_frame * seed.engine.integrator.getStepSize()._value * 1000.0
    print(f"{args.shooting} shooting, {result.n_trials} trials in {result.wall_time_s:.1f} s "
          f"(seed built in {time.perf_counter() - t0 - result.wall_time_s:.1f} s)")
    print(f"  acceptance rate      {result.acceptance:.2f} ({result.n_accepted} accepted)")
    print(f"  decorrelated paths   {result.n_decorrelated}")
    print(f"  path length (frames) mean {lengths.mean():.1f}, last {lengths[-1]} "
          f"({dt_fs:g} fs per frame)")
    if args.save_final:
        result.final_trajectory.to_mdtraj().save(args.save_final)
        print(f"  last path written to {args.save_final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
