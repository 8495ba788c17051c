"""What moves Table 1's MaxEnergy: geodesic knobs, low-variance floors, tempering, model accuracy.

Every row is the unconstrained (or low-variance) variant of :func:`run_table1` with 1000 paths of
the ``--preset`` Langevin recipe (default ``algorithm1``: 128 points x 15 unadjusted steps of
2e-3, the recipe these rows were first measured with; ``default`` for the Metropolis-adjusted
one), changing one thing against that recipe measured in the same run (``baseline`` row). The
step rule itself is studied in ``bench_table1_langevin.py``. Rows:

- ``nodes=N``, ``points=16,32``: the geodesic spline and solver discretisation;
- ``floor=R``: the low-variance variant with ``min_log_snr = R``;
- ``score-tau=T``: the model's denoiser tempered as ``D/T + (1 - 1/T) x/alpha`` (score / T);
- ``exact-tau=T`` (``--exact``, slow): the quadrature denoiser of ``exp(-U/T)``;
- ``train=...``: under-trained models (fewer steps, a narrower net), with their RMS error against
  the quadrature denoiser at log_snr 0.

Each row prints MaxEnergy (nearest lookup), the median distance of the paths' maxima from the
grid saddle and the mean position of the maximum along the path (``metrics.crossing``).

    python benchmarks/bench_table1_ablation.py [--model PATH] [--preset algorithm1|default] [--exact] [--quick]

``--quick`` uses the smoke-test preset (small data, model and path budget; numbers not meaningful).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from spacetime_md._atomic import write_json_atomic
from spacetime_md.core import GeodesicConfig, alpha_sigma
from spacetime_md.toy.landscape import PeriodicGridPotential, alanine_dipeptide_fes
from spacetime_md.toy.langevin import sample_boltzmann
from spacetime_md.toy.periodic_model import (
    ExactPeriodicDenoiser,
    PeriodicDenoiser,
    PeriodicModelConfig,
    PeriodicTrainConfig,
    evaluate_denoiser_error,
    train_periodic_denoiser,
)
from spacetime_md.toy import table1


class Tempered:
    """``D_T(x) = D(x)/T + (1 - 1/T) x/alpha``: the denoiser whose score is the model's score / T."""

    def __init__(self, denoiser, tau: float):
        self.denoiser, self.tau = denoiser, tau

    def __call__(self, x, log_snr):
        alpha = alpha_sigma(log_snr)[0].unsqueeze(-1).to(x)
        return self.denoiser(x, log_snr) / self.tau + (1.0 - 1.0 / self.tau) * x / alpha


def row(name: str, report: dict, extra: dict | None = None) -> dict:
    (variant, res), = report["variants"].items()
    m = res["metrics"]
    out = {"name": name, "variant": variant, "max_energy": m["max_energy_nearest"]["mean"],
           "std": m["max_energy_nearest"]["std"], "median": m["max_energy_nearest"]["median"],
           "distance_to_saddle_median": m["crossing"]["max_distance_to_saddle_rad"]["median"],
           "max_position_mean": m["crossing"]["max_position_along_path"]["mean"], **(extra or {})}
    print(f"{name:<22}{variant:<15}{out['max_energy']:>8.3f} +- {out['std']:.2f}{out['median']:>9.2f}"
          f"{out['distance_to_saddle_median']:>11.2f}{out['max_position_mean']:>10.2f}"
          + (f"   rms err (log_snr 0) {extra['rms_error_log_snr_0']:.3f}" if extra else ""), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Table-1 model checkpoint (default: train the default recipe here)")
    parser.add_argument("--exact", action="store_true", help="also the quadrature denoiser of exp(-U/T) (minutes)")
    parser.add_argument("--quick", action="store_true", help="smoke-test preset and fewer rows (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="algorithm1", choices=("algorithm1", "default"),
                        help="Langevin recipe of every row (default algorithm1: unadjusted steps)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "table1_ablation.json"))
    args = parser.parse_args(argv)
    if args.model and not Path(args.model).is_file():
        raise SystemExit(f"bench_table1_ablation: --model: expected an existing checkpoint file, got {args.model!r}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    potential = alanine_dipeptide_fes()
    preset = table1.TABLE1_PRESETS["quick" if args.quick else args.preset]()
    base = dataclasses.replace(preset, seed=args.seed, variants=("unconstrained",), evaluate_model=False,
                               plots=False, save_paths=False)
    gen = torch.Generator().manual_seed(args.seed)
    data = sample_boltzmann(potential, base.n_data, n_chains=base.n_chains, step_size=base.data_step_size,
                            thin=base.data_thin, burn_in=base.data_burn_in, generator=gen).flat()[: base.n_data]
    if args.model:
        model = PeriodicDenoiser.load(args.model)
    else:
        model = train_periodic_denoiser(data, base.model, base.train).model
    exact = ExactPeriodicDenoiser(potential, n_images=1)
    check = data[:20_000]

    def error(den) -> float:
        return evaluate_denoiser_error(den, exact, check, [0.0], n_points=128,
                                       generator=torch.Generator().manual_seed(2))[0.0]

    print(f"{'row':<22}{'variant':<15}{'MaxEnergy':>17}{'median':>9}{'to saddle':>11}{'at s':>10}")
    rows = [row("baseline", table1.run_table1(base, None, denoiser=model))]
    lv = dataclasses.replace(base, variants=("low_variance",))
    knobs = {"nodes=6": GeodesicConfig(n_nodes=6), "nodes=16": GeodesicConfig(n_nodes=16),
             "points=16,32": GeodesicConfig(n_points=(16, 32))}
    floors = (0.0, 1.0, 2.0, 3.0, 4.0)
    taus = (1.25, 2.0)
    if args.quick:
        knobs, floors, taus = {"nodes=6": GeodesicConfig(n_nodes=6)}, (2.0,), (2.0,)
    for name, geo in knobs.items():
        changed = dataclasses.replace(base, geodesic=geo)
        rows.append(row(name, table1.run_table1(changed, None, denoiser=model)))
    for floor in floors:
        floored = dataclasses.replace(lv, min_log_snr=floor)
        rows.append(row(f"floor={floor:g}", table1.run_table1(floored, None, denoiser=model)))
    for tau in taus:
        rows.append(row(f"score-tau={tau:g}", table1.run_table1(base, None, denoiser=Tempered(model, tau))))
    if args.exact:
        for tau in (1.0, 1.5, 2.5):
            den = ExactPeriodicDenoiser(PeriodicGridPotential(potential.values / tau), n_images=1)
            rows.append(row(f"exact-tau={tau:g}", table1.run_table1(base, None, denoiser=den)))
    trainings = {
        "train=300 steps": (base.model, PeriodicTrainConfig(n_steps=300, batch_size=512, seed=args.seed)),
        "train=64-wide, 4000": (PeriodicModelConfig(hidden=64, n_layers=3, n_frequencies=6),
                                PeriodicTrainConfig(n_steps=4000, seed=args.seed)),
    }
    if args.quick:
        trainings = {"train=30 steps": (base.model, PeriodicTrainConfig(n_steps=30, batch_size=512, seed=args.seed))}
    rows[0]["rms_error_log_snr_0"] = error(model)
    print(f"(baseline model: rms err (log_snr 0) {rows[0]['rms_error_log_snr_0']:.3f})")
    for name, (mc, tc) in trainings.items():
        weak = train_periodic_denoiser(data, mc, tc).model
        rows.append(row(name, table1.run_table1(base, None, denoiser=weak), {"rms_error_log_snr_0": error(weak)}))
    best = min(rows, key=lambda r: r["max_energy"])
    report = {"benchmark": "table1_ablation", "quick": args.quick, "preset": args.preset, "n_paths": base.n_paths, "seed": args.seed,
              "rows": rows, "published": 37.36, "target": 36.9, "wall_time_s": time.perf_counter() - t0,
              "summary": {"baseline_max_energy": rows[0]["max_energy"], "best_max_energy": best["max_energy"],
                          "best_minus_baseline": best["max_energy"] - rows[0]["max_energy"],
                          "baseline_distance_to_saddle": rows[0]["distance_to_saddle_median"]}}
    print(f"best row: {best['name']} ({best['variant']}) {best['max_energy']:.3f} vs baseline "
          f"{rows[0]['max_energy']:.3f}")
    out = write_json_atomic(args.out, report)
    print(f"written {out} ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
