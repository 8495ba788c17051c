"""``spacetime-md evaluate``: sample a trained denoiser and compare with held-out MD samples.

    spacetime-md evaluate --checkpoint runs/ala/model.pt \
        --data /work/data/alanine_dipeptide_vacuum_300K --n-samples 2000

Prints the metrics table (Ramachandran JSD, energies, C7ax population, bond lengths,
L-chirality); ``--json FILE`` also writes the numbers. Without ``--checkpoint`` the shipped
alanine dipeptide model is evaluated. ``--guide EARLY.pt`` samples with autoguidance
(the model extrapolated away from a weaker snapshot of itself, on a range of noise levels);
``--checkpoint alanine-dipeptide-guided`` is the shipped pair.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="sample a trained denoiser and print quality metrics against held-out MD",
        description="Draw samples from a trained molecular denoiser (reverse SDE or probability-flow "
        "ODE) and compare them with the held-out part of the MD samples.",
    )
    p.add_argument("--checkpoint", default=None, help="model.pt, training_state.pt or a shipped model name, e.g. alanine-dipeptide-24k (default: the shipped alanine-dipeptide model)")
    p.add_argument("--guide", default=None,
                   help="autoguidance: a weaker model of the same molecule (e.g. an early snapshot "
                   "model_step*.pt of the same run); samples use D + (w - 1)(D - guide) on the guided levels")
    p.add_argument("--guidance-weight", type=float, default=None,
                   help="autoguidance weight w (default 2.5, or the shipped pair's)")
    p.add_argument("--guidance-log-snr-min", type=float, default=None,
                   help="lowest guided noise level, model units (default -2, or the shipped pair's)")
    p.add_argument("--guidance-log-snr-max", type=float, default=None,
                   help="guided levels are below this one (default 8, or the shipped pair's)")
    p.add_argument("--data", required=True, help="directory with one *.h5 trajectory, or the file itself")
    p.add_argument("--holdout-fraction", type=float, default=None,
                   help="held-out fraction (default: the one the model was trained with, else 0.1)")
    p.add_argument("--reference", default=None,
                   help="independent MD samples (directory with one *.h5, or the file), e.g. `spacetime-md "
                        "sample --seed 1`: all its frames are the reference instead of the held-out part of --data")
    p.add_argument("--n-samples", type=int, default=2000, help="model samples (default 2000)")
    p.add_argument("--n-steps", type=int, default=300, help="sampler noise levels (default 300)")
    p.add_argument("--method", choices=("heun", "ancestral", "ddim"), default="ancestral",
                   help="reverse SDE (ancestral, default: its noise corrects model errors, e.g. bond lengths "
                   "match MD where the ODE's are 1.7x too spread), or probability-flow ODE, 2nd order "
                   "(heun) or 1st order (ddim)")
    p.add_argument("--log-snr-start", type=float, default=-8.0, help="first noise level (default -8)")
    p.add_argument("--log-snr-end", type=float, default=10.0, help="last noise level (default 10)")
    p.add_argument("--batch-size", type=int, default=128, help="samples integrated at once (default 128)")
    p.add_argument("--mirror-d", action="store_true",
                   help="post-hoc correction: reflect samples with D chirality (reported as such)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-energies", dest="energies", action="store_false", help="skip OpenMM energies")
    p.add_argument("--save-samples", default=None, help="write the model samples as an mdtraj HDF5 file")
    p.add_argument("--json", dest="json_out", default=None, help="write the metrics as JSON")
    p.add_argument("--num-threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from spacetime_md.core import AutoGuidedDenoiser
    from spacetime_md.errors import TopologyMismatchError
    from spacetime_md.molecular.evaluation import evaluate_samples, sample_model
    from spacetime_md.molecular.pretrained import GUIDED_PRETRAINED, load_checkpoint, load_guided, load_pretrained
    from spacetime_md.molecular.training import load_dataset

    if args.num_threads is not None:
        if args.num_threads < 1:
            raise ValueError(f"num_threads: expected an integer >= 1, got {args.num_threads}")
        torch.set_num_threads(args.num_threads)
    guidance = {k: v for k, v in (("weight", args.guidance_weight), ("log_snr_min", args.guidance_log_snr_min),
                                  ("log_snr_max", args.guidance_log_snr_max)) if v is not None}
    if args.checkpoint in GUIDED_PRETRAINED and not Path(args.checkpoint).exists():
        if args.guide is not None:
            raise ValueError(f"guide: {args.checkpoint!r} is a shipped guided pair and brings its own guide, "
                             f"got --guide {args.guide!r} as well")
        shipped = load_pretrained(args.checkpoint)
        settings = {"weight": shipped.weight, "log_snr_min": shipped.log_snr_min,
                    "log_snr_max": shipped.log_snr_max, **guidance}
        model = AutoGuidedDenoiser(shipped.denoiser, shipped.guide, **settings)
    elif args.guide is not None:
        model = load_guided("alanine-dipeptide" if args.checkpoint is None else args.checkpoint, args.guide, **guidance)
    else:
        if guidance:
            raise ValueError(f"guide: expected --guide (or a guided --checkpoint) with "
                             f"{', '.join('--guidance-' + k.replace('_', '-') for k in guidance)}, got none")
        model = load_pretrained() if args.checkpoint is None else load_checkpoint(args.checkpoint)
    holdout = args.holdout_fraction
    if holdout is None:
        holdout = float(model.metadata.get("train_config", {}).get("holdout_fraction", 0.1))
    dataset = load_dataset(args.data, holdout)
    names = [a.name for a in dataset.topology.atoms]
    if dataset.n_atoms != model.n_atoms or (model.atom_names is not None and names != model.atom_names):
        raise TopologyMismatchError(
            f"data: expected the model's {model.n_atoms} atoms {model.atom_names}, got {dataset.n_atoms} atoms {names}"
        )
    reference, reference_source = dataset.test_xyz, f"held-out last {holdout:.0%} of {dataset.source}"
    if args.reference is not None:
        import mdtraj
        import numpy as np

        from spacetime_md.molecular.training import _find_trajectory

        ref_file = _find_trajectory(Path(args.reference))
        ref = mdtraj.load(str(ref_file))
        ref_names = [a.name for a in ref.topology.atoms]
        if ref_names != names:
            raise TopologyMismatchError(f"reference: expected the data's {len(names)} atoms {names}, "
                                        f"got {ref.n_atoms} atoms {ref_names} in {ref_file}")
        reference, reference_source = ref.xyz.astype(np.float64), f"all {ref.n_frames} frames of {ref_file}"
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
        progress=args.progress,
    )
    elapsed = time.perf_counter() - start
    result = evaluate_samples(
        samples,
        reference,
        dataset.topology,
        reference_b=dataset.train_xyz,
        energies=args.energies,
        sampler=f"{args.method}, {args.n_steps} steps, log_snr {args.log_snr_start}..{args.log_snr_end}"
        + (f", autoguided (w = {model.weight:g} on log_snr [{model.log_snr_min:g}, {model.log_snr_max:g}))"
           if isinstance(model, AutoGuidedDenoiser) else "")
        + (", D samples mirrored" if args.mirror_d else ""),
        sampling_time_s=elapsed,
    )
    print(f"reference MD: {reference_source}")
    print(result.to_table())
    if args.save_samples:
        import mdtraj

        mdtraj.Trajectory(samples.astype("float32"), dataset.topology).save_hdf5(args.save_samples)
    if args.json_out:
        from spacetime_md._atomic import write_json_atomic

        payload = {"metrics": result.to_dict(), "reference": reference_source,
                   "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        write_json_atomic(args.json_out, payload)
    return 0
