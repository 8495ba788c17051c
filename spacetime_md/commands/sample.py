"""``spacetime-md sample``: Boltzmann samples at 300 K by temperature replica exchange (OpenMM).

Temperature replica exchange on OpenMM; saves the samples at the lowest temperature with
checkpoints every --chunk-size samples (resume with --resume). The replicas run in --workers
processes (default: one per usable core, at most one per replica); the samples are bitwise the
same for any number.

Writes ``samples.h5`` (mdtraj HDF5), ``energies.npy``, ``config.json``, ``system.json`` (the
system: PDB text, force field, solvent, CVs, states; ``train`` records it in the checkpoint),
``report.json`` and a free-energy plot in the collective variables (``ramachandran.png``, one
panel per residue, or ``cvs.png``) to ``--out``; prints exchange acceptance, throughput and,
for systems with states, their populations with block-averaged errors (for alanine dipeptide
next to the independent reference estimate shipped with the package).

The molecule is ``--system`` (a preset name or any PDB file; ``--pdb`` is an alias) with
``--forcefield``, ``--solvent``, ``--cvs`` and ``--states`` (see :mod:`spacetime_md.commands._system`).
"""

from __future__ import annotations

import argparse

from spacetime_md.commands._checks import (
    SEED_MAX, add_numeric, check_memory_need, check_options, float_range, int_range, parse_workers,
)

DEFAULT_SYSTEM = "alanine-dipeptide"

#: The numeric options (argparse dest -> range, default and help text): added by add_numeric, checked first.
RANGES = {
    "n_samples": int_range(1, default=None, required=True, help="samples at --temperature",
                           note="; refused up front if they would not fit in memory"),
    "seed": int_range(0, SEED_MAX, default=0, help="random seed (default 0)"),
    "temperature": float_range(0, 5000, low_open=True, default=300.0, help="sampling temperature in K (default 300)"),
    "n_replicas": int_range(1, 256,
                            help="replicas of a fixed geometric ladder (default: automatic, the fewest >= 4 whose "
                                 "neighbour swap acceptance predicted by a short pilot run reaches "
                                 "--target-acceptance; 4 was the fixed default before)"),
    "target_acceptance": float_range(0, 1, low_open=True, high_open=True,
                                     help="smallest neighbour swap acceptance of the automatic ladder (default 0.2)"),
    "max_temperature": float_range(0, 5000, low_open=True,
                                   help="hottest replica in K, above --temperature (default 800)"),
    "exchange_interval": float_range(0, low_open=True,
                                     help="ps between exchanges/samples (default 0.25)",
                                     note="; at least one 2 fs time step"),
    "equilibration": float_range(0, help="discarded ps before sampling (default 20)"),
    "chunk_size": int_range(1, default=1000, help="samples per checkpoint (default 1000)"),
    "max_chunks": int_range(0, help="stop after this many chunks (resume later)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spacetime_md.commands._system import add_system_arguments

    add_system_arguments(p, default_system=DEFAULT_SYSTEM)
    p.set_defaults(system=None)  # so that --system and its alias --pdb can be told apart
    p.add_argument("--pdb", help="alias of --system for a PDB file of your molecule")
    add_numeric(p, RANGES, "n_samples")
    p.add_argument("--out", required=True, help="output / checkpoint directory")
    add_numeric(p, RANGES, "seed")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another run in --out (its outputs are removed first)")
    p.add_argument("--platform", help="OpenMM platform (default: automatic, Reference for small systems)")
    add_numeric(p, RANGES, "temperature", "n_replicas", "target_acceptance", "max_temperature", "exchange_interval",
                "equilibration", "chunk_size", "max_chunks")
    p.add_argument("--workers", default="auto",
                   help="processes that run the replicas, each owning a fixed block of them: 'auto' (default: the "
                        "usable cores) or an integer in [1, 256]; capped by the number of replicas; 1 runs them all "
                        "in this process. Samples are bitwise the same for any value, and a run may resume with "
                        "another")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _check_pdb_file(path: str) -> None:
    """One-line errors for a PDB path that is missing or has no atom records."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--system: expected a preset name or an existing PDB file, got {path!r}")
    try:
        text = file.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"--system: expected a text PDB file, got binary data in {path!r}") from None
    if not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
        raise ValueError(f"--system: expected a PDB file with ATOM/HETATM records, got none in {path!r}")


def resolve_sample_system(args: argparse.Namespace):
    """The :class:`MolecularSystem` of the ``sample`` flags (``--pdb`` is an alias of ``--system``)."""
    from pathlib import Path

    import openmm.unit as unit

    from spacetime_md.commands._system import forcefield_from_arg
    from spacetime_md.molecular.system.build import resolve_system

    if args.pdb is not None and args.system is not None:
        raise ValueError(f"--pdb: an alias of --system, expected one of them, got --system {args.system!r} "
                         f"and --pdb {args.pdb!r}")
    system = args.pdb if args.pdb is not None else (args.system or DEFAULT_SYSTEM)
    if args.pdb is not None or str(system).lower().endswith(".pdb") or Path(system).is_file():
        _check_pdb_file(system)
    for flag, value in (("--cvs", args.cvs), ("--states", args.states)):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{flag}: expected an existing file, got {value!r}")
    return resolve_system(
        system, solvent=args.solvent or "vacuum", forcefield=forcefield_from_arg(args.forcefield),
        temperature=args.temperature * unit.kelvin, platform=args.platform, cvs=args.cvs, states=args.states,
    )


def check_sample_memory(n_samples: int, chunk_size: int, n_atoms: int) -> None:
    """Refuse a run whose samples cannot be held in memory: the finished run concatenates every
    chunk (float32 coordinates, copied twice on the way to ``samples.h5``) after filling one
    chunk buffer at a time."""
    per_sample = n_atoms * 3 * 4
    need = n_samples * (3 * per_sample + 48) + min(chunk_size, n_samples) * (per_sample + 16)
    check_memory_need(need, f"--n-samples: {n_samples} samples of {n_atoms} atoms", "use fewer samples")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import openmm.unit as unit

    from spacetime_md.molecular.sampling.boltzmann import sample_boltzmann
    from spacetime_md.molecular.sampling.samples import plot_file_name
    from spacetime_md.molecular.sampling.sampling_config import (
        DEFAULT_MAX_TEMPERATURE, DEFAULT_N_REPLICAS, SYSTEM_FILE, _check_resume_config, resolve_config,
        resolve_run_config,
    )

    check_options(args, RANGES)
    workers = parse_workers(args.workers)
    n_replicas = args.n_replicas if args.n_replicas is not None else DEFAULT_N_REPLICAS
    max_temperature = (args.max_temperature if args.max_temperature is not None
                       else DEFAULT_MAX_TEMPERATURE.value_in_unit(unit.kelvin))
    if n_replicas > 1 and not max_temperature > args.temperature:
        raise ValueError(f"--max-temperature: expected a number > --temperature ({args.temperature:g} K) with "
                         f"{n_replicas} replicas, got {max_temperature:g}")
    if args.target_acceptance is not None and args.n_replicas is not None:
        raise ValueError(f"--target-acceptance: sets the automatic ladder, expected no --n-replicas, got "
                         f"--n-replicas {args.n_replicas}")
    system = resolve_sample_system(args)
    kwargs = {}
    if args.n_replicas is not None:
        kwargs["n_replicas"] = args.n_replicas
    if args.max_temperature is not None:
        kwargs["max_temperature"] = args.max_temperature * unit.kelvin
    if args.exchange_interval is not None:
        kwargs["exchange_interval"] = args.exchange_interval * unit.picosecond
    if args.equilibration is not None:
        kwargs["equilibration"] = args.equilibration * unit.picosecond
    if args.target_acceptance is not None:
        kwargs["target_acceptance"] = args.target_acceptance
    # Cheap checks first: settings (fixed ladder), memory, output directory; then the ladder's pilot.
    resolve_config(system, args.n_samples, chunk_size=args.chunk_size, seed=args.seed,
                   **{**kwargs, "n_replicas": kwargs.get("n_replicas", DEFAULT_N_REPLICAS)})
    check_sample_memory(args.n_samples, args.chunk_size, system.n_atoms)
    from spacetime_md._outputs import finish_output_dir, list_outputs, prepare_output_dir

    prepare_output_dir(args.out, "sample", resume=args.resume, overwrite=args.overwrite, dry_run=True)
    # The settings the run uses (an automatic ladder runs its pilot, or a resumed run keeps its ladder).
    config = resolve_run_config(system, args.n_samples, args.out, resume=args.resume and not args.overwrite,
                                chunk_size=args.chunk_size, seed=args.seed, **kwargs)

    outputs = ("samples.h5", "energies.npy", "checkpoint.npz", "config.json", "report.json", SYSTEM_FILE,
               "*.png")
    if args.dry_run:
        out = Path(args.out)
        if (out / "checkpoint.npz").exists() and not args.overwrite:
            if not args.resume:
                raise ValueError(f"--out: {str(out)!r} already holds a sampling run; pass --resume to continue it, "
                                 "--overwrite to replace it, or choose another directory")
            _check_resume_config(out / "config.json", config)
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    prepare_output_dir(args.out, "sample", resume=args.resume, overwrite=args.overwrite, outputs=outputs)
    result = sample_boltzmann(
        system, args.n_samples, args.out, resume=args.resume, max_chunks=args.max_chunks,
        progress=not args.no_progress, plot=not args.no_plot, config=config, workers=workers,
    )
    print(format_report(result.report, reference=result.report.get("reference")))
    if not result.complete:
        print(f"stopped after {result.n_frames}/{args.n_samples} samples; rerun with --resume to continue")
    else:
        plot = None if args.no_plot else plot_file_name(system)
        finish_output_dir(args.out, list_outputs(args.out, outputs))
        print(f"wrote {args.out}/samples.h5 ({result.n_frames} frames), energies.npy, config.json, "
              f"{SYSTEM_FILE}, report.json" + (f", {plot}" if plot else ""))
    return 0


def format_report(report: dict, reference: dict | None = None) -> str:
    """Human-readable summary of a sampling report (and the reference comparison)."""
    from spacetime_md.molecular.sampling.populations import compare_to_reference

    lines = [
        f"{report['system']} ({report['solvent']}): {report['n_samples']} samples at {report['temperatures_k'][0]:g} K",
        "replica temperatures (K): " + ", ".join(f"{t:.0f}" for t in report["temperatures_k"]),
        "swap acceptance:          " + ", ".join(f"{a:.2f}" for a in report["exchange_acceptance"])
        + f"   round trips: {report['round_trips']}",
        *(["predicted (pilot):        " + ", ".join(f"{a:.2f}" for a in report["predicted_acceptance"])]
          if report.get("predicted_acceptance") else []),
        *(f"warning: {w}" for w in report.get("warnings", [])),
        f"throughput: {report['samples_per_minute']:.0f} samples/min, {report['ns_per_day_T0']:.0f} ns/day at T0 "
        f"({report['ns_per_day_all_replicas']:.0f} ns/day all replicas"
        + (f", {report['workers']} processes)" if report.get("workers", 1) > 1 else ")"),
    ]
    if report.get("cv_names") is not None:
        names = report["cv_names"]
        lines.append("collective variables: " + (", ".join(names) if names else "none (no backbone phi/psi; pass a --cvs file)"))
    pops = report.get("populations")
    if pops:
        lines.append(f"{'population':<12} {'fraction':>9} {'+- error':>9} {'ESS':>8} {'reference':>10} {'+- error':>9} {'z':>6}")
        comparison = compare_to_reference(pops, reference["populations"]) if reference else {}
        for key, p in pops.items():
            row = f"{key:<12} {p['fraction']:>9.4f} {p['error']:>9.4f} {p['ess']:>8.0f}"
            if key in comparison:
                c = comparison[key]
                row += f" {c['reference']:>10.4f} {c['reference_error']:>9.4f} {c['z']:>6.2f}"
            lines.append(row)
        if reference:
            lines.append(f"reference: {reference['method']}")
    elif report.get("populations_na_reason"):
        lines.append(f"state populations: n/a ({report['populations_na_reason']})")
    return "\n".join(lines)
