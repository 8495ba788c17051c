"""All-atom alanine dipeptide transition paths: the end-to-end benchmark (issue 5).

Measures, on the shipped model and defaults:

- target hit rate and chirality over ``--n-paths`` paths (goal: 100 % of 64);
- raw maximum energy (ETS) along geodesic paths vs the straight spacetime line (same
  endpoints, same sampler, same path length);
- relaxed barrier (frames quenched at their own (phi, psi)) vs the minimax barrier of the
  force field's relaxed (phi, psi) map, computed here by restrained minimisation on a grid
  (goal: within 5 kJ/mol);
- wall time of the geodesic (goal <= 60 s) and of 8 validated paths end to end (<= 3 min);
- cost of annealed Langevin in OpenMM vs the same number of plain MD steps in the same process
  (goal <= 1.5x).

    python benchmarks/bench_paths.py [--quick] [--n-paths 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.molecular import load_system
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.paths.transition import compute_transition_paths
from spacetime_md.molecular.model.pretrained import load_checkpoint, load_pretrained
from spacetime_md.molecular.paths.relaxed import RelaxedMap, compute_relaxed_map
from spacetime_md.toy.landscape import PeriodicGridPotential


def plain_md_time(system, n_steps: int, timestep_fs: float, friction: float) -> float:
    integrator = openmm.LangevinMiddleIntegrator(system.temperature, friction / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    context = openmm.Context(system.openmm_system, integrator, system.platform)
    context.setPositions(system.positions_nm)
    context.setVelocitiesToTemperature(system.temperature, 1)
    integrator.step(100)
    t0 = time.perf_counter()
    integrator.step(n_steps)
    return time.perf_counter() - t0


def sampler_vs_plain_md(system, model, out, config: PathConfig, n_paths: int = 2, repeats: int = 3):
    """Annealed Langevin (restrained, per-point updates) vs plain MD, same steps, alternating.

    The restraint schedule is the geodesic's ``log_snr`` with centres interpolated between the
    endpoints (the cost does not depend on where the centres are). Returns the best-of-``repeats``
    times of each, measured alternately in this process so that load on a shared machine hits
    both alike.
    """
    from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler
    from spacetime_md.molecular.system.units import kT_kj_per_mol

    log_snr = np.asarray(out["report"]["geodesic_curve"]["log_snr"], dtype=float)  # one per curve point
    w = np.linspace(0.0, 1.0, len(log_snr))[:, None, None]
    centres = (1 - w) * out["start_nm"][None] + w * out["end_nm"][None]
    k = kT_kj_per_mol(system.temperature_k) * np.exp(log_snr) / model.length_scale_nm**2
    sampler = RestrainedLangevinSampler(system.openmm_system, temperature=system.temperature,
                                        timestep=config.timestep_fs * unit.femtosecond,
                                        friction=config.friction_per_ps / unit.picosecond,
                                        platform=system.platform_name)
    n_md = len(log_snr) * config.n_steps * n_paths
    t_paths, t_md = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        sampler.sample(centres, k, out["start_nm"], n_paths=n_paths, n_steps=config.n_steps, seed=r,
                       record_every=config.record_every)
        t_paths.append(time.perf_counter() - t0)
        t_md.append(plain_md_time(system, n_md, config.timestep_fs, config.friction_per_ps))
    return min(t_paths), min(t_md), n_md


def relaxed_minimax(system, relaxed: RelaxedMap, start_phi_psi, end_phi_psi) -> float:
    grid = PeriodicGridPotential(relaxed.energy.T)  # values[j, i] at (phi_i, psi_j)
    return grid.minimax_barrier(start_phi_psi, end_phi_psi).barrier


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 paths, coarse relaxed map")
    parser.add_argument("--n-paths", type=int, default=None)
    parser.add_argument("--n-grid", type=int, default=None, help="relaxed-map grid points per angle")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the shipped model)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "paths.json"))
    args = parser.parse_args(argv)
    n_paths = args.n_paths or (8 if args.quick else 64)
    n_grid = args.n_grid or (24 if args.quick else 48)

    system = load_system("alanine-dipeptide")
    model = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained("alanine-dipeptide")
    config = PathConfig(n_paths=n_paths, relaxed=True)
    t0 = time.perf_counter()
    out = compute_transition_paths(system, model, "C7eq", "C7ax", config)
    total = time.perf_counter() - t0
    report = out["report"]
    geo, base = report["geodesic"], report["straight"]

    # Relaxed (phi, psi) map of the same force field and its minimax barrier.
    t1 = time.perf_counter()
    relaxed = compute_relaxed_map(system.openmm_system, system.positions_nm, system.phi_indices,
                                  system.psi_indices, n_grid=n_grid)
    map_time = time.perf_counter() - t1
    start_pp = np.asarray(system.compute_phi_psi(out["start_nm"][None]))[0]
    end_pp = np.asarray(system.compute_phi_psi(out["end_nm"][None]))[0]
    i, j = relaxed.nearest_index(*start_pp)
    minimax = relaxed_minimax(system, relaxed, start_pp, end_pp) - relaxed.energy[i, j]

    # Annealed Langevin cost vs plain MD, same number of steps, same process.
    per_kind_paths_time = report["timings"]["paths_s"] / (2 if config.baseline else 1)
    sampler_time, md_time, n_md = sampler_vs_plain_md(system, model, out, config)

    result = {
        "n_paths": n_paths,
        "target_hit_rate": geo["target_hit_rate"],
        "chirality_kept_fraction": geo["chirality_kept_fraction"],
        "max_energy_geodesic_kj_mol": geo["max_energy_kj_mol"],
        "max_energy_straight_kj_mol": base["max_energy_kj_mol"],
        "relaxed_barrier_geodesic_kj_mol": geo["relaxed_barrier_kj_mol"],
        "relaxed_barrier_straight_kj_mol": base["relaxed_barrier_kj_mol"],
        "relaxed_minimax_barrier_kj_mol": float(minimax),
        "relaxed_map": {"n_grid": n_grid, "wall_time_s": map_time},
        "geodesic_time_s": report["timings"]["geodesic_s"],
        "total_time_s": total,
        "paths_time_per_curve_s": per_kind_paths_time,
        "cost_sampler_time_s": sampler_time,
        "cost_plain_md_time_s": md_time,
        "cost_steps": n_md,
        "path_cost_vs_plain_md": sampler_time / md_time,
        "force_evaluations_per_path": geo["force_evaluations_per_path"],
        "denoiser_rows_geodesic": report["energy_evaluations"]["denoiser_rows_geodesic"],
        "geodesic_curve": {k: v for k, v in report["geodesic_curve"].items() if k != "log_snr"},
    }
    print(f"alanine dipeptide C7eq -> C7ax, {n_paths} paths, platform {system.platform_name}")
    print(f"{'metric':<42}{'geodesic':>16}{'straight line':>16}")
    print(f"{'target hit rate':<42}{geo['target_hit_rate']:>16.0%}{base['target_hit_rate']:>16.0%}")
    print(f"{'chirality kept (frames)':<42}{geo['chirality_kept_fraction']:>16.1%}{base['chirality_kept_fraction']:>16.1%}")
    for label, key in (("max energy (kJ/mol)", "max_energy_kj_mol"), ("relaxed barrier (kJ/mol)", "relaxed_barrier_kj_mol")):
        g, b = geo[key], base[key]
        print(f"{label:<42}{g['mean']:>9.1f} +- {g['std']:<4.1f}{b['mean']:>9.1f} +- {b['std']:<4.1f}")
    rb = geo["relaxed_barrier_kj_mol"]
    print(f"relaxed minimax barrier of the force field ({n_grid}x{n_grid} grid): {minimax:.1f} kJ/mol; "
          f"geodesic relaxed barrier - minimax: mean {rb['mean'] - minimax:+.1f}, median {rb['median'] - minimax:+.1f} "
          f"kJ/mol (goal within 5)")
    print(f"geodesic {result['geodesic_time_s']:.1f} s; end to end {total:.1f} s "
          f"({n_paths} paths per curve: {per_kind_paths_time:.1f} s)")
    print(f"annealed Langevin {sampler_time:.3f} s vs plain MD {md_time:.3f} s for {n_md} steps "
          f"(best of 3, alternating): {result['path_cost_vs_plain_md']:.2f}x")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "paths", **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
