"""``spacetime-md committor``: committor p_B along a transition path from unbiased OpenMM shots.

Shoot unbiased MD (fresh Maxwell-Boltzmann velocities) from frames of a path written by
`spacetime-md paths` (any molecule: the run's system.json holds its system and collective variables), stop
each shot in the start or target state (regions in CV space), and estimate p_B per frame with a
Wilson interval. Writes config.json, shots.json (checkpoint; a rerun skips finished shots),
committor.json, committor.png, the transition-state candidates, the refined relaxed-energy
maximum and the force field's saddle point next to it as PDB files.

Committor analysis of a saved transition path (p_B along it).
"""

from __future__ import annotations

import argparse

from spacetime_md.commands._checks import SEED_MAX, THREADS_MAX, add_numeric, check_options, float_range, int_range

#: Same as ``spacetime_md.molecular.workflows.committor_config.ENERGIES`` (kept literal: no OpenMM import to
#: build the parser).
ENERGIES = ("quenched", "relaxed", "raw")
DEFAULT_ENERGY = "relaxed"

#: The numeric options (argparse dest -> range, default and help text): added by add_numeric, checked first.
#: The lower bounds are CommittorConfig's (its messages name the config fields); the rest is checked here.
RANGES = {
    "frames": int_range(1, default=10, help="frames evenly spaced along the path, at most its length (default 10)"),
    "shots": int_range(1, default=20, help="MD shots per frame (default 20)"),
    "path": int_range(0, default=0, help="path index within the set, below its number of paths (default 0)"),
    "max_length_ps": float_range(0, low_open=True, default=5.0,
                                 help="shots still in neither state after this long count as undecided, at least one "
                                      "check interval (default 5 ps)"),
    "timestep_fs": float_range(0, 5, low_open=True, default=2.0, help="MD time step in fs (default 2)"),
    "friction": float_range(0, low_open=True, default=1.0, help="Langevin friction, 1/ps (default 1)"),
    "check_interval": int_range(1, default=10, help="MD steps between state checks (default 10)"),
    "refine_window": int_range(1, default=2,
                               help="frames on each side of the highest-energy frame that the refinement covers "
                                    "(default 2)"),
    "refine_substeps": int_range(1, default=10, help="refinement points per frame interval (default 10)"),
    "workers": int_range(1, THREADS_MAX, default=2, help="worker processes at most (default 2)",
                         note=": shots start in this process and move to workers when the rest would take longer than "
                              "20 s here; 1: never"),
    "seed": int_range(0, SEED_MAX, default=0, help="random seed (default 0)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths_dir", metavar="PATHS_DIR", help="output directory of `spacetime-md paths`")
    add_numeric(p, RANGES, "frames", "shots")
    p.add_argument("--out", help="output directory (default PATHS_DIR/committor_<kind>_path<P>)")
    p.add_argument("--kind", choices=("geodesic", "straight"), default="geodesic",
                   help="which curve's paths (default geodesic)")
    add_numeric(p, RANGES, "path", "max_length_ps", "timestep_fs", "friction", "check_interval")
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
    p.add_argument("--no-saddle", action="store_true",
                   help="do not also shoot from the force field's saddle point next to the refined maximum (every "
                   "coordinate relaxed but the unstable one; n/a without the refined maximum or above 300 atoms)")
    add_numeric(p, RANGES, "refine_window", "refine_substeps", "workers", "seed")
    p.add_argument("--platform", help="OpenMM platform (default: fastest measured for the system size)")
    p.add_argument("--overwrite", action="store_true", help="discard a checkpoint made with other settings")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--progress", action="store_true", help="progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="check the inputs (paths, system, states, frames, --out) and print the resolved config")


def run(args: argparse.Namespace) -> int:
    import json

    from spacetime_md.molecular.workflows.committor_config import CommittorConfig

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
        saddle=not args.no_saddle,
        n_workers=args.workers,
        seed=args.seed,
    )
    check_options(args, RANGES)  # what the config leaves open (upper bounds)
    if args.states is not None:
        from pathlib import Path

        if not Path(args.states).is_file():
            raise FileNotFoundError(f"--states: expected an existing file, got {args.states!r}")
    # Checked before the run writes anything into --out (a finished run there stays as it was).
    resolved = check_committor_run(args, config)
    if args.dry_run:
        print(json.dumps({"paths_dir": args.paths_dir, "out": resolved["out"], "platform": args.platform,
                          "states": args.states, "start_state": resolved["start_state"],
                          "target_state": resolved["target_state"], "n_path_frames": resolved["n_path_frames"],
                          "committor_config": config.to_dict()}, indent=2))
        return 0

    from spacetime_md.molecular.workflows.committor_run import run_committor

    result = run_committor(args.paths_dir, args.out, config, platform=args.platform, states=args.states,
                           overwrite=args.overwrite, plot=not args.no_plot, progress=args.progress)
    print(result.format_table())
    print(f"results in {result.extra['out_dir']}")
    return 0


def check_committor_run(args: argparse.Namespace, config) -> dict:
    """What a real run checks before its first shot: the paths directory and its files, the
    system, the states file, the path index, the frame count, the start and target states and
    ``--out``. Returns the resolved names (``out``, ``start_state``, ``target_state``,
    ``n_path_frames``)."""
    from pathlib import Path

    from spacetime_md._outputs import prepare_output_dir
    from spacetime_md.molecular.workflows.committor import _path_frames
    from spacetime_md.molecular.workflows.committor_run import load_committor_inputs
    from spacetime_md.molecular.workflows.shots import _resolve_states, select_frames

    paths, system, _, endpoints = load_committor_inputs(args.paths_dir, config.kind, platform=args.platform,
                                                        states=args.states)
    frames, _ = _path_frames(paths, config.path, system)
    select_frames(len(frames), config.n_frames)
    start, target, _ = _resolve_states(system, frames, config, endpoints)
    out = Path(args.out) if args.out is not None else Path(args.paths_dir) / f"committor_{config.kind}_path{config.path:03d}"
    prepare_output_dir(out, "committor", resume=True, overwrite=args.overwrite, dry_run=True)
    return {"out": str(out), "start_state": start.name, "target_state": target.name, "n_path_frames": len(frames)}
