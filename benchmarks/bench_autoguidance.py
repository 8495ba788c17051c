"""Autoguidance for the molecular model: which weight, on which noise levels? (issues 4, 22)

Any molecule: the CVs, states and chiral centres come from the checkpoint's system. Samples a trained model with :class:`~spacetime_md.core.AutoGuidedDenoiser` (the model
extrapolated away from an early EMA snapshot of the same run, ``D + (w - 1)(D - G)``) for a
grid of weights ``w`` and guided ``log_snr`` windows, the same random numbers in every row
(ancestral sampler). Settings are *selected* by the Ramachandran JSD against the model's own
training frames; the JSD against an independent MD run is printed next to it for information
only (that run is what `spacetime-md evaluate` reports, so it must not pick the settings).
The JSD is the mean over the residues' Ramachandran pairs (per residue in the JSON). Every row
also gives the median OpenMM energy, the bond-length RMS deviation, the lowest fraction of
samples that keep a chiral centre's handedness, and its JSD as a ratio to the unguided model
(``w = 1``) of the same run.

    python benchmarks/bench_autoguidance.py [--model runs/ala2_model_focus/model.pt]
        [--guide runs/ala2_model_focus/model_step003500.pt] [--data runs/ala2_samples]
        [--reference runs/ala2_samples_seed1] [--weights 1.5,2,2.5,3] [--windows=-1:6,all]
        [--n-samples 1000] [--n-steps 150] [--quick]
    python benchmarks/bench_autoguidance.py --model runs/tetra_model/model.pt \
        --guide runs/tetra_model/model_step003000.pt --data runs/tetra_50k --reference runs/tetra_ref_seed1

``--quick`` (300 samples, 60 steps, weight 2.5, window -2:8) uses the shipped guided pair
(``alanine-dipeptide-guided``) when ``--model`` does not exist. Where ``--data`` does not exist, 2 000 MD frames
(seed 0) are sampled first and stand in for the training frames.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from _md_frames import all_frames, md_samples_or_sample
from spacetime_md._atomic import write_json_atomic
from spacetime_md.core import AutoGuidedDenoiser
from spacetime_md.molecular import load_checkpoint, load_pretrained
from spacetime_md.molecular.model.evaluation import evaluate_samples
from spacetime_md.molecular.model.generate import sample_model
from spacetime_md.molecular.model.pretrained import checkpoint_system
from spacetime_md.molecular.model.dataset import load_dataset


def _quality(x: np.ndarray, train: np.ndarray, reference: np.ndarray | None, system) -> dict:
    """Mean per-residue JSD vs the training frames (selection) and the independent run (report),
    median energy, bond RMS deviation and the lowest per-centre chirality fraction."""
    vs_train = evaluate_samples(x, train, system=system)
    vs_ref = evaluate_samples(x, reference, system=system, energies=False) if reference is not None else None
    centres = vs_train.chirality_by_centre
    return {
        "jsd_train": vs_train.rama_jsd if vs_train.rama_jsd is not None else vs_train.cv_jsd,
        "jsd_independent": (vs_ref.rama_jsd if vs_ref.rama_jsd is not None else vs_ref.cv_jsd) if vs_ref else float("nan"),
        "jsd_train_by_residue": [r["jsd"] for r in vs_train.rama_jsd_by_residue],
        "jsd_independent_by_residue": [r["jsd"] for r in vs_ref.rama_jsd_by_residue] if vs_ref else [],
        "energy_median": vs_train.energy_median_model,
        "bond_rms": vs_train.bond_rms_model,
        "chirality_min": min((c["fraction_model"] for c in centres), default=float("nan")),
        "chirality_by_centre": [c["fraction_model"] for c in centres],
    }


def _window(text: str) -> tuple[float, float]:
    if text == "all":
        return -math.inf, math.inf
    lo, hi = (float(v) for v in text.split(":"))
    return lo, hi


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/ala2_model_focus/model.pt")
    parser.add_argument("--guide", default="runs/ala2_model_focus/model_step003500.pt")
    parser.add_argument("--data", default="runs/ala2_samples", help="the model's training samples (selection)")
    parser.add_argument("--reference", default="runs/ala2_samples_seed1", help="independent MD samples (report)")
    parser.add_argument("--weights", default="1.5,2,2.5,3")
    parser.add_argument("--windows", default="-1:6,all", help="comma-separated lo:hi log_snr windows or 'all'")
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--n-steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/autoguidance.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_samples, args.n_steps = min(args.n_samples, 300), min(args.n_steps, 60)
        args.weights, args.windows = "2.5", "-2:8"
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.quick and not Path(args.model).exists():
        args.model = args.guide = "alanine-dipeptide-guided"
        shipped = load_pretrained(args.model)
        model, guide = shipped.denoiser, shipped.guide
    else:
        model, guide = load_checkpoint(args.model), load_checkpoint(args.guide)
    with md_samples_or_sample(args.data, 2000, 0, "training frames") as data:
        dataset = load_dataset(data, float(model.metadata.get("train_config", {}).get("holdout_fraction", 0.1)))
    system = checkpoint_system(model)
    train = dataset.train_xyz
    reference = all_frames(args.reference) if Path(args.reference).exists() else None
    md = train[np.linspace(0, len(train) - 1, 2000).astype(np.int64)]
    md_quality = evaluate_samples(md, train, system=system)

    grid = [(1.0, (-math.inf, math.inf))] + [(float(w), _window(win)) for win in args.windows.split(",")
                                             for w in args.weights.split(",")]
    rows = []
    header = (f"{'w':>5} {'log_snr window':>16} {'JSD train':>10} {'ratio':>6} {'JSD indep.':>11} "
              f"{'E median':>9} {'bond RMS':>9} {'chiral min':>10} {'time s':>7}")
    print(f"{system.name}: {args.n_samples} samples, ancestral {args.n_steps} steps; MD: E median "
          f"{md_quality.energy_median_model:.1f} kJ/mol, bond RMS {md_quality.bond_rms_model:.4f} A")
    print(header)
    for weight, (lo, hi) in grid:
        t = time.perf_counter()
        denoiser = AutoGuidedDenoiser(model, guide, weight, lo, hi)
        x = sample_model(denoiser, args.n_samples, n_steps=args.n_steps, method="ancestral",
                         generator=torch.Generator().manual_seed(args.seed), batch_size=250)
        row = {"weight": weight, "log_snr_min": lo, "log_snr_max": hi, **_quality(x, train, reference, system),
               "wall_time_s": time.perf_counter() - t}
        row["jsd_train_ratio"] = row["jsd_train"] / rows[0]["jsd_train"] if rows else 1.0
        rows.append(row)
        window = "unguided" if weight == 1.0 else ("all" if math.isinf(lo) and math.isinf(hi) else f"[{lo:g}, {hi:g})")
        print(f"{weight:>5g} {window:>16} {row['jsd_train']:>10.4f} {row['jsd_train_ratio']:>6.2f} "
              f"{row['jsd_independent']:>11.4f} {row['energy_median']:>9.1f} {row['bond_rms']:>9.4f} "
              f"{row['chirality_min']:>10.4f} {row['wall_time_s']:>7.0f}", flush=True)
    best = min(rows, key=lambda r: r["jsd_train"])
    print(f"selected by JSD vs training frames: w = {best['weight']:g} on [{best['log_snr_min']:g}, "
          f"{best['log_snr_max']:g}): {best['jsd_train']:.4f} ({best['jsd_train_ratio']:.2f}x the unguided "
          f"{rows[0]['jsd_train']:.4f}); independent run {best['jsd_independent']:.4f} vs {rows[0]['jsd_independent']:.4f}")
    report = {"model": args.model, "guide": args.guide, "data": args.data, "reference": args.reference,
              "system": system.name, "n_samples": args.n_samples, "n_steps": args.n_steps,
              "md_energy_median": md_quality.energy_median_model,
              "rows": rows, "selected": best,
              "summary": {"jsd_unguided": rows[0]["jsd_train"], "jsd_selected": best["jsd_train"],
                          "ratio_selected": best["jsd_train_ratio"], "weight_selected": best["weight"]},
              "wall_time_s": time.perf_counter() - t0}
    out = write_json_atomic(args.out, report)
    print(f"written {out} ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
