"""``spacetime-md evaluate``: sample a trained denoiser and print quality metrics against held-out MD.

Draw samples from a trained molecular denoiser (reverse SDE or probability-flow ODE) and compare
them with the held-out part of the MD samples.

Sample a trained denoiser and compare with held-out MD samples.

    spacetime-md evaluate --checkpoint runs/ala/model.pt \
        --data /work/data/alanine_dipeptide_vacuum_300K --n-samples 2000

Prints the metrics table (Ramachandran JSD per residue, energies, state populations, C7ax
population where defined, bond lengths, chirality of every chiral centre); ``--json FILE``
also writes the numbers (``null`` plus a ``*_na_reason`` for what is undefined for the
molecule). Without ``--checkpoint`` the shipped alanine dipeptide model is evaluated.
``--guide EARLY.pt`` samples with autoguidance (the model extrapolated away from a weaker
snapshot of itself, on a range of noise levels); a guided checkpoint (``spacetime-md guide``, such
as the shipped default ``alanine-dipeptide``) brings its own guide, and ``--guidance-*`` change
its settings.

The molecule (its collective variables, states and chiral centres) is the one the checkpoint
records; ``--system``/``--cvs``/``--states`` override it. A checkpoint that records none uses
the ``system.json`` beside the data (written by ``spacetime-md sample``), the alanine-dipeptide
preset for its atoms, or else the data's topology with the default force field.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from spacetime_md.commands._checks import (
    SEED_MAX, THREADS_MAX, add_numeric, check_memory_need, check_options, check_output_file, float_range, int_range,
)

logger = logging.getLogger(__name__)

#: The numeric options (argparse dest -> range, default and help text): added by add_numeric, checked first.
RANGES = {
    "guidance_weight": float_range(0, help="autoguidance weight w (default 2.5, or the shipped pair's)"),
    "guidance_log_snr_min": float_range(-20, 20,
                                        help="lowest guided noise level, model units (default -2, or the shipped "
                                             "pair's)"),
    "guidance_log_snr_max": float_range(-20, 20,
                                        help="guided levels are below this one (default 8, or the shipped pair's)"),
    "holdout_fraction": float_range(0, 1, low_open=True, high_open=True,
                                    help="held-out fraction (default: the one the model was trained with, else 0.1)"),
    "n_samples": int_range(1, default=2000, help="model samples (default 2000)",
                           note="; refused up front if they would not fit in memory"),
    "n_steps": int_range(1, default=300, help="sampler noise levels (default 300)"),
    # Defaults: generate.CORRECTOR_STEPS / CORRECTOR_SCALE (not imported here: that module loads torch).
    "corrector_steps": int_range(1, 100, help="--method pc: Langevin corrector steps per noise level (default 3)"),
    "corrector_scale": float_range(0, 1, low_open=True,
                                   help="--method pc: Langevin step in units of the level's sigma^2 (default 0.3)"),
    "corrector_log_snr_min": float_range(-20, 20, help="--method pc: correct only the levels >= this one "
                                                       "(default: every level; 4 keeps rare states, see the docs)"),
    "log_snr_start": float_range(-20, 20, default=-8.0, help="first noise level, model log_snr (default -8)"),
    "log_snr_end": float_range(-20, 20, default=10.0, help="last noise level, above --log-snr-start (default 10)"),
    "batch_size": int_range(1, default=128, help="samples integrated at once (default 128)"),
    "seed": int_range(0, SEED_MAX, default=0, help="sampling seed (default 0)"),
    "num_threads": int_range(1, THREADS_MAX, help="torch threads (default: torch's choice)"),
}
#: Rough model activation memory per structure in a batch, per squared atom count (measured:
#: about 0.4 MiB per alanine-dipeptide structure, 22 atoms, for the shipped model).
_ACTIVATION_BYTES_PER_ATOM_PAIR = 1024


def _corrector_text(args: argparse.Namespace) -> str:
    """The corrector part of the sampler description ("" unless ``--method pc``)."""
    from spacetime_md.molecular.model.generate import CORRECTOR_SCALE, CORRECTOR_STEPS

    if args.method != "pc":
        return ""
    steps = CORRECTOR_STEPS if args.corrector_steps is None else args.corrector_steps
    scale = CORRECTOR_SCALE if args.corrector_scale is None else args.corrector_scale
    start = "" if args.corrector_log_snr_min is None else f" from log_snr {args.corrector_log_snr_min:g}"
    return f", {steps} Langevin corrector steps of {scale:g} sigma^2 per level{start}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from spacetime_md.commands._system import add_system_arguments

    p.add_argument("--checkpoint", help="model.pt, training_state.pt, a guided checkpoint or a shipped model name, e.g. alanine-tetrapeptide (default: the shipped model of a preset --system, else alanine-dipeptide)")
    p.add_argument("--guide",
                   help="autoguidance: a weaker model of the same molecule (e.g. an early snapshot "
                   "model_step*.pt of the same run); samples use D + (w - 1)(D - guide) on the guided levels")
    add_numeric(p, RANGES, "guidance_weight", "guidance_log_snr_min", "guidance_log_snr_max")
    p.add_argument("--data", required=True, nargs="+",
                   help="MD samples: a directory with one *.h5 trajectory (as written by `spacetime-md sample`), "
                        "or trajectory files mdtraj reads")
    p.add_argument("--top", help="topology (PDB) for --data formats without one (DCD, XTC, TRR, NetCDF)")
    add_system_arguments(p)
    add_numeric(p, RANGES, "holdout_fraction")
    p.add_argument("--reference",
                   help="independent MD samples (directory with one *.h5, or the file), e.g. `spacetime-md "
                        "sample --seed 1`: all its frames are the reference instead of the held-out part of --data")
    add_numeric(p, RANGES, "n_samples", "n_steps")
    p.add_argument("--method", choices=("heun", "ancestral", "ddim", "pc"), default="ancestral",
                   help="reverse SDE (ancestral, default: its noise corrects model errors, e.g. bond lengths "
                   "match MD where the ODE's are 1.7x too spread), the same with Langevin corrector steps "
                   "before each level (pc: closer to MD in the main basin, but it can empty rare states; see "
                   "the docs), or probability-flow ODE, 2nd order (heun) or 1st order (ddim)")
    add_numeric(p, RANGES, "corrector_steps", "corrector_scale", "corrector_log_snr_min")
    add_numeric(p, RANGES, "log_snr_start", "log_snr_end", "batch_size")
    p.add_argument("--mirror-d", action="store_true",
                   help="post-hoc correction: reflect samples with D chirality (reported as such)")
    add_numeric(p, RANGES, "seed")
    p.add_argument("--no-energies", dest="energies", action="store_false", help="skip OpenMM energies")
    p.add_argument("--save-samples",
                   help="write the model samples as an mdtraj HDF5 file (a file is replaced; folders are created)")
    p.add_argument("--json", dest="json_out",
                   help="write the metrics as JSON (a file is replaced; folders are created)")
    add_numeric(p, RANGES, "num_threads")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from spacetime_md.core import AutoGuidedDenoiser
    from spacetime_md.errors import TopologyMismatchError
    from spacetime_md.molecular.system.chirality import chiral_centres_from_topology, compute_chirality
    from spacetime_md.molecular.model.evaluation import evaluate_samples
    from spacetime_md.molecular.model.generate import sample_model
    from spacetime_md.molecular.model.pretrained import load_checkpoint, load_guided, load_pretrained
    from spacetime_md.molecular.model.dataset import load_dataset

    check_options(args, RANGES)
    corrector = {k: v for k, v in (("corrector_steps", args.corrector_steps),
                                   ("corrector_scale", args.corrector_scale),
                                   ("corrector_log_snr_min", args.corrector_log_snr_min)) if v is not None}
    if corrector and args.method != "pc":
        raise ValueError(f"method: expected --method pc with "
                         f"{', '.join('--' + k.replace('_', '-') for k in corrector)}, got --method {args.method}")
    if not args.log_snr_end > args.log_snr_start:
        raise ValueError(f"--log-snr-end: expected a number > --log-snr-start ({args.log_snr_start:g}), "
                         f"got {args.log_snr_end:g}")
    # Outputs are written after the sampling: check them first.
    if args.save_samples:
        check_output_file(args.save_samples, "--save-samples")
    if args.json_out:
        check_output_file(args.json_out, "--json")
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    guidance = {k: v for k, v in (("weight", args.guidance_weight), ("log_snr_min", args.guidance_log_snr_min),
                                  ("log_snr_max", args.guidance_log_snr_max)) if v is not None}
    if args.guide is not None:
        model = load_guided(args.checkpoint or "alanine-dipeptide", args.guide, **guidance)
    else:
        model = load_pretrained(_default_model(args.system)) if args.checkpoint is None else load_checkpoint(args.checkpoint)
        if guidance:
            if not isinstance(model, AutoGuidedDenoiser):
                raise ValueError(f"guide: expected --guide (or a guided --checkpoint) with "
                                 f"{', '.join('--guidance-' + k.replace('_', '-') for k in guidance)}, got none")
            model = AutoGuidedDenoiser(model.denoiser, model.guide, **{**model.guidance_settings(), **guidance})
    _check_evaluate_memory(args.n_samples, args.batch_size, model.n_atoms)
    system = _declared_system(args, model)
    holdout = args.holdout_fraction
    if holdout is None:
        holdout = float(model.metadata.get("train_config", {}).get("holdout_fraction", 0.1))
    data = args.data[0] if len(args.data) == 1 else list(args.data)
    dataset = load_dataset(data, holdout) if args.top is None else load_dataset(data, holdout, top=args.top)
    if system is None:
        system = _data_system(args, dataset)
    names = [a.name for a in dataset.topology.atoms]
    if dataset.n_atoms != model.n_atoms or (model.atom_names is not None and names != model.atom_names):
        raise TopologyMismatchError(
            f"data: expected the model's {model.n_atoms} atoms {model.atom_names}, got {dataset.n_atoms} atoms {names}"
        )
    mismatch = _atom_mismatch(system.mdtraj_topology, dataset.topology)
    if mismatch:
        raise TopologyMismatchError(f"system: expected the data's atoms for {system.name}, got {mismatch}")
    reference, reference_source = dataset.test_xyz, f"held-out last {holdout:.0%} of {dataset.source}"
    if args.reference is not None:
        import mdtraj
        import numpy as np

        ref_file = _trajectory_file(Path(args.reference), "reference")
        ref = mdtraj.load(str(ref_file))
        ref_names = [a.name for a in ref.topology.atoms]
        if ref_names != names:
            raise TopologyMismatchError(f"reference: expected the data's {len(names)} atoms {names}, "
                                        f"got {ref.n_atoms} atoms {ref_names} in {ref_file}")
        reference, reference_source = ref.xyz.astype(np.float64), f"all {ref.n_frames} frames of {ref_file}"
    centres = chiral_centres_from_topology(system.mdtraj_topology)
    signs = [int(compute_chirality(system.positions_nm[None], c.atoms)[0]) or 1 for c in centres]
    if args.mirror_d and not centres:
        logger.warning("--mirror-d: %s has no chiral centre, nothing to mirror", system.name)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    samples = sample_model(
        model,
        args.n_samples,
        n_steps=args.n_steps,
        method=args.method,
        log_snr_start=args.log_snr_start,
        log_snr_end=args.log_snr_end,
        batch_size=args.batch_size,
        generator=generator,
        mirror_d=args.mirror_d,
        **corrector,
        chiral_atoms=[c.atoms for c in centres],
        chiral_signs=signs,
        progress=args.progress,
    )
    elapsed = time.perf_counter() - start
    result = evaluate_samples(
        samples,
        reference,
        system.mdtraj_topology,
        system=system,
        chiral_centres=centres,
        reference_b=dataset.train_xyz,
        energies=args.energies,
        sampler=f"{args.method}, {args.n_steps} steps, log_snr {args.log_snr_start}..{args.log_snr_end}"
        + _corrector_text(args)
        + (f", autoguided (w = {model.weight:g} on log_snr [{model.log_snr_min:g}, {model.log_snr_max:g})"
           + (f", sigmoid edges of width {model.edge_width:g})" if model.edge_width else ")")
           if isinstance(model, AutoGuidedDenoiser) else "")
        + (", D samples mirrored" if args.mirror_d else ""),
        sampling_time_s=elapsed,
    )
    print(f"system: {system.name} ({system.n_atoms} atoms); collective variables: "
          + (", ".join(system.cvs.names) or "none")
          + f"; states: {', '.join(s.name for s in system.states) or 'none'}"
          + f"; chiral centres: {', '.join(c.name for c in centres) or 'none'}")
    print(f"reference MD: {reference_source}")
    print(result.to_table())
    from spacetime_md._atomic import atomic_path, write_json_atomic

    if args.save_samples:
        import mdtraj

        try:
            with atomic_path(args.save_samples) as tmp:
                mdtraj.Trajectory(samples.astype("float32"), dataset.topology).save_hdf5(str(tmp))
        except OSError as exc:
            raise ValueError(f"--save-samples: cannot write {args.save_samples!r} ({exc.strerror or exc})") from None
    if args.json_out:
        payload = {"metrics": result.to_dict(), "reference": reference_source, "system": system.name,
                   "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        try:
            write_json_atomic(args.json_out, payload)
        except OSError as exc:
            raise ValueError(f"--json: cannot write {args.json_out!r} ({exc.strerror or exc})") from None
    return 0


def _check_evaluate_memory(n_samples: int, batch_size: int, n_atoms: int) -> None:
    """Refuse a run whose samples (float64, a few copies while evaluated) or whose batch of model
    activations cannot fit in memory."""
    samples = n_samples * n_atoms * 3 * 8 * 4
    batch = min(batch_size, n_samples) * n_atoms**2 * _ACTIVATION_BYTES_PER_ATOM_PAIR
    if batch > samples:
        what = f"--batch-size: batches of {min(batch_size, n_samples)} structures of {n_atoms} atoms"
        advice = "use a smaller --batch-size"
    else:
        what = f"--n-samples: {n_samples} samples of {n_atoms} atoms"
        advice = "use fewer samples"
    check_memory_need(samples + batch, what, advice)


def _atom_mismatch(expected: Any, got: Any) -> str | None:
    """``None`` when two mdtraj topologies have the same atoms (names, in order), else what differs."""
    if expected.n_atoms != got.n_atoms:
        return f"{got.n_atoms} atoms instead of {expected.n_atoms}"
    for a, b in zip(expected.atoms, got.atoms):
        if a.name != b.name:
            return (f"atom {a.index} {b.name} ({b.residue.name}{b.residue.resSeq}) instead of "
                    f"{a.name} ({a.residue.name}{a.residue.resSeq})")
    return None


def _default_model(system: str | None) -> str:
    """The shipped model of a preset ``--system`` (e.g. alanine-tetrapeptide), else alanine-dipeptide."""
    from spacetime_md.molecular.model.pretrained import PRETRAINED
    from spacetime_md.molecular.system.presets import preset_name

    preset = preset_name(system)
    return preset if preset in PRETRAINED else "alanine-dipeptide"


def _declared_system(args: argparse.Namespace, model: Any):
    """``--system``, else the system the checkpoint records; ``None`` if neither."""
    from spacetime_md.commands._system import system_from_args
    from spacetime_md.molecular.model.pretrained import checkpoint_system

    if args.system is not None or checkpoint_system(model) is not None:
        return system_from_args(args, model=model)
    return None


def _data_system(args: argparse.Namespace, dataset: Any):
    """The system of a checkpoint that records none (trained before systems were recorded):
    ``system.json`` beside the data (written by ``spacetime-md sample``), else the
    alanine-dipeptide preset when the data has its atoms, else the data's topology and first
    frame with ``--forcefield`` (default amber99sbildn; a warning says so)."""
    import json

    from spacetime_md.commands._system import forcefield_from_arg, system_from_args
    from spacetime_md.molecular.system.build import MolecularSystem, resolve_system

    first = Path(args.data[0])
    spec_file = (first if first.is_dir() else first.parent) / "system.json"
    if spec_file.is_file():
        try:
            spec = json.loads(spec_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{spec_file}: expected the JSON written by `spacetime-md sample`, got {exc}") from None
        logger.info("system: from %s", spec_file)
        return resolve_system(MolecularSystem.from_spec(spec), cvs=args.cvs, states=args.states)
    preset = _matching_preset(dataset.topology)
    if preset is not None:
        logger.info("system: the data has the atoms of the %s preset", preset)
        args.system = preset
        return system_from_args(args)
    import tempfile

    import mdtraj

    forcefield = forcefield_from_arg(args.forcefield)
    logger.warning("--system: the checkpoint records no system; using the data's topology with force field %s "
                   "(pass --system to choose)", forcefield)
    with tempfile.TemporaryDirectory() as tmp:
        pdb = Path(tmp) / "data_topology.pdb"
        mdtraj.Trajectory(dataset.train_xyz[:1], dataset.topology).save_pdb(str(pdb))
        try:
            return resolve_system(pdb, solvent=args.solvent or "vacuum", forcefield=forcefield,
                                  cvs=args.cvs, states=args.states)
        except ValueError as exc:
            raise ValueError(f"--system: the checkpoint records no system and the data's topology does not "
                             f"parameterise ({exc}); pass --system NAME or --system your.pdb") from None


def _trajectory_file(path: Path, flag: str) -> Path:
    """A trajectory file, or the one ``*.h5`` of a directory (the layout of ``spacetime-md sample``)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{flag}: no such file or directory {str(path)!r}")
    candidates = sorted(path.glob("*.h5"))
    preferred = [p for p in candidates if any(k in p.name for k in ("sample", "traj"))]
    if len(candidates) == 1 or len(preferred) == 1:
        return candidates[0] if len(candidates) == 1 else preferred[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise FileNotFoundError(f"{flag}: expected one mdtraj HDF5 trajectory (*.h5) in {str(path)!r}, found {found}")


def _matching_preset(topology: Any) -> str | None:
    import mdtraj

    from spacetime_md.molecular.system.build import KNOWN_SYSTEMS, system_data_path

    for name, entry in KNOWN_SYSTEMS.items():
        preset = mdtraj.load_topology(str(system_data_path(entry["pdb"])))
        same_residues = [r.name for r in preset.residues] == [r.name for r in topology.residues]
        if same_residues and _atom_mismatch(preset, topology) is None:
            return name
    return None
