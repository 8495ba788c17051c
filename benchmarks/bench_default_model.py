"""Which shipped alanine-dipeptide model gives the best transition paths (issue 21, "one default model").

For each candidate model and seed: one geodesic C7eq -> C7ax (``--pair`` for another pair of
states; ``--init-dips`` for the solve's initial curves), ``--n-paths`` annealed-Langevin
paths, their relaxed barrier (frames quenched at their own (phi, psi)) minus the minimax barrier
of the force field's relaxed (phi, psi) map (computed once here, ``--n-grid`` points per angle).
A model that samples the Boltzmann distribution better (lower Ramachandran JSD) is only a better
default if its paths are at least as good, so this is the check the JSD numbers of
docs/models.md need beside them.

Candidates: the shipped single models by name (``load_pretrained``), checkpoint files (a
training run's ``model.pt``), and ``guided-smooth``: the
shipped autoguided pair (``alanine-dipeptide-guided``: focus13k model, its step-3250 guide,
w = 2.5 on log_snr [-2, 8)) with the guidance switched on and off by a smooth (sigmoid) profile
of width ``--width`` in log_snr instead of a hard interval, so the geodesic can differentiate
through it. That wrapper is defined here, not in the package: it is an experiment.

    python benchmarks/bench_default_model.py --models alanine-dipeptide guided-smooth --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

import sys

from spacetime_md.core import AutoGuidedDenoiser
from spacetime_md.molecular import load_system
from spacetime_md.molecular.model.pretrained import GUIDED_PRETRAINED, load_checkpoint, load_pretrained
from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC, PathConfig
from spacetime_md.molecular.paths.relaxed import compute_relaxed_map
from spacetime_md.molecular.paths.transition import compute_transition_paths

sys.path.insert(0, str(Path(__file__).parent))
from bench_paths import relaxed_minimax  # noqa: E402


class SmoothGuidedDenoiser(AutoGuidedDenoiser):
    """``D + (w - 1) s(l) (D - G)`` with ``s(l) = sigmoid((l - lo)/width) sigmoid((hi - l)/width)``."""

    def __init__(self, guided: AutoGuidedDenoiser, width: float):
        super().__init__(guided.denoiser, guided.guide, guided.weight, guided.log_snr_min, guided.log_snr_max)
        self.width = float(width)

    def forward(self, x, log_snr):
        denoised = self.denoiser(x, log_snr)
        profile = torch.sigmoid((log_snr - self.log_snr_min) / self.width) * torch.sigmoid(
            (self.log_snr_max - log_snr) / self.width)
        return denoised + (self.weight - 1.0) * profile.unsqueeze(-1).to(denoised.dtype) * (
            denoised - self.guide(x, log_snr))


def load_candidate(name: str, width: float):
    if name == "guided-smooth":
        return SmoothGuidedDenoiser(load_pretrained("alanine-dipeptide-guided"), width)
    if name in GUIDED_PRETRAINED:
        raise SystemExit(f"{name}: the hard-interval guided pair cannot be differentiated; use guided-smooth")
    # A shipped name or a checkpoint file (e.g. runs/ala2_model/model.pt): resolve_checkpoint decides.
    return load_checkpoint(name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["alanine-dipeptide", "guided-smooth"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-paths", type=int, default=8)
    parser.add_argument("--n-grid", type=int, default=24)
    parser.add_argument("--width", type=float, default=0.5, help="guided-smooth: sigmoid width in log_snr")
    parser.add_argument("--clamp", choices=["default", "segment", "abs"], default="default",
                        help="the geodesic's clamp of negative segment terms (default: DEFAULT_GEODESIC's)")
    parser.add_argument("--pair", nargs=2, default=["C7eq", "C7ax"], metavar=("START", "END"),
                        help="the two states (default: the main pair C7eq C7ax)")
    parser.add_argument("--init-dips", type=float, nargs="+", default=None,
                        help="GeodesicConfig.init_dips of the solve (default: DEFAULT_GEODESIC's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "default_model.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    system = load_system("alanine-dipeptide")
    geodesic = DEFAULT_GEODESIC if args.clamp == "default" else dataclasses.replace(DEFAULT_GEODESIC, clamp=args.clamp)
    if args.init_dips is not None:
        geodesic = dataclasses.replace(geodesic, init_dips=tuple(args.init_dips))
    relaxed = None
    rows = []
    for name in args.models:
        model = load_candidate(name, args.width)
        for seed in args.seeds:
            t0 = time.perf_counter()
            out = compute_transition_paths(system, model, *args.pair,
                                           PathConfig(n_paths=args.n_paths, relaxed=True, seed=seed,
                                                      geodesic=geodesic))
            wall = time.perf_counter() - t0
            if relaxed is None:
                relaxed = compute_relaxed_map(system.openmm_system, system.positions_nm, system.phi_indices,
                                              system.psi_indices, n_grid=args.n_grid)
                start_pp = np.asarray(system.compute_phi_psi(out["start_nm"][None]))[0]
                end_pp = np.asarray(system.compute_phi_psi(out["end_nm"][None]))[0]
                i, j = relaxed.nearest_index(*start_pp)
                minimax = relaxed_minimax(system, relaxed, start_pp, end_pp) - relaxed.energy[i, j]
            geo = out["report"]["geodesic"]
            rb = geo["relaxed_barrier_kj_mol"]
            row = {"model": name, "seed": seed, "hit": geo["target_hit_rate"],
                   "max_energy_mean": geo["max_energy_kj_mol"]["mean"],
                   "relaxed_barrier_mean": rb["mean"], "relaxed_barrier_median": rb["median"],
                   "excess_mean": rb["mean"] - minimax, "excess_median": rb["median"] - minimax,
                   "geodesic_s": out["report"]["timings"]["geodesic_s"], "wall_s": wall}
            rows.append(row)
            print(f"{name:<22} seed {seed}: hit {row['hit']:.0%}, max E {row['max_energy_mean']:.1f}, relaxed barrier "
                  f"- minimax {row['excess_mean']:+.1f} (median {row['excess_median']:+.1f}) kJ/mol, "
                  f"geodesic {row['geodesic_s']:.0f} s", flush=True)
    print(f"\nminimax barrier of the relaxed map ({args.n_grid}x{args.n_grid}): {minimax:.1f} kJ/mol")
    print(f"{'model':<22}{'relaxed barrier - minimax, mean over seeds (kJ/mol)':>54}")
    for name in args.models:
        ex = [r["excess_mean"] for r in rows if r["model"] == name]
        print(f"{name:<22}{np.mean(ex):>+40.1f}   (seeds: {', '.join(f'{e:+.1f}' for e in ex)})")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "default_model", "pair": args.pair, "init_dips": list(geodesic.init_dips),
                                "minimax_kj_mol": minimax, "n_paths": args.n_paths,
                                "n_grid": args.n_grid, "width": args.width, "clamp": geodesic.clamp, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
