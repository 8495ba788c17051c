"""Batched geodesic solves: K endpoint pairs one by one (``optimize_geodesic``) vs together (``optimize_geodesics``).

Model: the shipped alanine-dipeptide denoiser (``load_pretrained``). Endpoints: samples of
the C7eq and C7ax states - each state's representative structure (what ``spacetime-md
paths`` uses) run for ``--md-ps`` ps of 300 K Langevin dynamics in OpenMM with a per-sample
seed, then partially energy-minimised (``MIN_ITER`` iterations), kept if still in the
state - prepared exactly as
:func:`~spacetime_md.molecular.paths.compute_transition_paths` prepares its endpoints
(centred, Kabsch-aligned, model units, ``(log_snr, alpha x)`` at ``endpoint_log_snr``).
Pair ``i`` joins sample ``i`` of C7eq and sample ``i`` of C7ax, alternating direction.

For each K, the same K pairs are solved three ways in this process with the same settings
(``spacetime_md.molecular.paths.DEFAULT_GEODESIC``, or smaller with ``--quick``): one after
another with ``optimize_geodesic`` (torch L-BFGS, today's code path), one after another with
``optimize_geodesics`` on one pair (the batched solver's optimiser without batching: the
baseline of the batching itself, identical per-pair results), and together with
``optimize_geodesics`` (one denoiser call per objective evaluation for all pairs). Reported:
wall time, pairs per second, denoiser calls and rows, time per 1000 denoiser rows, mean
energy, the speed-ups of the batched solve, and the energy differences (batched vs serial:
rounding only; batched vs torch: two L-BFGS implementations stopping at different points
of a noisy one-probe objective).

    python benchmarks/bench_geodesic_batch.py [--quick] [--ks 1,4,16] [--device cuda] [--dtype float64]
                                              [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spacetime_md.core import CountingDenoiser, SpacetimePoint, alpha_sigma, optimize_geodesic, optimize_geodesics
from spacetime_md.core._validation import resolve_device


#: L-BFGS iterations of the partial energy minimisation of each endpoint sample: removes the
#: bond-stretch noise of thermal structures (at log_snr 4 it lets the one-probe Hutchinson
#: energy collapse towards 0) and keeps the samples distinct (0.02-0.07 nm RMSD from the
#: representative; a full minimisation mostly returns to it).
MIN_ITER = 20


def state_samples(system, name: str, n: int, md_ps: float, seed: int) -> list[np.ndarray]:
    """``n`` structures (nm, ``(N, 3)``) of state ``name``: its representative structure after
    ``md_ps`` ps of 300 K Langevin dynamics (own velocity seed each) and ``MIN_ITER``
    minimisation iterations, kept if still in the state."""
    import openmm
    from openmm import unit

    from spacetime_md.molecular.paths import resolve_structure

    start, _ = resolve_structure(system, name, name)
    state = system.get_state(name)
    integrator = openmm.LangevinMiddleIntegrator(system.temperature_k * unit.kelvin, 1.0 / unit.picosecond,
                                                 2.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)  # read when the Context is created
    context = openmm.Context(system.openmm_system, integrator, openmm.Platform.getPlatformByName(system.platform_name))
    samples: list[np.ndarray] = []
    attempt = 0
    while len(samples) < n:
        if attempt >= 10 * n:
            raise RuntimeError(f"{name}: expected {n} samples that stay in the state, got {len(samples)}")
        context.setPositions(start * unit.nanometer)
        context.setVelocitiesToTemperature(system.temperature_k * unit.kelvin, seed + attempt + 1)
        integrator.step(max(1, int(round(md_ps * 500))))
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, MIN_ITER)
        xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        attempt += 1
        if state.contains(np.asarray(system.compute_phi_psi(xyz[None])))[0]:
            samples.append(np.asarray(xyz, dtype=np.float64))
    return samples


def make_pairs(model, system, n_pairs: int, endpoint_log_snr: float, md_ps: float, device) -> list[tuple]:
    """``n_pairs`` (start, end) SpacetimePoints prepared as compute_transition_paths does."""
    from spacetime_md.molecular.paths import kabsch_align

    eq = state_samples(system, "C7eq", n_pairs, md_ps, seed=1000)
    ax = state_samples(system, "C7ax", n_pairs, md_ps, seed=2000)
    dtype = next(model.parameters()).dtype
    alpha = float(alpha_sigma(endpoint_log_snr)[0])
    pairs = []
    for i in range(n_pairs):
        a_nm, b_nm = (eq[i], ax[i]) if i % 2 == 0 else (ax[i], eq[i])
        a_nm = a_nm - a_nm.mean(axis=0)
        b_nm = kabsch_align(b_nm, a_nm)
        xa = model.to_model(torch.as_tensor(a_nm, dtype=dtype)).to(device)
        xb = model.to_model(torch.as_tensor(b_nm, dtype=dtype)).to(device)
        pairs.append((SpacetimePoint(endpoint_log_snr, alpha * xa), SpacetimePoint(endpoint_log_snr, alpha * xb)))
    return pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 1, 4 and a smaller geodesic (< 60 s)")
    parser.add_argument("--ks", default=None, help="comma-separated batch sizes (default 1,4,16; quick 1,4)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:N)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="model dtype (float64: batched and serial agree to rounding, ~1e-10)")
    parser.add_argument("--md-ps", type=float, default=1.0, help="MD length per endpoint sample (ps)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "geodesic_batch.json"))
    args = parser.parse_args(argv)

    from spacetime_md.molecular import load_pretrained, load_system
    from spacetime_md.molecular.paths import DEFAULT_GEODESIC, PathConfig

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ks = [int(k) for k in (args.ks or ("1,4" if args.quick else "1,4,16")).split(",")]
    if any(k < 1 for k in ks):
        raise SystemExit(f"--ks: expected integers >= 1, got {args.ks}")
    config = DEFAULT_GEODESIC
    if args.quick:
        config = dataclasses.replace(config, n_nodes=6, n_points=(8, 16), max_steps=12)
    system = load_system("alanine-dipeptide")
    model = load_pretrained("alanine-dipeptide", device=device, dtype=getattr(torch, args.dtype))
    for p in model.parameters():
        p.requires_grad_(False)
    pairs = make_pairs(model, system, max(ks), PathConfig().endpoint_log_snr, args.md_ps, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Warm-up (first-call overheads, CUDA kernels) on a tiny problem.
    warm = dataclasses.replace(config, n_points=(8,), max_steps=2)
    optimize_geodesic(model, *pairs[0], warm)
    optimize_geodesics(model, [pairs[0][0]], [pairs[0][1]], warm)

    def timed(solve):
        counter = CountingDenoiser(model)
        sync()
        t0 = time.perf_counter()
        results = solve(counter)
        sync()
        return results, time.perf_counter() - t0, counter

    rows = []
    for k in ks:
        starts, ends = [a for a, _ in pairs[:k]], [b for _, b in pairs[:k]]
        torch_l, torch_s, torch_c = timed(lambda d: [optimize_geodesic(d, a, b, config) for a, b in zip(starts, ends)])
        one_l, one_s, one_c = timed(lambda d: [optimize_geodesics(d, [a], [b], config)[0] for a, b in zip(starts, ends)])
        bat_l, bat_s, bat_c = timed(lambda d: optimize_geodesics(d, starts, ends, config))
        row = {"k": k}
        for name, results, wall, counter in (("torch_serial", torch_l, torch_s, torch_c),
                                             ("serial", one_l, one_s, one_c), ("batched", bat_l, bat_s, bat_c)):
            row[name] = {
                "wall_s": wall, "pairs_per_s": k / wall, "denoiser_calls": counter.n_calls,
                "denoiser_rows": counter.n_evals, "rows_per_call": counter.n_evals / counter.n_calls,
                "ms_per_1000_rows": 1e6 * wall / counter.n_evals,
                "mean_energy": statistics.fmean(r.energy for r in results),
                "mean_steps": statistics.fmean(r.n_steps for r in results),
                "converged": sum(r.converged for r in results),
            }
        row["speedup_vs_torch_serial"] = torch_s / bat_s
        row["speedup_vs_serial"] = one_s / bat_s
        # Batched vs the same optimiser one pair at a time: equal up to the rounding of larger batches.
        row["max_rel_energy_diff_vs_serial"] = max(abs(r.energy - q.energy) / q.energy for r, q in zip(bat_l, one_l))
        # Batched vs torch L-BFGS: different optimisers stopping within the tolerance.
        rel = [abs(r.energy - q.energy) / q.energy for r, q in zip(bat_l, torch_l)]
        row["median_rel_energy_diff_vs_torch"], row["max_rel_energy_diff_vs_torch"] = statistics.median(rel), max(rel)
        row["mean_straight_line_energy"] = statistics.fmean(r.initial_energy for r in torch_l)
        rows.append(row)

    print(f"Geodesic solves of K alanine-dipeptide pairs (C7eq <-> C7ax samples), device {device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; n_points {config.n_points}, {config.divergence} "
          f"({config.n_probes} probe), max_steps {config.max_steps}")
    print("  torch = optimize_geodesic one by one; serial = optimize_geodesics one pair at a time (same optimiser "
          "as batched); batched = optimize_geodesics on all K")
    print(f"{'K':>3} {'method':<8}{'wall (s)':>10}{'pairs/s':>9}{'calls':>7}{'rows/call':>10}{'ms/1k rows':>11}"
          f"{'mean E':>9}{'steps':>7}{'conv':>6}")
    for r in rows:
        for name, label in (("torch_serial", "torch"), ("serial", "serial"), ("batched", "batched")):
            m = r[name]
            print(f"{r['k']:>3} {label:<8}{m['wall_s']:>10.2f}{m['pairs_per_s']:>9.3f}{m['denoiser_calls']:>7}"
                  f"{m['rows_per_call']:>10.1f}{m['ms_per_1000_rows']:>11.1f}{m['mean_energy']:>9.1f}"
                  f"{m['mean_steps']:>7.1f}{m['converged']:>4}/{r['k']}")
        print(f"    batched speed-up: {r['speedup_vs_serial']:.2f}x vs serial (same optimiser; energies within "
              f"{100 * r['max_rel_energy_diff_vs_serial']:.2g}%), {r['speedup_vs_torch_serial']:.2f}x vs torch "
              f"(energies differ by median {100 * r['median_rel_energy_diff_vs_torch']:.1f}%, "
              f"max {100 * r['max_rel_energy_diff_vs_torch']:.1f}%)")
    summary = {}
    for r in rows:
        summary[f"speedup_vs_serial_k{r['k']}"] = r["speedup_vs_serial"]
        summary[f"speedup_vs_torch_k{r['k']}"] = r["speedup_vs_torch_serial"]
        summary[f"batched_pairs_per_s_k{r['k']}"] = r["batched"]["pairs_per_s"]
    summary["max_rel_energy_diff_vs_serial"] = max(r["max_rel_energy_diff_vs_serial"] for r in rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "geodesic_batch", "device": str(device), "threads": torch.get_num_threads(), "dtype": args.dtype,
        "quick": args.quick, "config": config.to_dict(), "md_ps": args.md_ps, "summary": summary, "rows": rows,
    }, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
