"""``spacetime-md paths``: transition paths between two states of a molecule (the main job)."""

from __future__ import annotations

import argparse

from spacetime_md.commands._system import add_system_arguments


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "paths",
        help="transition paths between two states: geodesic -> OpenMM paths -> validation -> export",
        description="Compute the spacetime geodesic between two structures with the shipped (or given) "
        "diffusion model, turn it into transition paths by annealed Langevin dynamics in OpenMM, validate "
        "them against the force field and export trajectories, report.json, config.json and plots.",
    )
    add_system_arguments(p, default_system=None)
    p.add_argument("--start", help="start state name (default C7eq for alanine-dipeptide; other systems: "
                                   "required unless --start-pdb)")
    p.add_argument("--end", help="end state name (default C7ax for alanine-dipeptide; other systems: "
                                 "required unless --end-pdb)")
    p.add_argument("--start-pdb", help="start structure (PDB, same atoms and order as the system)")
    p.add_argument("--end-pdb", help="end structure (PDB, same atoms and order as the system)")
    p.add_argument("--n-paths", type=int, default=8, help="paths per curve, >= 1 (default 8)")
    p.add_argument("--out", required=True, help="output directory (ASCII path; refused if it holds other results)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another run in --out (its outputs are removed first)")
    p.add_argument("--allow-mirror", action="store_true",
                   help="accept endpoint structures whose stereocentres are inverted (mirror images); refused by default")
    p.add_argument("--constraint", choices=("none", "low-variance", "avoid"), default="none")
    p.add_argument("--min-log-snr", type=float, default=1.0,
                   help="LowVariance floor, model units, in [-4, endpoint log_snr) (default 1)")
    p.add_argument("--avoid-state", help="state to avoid (with --constraint avoid), e.g. alpha_R")
    p.add_argument("--avoid-log-snr", type=float, default=3.0,
                   help="log_snr of the avoided structure, in [-4, 12] (default 3)")
    p.add_argument("--min-kl", type=float, default=20.0, help="AvoidRegion KL threshold, > 0 (default 20)")
    p.add_argument("--checkpoint", help="model checkpoint file or shipped model name (default: the shipped model for "
                   "--system); its recorded system is the default --system")
    p.add_argument("--hit-length-nm", type=float, default=None,
                   help="target hit for length CVs (distances, RMSDs): within this many nm of the end structure's "
                        "value (default 0.3 x the heavy-atom RMSD between start and end)")
    p.add_argument("--n-points", type=int, default=64, help="curve points sampled by annealed Langevin, >= 2 (default 64)")
    p.add_argument("--n-steps", type=int, default=300, help="OpenMM steps per curve point, >= 1 (default 300)")
    p.add_argument("--record-every", type=int, default=None,
                   help="keep a frame every this many OpenMM steps, a divisor of --n-steps (default: gcd(n_steps, 20), "
                        "i.e. every 20 fs for the defaults; 1 keeps every step)")
    p.add_argument("--path-time-ps", type=float, default=None,
                   help="simulated time per path in ps, in [0.001, 1000], a whole number of timesteps: every path runs "
                        "exactly this long, its steps shared by the curve points where the annealed target moves "
                        "(restraint KL and restrained-minimum jumps); --n-steps is then unused and --record-every "
                        "defaults to 1 (e.g. 1 for the field's 1 ps protocol; default: --n-steps steps per point)")
    p.add_argument("--friction-per-ps", type=float, default=None,
                   help="Langevin friction in 1/ps, > 0 (default 10, or 1 with --path-time-ps: measured best at 1 ps)")
    p.add_argument("--endpoint-log-snr", type=float, default=4.0,
                   help="log_snr of the clean endpoints, model units, in [1, 12] (default 4; the paper uses 4-7)")
    p.add_argument("--relaxed", action="store_true", help="also compute relaxed (quenched) barriers")
    p.add_argument("--no-baseline", action="store_true", help="skip the straight-line baseline")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device of the geodesic (cpu or cuda)")
    p.add_argument("--platform", help="OpenMM platform (default: fastest measured for the system size)")
    p.add_argument("--num-threads", type=_threads, default=1,
                   help="torch threads for the geodesic, 1-256 or 'auto' (time one solver call with 1 and 2 threads "
                        "and keep the faster; the count used is in report.json) (default 1, like the Python API: "
                        "results are reproducible for the same seed and thread count)")
    p.add_argument("--geodesic", metavar="FILE",
                   help="reuse the geodesic.npz of an earlier paths run instead of solving again (same model, "
                        "endpoints and geodesic settings, else a one-line error); e.g. to sweep --n-paths or "
                        "sampler settings")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def _threads(value: str) -> int | str:
    """``--num-threads``: an integer or ``auto`` (range checked in :func:`run`, one-line error)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, 256] or 'auto', got {value!r}") from None


def _endpoint(args: argparse.Namespace, name: str, system) -> object:
    """``--NAME-pdb`` (a file whatever its suffix), else ``--NAME``, else the alanine default."""
    from pathlib import Path

    from spacetime_md.molecular.run_paths import ALANINE_PRESET

    pdb = getattr(args, f"{name}_pdb")
    state = getattr(args, name)
    if pdb and state:
        raise ValueError(f"--{name} and --{name}-pdb: expected one of them, got both ({state!r} and {pdb!r})")
    if pdb:
        return Path(pdb)
    if state:
        return state
    if system.name == ALANINE_PRESET:
        return {"start": "C7eq", "end": "C7ax"}[name]
    names = [s.name for s in system.states]
    raise ValueError(
        f"--{name}: expected a state name of {system.name} or --{name}-pdb FILE, got neither "
        f"(states: {', '.join(names) if names else 'none defined; give --start-pdb and --end-pdb'})"
    )


def run(args: argparse.Namespace) -> int:
    import json

    import dataclasses

    from spacetime_md.commands._system import system_from_args
    from spacetime_md.molecular.paths import DEFAULT_GEODESIC, PathConfig

    if args.num_threads != "auto" and not 1 <= args.num_threads <= 256:
        raise ValueError(f"--num-threads: expected an integer in [1, 256], got {args.num_threads}")
    if args.avoid_state and args.constraint != "avoid":
        raise ValueError(f"--avoid-state: only used with --constraint avoid, got --constraint {args.constraint}")
    config = PathConfig(
        n_paths=args.n_paths,
        endpoint_log_snr=args.endpoint_log_snr,
        n_points=args.n_points,
        n_steps=args.n_steps,
        record_every=args.record_every,
        path_time_ps=args.path_time_ps,
        friction_per_ps=args.friction_per_ps,
        constraint=args.constraint,
        min_log_snr=args.min_log_snr,
        avoid_state=args.avoid_state,
        avoid_log_snr=args.avoid_log_snr,
        min_kl=args.min_kl,
        hit_length_nm=args.hit_length_nm,
        baseline=not args.no_baseline,
        relaxed=args.relaxed,
        seed=args.seed,
        device=args.device,
        allow_mirror=args.allow_mirror,
        geodesic=dataclasses.replace(DEFAULT_GEODESIC, num_threads=args.num_threads),
    )

    from spacetime_md.molecular.pretrained import load_checkpoint

    model = load_checkpoint(args.checkpoint) if args.checkpoint else None
    if args.system is None and model is None:
        args.system = "alanine-dipeptide"
    system = system_from_args(args, model=model)
    start = _endpoint(args, "start", system)
    end = _endpoint(args, "end", system)
    resolved = {
        "system": {"name": system.name, "source_pdb": system.source_pdb, "n_atoms": system.n_atoms,
                   "forcefield_files": list(system.forcefield_files), "solvent": system.solvent,
                   "cvs": list(system.cvs.names) or "rmsd to the endpoints (no CV defined)",
                   "cvs_file": args.cvs, "states": [s.name for s in system.states], "states_file": args.states},
        "start": str(start), "end": str(end), "checkpoint": args.checkpoint, "platform": args.platform,
        "path_config": config.to_dict(),
    }
    if args.dry_run:
        # Everything a real run checks, except the computation.
        from spacetime_md._outputs import prepare_output_dir
        from spacetime_md.molecular.paths import check_model_matches_system, resolve_structure
        from spacetime_md.molecular.pretrained import PRETRAINED
        from spacetime_md.molecular.run_paths import check_memory

        if model is None and system.name in PRETRAINED:
            from spacetime_md.molecular.pretrained import load_pretrained

            model = load_pretrained(system.name)
        if model is not None:
            check_model_matches_system(model, system)
        for value, what in ((start, "start"), (end, "end")):
            resolve_structure(system, value, what, allow_mirror=config.allow_mirror)
        if config.constraint == "avoid":
            resolve_structure(system, config.avoid_state, "avoid_state", allow_mirror=config.allow_mirror)
        check_memory(config, system.n_atoms)
        if args.geodesic:
            from spacetime_md.molecular.paths import prepare_geodesic_problem
            from spacetime_md.molecular.run_paths import load_geodesic, shipped_checkpoint

            if model is None:
                from spacetime_md.molecular.pretrained import load_checkpoint as _load

                model = _load(shipped_checkpoint(system))
            problem = prepare_geodesic_problem(system, model, start, end, config)
            load_geodesic(args.geodesic, model, config, problem=problem)
            resolved["geodesic_file"] = args.geodesic
        prepare_output_dir(args.out, "paths", overwrite=args.overwrite, ascii_only=True, dry_run=True)
        print(json.dumps(resolved, indent=2))
        return 0

    from spacetime_md.molecular.run_paths import run_paths

    report = run_paths(
        args.out, system=system, start=start, end=end, config=config, checkpoint=args.checkpoint,
        platform=args.platform, plots=not args.no_plots, progress=args.progress, overwrite=args.overwrite,
        geodesic=args.geodesic,
    )
    print(report["table"])
    return 0
