"""DiffED as a distance (issue 25): symmetry, seed stability, pairs per minute, what it is for.

Everything on held-out 8x8 digits (``load_digits_images("test")``, never seen by the shipped
model), ``--threads`` torch threads (default 1), the ``fast`` preset unless ``--preset``.

``pairs`` part: ``--pairs`` random pairs (seed 0; ``--start`` skips the first ones, so a run can
be split over processes). For each pair
- ``d(a, b)`` and ``d(b, a)`` through :func:`spacetime_md.image.image_geodesic` (the canonical
  order makes them bitwise equal: reported as the symmetry error);
- with ``--orientation-check``, the *solver* asymmetry that the canonical order hides: the same
  pair solved in the non-canonical orientation (same probe seed), relative to ``d(a, b)``;
- ``d`` with another seed (``config.seed = 1``): the spread of the optimiser over probes (0 with
  an exact-divergence solver: nothing random), the estimator standard error of each ``d`` (0
  with the exact divergence), and both lengths of the two solved curves, negative exact terms
  counted as 0 and as ``|t|`` (``ImageGeodesic.segment_terms``), with their seed changes;
- ``--clamp``, ``--divergence``, ``--n-points``, ``--max-steps`` override the preset (pairs and
  matrix parts);
- ``--length-check`` pairs: the exact length at 32 and 64 points and a 16-draw Hutchinson length
  with its standard error and cost in denoiser rows.

``matrix`` part: the distance matrix of ``--images`` held-out digits (stratified, the same number
per class) with :func:`spacetime_md.image.distance_matrix` (batched pairs), its wall and CPU
time (with ``--workers N``: N spawned processes, one thread each, their CPU time included;
the load average before and after is recorded), pairs per minute, and the extrapolation to a 100 x 100 matrix (4950 pairs, linear in the
pairs); leave-one-out nearest-neighbour class accuracy by DiffED, Euclidean pixel distance and
1 - SSIM (SSIM: ``bench_image.ssim``), and Spearman / Kendall rank agreement of the three over
all pairs.

``speed`` part: ``distance_matrix`` of ``--speed-images`` digits, this implementation against
``--baseline`` (a copy of a previous ``distance.py``, imported by path) in the same process.

    python benchmarks/bench_diffed.py [--part pairs|matrix|speed|all] [--pairs 20] [--images 20]
        [--preset fast] [--length-points 32] [--workers 1] [--baseline OLD.py] [--out FILE.json]

Timings are wall clock on whatever else the machine runs, plus the process's CPU time (what one
idle core would need); compare wall times from one process only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_image import rank_stats, ssim  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def bench_config(args):
    """``--preset`` with the ``--clamp`` / ``--divergence`` / ``--n-points`` / ``--max-steps`` overrides."""
    from spacetime_md.image import resolve_preset

    config = resolve_preset(args.preset, seed=0, max_steps=args.max_steps)
    changes = {}
    if args.clamp:
        changes["clamp"] = args.clamp
    if args.divergence:
        changes["divergence"] = args.divergence
    if args.n_points:
        changes["n_points"] = tuple(int(v) for v in args.n_points.split(","))
    return dataclasses.replace(config, **changes)


def both_lengths(geo) -> dict:
    """The reported length of ``geo``'s exact terms with negative terms counted as 0 and as ``|t|``."""
    terms = geo.segment_terms
    if terms is None:
        return {"segment": float("nan"), "abs": float("nan")}
    return {"segment": float(terms.clamp_min(0).sqrt().sum()), "abs": float(terms.abs().sqrt().sum())}


def run_pairs(args, model, den, pixels, labels) -> dict:
    from spacetime_md.core import CountingDenoiser
    from spacetime_md.image import evaluate_curve_length, image_geodesic
    from spacetime_md.image.canonical import _anchor, _Pair, image_key, pair_seed
    from spacetime_md.image.distance import _finish, _LengthSettings, _solve_pairs

    config = bench_config(args)
    rng = np.random.default_rng(0)
    pairs = []
    while len(pairs) < args.start + args.pairs:
        i, j = (int(v) for v in rng.choice(len(labels), 2, replace=False))
        if (i, j) not in pairs:
            pairs.append((i, j))
    pairs = pairs[args.start:]
    anchor, alpha = _anchor(0.1)
    rows = []
    for k, (i, j) in enumerate(pairs):
        a, b = model.to_model(pixels[i]), model.to_model(pixels[j])
        t0, c0 = time.perf_counter(), time.process_time()
        ab = image_geodesic(den, a, b, config=config, straight_line_energy=False)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        ba = image_geodesic(den, b, a, config=config, straight_line_energy=False) if k < args.swap_check else None
        d_other = float("nan")
        if args.orientation_check:
            # the orientation the canonical order did not pick, with the same probe seed
            fa, fb = a.reshape(-1), b.reshape(-1)
            seed = pair_seed(config.seed, image_key(fa), image_key(fb))
            other = _Pair(fa, fb, seed) if ab.reversed else _Pair(fb, fa, seed)
            (res,) = _solve_pairs(den, [other], anchor, alpha, config, None, None, None, 1.0)
            settings = _LengthSettings(32, "auto", 16, None, None, None)
            d_other = _finish(den, 0.1, anchor, [other], [res], [False], settings, False, 0.0)[0].distance
        c1 = time.process_time()
        seed1 = image_geodesic(den, a, b, config=dataclasses.replace(config, seed=1), straight_line_energy=False)
        cpu_seconds_seed1 = time.process_time() - c1
        len0, len1 = both_lengths(ab), both_lengths(seed1)
        row = {"i": i, "j": j, "label_i": int(labels[i]), "label_j": int(labels[j]), "d_ab": ab.distance,
               "d_ba": ba.distance if ba else None,
               "symmetry_error": abs(ab.distance - ba.distance) / ab.distance if ba else None,
               "solver_asymmetry": abs(d_other - ab.distance) / ab.distance, "d_seed1": seed1.distance,
               "seed_change": abs(seed1.distance - ab.distance) / ab.distance, "seconds": seconds,
               "cpu_seconds": cpu_seconds, "cpu_seconds_seed1": cpu_seconds_seed1,
               # the same two curves' lengths with negative terms counted as 0 and as |t|
               "length_segment": [len0["segment"], len1["segment"]], "length_abs": [len0["abs"], len1["abs"]],
               "seed_change_segment": abs(len1["segment"] - len0["segment"]) / len0["segment"],
               "seed_change_abs": abs(len1["abs"] - len0["abs"]) / len0["abs"],
               "distance_se": ab.distance_se, "distance_se_seed1": seed1.distance_se,
               "n_negative_segments_seed1": seed1.n_negative_segments,
               "n_steps": ab.result.n_steps, "converged": ab.result.converged,
               "rows": ab.result.n_denoiser_evals, "log_snr_min": ab.log_snr_min,
               "n_negative_segments": ab.n_negative_segments}
        if k < args.length_check:
            counting = CountingDenoiser(den)
            lengths = {}
            for name, points, method in (("exact_32", 32, "exact"), ("exact_64", 64, "exact"),
                                         ("hutchinson16_32", 32, "hutchinson")):
                with torch.no_grad():
                    ls, xs = ab.result.curve.evaluate(points)
                before, t1 = counting.n_evals, time.perf_counter()
                length, se, _, _, _ = evaluate_curve_length(counting, ls, xs, divergence=method, n_probes=16, seed=5)
                lengths[name] = {"length": length, "se": se, "rows": counting.n_evals - before,
                                 "seconds": time.perf_counter() - t1}
            row["length_check"] = lengths
        rows.append(row)
        if args.partial:
            from spacetime_md.image.io import write_json

            write_json(args.partial, {"rows": rows})  # a run cut short keeps what it measured
        print(f"pair {k + 1:2d}/{len(pairs)} ({row['label_i']},{row['label_j']}): d {ab.distance:7.3f}  "
              f"swap {row['symmetry_error'] if ba else float('nan'):.1e}  solver asym {row['solver_asymmetry']:.4f}  "
              f"seed {row['seed_change']:.4f}  {seconds:5.1f} s  steps {row['n_steps']}"
              f"{'' if row['converged'] else ' (not converged)'}", flush=True)
    return {"config": config.to_dict(), "rows": rows, "summary": summarize_pairs(rows)}


def summarize_pairs(rows: list[dict]) -> dict:
    sym = [r["symmetry_error"] for r in rows if r["symmetry_error"] is not None] or [float("nan")]
    asym = [r["solver_asymmetry"] for r in rows if r["solver_asymmetry"] == r["solver_asymmetry"]] or [float("nan")]
    seed = [r["seed_change"] for r in rows]
    summary = {"n_pairs": len(rows), "max_symmetry_error": max(sym), "swap_checked": len(sym),
               "max_solver_asymmetry": max(asym),
               "median_solver_asymmetry": float(np.median(asym)), "max_seed_change": max(seed),
               "median_seed_change": float(np.median(seed)),
               "pairs_seed_change_le_2pct": int(sum(s <= 0.02 for s in seed)),
               **{f"{stat}_seed_change_length_{kind}": fn([r[f"seed_change_{kind}"] for r in rows])
                  for kind in ("segment", "abs") for stat, fn in (("median", np.median), ("max", max))},
               **{f"pairs_le_2pct_length_{kind}": int(sum(r[f"seed_change_{kind}"] <= 0.02 for r in rows))
                  for kind in ("segment", "abs")},
               "median_cpu_seconds_per_solve": float(np.median([r["cpu_seconds"] for r in rows]
                                                               + [r["cpu_seconds_seed1"] for r in rows])),
               "median_seconds_per_pair_alone": float(np.median([r["seconds"] for r in rows])),
               "median_cpu_seconds_per_pair_alone": float(np.median([r["cpu_seconds"] for r in rows])),
               "max_distance_se": max(max(r["distance_se"], r["distance_se_seed1"]) for r in rows),
               "negative_segments": int(sum(r["n_negative_segments"] > 0 for r in rows)),
               "negative_segments_total": int(sum(r["n_negative_segments"] + r["n_negative_segments_seed1"]
                                                  for r in rows)),
               "converged": int(sum(r["converged"] for r in rows))}
    print(json.dumps(summary, indent=1), flush=True)
    return summary


def stratified(labels: np.ndarray, n: int) -> list[int]:
    per_class = max(1, n // 10)
    picked = []
    for c in range(10):
        picked += [int(v) for v in np.flatnonzero(labels == c)[:per_class]]
    return picked[:n]


def nn_accuracy(dist: np.ndarray, labels: np.ndarray) -> float:
    d = dist.copy()
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[d.argmin(1)] == labels))


def _children_cpu() -> float:
    """CPU seconds of this process's finished child processes (the matrix's workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_matrix(args, model, den, pixels, labels) -> dict:
    from spacetime_md.image import distance_matrix

    config = bench_config(args)
    idx = stratified(labels, args.images)
    pix = pixels[idx]
    lab = labels[idx]
    n = len(idx)
    load_before = os.getloadavg()
    c0 = time.process_time()
    c0_children = _children_cpu()
    result = distance_matrix(den, model.to_model(pix), config=config, batch_pairs=args.batch_pairs,
                             length_points=args.length_points, workers=args.workers)
    # this process plus its (joined) worker processes
    cpu = time.process_time() - c0 + _children_cpu() - c0_children
    n_pairs = n * (n - 1) // 2
    ppm = result.pairs_per_minute
    cpu_ppm = 60 * n_pairs / cpu
    euclid = torch.cdist(pix.flatten(1).double(), pix.flatten(1).double()).numpy()
    dssim = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dssim[i, j] = dssim[j, i] = 1.0 - ssim(pix[i], pix[j])
    iu = np.triu_indices(n, 1)
    d = result.distances
    out = {
        "config": config.to_dict(), "indices": idx, "labels": lab.tolist(), "n_images": n, "n_pairs": n_pairs,
        "batch_pairs": args.batch_pairs, "length_points": args.length_points, "threads": args.threads,
        "workers": result.extra["workers"], "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_time_s": result.wall_time, "pairs_per_minute": ppm, "cpu_seconds": cpu,
        "pairs_per_cpu_minute": cpu_ppm,
        # linear in the pairs; the first at this machine's load, the second in CPU time spread over 2 cores
        "extrapolated_100x100_minutes": 4950 / ppm,
        "extrapolated_100x100_cpu_minutes_over_2_cores": 4950 / cpu_ppm / 2,
        "nn_accuracy": {"diffed": nn_accuracy(d, lab), "euclidean": nn_accuracy(euclid, lab),
                        "one_minus_ssim": nn_accuracy(dssim, lab)},
        "rank_agreement": {"diffed_vs_euclidean": rank_stats(d[iu], euclid[iu]),
                           "diffed_vs_one_minus_ssim": rank_stats(d[iu], dssim[iu]),
                           "euclidean_vs_one_minus_ssim": rank_stats(euclid[iu], dssim[iu])},
        "distances": d.tolist(),
    }
    print(json.dumps({k: v for k, v in out.items() if k not in ("distances", "config")}, indent=1), flush=True)
    return out


def load_baseline(path: str):
    """The previous implementation, imported by file path (a copy of the old ``distance.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diffed_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_speed(args, model, den, pixels, labels) -> dict:
    """Pairs per minute of ``distance_matrix``: this implementation against ``--baseline``, same process.

    The two run alternately (baseline first), ``--repeats`` times each, on the same images
    and settings; distances are compared pair by pair.
    """
    from spacetime_md.image import distance_matrix, resolve_preset

    config = resolve_preset(args.preset, seed=0)
    idx = stratified(labels, args.speed_images)
    images = model.to_model(pixels[idx])
    runs = {"current": distance_matrix}
    if args.baseline:
        runs = {"baseline": load_baseline(args.baseline).distance_matrix, **runs}
    out: dict = {"n_images": len(idx), "n_pairs": len(idx) * (len(idx) - 1) // 2, "runs": {k: [] for k in runs}}
    dist = {}
    for rep in range(args.repeats):
        for name, fn in runs.items():
            points = args.baseline_length_points if name == "baseline" else args.length_points
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn(den, images, config=config, batch_pairs=args.batch_pairs, length_points=points)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            dist[name] = result.distances
            out["runs"][name].append({"seconds": seconds, "cpu_seconds": cpu, "length_points": points,
                                      "pairs_per_minute": 60 * out["n_pairs"] / seconds,
                                      "pairs_per_cpu_minute": 60 * out["n_pairs"] / cpu})
            print(f"{name:8s} run {rep + 1}: {seconds:6.1f} s wall ({60 * out['n_pairs'] / seconds:6.1f} pairs/min), "
                  f"{cpu:6.1f} s CPU ({60 * out['n_pairs'] / cpu:6.1f} pairs per CPU minute)", flush=True)
    best = {k: max(r["pairs_per_minute"] for r in v) for k, v in out["runs"].items()}
    best_cpu = {k: max(r["pairs_per_cpu_minute"] for r in v) for k, v in out["runs"].items()}
    out["best_pairs_per_minute"] = best
    out["best_pairs_per_cpu_minute"] = best_cpu
    if "baseline" in dist:
        iu = np.triu_indices(len(idx), 1)
        rel = np.abs(dist["current"][iu] - dist["baseline"][iu]) / dist["baseline"][iu]
        out["speedup"] = best["current"] / best["baseline"]
        out["speedup_cpu"] = best_cpu["current"] / best_cpu["baseline"]
        out["max_relative_difference"] = float(rel.max())
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("pairs", "matrix", "speed", "all"), default="all")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--start", type=int, default=0, help="skip the first START pairs (continue a run)")
    parser.add_argument("--length-check", type=int, default=3)
    parser.add_argument("--swap-check", type=int, default=10**9,
                        help="solve d(b, a) too for the first SWAP_CHECK pairs (default all)")
    parser.add_argument("--orientation-check", action="store_true",
                        help="also solve each pair in the non-canonical orientation (same probe seed)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--batch-pairs", type=int, default=16)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--clamp", choices=("segment", "abs"), default=None,
                        help="override the preset's clamp (the reported length counts negative terms the same way)")
    parser.add_argument("--divergence", choices=("hutchinson", "exact"), default=None,
                        help="override the preset's divergence")
    parser.add_argument("--n-points", default=None, help="override the preset's stages, e.g. 8,16")
    parser.add_argument("--max-steps", type=int, default=None, help="override the preset's max_steps")
    parser.add_argument("--length-points", type=int, default=32)
    parser.add_argument("--baseline-length-points", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the matrix part (one thread each)")
    parser.add_argument("--speed-images", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline", default=None,
                        help="path of a copy of the previous distance.py, timed against this one (speed part)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--partial", default=None, help="rewrite the pair rows measured so far to this JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from spacetime_md.image import load_digits_images, load_digits_model

    model = load_digits_model()
    den = model.denoiser()
    pixels, labels = load_digits_images("test")
    report = {"machine": machine(), "command": "python benchmarks/bench_diffed.py " + " ".join(argv or sys.argv[1:])}
    if args.part in ("pairs", "all"):
        report["pairs"] = run_pairs(args, model, den, pixels, labels)
    if args.part in ("matrix", "all"):
        report["matrix"] = run_matrix(args, model, den, pixels, labels)
    if args.part == "speed":
        report["speed"] = run_speed(args, model, den, pixels, labels)
    out = Path(args.out) if args.out else RESULTS / f"diffed_{args.part}.json"
    from spacetime_md.image.io import write_json

    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
