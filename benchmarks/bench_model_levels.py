"""Which noise levels decide the model's Ramachandran distribution? (issue 4, model quality)

Two trained models A and B (default: the shipped 12 000-step model and the 24 000-step one, retired from the package:
rebuild it with the command in docs/models.md) are
combined into one sampler that uses B only for ``log_snr`` in a range and A elsewhere; every row
draws the same samples (same seed, ancestral sampler) and prints the Ramachandran JSD against an
independent MD set. Where swapping in B recovers most of the A -> B gain is where the extra
training paid, i.e. where training time is best spent (``spacetime-md train --focus-fraction``).
It also prints the JSD of A and B at 250-2000 samples and its 1/n extrapolation (the
finite-sample part of the JSD), next to the same for a second MD set.

    spacetime-md sample --system alanine-dipeptide --n-samples 20000 --out runs/ala2_samples_seed1 --seed 1
    python benchmarks/bench_model_levels.py [--a alanine-dipeptide] [--b runs/ala2_model_24k/model.pt]
        [--reference runs/ala2_samples_seed1] [--n-samples 1000] [--n-steps 150] [--quick]

Without ``--reference`` (or if it does not exist) a 5 000-frame reference is sampled first
(``--quick``: 2 000 frames, 300 model samples, 60 steps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _md_frames import all_frames, md_samples_or_sample
from spacetime_md._atomic import write_json_atomic
from spacetime_md.molecular import load_checkpoint, load_pretrained
from spacetime_md.molecular.model.generate import sample_model
from spacetime_md.molecular.model.metrics import jensen_shannon, phi_psi, ramachandran_histogram

ROWS = (("A", None), ("B", (-99.0, 99.0)), ("B below 0", (-99.0, 0.0)), ("B in [0, 4)", (0.0, 4.0)),
        ("B from 4", (4.0, 99.0)))


def load(name: str):
    return load_checkpoint(name) if name.endswith(".pt") else load_pretrained(name)


class Swapped(torch.nn.Module):
    """Denoiser B for ``lo <= log_snr < hi``, A elsewhere (one noise level per batch, as the samplers use)."""

    def __init__(self, a, b, window):
        super().__init__()
        self.a, self.b, self.window = a, b, window
        self.dim, self.length_scale_nm = a.dim, a.length_scale_nm

    def forward(self, x, log_snr):
        level = float(log_snr[0])
        use_b = self.window is not None and self.window[0] <= level < self.window[1]
        return (self.b if use_b else self.a)(x, log_snr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default="alanine-dipeptide", help="model A (shipped name or .pt)")
    parser.add_argument("--b", default="runs/ala2_model_24k/model.pt",
                        help="model B (shipped name or .pt; the default is the retired 24k model, rebuilt as in docs/models.md)")
    parser.add_argument("--reference", default="runs/ala2_samples_seed1", help="independent MD samples")
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--n-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/model_levels.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_samples, args.n_steps = min(args.n_samples, 300), min(args.n_steps, 60)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    a, b = load(args.a), load(args.b)
    with md_samples_or_sample(args.reference, 2000 if args.quick else 5000, 1, "reference") as reference_path:
        ref = all_frames(reference_path)
    second = ref[: len(ref) // 2], ref[len(ref) // 2:]
    ref_hist = ramachandran_histogram(phi_psi(ref))

    rows = []
    samples = {}
    print(f"{'row':<14}{'JSD':>8}{'time s':>9}   ({args.n_samples} samples, ancestral {args.n_steps} steps)")
    for name, window in ROWS:
        t = time.perf_counter()
        model = Swapped(a, b, window) if window is not None else a
        x = sample_model(model, args.n_samples, n_steps=args.n_steps, method="ancestral",
                         generator=torch.Generator().manual_seed(args.seed), batch_size=500)
        samples[name] = x
        jsd = jensen_shannon(ramachandran_histogram(phi_psi(x)), ref_hist)
        rows.append({"row": name, "window": window, "jsd": jsd, "wall_time_s": time.perf_counter() - t})
        print(f"{name:<14}{jsd:>8.4f}{rows[-1]['wall_time_s']:>9.0f}", flush=True)
    gain = rows[0]["jsd"] - rows[1]["jsd"]
    recovered = {r["row"]: (rows[0]["jsd"] - r["jsd"]) / gain if gain > 0 else float("nan") for r in rows[2:]}
    print("fraction of the A -> B gain recovered: "
          + ", ".join(f"{k} {v:.2f}" for k, v in recovered.items()))

    rng = np.random.default_rng(args.seed)
    sizes = [n for n in (250, 500, 1000, 2000) if n <= min(args.n_samples, len(second[0]))]
    finite = {}
    for label, angles, against in (("A", phi_psi(samples["A"]), ref_hist), ("B", phi_psi(samples["B"]), ref_hist),
                                   ("MD", phi_psi(second[0]), ramachandran_histogram(phi_psi(second[1])))):
        means = [np.mean([jensen_shannon(ramachandran_histogram(angles[rng.choice(len(angles), n, replace=False)]),
                                         against) for _ in range(10)]) for n in sizes]
        limit = float(np.polyfit(1.0 / np.array(sizes), means, 1)[1]) if len(sizes) >= 2 else float("nan")
        finite[label] = {"sizes": sizes, "jsd": [float(m) for m in means], "extrapolated": limit}
        print(f"JSD of {label} at n = {sizes}: " + " ".join(f"{m:.4f}" for m in means)
              + f" -> 1/n extrapolation {limit:.4f}")
    report = {"a": args.a, "b": args.b, "reference": str(args.reference), "n_samples": args.n_samples,
              "n_steps": args.n_steps, "rows": rows, "recovered": recovered, "finite_sample": finite,
              "summary": {"jsd_a": rows[0]["jsd"], "jsd_b": rows[1]["jsd"],
                          **{f"recovered_{k.replace(' ', '_')}": v for k, v in recovered.items()}},
              "wall_time_s": time.perf_counter() - t0}
    out = write_json_atomic(args.out, report)
    print(f"written {out} ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
