"""``spacetime-md batch``: transition paths for many endpoint pairs (CSV/YAML) on a Dask cluster.

Run the 'paths' job for every endpoint pair of a CSV or YAML file (columns start,end and optional
id,seed,n_paths,constraint,avoid_state,min_log_snr,avoid_log_snr) on Dask distributed: a local
cluster of --workers processes, or an existing one with --scheduler. Each pair is written
atomically to OUT/<id>/; OUT/manifest.json records the status; a rerun skips finished pairs.

    spacetime-md batch pairs.csv --out runs/batch --workers 2
    spacetime-md batch pairs.yaml --out /shared/batch --scheduler tcp://head:8786

Each row of the pairs file is one ``spacetime-md paths`` job written to ``OUT/<id>/``; see
:mod:`spacetime_md.molecular.workflows.batch` for the file format, seeds and the manifest.
"""

from __future__ import annotations

import argparse
import json
import sys

from spacetime_md.commands._path_options import add_path_options, path_config_from_args
from spacetime_md.commands._system import add_system_arguments
from spacetime_md.commands._checks import SEED_MAX, THREADS_MAX, add_numeric, check_options, int_range

#: The batch's own numeric options (argparse dest -> range, default and help text): added by add_numeric,
#: checked first.
RANGES = {
    "workers": int_range(0, THREADS_MAX,
                         help="worker processes of the local cluster (default: number of CPUs; 0: serial, no Dask)"),
    "retries": int_range(0, default=1, help="extra attempts of a task that raised (default 1)"),
    "threads_per_task": int_range(1, THREADS_MAX, default=1, help="torch threads inside each task (default 1)"),
    "group_size": int_range(1, default=1,
                            help="pairs whose geodesics one task solves together with batched denoiser calls (fills a "
                                 "GPU with --device cuda; default 1: each pair alone)"),
    "seed": int_range(0, SEED_MAX, default=0,
                      help="batch seed; rows without a seed get one derived from it (default 0)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", help="pairs file (.csv with a header row, .yaml or .yml)")
    p.add_argument("--out", required=True, help="output directory (one folder per pair)")
    add_numeric(p, RANGES, "workers")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    add_numeric(p, RANGES, "retries", "threads_per_task", "group_size")
    add_system_arguments(p, default_system=None)
    p.add_argument("--checkpoint", help="model checkpoint file or shipped model name (default: the shipped model for "
                   "--system); its recorded system is the default --system (else alanine-dipeptide)")
    p.add_argument("--platform", help="OpenMM platform (default: fastest measured for the system size)")
    p.add_argument("--path-config", help="JSON file with PathConfig fields (or a paths/batch config.json) "
                   "as the base settings, geodesic settings included; options below override it")
    add_path_options(p)  # the same PathConfig flags as `spacetime-md paths`; unset ones keep --path-config's
    p.add_argument("--no-plots", action="store_true", help="no PNG plots per pair")
    add_numeric(p, RANGES, "seed")
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the local Dask dashboard")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="check the pairs, endpoints, system, checkpoint, memory and --out; print the tasks and exit")


def _base_config(args: argparse.Namespace):
    """``--path-config`` (else ``PathConfig()``) with the PathConfig flags given on the command line."""
    from spacetime_md.molecular.paths.config import PathConfig

    config = None
    if args.path_config:
        from spacetime_md._config import read_config_fields

        data = read_config_fields(args.path_config, PathConfig, "--path-config", "path_config")
        config = PathConfig.from_dict(data)
    return path_config_from_args(args, config)


def format_batch_table(result) -> str:
    """One line per task: status, hit rates and mean barriers, time."""
    lines = [f"{'id':<28}{'status':>8}{'seed':>12}{'geo hit':>9}{'geo barrier':>13}{'line hit':>10}"
             f"{'line barrier':>14}{'time (s)':>10}"]
    for task_id, rec in result.records.items():
        s = rec.get("summary") or {}

        def num(key, fmt):
            return format(s[key], fmt) if key in s else "-"

        lines.append(f"{task_id:<28}{rec.get('status', '?'):>8}{rec.get('seed', ''):>12}"
                     f"{num('geodesic_hit_rate', '.0%'):>9}{num('geodesic_barrier_kj_mol', '.1f'):>13}"
                     f"{num('straight_hit_rate', '.0%'):>10}{num('straight_barrier_kj_mol', '.1f'):>14}"
                     f"{num('total_s', '.1f'):>10}")
    lines.append(f"{len(result.computed)} computed, {len(result.skipped)} already finished, {len(result.failed)} failed "
                 f"in {result.wall_s:.1f} s; manifest: {result.out / 'manifest.json'}")
    return "\n".join(lines)


def _quiet_dask(verbose: int) -> None:
    """Dask configures its loggers at INFO when imported; keep them at WARNING unless ``-v``."""
    import logging

    try:
        import distributed  # noqa: F401  (applies Dask's logging config first)
    except ImportError:
        return
    if not verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)


def _system_options(args: argparse.Namespace) -> dict:
    from spacetime_md.commands._system import forcefield_from_arg

    for flag, value in (("--cvs", args.cvs), ("--states", args.states)):
        if value is not None:
            from pathlib import Path

            if not Path(value).is_file():
                raise FileNotFoundError(f"{flag}: expected an existing file, got {value!r}")
    return {"system": args.system, "solvent": args.solvent, "cvs": args.cvs, "states": args.states,
            "forcefield": forcefield_from_arg(args.forcefield) if args.forcefield is not None else None}


def check_batch_run(args: argparse.Namespace, config, tasks, options: dict):
    """What a real run checks before it starts Dask: the system and checkpoint, every pair's
    endpoints and settings, the memory of each pair's frames, ``--out`` (an ASCII path: the
    pairs' trajectories are DCD files) and the finished pairs it holds (their settings must be
    this run's). Returns ``(system, checkpoint file, finished task ids)``."""
    from pathlib import Path

    from spacetime_md._outputs import prepare_output_dir
    from spacetime_md.molecular.workflows.batch import (
        _resolve_system_and_checkpoint, _validate_tasks, batch_path_config, plan_batch,
    )
    from spacetime_md.molecular.paths.run import check_memory

    mol, checkpoint, _ = _resolve_system_and_checkpoint(args.checkpoint, platform=args.platform, **options)
    configs = _validate_tasks(tasks, mol, batch_path_config(config, args.threads_per_task), args.seed)
    for task in tasks:
        try:
            check_memory(configs[task.task_id], mol.n_atoms)
        except ValueError as exc:
            raise ValueError(f"{task._prefix()}{exc}") from None
    prepare_output_dir(args.out, "batch", resume=True, ascii_only=True, dry_run=True)
    _, _, finished, _ = plan_batch(tasks, mol, checkpoint, configs, Path(args.out).resolve(), platform=args.platform,
                                   plots=not args.no_plots, group_size=args.group_size,
                                   threads_per_task=args.threads_per_task)
    return mol, checkpoint, set(finished)


def run(args: argparse.Namespace) -> int:
    from spacetime_md.molecular.workflows.batch import run_batch
    from spacetime_md.molecular.workflows.batch_tasks import read_pairs

    check_options(args, RANGES)
    config = _base_config(args)
    tasks = read_pairs(args.pairs)
    _quiet_dask(getattr(args, "verbose", 0))
    options = _system_options(args)
    mol, checkpoint, finished = check_batch_run(args, config, tasks, options)
    if args.dry_run:
        resolved = {
            "out": args.out, "workers": args.workers, "scheduler": args.scheduler,
            "system": {"name": mol.name, "source_pdb": mol.source_pdb, "n_atoms": mol.n_atoms,
                       "forcefield_files": list(mol.forcefield_files), "solvent": mol.solvent,
                       "cvs": list(mol.cvs.names) or "rmsd to the endpoints (no CV defined)", "cvs_file": args.cvs,
                       "states": [s.name for s in mol.states], "states_file": args.states},
            "checkpoint": str(checkpoint), "batch_seed": args.seed,
            "path_config": config.to_dict(),
            "tasks": [{"id": t.task_id, "start": t.start, "end": t.end,
                       "path_config_overrides": dict(t.overrides),
                       "seed": t.resolve_config(config, args.seed).seed,
                       "status": "finished (skipped)" if t.task_id in finished else "to run"} for t in tasks],
        }
        print(json.dumps(resolved, indent=2))
        return 0

    def report(info):
        if info["event"] == "start":
            link = info["dashboard"]
            if link and not args.no_dashboard:
                print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)
            print(f"{info['n_tasks']} pairs: {info['n_skipped']} already finished, {info['n_pending']} to run "
                  f"-> {info['out']}", file=sys.stderr, flush=True)
        elif info["event"] == "task" and info["record"]["status"] == "failed":
            print(f"pair {info['task_id']} failed: {info['record']['error']}", file=sys.stderr, flush=True)

    result = run_batch(
        args.pairs, args.out, config=config, **options, checkpoint=args.checkpoint,
        platform=args.platform, plots=not args.no_plots, seed=args.seed, workers=args.workers,
        scheduler=args.scheduler, retries=args.retries, threads_per_task=args.threads_per_task,
        group_size=args.group_size,
        dashboard=not args.no_dashboard, progress=args.progress, callback=report,
    )
    print(format_batch_table(result))
    return 0 if result.ok else 1
