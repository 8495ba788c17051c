"""Which shipped alanine-dipeptide model gives the best transition paths (issue 21, "one default model").

For each candidate model and seed: one geodesic C7eq -> C7ax (``--pair`` for another pair of
states; ``--init-dips`` for the solve's initial curves), ``--n-paths`` annealed-Langevin
paths, their relaxed barrier (frames quenched at their own (phi, psi)) minus the minimax barrier
of the force field's relaxed (phi, psi) map (computed once here, ``--n-grid`` points per angle).
A model that samples the Boltzmann distribution better (lower Ramachandran JSD) is only a better
default if its paths are at least as good, so this is the check the JSD numbers of
docs/models.md need beside them.

Candidates: shipped models by name (``load_checkpoint``; the default ``alanine-dipeptide`` is the
guided checkpoint of the focus13k model and its step-3250 snapshot, w = 2.5 switched on over log_snr
[-2, 8) by sigmoids of width 0.5) and checkpoint files (a training run's ``model.pt``, a retired
model rebuilt from its command, a ``spacetime-md guide`` file).

    python benchmarks/bench_default_model.py --models alanine-dipeptide runs/ala2_model/model.pt --seeds 0 1 2
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

from spacetime_md.molecular import load_system
from spacetime_md.molecular.model.pretrained import load_checkpoint
from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC, PathConfig
from spacetime_md.molecular.paths.relaxed import compute_relaxed_map
from spacetime_md.molecular.paths.transition import compute_transition_paths

sys.path.insert(0, str(Path(__file__).parent))
from bench_paths import relaxed_minimax  # noqa: E402


def load_candidate(name: str):
    # A shipped name or a checkpoint file (e.g. runs/ala2_model/model.pt): resolve_checkpoint decides.
    return load_checkpoint(name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["alanine-dipeptide"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-paths", type=int, default=8)
    parser.add_argument("--n-grid", type=int, default=24)
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
        model = load_candidate(name)
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
                                "n_grid": args.n_grid, "clamp": geodesic.clamp, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
