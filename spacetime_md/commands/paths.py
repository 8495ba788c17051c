"""``spacetime-md paths``: transition paths between two states: geodesic -> OpenMM paths -> validation -> export.

Compute the spacetime geodesic between two structures with the shipped (or given) diffusion model,
turn it into transition paths by annealed Langevin dynamics in OpenMM, validate them against the
force field and export trajectories, report.json, config.json and plots.

Transition paths between two states of a molecule (the main job).
"""

from __future__ import annotations

import argparse

from spacetime_md.commands._path_options import add_path_options, path_config_from_args
from spacetime_md.commands._system import add_system_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_system_arguments(p, default_system=None)
    p.add_argument("--start", help="start state name (default C7eq for alanine-dipeptide, all_C7eq for "
                                   "alanine-tetrapeptide; other systems: required unless --start-pdb)")
    p.add_argument("--end", help="end state name (default C7ax for alanine-dipeptide, mid_C7ax for "
                                 "alanine-tetrapeptide; other systems: required unless --end-pdb)")
    p.add_argument("--start-pdb", help="start structure (PDB, same atoms and order as the system)")
    p.add_argument("--end-pdb", help="end structure (PDB, same atoms and order as the system)")
    add_path_options(p)
    p.add_argument("--out", required=True, help="output directory (ASCII path; refused if it holds other results)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another run in --out (its outputs are removed first)")
    p.add_argument("--allow-mirror", action="store_true",
                   help="accept endpoint structures whose stereocentres are inverted (mirror images); refused by default")
    p.add_argument("--checkpoint", help="model checkpoint file or shipped model name (default: the shipped model for "
                   "--system); its recorded system is the default --system")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--platform", help="OpenMM platform (default: fastest measured for the system size)")
    p.add_argument("--num-threads", type=_threads, default=1,
                   help="torch threads for the geodesic, 1-256 or 'auto' (time one solver call with 1 and 2 threads "
                        "and keep the faster; the count used is in report.json) (default 1, like the Python API: "
                        "results are reproducible for the same seed and thread count)")
    p.add_argument("--workers", default="auto",
                   help="processes that run the independent OpenMM paths: 'auto' (default: the usable cores) or an "
                        "integer in [1, 256]; capped by --n-paths. The straight-line baseline's paths run while the "
                        "geodesic is solved (in a worker, or with 1 in a background thread). Paths are bitwise the "
                        "same for any value")
    p.add_argument("--geodesic-init-dips", type=float, nargs="+", metavar="D",
                   help="solve the geodesic from each of these initial curves, the straight line with its middle "
                        "lowered by D in log_snr (0 = the straight line), and keep the lowest final objective, "
                        "(default: 0 3, two solves; 0 alone: one solve from the straight line; GeodesicConfig.init_dips)")
    p.add_argument("--geodesic-start-threads", type=_threads, default="auto",
                   help="threads that solve the initial curves concurrently: 'auto' (default: one per curve, at most "
                        "the usable cores divided by --num-threads) or an integer in [1, 256] (1: one after the "
                        "other); the geodesic is the same for any value (GeodesicConfig.start_threads)")
    p.add_argument("--geodesic", metavar="FILE",
                   help="reuse the geodesic.npz of an earlier paths run instead of solving again (same model, "
                        "endpoints and geodesic settings, else a one-line error); e.g. to sweep --n-paths or "
                        "sampler settings")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _threads(value: str) -> int | str:
    """``--num-threads``: an integer or ``auto`` (range checked in :func:`run`, one-line error)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, 256] or 'auto', got {value!r}") from None


def _endpoint(args: argparse.Namespace, name: str, system) -> object:
    """``--NAME-pdb`` (a file whatever its suffix), else ``--NAME``, else the preset's default state."""
    from pathlib import Path

    from spacetime_md.molecular.system.presets import DEFAULT_ENDPOINTS

    pdb = getattr(args, f"{name}_pdb")
    state = getattr(args, name)
    if pdb and state:
        raise ValueError(f"--{name} and --{name}-pdb: expected one of them, got both ({state!r} and {pdb!r})")
    if pdb:
        return Path(pdb)
    if state:
        return state
    if system.name in DEFAULT_ENDPOINTS:
        return dict(zip(("start", "end"), DEFAULT_ENDPOINTS[system.name]))[name]
    names = [s.name for s in system.states]
    raise ValueError(
        f"--{name}: expected a state name of {system.name} or --{name}-pdb FILE, got neither "
        f"(states: {', '.join(names) if names else 'none defined; give --start-pdb and --end-pdb'})"
    )


def run(args: argparse.Namespace) -> int:
    import json

    import dataclasses

    from spacetime_md.commands._system import system_from_args
    from spacetime_md.commands._checks import parse_workers
    from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC

    if args.num_threads != "auto" and not 1 <= args.num_threads <= 256:
        raise ValueError(f"--num-threads: expected an integer in [1, 256], got {args.num_threads}")
    if args.geodesic_start_threads != "auto" and not 1 <= args.geodesic_start_threads <= 256:
        raise ValueError(f"--geodesic-start-threads: expected an integer in [1, 256] or 'auto', "
                         f"got {args.geodesic_start_threads}")
    geodesic = dataclasses.replace(DEFAULT_GEODESIC, num_threads=args.num_threads,
                                   start_threads=args.geodesic_start_threads)
    if args.geodesic_init_dips is not None:
        try:  # GeodesicConfig checks the values; the message names the flag
            geodesic = dataclasses.replace(geodesic, init_dips=tuple(args.geodesic_init_dips))
        except ValueError:
            raise ValueError(f"--geodesic-init-dips: expected distinct finite numbers >= 0 (log_snr), "
                             f"got {' '.join(f'{d:g}' for d in args.geodesic_init_dips)}") from None
    config = path_config_from_args(args, seed=args.seed, allow_mirror=args.allow_mirror,
                                   workers=parse_workers(args.workers), geodesic=geodesic)

    from spacetime_md.molecular.model.pretrained import load_checkpoint

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
        from spacetime_md.molecular.paths.structures import check_model_matches_system, resolve_structure
        from spacetime_md.molecular.model.pretrained import PRETRAINED
        from spacetime_md.molecular.paths.run import check_memory

        if model is None and system.name in PRETRAINED:
            from spacetime_md.molecular.model.pretrained import load_pretrained

            model = load_pretrained(system.name)
        if model is not None:
            check_model_matches_system(model, system)
        for value, what in ((start, "start"), (end, "end")):
            resolve_structure(system, value, what, allow_mirror=config.allow_mirror)
        if config.constraint == "avoid":
            resolve_structure(system, config.avoid_state, "avoid_state", allow_mirror=config.allow_mirror)
        check_memory(config, system.n_atoms)
        if args.geodesic:
            from spacetime_md.molecular.paths.transition import prepare_geodesic_problem
            from spacetime_md.molecular.paths.run import load_geodesic, shipped_checkpoint

            if model is None:
                from spacetime_md.molecular.model.pretrained import load_checkpoint as _load

                model = _load(shipped_checkpoint(system))
            problem = prepare_geodesic_problem(system, model, start, end, config)
            load_geodesic(args.geodesic, model, config, problem=problem)
            resolved["geodesic_file"] = args.geodesic
        prepare_output_dir(args.out, "paths", overwrite=args.overwrite, ascii_only=True, dry_run=True)
        print(json.dumps(resolved, indent=2))
        return 0

    from spacetime_md.molecular.paths.run import run_paths

    report = run_paths(
        args.out, system=system, start=start, end=end, config=config, checkpoint=args.checkpoint,
        platform=args.platform, plots=not args.no_plots, progress=args.progress, overwrite=args.overwrite,
        geodesic=args.geodesic,
    )
    print(report["table"])
    return 0
