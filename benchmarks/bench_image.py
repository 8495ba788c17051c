"""Image benchmark: Diffusion Edit Distance on 8x8 digits, and chunked-energy memory.

Part 1 (issue 7 report): 10 pairs of held-out digits (5 same-class, 5 different-class, drawn
with a fixed seed from the test split the shipped model never saw). For each pair: DiffED with
the shipped model (``fast`` preset unless ``--preset``), Euclidean pixel distance and our own
SSIM (5x5 Gaussian window, sigma 1, valid positions, C1 = (0.01)^2, C2 = (0.03)^2 on [0, 1]
pixels). Reported: Spearman and Kendall rank correlations between the three dissimilarities
(SSIM enters as 1 - SSIM), how often each ranks a same-class pair below a different-class pair
(25 comparisons), the wall time per pair (median, one CPU thread) and the spread of DiffED
over Hutchinson probe seeds for one pair.

Part 2: peak memory of curve energy + gradient, unchunked (the core's ``curve_energy``) vs
:func:`spacetime_md.image.chunked_curve_energy`, each measured in a fresh subprocess as the rise
of the peak resident set size (``VmHWM`` after resetting it through ``/proc/self/clear_refs``)
over the resident size before the call. Shown for the digits model (D = 64) and an untrained
model of the same architecture on 1x32x32 images (D = 1024).

    python benchmarks/bench_image.py [--quick] [--out FILE.json] [--preset fast|accurate]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "image.json"


# --- similarity baselines ------------------------------------------------------------------


def gaussian_window(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r.square() / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 5, sigma: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004) of two ``(C, H, W)`` images in [0, 1], valid positions only."""
    c1, c2 = 0.01**2, 0.03**2
    w = gaussian_window(size, sigma)
    x, y = a.double()[:, None], b.double()[:, None]  # channels as batch

    def blur(t):
        return torch.nn.functional.conv2d(t, w)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx.square()
    vy = blur(y * y) - my.square()
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx.square() + my.square() + c1) * (vx + vy + c2))
    return float(s.mean())


def rank_stats(u, v) -> dict:
    from scipy.stats import kendalltau, spearmanr

    return {"spearman": float(spearmanr(u, v).statistic), "kendall": float(kendalltau(u, v).statistic)}


def separation(values, same) -> float:
    """Fraction of (same-class, different-class) pairs ranked same < different."""
    values, same = np.asarray(values), np.asarray(same)
    s, d = values[same], values[~same]
    return float(np.mean([x < y for x in s for y in d])) if len(s) and len(d) else float("nan")


def choose_pairs(labels: np.ndarray, n_same: int, n_diff: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pairs, same = [], []
    while len(pairs) < n_same + n_diff:
        i, j = (int(v) for v in rng.choice(len(labels), 2, replace=False))
        is_same = labels[i] == labels[j]
        if (is_same and same.count(True) < n_same) or (not is_same and same.count(False) < n_diff):
            pairs.append((i, j))
            same.append(bool(is_same))
    return pairs, same


def run_pairs(args) -> dict:
    from spacetime_md.image import image_geodesic, load_digits_images, load_digits_model, resolve_preset

    model = load_digits_model()
    den = model.denoiser()
    pixels, labels = load_digits_images("test")
    n_same, n_diff = (2, 2) if args.quick else (5, 5)
    pairs, same = choose_pairs(labels, n_same, n_diff)
    config = resolve_preset(args.preset, seed=0, max_steps=20 if args.quick else None)
    rows = []
    for k, (i, j) in enumerate(pairs):
        a, b = pixels[i], pixels[j]
        geo = image_geodesic(den, model.to_model(a), model.to_model(b), config=config)
        row = {
            "i": i, "j": j, "label_i": int(labels[i]), "label_j": int(labels[j]), "same_class": same[k],
            "diffed": geo.distance, "energy": geo.energy, "straight_line_energy": geo.straight_line_energy,
            "euclidean": float((a - b).norm()), "one_minus_ssim": 1.0 - ssim(a, b),
            "seconds": geo.wall_time, "n_steps": geo.result.n_steps, "converged": geo.result.converged,
            "n_denoiser_evals": geo.result.n_denoiser_evals, "log_snr_min": geo.log_snr_min,
        }
        rows.append(row)
        print(f"pair {k + 1:2d}/{len(pairs)} ({row['label_i']},{row['label_j']}): DiffED {row['diffed']:8.3f}  "
              f"euclid {row['euclidean']:6.3f}  1-SSIM {row['one_minus_ssim']:6.3f}  {row['seconds']:6.1f} s  "
              f"steps {row['n_steps']}{'' if row['converged'] else ' (not converged)'}", flush=True)
    d = [r["diffed"] for r in rows]
    e = [r["euclidean"] for r in rows]
    s = [r["one_minus_ssim"] for r in rows]
    # seed spread of DiffED for the first pair
    seeds = [1, 2] if args.quick else [1, 2, 3, 4]
    i, j = pairs[0]
    seed_d = [rows[0]["diffed"]] + [
        image_geodesic(den, model.to_model(pixels[i]), model.to_model(pixels[j]),
                       config=resolve_preset(args.preset, seed=sd, max_steps=config.max_steps)).distance
        for sd in seeds
    ]
    return {
        "preset": args.preset,
        "geodesic_config": config.to_dict(),
        "pairs": rows,
        "rank_agreement": {
            "diffed_vs_euclidean": rank_stats(d, e),
            "diffed_vs_one_minus_ssim": rank_stats(d, s),
            "euclidean_vs_one_minus_ssim": rank_stats(e, s),
        },
        "same_below_different": {"diffed": separation(d, same), "euclidean": separation(e, same),
                                 "one_minus_ssim": separation(s, same)},
        "seconds_per_pair": {"median": statistics.median(r["seconds"] for r in rows),
                             "min": min(r["seconds"] for r in rows), "max": max(r["seconds"] for r in rows)},
        "seed_spread_first_pair": {"distances": seed_d, "mean": statistics.mean(seed_d),
                                   "rel_std": statistics.stdev(seed_d) / statistics.mean(seed_d)},
    }


# --- memory --------------------------------------------------------------------------------


def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(spec: dict) -> dict:
    """Run in a fresh process: one energy + gradient, peak RSS rise in MiB and seconds."""
    import gc

    from spacetime_md.core import curve_energy, rademacher_probes
    from spacetime_md.image import ImageDiffusionModel, UNetConfig, chunked_curve_energy, from_edm_image, load_digits_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if spec["model"] == "digits":
        model = load_digits_model()
    else:
        model = ImageDiffusionModel(tuple(spec["event_shape"]), UNetConfig(base_channels=16), 0.5).eval()
        model.requires_grad_(False)
    den = from_edm_image(model, model.event_shape)
    dim = den.dim
    n_points, n_probes = spec["n_points"], spec["n_probes"]
    gen = torch.Generator().manual_seed(0)
    s = torch.linspace(0, 1, n_points)
    log_snr = 4.0 - 3.0 * torch.sin(torch.pi * s)
    x = torch.randn(n_points, dim, generator=gen) * 0.5
    probes = rademacher_probes(n_probes, (n_points, dim), generator=gen)

    def run():
        ls, xs = log_snr.clone().requires_grad_(), x.clone().requires_grad_()
        if spec["chunk_points"] is None:
            energy = curve_energy(den, ls, xs, divergence="hutchinson", probes=probes)
        else:
            energy = chunked_curve_energy(den, ls, xs, chunk_points=spec["chunk_points"], probes=probes)
        energy.backward()
        return float(energy.detach()), float(xs.grad.norm())

    # warm-up on a short curve (allocator pools, kernels), not measured
    chunked_curve_energy(den, log_snr[:3].clone().requires_grad_(), x[:3].clone().requires_grad_(),
                         chunk_points=3, probes=probes[:, :3]).backward()
    gc.collect()
    before = _proc_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    energy, grad_norm = run()
    seconds = time.perf_counter() - t0
    peak = _proc_kib("VmHWM")
    times = [seconds]
    for _ in range(spec["repeats"] - 1):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"peak_rise_mib": (peak - before) / 1024, "seconds_median": statistics.median(times),
            "energy": energy, "grad_norm": grad_norm}


def run_memory(args) -> list[dict]:
    cases = [
        {"model": "digits", "event_shape": [1, 8, 8], "n_points": 64, "n_probes": 4},
        {"model": "untrained", "event_shape": [1, 32, 32], "n_points": 32 if args.quick else 64, "n_probes": 4},
    ]
    out = []
    for case in cases:
        row = dict(case)
        for label, chunk in (("unchunked", None), ("chunked_8", 8)):
            spec = {**case, "chunk_points": chunk, "repeats": 1 if args.quick else 3}
            proc = subprocess.run([sys.executable, __file__, "--_memory-worker", json.dumps(spec)],
                                  capture_output=True, text=True, check=True)
            row[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        u, c = row["unchunked"], row["chunked_8"]
        row["peak_memory_ratio_chunked_over_unchunked"] = c["peak_rise_mib"] / u["peak_rise_mib"]
        row["time_ratio_chunked_over_unchunked"] = c["seconds_median"] / u["seconds_median"]
        row["energy_rel_diff"] = abs(c["energy"] - u["energy"]) / abs(u["energy"])
        out.append(row)
        print(f"{case['model']:>9} {tuple(case['event_shape'])} T={case['n_points']} P={case['n_probes']}: "
              f"peak rise {u['peak_rise_mib']:8.1f} MiB unchunked, {c['peak_rise_mib']:7.1f} MiB chunked(8) "
              f"-> ratio {row['peak_memory_ratio_chunked_over_unchunked']:.3f}; time {u['seconds_median']:.2f} s vs "
              f"{c['seconds_median']:.2f} s (x{row['time_ratio_chunked_over_unchunked']:.2f}); "
              f"energy rel. diff {row['energy_rel_diff']:.1e}", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 pairs, 20 steps per stage, smaller memory case")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--preset", default="fast", choices=["fast", "accurate"])
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--_memory-worker", dest="memory_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker is not None:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    torch.set_num_threads(1)
    result = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 torch thread",
              "quick": args.quick}
    t0 = time.perf_counter()
    if not args.skip_pairs:
        pairs = run_pairs(args)
        result["digits"] = pairs
        ra, sep = pairs["rank_agreement"], pairs["same_below_different"]
        print("\nrank agreement over the pairs      spearman  kendall")
        for name, v in ra.items():
            print(f"  {name:<32} {v['spearman']:8.3f} {v['kendall']:8.3f}")
        print("same-class pair ranked below different-class pair: "
              + ", ".join(f"{k} {v:.2f}" for k, v in sep.items()))
        sp = pairs["seconds_per_pair"]
        print(f"wall time per pair: median {sp['median']:.1f} s (min {sp['min']:.1f}, max {sp['max']:.1f})")
        ss = pairs["seed_spread_first_pair"]
        print(f"DiffED over {len(ss['distances'])} probe seeds (first pair): mean {ss['mean']:.3f}, "
              f"rel. std {ss['rel_std']:.3f}\n")
    if not args.skip_memory:
        result["memory"] = run_memory(args)
    result["wall_time"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
