"""``spacetime-md train``: train the equivariant diffusion denoiser on Boltzmann samples.

Train the SE(3)-equivariant, chirality-aware denoiser (VP diffusion in log_snr, x0-prediction) on
Boltzmann samples from any trajectory mdtraj reads; the checkpoint records the molecular system, so
'paths --checkpoint' needs nothing else.

    spacetime-md train --data /work/data/alanine_dipeptide_vacuum_300K --out runs/ala \
        --steps 20000 --seed 0 --device cpu [--resume]
    spacetime-md train --data md1.dcd md2.dcd --top my.pdb --stride 10 --out runs/mine
    spacetime-md train --data md.xtc --system my.pdb --forcefield amber14 --states states.json --out runs/mine

``--data`` is any trajectory mdtraj reads (DCD, XTC, TRR, NetCDF, HDF5, multi-model PDB), several
files, or a directory (the ``*.h5`` written by ``spacetime-md sample``). Formats without a
topology need ``--top`` (or ``--system`` PDB). The system recorded in ``model.pt`` (so that
``spacetime-md paths --checkpoint model.pt`` needs nothing else) is ``--system``, else the data
directory's ``system.json``, else ``--top``, else the data's own topology (with amber99sbildn in
vacuum unless ``--forcefield``/``--solvent`` say otherwise; atoms identical to a preset's, e.g.
alanine dipeptide, record that preset with its states). Data and system are checked before
``--out`` is created. Writes ``config.json``, ``metrics.jsonl``, ``training_state.pt``
(resumable; ``--resume`` refuses other data or settings, naming the field) and ``model.pt``
(EMA weights) to ``--out``; see
:mod:`spacetime_md.molecular.model.training`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

_OPTIONAL = {
    "batch_size": (int, "batch size (default 64)"),
    "lr": (float, "peak learning rate (default 2e-3)"),
    "hidden_channels": (int, "width of the EGNN (default 32)"),
    "n_layers": (int, "number of EGNN layers (default 4)"),
    "log_snr_min": (float, "lowest training log_snr, model units (default -4)"),
    "log_snr_max": (float, "highest training log_snr, model units (default 10)"),
    "focus_fraction": (float, "fraction of training noise levels drawn from the focus range (default 0: "
                               "uniform over the full range)"),
    "focus_log_snr_min": (float, "lower end of the focus range, model units (default 0)"),
    "focus_log_snr_max": (float, "upper end of the focus range, model units (default 5)"),
    "ema_decay": (float, "EMA decay of the weights (default 0.999)"),
    "length_scale_nm": (float, "nm per model unit (default 0.15)"),
    "holdout_fraction": (float, "last fraction of the frames held out (default 0.1)"),
    "num_threads": (int, "torch threads (default: torch's choice)"),
    "checkpoint_every": (int, "steps between checkpoints (default 500)"),
    "time_limit_s": (float, "stop and checkpoint after this many seconds"),
    "snapshot_every": (int, "keep the EMA weights every N steps as model_step<N>.pt"),
    "graph_cutoff_nm": (float, "distance cutoff of --graph sparse in nm (default 0.5)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="trajectory file(s) mdtraj reads (DCD, XTC, TRR, NetCDF, HDF5, multi-model PDB), "
                        "concatenated in order, or a directory (its *.h5 as written by 'spacetime-md sample', "
                        "else its DCD/XTC/TRR/NetCDF files by name)")
    p.add_argument("--top", default=None,
                   help="topology (a PDB of the same atoms) for data without one: DCD, XTC, TRR, NetCDF "
                        "(default: the topology of --system, of the data directory's system.json or of the resumed run)")
    p.add_argument("--stride", type=int, default=None, help="keep every N-th frame of each file (default 1)")
    p.add_argument("--out", required=True, help="output directory (created only when training starts)")
    p.add_argument("--steps", type=int, default=20000, help="total optimisation steps (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/training_state.pt: the data (by hash) and every setting but --steps "
                        "(which may grow), --device, threads, checkpoints, time limit, snapshots and --compile "
                        "must be the saved run's")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of another run in --out (its outputs are removed first)")
    p.add_argument("--no-chirality", dest="chirality", action="store_false",
                   help="E(3)-equivariant model without the pseudo-vector term (ablation)")
    p.add_argument("--graph", choices=("dense", "sparse"), default=None,
                   help="atom graph of the EGNN: dense (all pairs, default) or sparse (bonds up to 3 apart plus "
                        "pairs within --graph-cutoff-nm; cost grows about linearly with the atoms)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (about a minute to compile, then 1.45x faster steps on one "
                        "CPU thread, little gain on two; falls back to eager with a warning if compilation fails; "
                        "dense graph only)")
    for name, (kind, text) in _OPTIONAL.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=text)
    from spacetime_md.commands._system import add_system_arguments

    add_system_arguments(p, default_system=None)
    for action in p._actions:  # training has no checkpoint to take defaults from
        if action.dest in _SYSTEM_HELP:
            action.help = _SYSTEM_HELP[action.dest]


_SYSTEM_HELP = {
    "system": "preset name (alanine-dipeptide) or a PDB file of your molecule, recorded in model.pt "
              "(default: the data directory's system.json, else --top, else the data's own topology; a preset's "
              "atoms give the preset)",
    "forcefield": "force-field preset (amber99sbildn, amber96, amber14) or comma-separated OpenMM XML files "
                  "for a system built from a PDB or the data (default amber99sbildn; also gives the atom types)",
    "solvent": "vacuum or implicit (OBC GB) solvent for a system built from a PDB or the data (default vacuum)",
    "cvs": "collective-variable file (JSON/YAML) recorded with the system (default: every backbone phi/psi)",
    "states": "state file (JSON/YAML, structure paths relative to it) recorded with the system",
}


def build_config(args: argparse.Namespace):
    from spacetime_md.molecular.model.train_config import TrainConfig

    data = args.data
    if isinstance(data, (list, tuple)):
        data = data[0] if len(data) == 1 else list(data)
    kwargs = {
        "data": data,
        "out": args.out,
        "steps": args.steps,
        "seed": args.seed,
        "device": args.device,
        "chirality": args.chirality,
        "compile": args.compile,
    }
    for name in (*_OPTIONAL, "top", "stride", "system", "forcefield", "solvent", "cvs", "states", "graph"):
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = value
    return TrainConfig(**kwargs)


def run(args: argparse.Namespace) -> int:
    from spacetime_md._outputs import finish_output_dir, list_outputs, prepare_output_dir

    config = build_config(args)
    outputs = ("model.pt", "model_step*.pt", "training_state.pt", "metrics.jsonl", "config.json", "system.json")
    # Checked before anything is created; the directory itself appears only when training starts.
    prepare_output_dir(args.out, "train", resume=args.resume, overwrite=args.overwrite, dry_run=True)
    if args.resume:  # a state to continue, with the same settings (the data are compared once read)
        from spacetime_md.molecular.model.resume import _read_resume_state

        _read_resume_state(config)
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True))
        return 0
    from spacetime_md.molecular.model.training import train

    if args.overwrite:
        prepare_output_dir(args.out, "train", overwrite=True, outputs=outputs)
    result = train(config, resume=args.resume, progress=args.progress)
    finish_output_dir(args.out, list_outputs(args.out, outputs))
    print(
        f"trained {result.step} steps in {result.wall_time / 60:.1f} min; "
        f"final loss {result.final_loss:.4f}; model: {result.out / 'model.pt'}"
    )
    system = result.system
    if system is not None:
        print(f"system recorded in the checkpoint: {system.name} ({system.n_atoms} atoms, "
              f"{', '.join(system.forcefield_files)}, {system.solvent}; CVs: {', '.join(system.cvs.names) or 'none'}; "
              f"states: {', '.join(s.name for s in system.states) or 'none'})")
    return 0
