"""``spacetime-md guide``: combine a trained model and a weaker guide into one guided checkpoint.

Writes one checkpoint file (``--out``) holding --model, --guide (a weaker model of the same
architecture and molecule, e.g. an early EMA snapshot of the same run: ``train --snapshot-every``)
and the autoguidance settings, D + (w - 1) s(log_snr) (D - G) with s switched on over
[--log-snr-min, --log-snr-max) by sigmoids of width --edge-width. With a width > 0 (default 0.5)
the guided denoiser is smooth in log_snr, so paths, committor, batch and evaluate all take the
file as --checkpoint; the shipped default model, alanine-dipeptide, was made by this command
(docs/models.md). An existing --out is kept unless --overwrite is given.
"""

from __future__ import annotations

import argparse

from spacetime_md.commands._checks import add_numeric, check_options, float_range

#: The numeric options (argparse dest -> range, default and help text).
RANGES = {
    "weight": float_range(0, default=2.5, help="guidance weight w (default 2.5; 1 = the model alone)"),
    "log_snr_min": float_range(-50, 50, default=-2.0, help="lower end of the guided levels (default -2)"),
    "log_snr_max": float_range(-50, 50, default=8.0, help="upper end of the guided levels (default 8)"),
    "edge_width": float_range(0, 10, default=0.5,
                              help="width in log_snr of the sigmoids that switch the guidance on and off "
                                   "(default 0.5; 0 = a hard interval, for sampling only)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the trained model (checkpoint file or shipped model name)")
    p.add_argument("--guide", required=True,
                   help="the weaker guide of the same molecule and architecture (checkpoint file), e.g. "
                        "runs/my_model/model_step003000.pt")
    p.add_argument("--out", required=True, help="the guided checkpoint file to write")
    add_numeric(p, RANGES, "weight", "log_snr_min", "log_snr_max", "edge_width")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from spacetime_md.commands._checks import check_output_file

    check_options(args, RANGES)
    if not args.log_snr_min < args.log_snr_max:
        raise ValueError(f"--log-snr-max: expected a number > --log-snr-min ({args.log_snr_min:g}), "
                         f"got {args.log_snr_max:g}")
    out = check_output_file(args.out, "--out")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out: {str(out)!r} exists; pass --overwrite to replace it")

    from spacetime_md.core import AutoGuidedDenoiser
    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_guided_checkpoint

    loaded = {}
    for flag, name in (("--model", args.model), ("--guide", args.guide)):
        model = load_checkpoint(name)
        if isinstance(model, AutoGuidedDenoiser):
            raise ValueError(f"{flag}: expected a single model, got the guided checkpoint {name!r}")
        loaded[flag] = model
    model, guide = loaded["--model"], loaded["--guide"]
    metadata = dict(model.metadata)
    metadata.update(
        guide_metadata=dict(guide.metadata),
        model_file=str(Path(model.source_file).name),
        guide_file=str(Path(guide.source_file).name),
        made_by=" ".join(shlex.quote(str(a)) for a in (
            "spacetime-md", "guide", "--model", args.model, "--guide", args.guide, "--weight", f"{args.weight:g}",
            "--log-snr-min", f"{args.log_snr_min:g}", "--log-snr-max", f"{args.log_snr_max:g}",
            "--edge-width", f"{args.edge_width:g}", "--out", args.out)),
    )
    save_guided_checkpoint(out, model, guide, weight=args.weight, log_snr_min=args.log_snr_min,
                           log_snr_max=args.log_snr_max, edge_width=args.edge_width, metadata=metadata)
    print(f"wrote {out}: {Path(model.source_file).name} guided by {Path(guide.source_file).name}, "
          f"w = {args.weight:g} on log_snr [{args.log_snr_min:g}, {args.log_snr_max:g}), "
          f"edge width {args.edge_width:g}" + (" (hard interval: for sampling only)" if args.edge_width == 0 else ""))
    return 0
