"""``spacetime-md committor``: committor analysis of a saved transition path (p_B along it)."""

from __future__ import annotations

import argparse

#: Same as ``spacetime_md.molecular.committor.ENERGIES`` (kept literal: no OpenMM import to build the parser).
ENERGIES = ("quenched", "relaxed", "raw")
DEFAULT_ENERGY = "relaxed"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "committor",
        help="committor p_B along a transition path from unbiased OpenMM shots",
        description="Shoot unbiased MD (fresh Maxwell-Boltzmann velocities) from frames of a path written by "
        "`spacetime-md paths` (any molecule: the run's system.json holds its system and collective variables), "
        "stop each shot in the start or target state (regions in CV space), and estimate p_B per frame with a "
        "Wilson interval. Writes config.json, shots.json (checkpoint; a rerun skips finished shots), "
        "committor.json, committor.png, the transition-state candidates and the refined relaxed-energy maximum as "
        "PDB files.",
    )
    p.add_argument("paths_dir", metavar="PATHS_DIR", help="output directory of `spacetime-md paths`")
    p.add_argument("--frames", type=int, default=10, help="frames evenly spaced along the path (default 10)")
    p.add_argument("--shots", type=int, default=20, help="MD shots per frame (default 20)")
    p.add_argument("--out", help="output directory (default PATHS_DIR/committor_<kind>_path<P>)")
    p.add_argument("--kind", choices=("geodesic", "straight"), default="geodesic",
                   help="which curve's paths (default geodesic)")
    p.add_argument("--path", type=int, default=0, help="path index within the set (default 0)")
    p.add_argument("--max-length-ps", type=float, default=5.0,
                   help="shots still in neither state after this long count as undecided (default 5 ps)")
    p.add_argument("--timestep-fs", type=float, default=2.0)
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps (default 1)")
    p.add_argument("--check-interval", type=int, default=10, help="MD steps between state checks (default 10)")
    p.add_argument("--states", metavar="FILE",
                   help="state file (JSON/YAML; structure paths relative to it) replacing the run's states")
    p.add_argument("--start-state", help="start state name (default: the state of the path's first frame, else the "
                   "run's endpoint state 'start' built around its start structure)")
    p.add_argument("--target-state", help="target state name (default: the state of the path's last frame, else "
                   "the run's endpoint state 'target')")
    p.add_argument("--energy", choices=ENERGIES, default=DEFAULT_ENERGY,
                   help="energy that picks the extra highest-energy frame: quenched (heavy atoms held, the rest "
                   "minimised), relaxed (every torsion CV held; n/a without torsion CVs, quenched is used then) or "
                   "raw (default %(default)s)")
    p.add_argument("--no-max-energy", action="store_true", help="do not add the highest-energy frame")
    p.add_argument("--no-refine", action="store_true",
                   help="do not also shoot from the refined relaxed-energy maximum (the path's torsion-CV route "
                   "around the highest-energy frame, subdivided and minimised with the torsions held; n/a without "
                   "torsion CVs)")
    p.add_argument("--refine-window", type=int, default=2,
                   help="frames on each side of the highest-energy frame that the refinement covers (default 2)")
    p.add_argument("--refine-substeps", type=int, default=10,
                   help="refinement points per frame interval (default 10)")
    p.add_argument("--workers", type=int, default=2, help="worker processes at most (default 2): shots start in this process and move to "
                   "workers when the rest would take longer than 20 s here; 1: never")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--platform", help="OpenMM platform (default: fastest measured for the system size)")
    p.add_argument("--overwrite", action="store_true", help="discard a checkpoint made with other settings")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--progress", action="store_true", help="progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from spacetime_md.molecular.committor import CommittorConfig

    config = CommittorConfig(
        n_frames=args.frames,
        n_shots=args.shots,
        max_length_ps=args.max_length_ps,
        timestep_fs=args.timestep_fs,
        friction_per_ps=args.friction,
        check_interval_steps=args.check_interval,
        path=args.path,
        kind=args.kind,
        start_state=args.start_state,
        target_state=args.target_state,
        include_max_energy=not args.no_max_energy,
        energy=args.energy,
        refine=not args.no_refine,
        refine_window=args.refine_window,
        refine_substeps=args.refine_substeps,
        n_workers=args.workers,
        seed=args.seed,
    )
    if args.states is not None:
        from pathlib import Path

        if not Path(args.states).is_file():
            raise FileNotFoundError(f"--states: expected an existing file, got {args.states!r}")
    if args.dry_run:
        print(json.dumps({"paths_dir": args.paths_dir, "out": args.out, "platform": args.platform,
                          "states": args.states, "committor_config": config.to_dict()}, indent=2))
        return 0

    from spacetime_md.molecular.committor import run_committor

    result = run_committor(args.paths_dir, args.out, config, platform=args.platform, states=args.states,
                           overwrite=args.overwrite, plot=not args.no_plot, progress=args.progress)
    print(result.format_table())
    print(f"results in {result.extra['out_dir']}")
    return 0
