"""``spacetime-md image``: Diffusion Edit Distance and spacetime geodesics between images.

Sub-commands::

    spacetime-md image distance A.png B.png           # DiffED between two images
    spacetime-md image geodesic A.png B.png --out strip.png
    spacetime-md image matrix DIR --out matrix.csv    # all pairs of DIR/*.png
    spacetime-md image train --out runs/digits        # train the 8x8 digits model

The default model is the shipped 8x8 digits checkpoint (grey-scale 8x8 PNGs, pixel values
0..1); ``--checkpoint`` selects another one written by ``image train``.
"""

from __future__ import annotations

import argparse
import json
import shlex

from spacetime_md.commands._checks import (
    SEED, THREADS_MAX, check_options, check_output_file, float_range, int_range, parse_workers, ranged,
)

PRESET_NAMES = ("matrix", "fast", "accurate")

#: Valid values of the numeric options (argparse dest -> range); shown in --help, checked first.
GEODESIC_RANGES = {
    "t_min": float_range(0, 80, low_open=True),
    "chunk_points": int_range(2),
    "max_steps": int_range(1),
    "seed": SEED,
    "threads": int_range(0, THREADS_MAX),
    "length_points": int_range(2, 4096),
}
BATCH_PAIRS = int_range(1, 100000)
WORKERS = int_range(1, THREADS_MAX)
FRAMES = int_range(2, 100)
TRAIN_RANGES = {
    "steps": int_range(1),
    "batch_size": int_range(1, 4096),
    "lr": float_range(0, 1, low_open=True),
    "base_channels": int_range(1, 256),
    "seed": SEED,
    "threads": int_range(0, THREADS_MAX),
}


def _add_geodesic_options(p: argparse.ArgumentParser, preset: str = "fast") -> None:
    p.add_argument("--checkpoint", default=None, help="image model checkpoint (default: shipped 8x8 digits model)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=preset,
                   help="geodesic solver settings: matrix (cheapest, for many pairs), fast (exact divergence: the "
                        f"same distance for any seed), accurate (default {preset})")
    p.add_argument("--t-min", type=float, default=None,
                   help=ranged("anchor noise level (EDM sigma, model units; default 0.1)", GEODESIC_RANGES["t_min"]))
    p.add_argument("--chunk-points", type=int, default=None,
                   help=ranged("evaluate the curve energy in chunks of this many points (bounded memory)",
                               GEODESIC_RANGES["chunk_points"]))
    p.add_argument("--max-steps", type=int, default=None,
                   help=ranged("override the preset's optimiser steps per stage", GEODESIC_RANGES["max_steps"]))
    p.add_argument("--seed", type=int, default=0,
                   help=ranged("seed of the Hutchinson probes, mixed with the pair's image hashes (default 0)",
                               GEODESIC_RANGES["seed"]))
    p.add_argument("--length-points", type=int, default=None,
                   help=ranged("curve points of the final length evaluation (default 32; exact divergence for "
                               "images up to 1024 values)", GEODESIC_RANGES["length_points"]))
    p.add_argument("--threads", type=int, default=1,
                   help=ranged("torch threads, 0 = torch default (default 1: small models run fastest on one thread)",
                               GEODESIC_RANGES["threads"]))
    p.add_argument("--convert", action="store_true",
                   help="convert images to the model's channel count (e.g. RGB -> grey) instead of failing")
    p.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "image",
        help="image Diffusion Edit Distance, geodesic strips, distance matrices, digits model training",
        description="Spacetime geometry of an image diffusion model: Diffusion Edit Distance (geodesic "
        "length between two images), a strip of denoising means along the geodesic, distance matrices.",
    )
    sub = p.add_subparsers(dest="image_command", metavar="IMAGE_COMMAND")
    sub.required = True

    d = sub.add_parser("distance", help="Diffusion Edit Distance between two PNG images")
    d.add_argument("image_a")
    d.add_argument("image_b")
    d.add_argument("--json", dest="json_out", default=None,
                   help="also write the result and settings as JSON (a file is replaced; folders are created)")
    _add_geodesic_options(d)

    g = sub.add_parser("geodesic", help="geodesic between two images as a PNG strip of denoising means")
    g.add_argument("image_a")
    g.add_argument("image_b")
    g.add_argument("--out", required=True,
                   help="output PNG (a JSON with settings and numbers is written beside it; files are replaced, "
                        "folders created)")
    g.add_argument("--frames", type=int, default=9, help=ranged("images in the strip (default 9)", FRAMES))
    _add_geodesic_options(g)

    m = sub.add_parser("matrix", help="Diffusion Edit Distance matrix of all PNG images in a folder")
    m.add_argument("directory")
    m.add_argument("--out", required=True,
                   help="output CSV (a JSON with settings is written beside it; files are replaced, folders created)")
    m.add_argument("--pattern", default="*.png", help="file pattern inside the folder (default *.png)")
    m.add_argument("--progress", action="store_true", help="show a progress bar")
    m.add_argument("--batch-pairs", type=int, default=16,
                   help=ranged("pairs solved together, one denoiser call per evaluation (default 16)", BATCH_PAIRS))
    m.add_argument("--workers", default="auto",
                   help=ranged("processes solving batches of pairs, one torch thread each; distances are bitwise "
                               "those of 1 process at --threads 1; auto = the usable CPU cores, capped by the batches "
                               "(default auto)", WORKERS))
    _add_geodesic_options(m, preset="matrix")

    t = sub.add_parser("train", help="train the small EDM model on scikit-learn's 8x8 digits")
    t.add_argument("--out", required=True,
                   help="run directory (resumes if it holds last.pt; refused if it holds another command's results)")
    t.add_argument("--steps", type=int, default=3000, help=ranged("optimiser steps (default 3000)", TRAIN_RANGES["steps"]))
    t.add_argument("--batch-size", type=int, default=128,
                   help=ranged("images per step (default 128)", TRAIN_RANGES["batch_size"]))
    t.add_argument("--lr", type=float, default=2e-3,
                   help=ranged("Adam learning rate (default 0.002)", TRAIN_RANGES["lr"]))
    t.add_argument("--base-channels", type=int, default=16,
                   help=ranged("U-Net width (default 16)", TRAIN_RANGES["base_channels"]))
    t.add_argument("--seed", type=int, default=0, help=ranged("random seed (default 0)", TRAIN_RANGES["seed"]))
    t.add_argument("--threads", type=int, default=1,
                   help=ranged("torch threads, 0 = torch default (default 1)", TRAIN_RANGES["threads"]))
    t.add_argument("--progress", action="store_true")
    t.add_argument("--dry-run", action="store_true", help="print the resolved settings and exit")
    return p


def _geodesic_settings(args):
    import torch

    from spacetime_md.image.presets import DEFAULT_T_MIN, resolve_preset

    check_options(args, GEODESIC_RANGES)
    if args.threads and not args.dry_run:
        torch.set_num_threads(args.threads)

    config = resolve_preset(args.preset, seed=args.seed, max_steps=args.max_steps)
    t_min = DEFAULT_T_MIN if args.t_min is None else args.t_min
    return config, t_min


def _length_points(args) -> int:
    from spacetime_md.image.presets import DEFAULT_LENGTH_POINTS

    return DEFAULT_LENGTH_POINTS if args.length_points is None else args.length_points


def _settings_dict(args, config, t_min) -> dict:
    return {"checkpoint": args.checkpoint, "preset": args.preset, "t_min": t_min,
            "chunk_points": args.chunk_points, "seed": args.seed, "threads": args.threads,
            "length_points": _length_points(args), "geodesic_config": config.to_dict()}


def _distance_text(geo) -> str:
    """``12.34 (exact length on 32 points)`` or ``12.34 +- 0.05 (Hutchinson length ..., standard error)``."""
    if geo.length_method == "exact":
        text = f"{geo.distance:.4g} (exact divergence, {geo.length_points} curve points)"
    else:
        text = (f"{geo.distance:.4g} +- {geo.distance_se:.2g} (standard error of the Hutchinson length, "
                f"{geo.length_points} curve points)")
    if geo.n_negative_segments:
        from spacetime_md.image.distance import _length_clamp  # the rule the reported length follows

        counted = ("counted by their magnitude" if _length_clamp(geo.result) == "abs"
                   else "counted as length 0: the distance is underestimated")
        text += (f"; warning: {geo.n_negative_segments} of {geo.length_points - 1} segments have negative terms "
                 f"(the model's Jacobian trace), {counted}")
    return text


def _check_file_out(path: str, flag: str, beside_json: bool) -> None:
    """``--out``/``--json`` must be writable files, checked before the geodesic is solved."""
    from pathlib import Path

    if beside_json and Path(path).suffix.lower() == ".json":
        raise ValueError(f"{flag}: expected a file name not ending in .json (the settings are written to a .json "
                         f"beside it), got {path!r}")
    check_output_file(path, flag, beside=(".json",) if beside_json else ())


def _check_image_files(*paths: str) -> None:
    """Each input image exists and reads (the model's shape is checked once it is loaded)."""
    from spacetime_md.image.io import load_image

    for path in paths:
        load_image(path)


def _load_pair(args, model):
    from spacetime_md.image.io import load_image

    a = load_image(args.image_a, event_shape=model.event_shape, convert=args.convert)
    b = load_image(args.image_b, event_shape=model.event_shape, convert=args.convert)
    return a, b


def _solve_pair(args, config, t_min):
    """Load the model and both images, solve their geodesic: ``(model, ImageGeodesic)``."""
    from spacetime_md.image.distance import image_geodesic
    from spacetime_md.image.model import load_image_model

    model = load_image_model(args.checkpoint)
    a, b = _load_pair(args, model)
    geo = image_geodesic(model.denoiser(), model.to_model(a), model.to_model(b), t_min=t_min,
                         config=config, chunk_points=args.chunk_points, length_points=_length_points(args))
    return model, geo


def _dry_run_or_solve(args, config, t_min, settings):
    """``--dry-run``: check the image files, print the settings and return ``None``; else ``(model, geodesic)``."""
    if args.dry_run:
        _check_image_files(args.image_a, args.image_b)
        print(json.dumps(settings, indent=2))
        return None
    return _solve_pair(args, config, t_min)


def _run_distance(args) -> int:
    from spacetime_md.image.io import write_json

    config, t_min = _geodesic_settings(args)
    settings = _settings_dict(args, config, t_min)
    if args.json_out:
        _check_file_out(args.json_out, "--json", beside_json=False)
    solved = _dry_run_or_solve(args, config, t_min, settings)
    if solved is None:
        return 0
    model, geo = solved
    print(f"diffusion edit distance: {_distance_text(geo)}")
    converged = "converged" if geo.result is None or geo.result.converged else "stopped at --max-steps"
    print(f"energy {geo.energy:.6g} (straight line {geo.straight_line_energy:.6g}), "
          f"min log_snr {geo.log_snr_min:.3g}, solver {converged}, {geo.wall_time:.2f} s")
    if args.json_out:
        write_json(args.json_out, {"image_a": args.image_a, "image_b": args.image_b, **geo.summary(),
                                   "settings": settings})
    return 0


def _run_geodesic(args) -> int:
    from pathlib import Path

    from spacetime_md.image.io import save_geodesic_strip, write_json

    FRAMES.check("--frames", args.frames)
    config, t_min = _geodesic_settings(args)
    settings = {**_settings_dict(args, config, t_min), "frames": args.frames}
    _check_file_out(args.out, "--out", beside_json=True)
    solved = _dry_run_or_solve(args, config, t_min, settings)
    if solved is None:
        return 0
    model, geo = solved
    log_snr, means = geo.denoising_means(args.frames)
    out = Path(args.out)
    save_geodesic_strip(out, model.to_pixels(means), log_snr, title=f"DiffED {geo.distance:.4g}")
    write_json(out.with_suffix(".json"), {"image_a": args.image_a, "image_b": args.image_b, **geo.summary(),
                                          "strip_log_snr": [float(v) for v in log_snr], "settings": settings})
    print(f"diffusion edit distance: {_distance_text(geo)}; min log_snr along the geodesic {geo.log_snr_min:.3g}")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _run_matrix(args) -> int:
    from pathlib import Path

    from spacetime_md.image.matrix import distance_matrix, write_matrix_csv
    from spacetime_md.image.io import load_image_folder, write_json
    from spacetime_md.image.model import load_image_model

    BATCH_PAIRS.check("--batch-pairs", args.batch_pairs)
    workers = _workers(args.workers)
    config, t_min = _geodesic_settings(args)
    settings = {**_settings_dict(args, config, t_min), "directory": args.directory, "pattern": args.pattern,
                "batch_pairs": args.batch_pairs, "workers": args.workers}
    _check_file_out(args.out, "--out", beside_json=True)
    if args.dry_run:
        print(json.dumps(settings, indent=2))
        return 0
    model = load_image_model(args.checkpoint)
    names, pixels = load_image_folder(args.directory, event_shape=model.event_shape, pattern=args.pattern,
                                      convert=args.convert)
    result = distance_matrix(model.denoiser(), model.to_model(pixels), t_min=t_min, config=config,
                             chunk_points=args.chunk_points, progress=args.progress, batch_pairs=args.batch_pairs,
                             length_points=_length_points(args), workers=workers)
    settings["workers_used"] = result.extra["workers"]
    out = Path(args.out)
    write_matrix_csv(out, names, result.distances)
    write_json(out.with_suffix(".json"), {**result.summary(), "names": names, "settings": settings})
    width = max(len(n) for n in names)
    print(" " * width + " " + " ".join(f"{n[:8]:>8}" for n in names))
    for name, row in zip(names, result.distances):
        print(f"{name:>{width}} " + " ".join(f"{v:8.3f}" for v in row))
    print(f"wrote {out} and {out.with_suffix('.json')} ({result.wall_time:.1f} s, "
          f"{result.pairs_per_minute:.3g} pairs per minute)")
    return 0


def _workers(value: str) -> int:
    """``--workers``: ``auto`` (the usable cores; ``distance_matrix`` caps it by the batches) or an integer."""
    from spacetime_md.core.threads import usable_cores

    workers = parse_workers(value)
    return usable_cores() if workers == "auto" else workers


def _train_command(args) -> str:
    parts = ["spacetime-md", "image", "train", "--out", args.out, "--steps", str(args.steps),
             "--batch-size", str(args.batch_size), "--lr", repr(args.lr), "--base-channels",
             str(args.base_channels), "--seed", str(args.seed), "--threads", str(args.threads)]
    return shlex.join(parts)


def _run_train(args) -> int:
    from spacetime_md._outputs import finish_output_dir, list_outputs, prepare_output_dir
    from spacetime_md.image.training import ImageTrainConfig

    check_options(args, TRAIN_RANGES)
    config = ImageTrainConfig(n_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              base_channels=args.base_channels, seed=args.seed, threads=args.threads)
    outputs = ("config.json", "metrics.jsonl", "last.pt", "model.pt", "model.json")
    # A rerun continues (or repeats) the training in --out; another command's results are refused.
    prepare_output_dir(args.out, "image train", resume=True, outputs=outputs, dry_run=args.dry_run)
    if args.dry_run:
        print(json.dumps({"train_config": config.to_dict(), "out": args.out, "data": "sklearn load_digits (train split)"},
                         indent=2))
        return 0
    from spacetime_md.image.model import ImageDiffusionModel
    from spacetime_md.image.training import N_DIGITS_TEST, load_digits_images, train_image_model

    pixels, _ = load_digits_images("train")
    metadata = {"data": "scikit-learn load_digits, train split (fixed permutation seed 0, last "
                        f"{N_DIGITS_TEST} images held out)",
                "pixel_range": [0.0, 1.0], "model_units": "x = 2 * pixel - 1",
                "command": _train_command(args)}
    model = train_image_model(ImageDiffusionModel.to_model(pixels), config, args.out, metadata=metadata,
                              progress=args.progress)
    finish_output_dir(args.out, list_outputs(args.out, outputs))
    print(f"trained {model.n_parameters()} parameters for {config.n_steps} steps; wrote {args.out}/model.pt "
          f"and {args.out}/model.json")
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"distance": _run_distance, "geodesic": _run_geodesic, "matrix": _run_matrix, "train": _run_train}
    return handlers[args.image_command](args)
