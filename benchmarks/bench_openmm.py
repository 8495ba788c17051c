"""OpenMM layer benchmark: energy evaluations/s, MD ns/day per platform, replica-exchange throughput.

1. ``evaluate_energies`` on a batch of alanine-dipeptide frames (energy only, and energy +
   forces) against two baselines in the same process: the textbook OpenMM loop with units
   (``setPositions(Quantity)``, ``getPotentialEnergy().value_in_unit(...)``) and a bare loop
   without unit handling or input checks (the floor).
2. Plain MD ns/day (LangevinMiddleIntegrator, 2 fs, HBonds) on the Reference and CPU platforms
   (vacuum) and Reference (GBSA-OBC implicit solvent).
3. ``sample_boltzmann`` samples/min and ns/day with the default settings (4 replicas, 300-800 K,
   exchange every 0.25 ps) against plain 300 K MD saving a frame every 0.25 ps (the ideal ratio is
   the number of replicas).
4. With ``--verify N``: an N-sample replica-exchange run whose C7ax / C7eq populations are
   compared with the shipped umbrella-sampling reference.

    python benchmarks/bench_openmm.py [--quick] [--out FILE] [--verify N]

Medians of ``--repeats`` runs. Results go to ``benchmarks/results/openmm.json``.
"""

from __future__ import annotations

import argparse
import json
import platform as pyplatform
import statistics
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.molecular import evaluate_energies, load_system, sample_boltzmann
from spacetime_md.molecular.sampling.populations import compare_to_reference
from spacetime_md.molecular.sampling.reference import reference_populations

KJ = unit.kilojoule_per_mole


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_energies(n_frames: int, repeats: int) -> dict:
    system = load_system("alanine-dipeptide")
    rng = np.random.default_rng(0)
    frames = system.positions_nm[None] + rng.normal(scale=0.005, size=(n_frames, 22, 3))
    ctx = openmm.Context(system.openmm_system, openmm.VerletIntegrator(0.001), system.platform)

    def textbook(forces: bool):
        for x in frames:
            ctx.setPositions(x * unit.nanometer)
            st = ctx.getState(getEnergy=True, getForces=forces)
            st.getPotentialEnergy().value_in_unit(KJ)
            if forces:
                st.getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)

    def bare(forces: bool):
        for x in frames:
            ctx.setPositions(x)
            st = ctx.getState(getEnergy=True, getForces=forces)
            st.getPotentialEnergy()._value
            if forces:
                st.getForces(asNumpy=True)._value

    evaluate_energies(system, frames[:1])  # creates the reused Context (once per system)
    out = {}
    for forces in (False, True):
        key = "energy+forces" if forces else "energy"
        ours = median_time(lambda: evaluate_energies(system, frames, forces=forces), repeats)
        base = median_time(lambda: textbook(forces), repeats)
        floor = median_time(lambda: bare(forces), repeats)
        out[key] = {
            "ours_per_s": n_frames / ours,
            "textbook_openmm_per_s": n_frames / base,
            "bare_openmm_per_s": n_frames / floor,
            "speedup_vs_textbook": base / ours,
            "fraction_of_bare": floor / ours,
        }
    return out


def bench_md(steps: dict, repeats: int) -> dict:
    out = {}
    for label, solvent, plat in (("vacuum Reference", "vacuum", "Reference"), ("vacuum CPU", "vacuum", "CPU"),
                                 ("implicit Reference", "implicit", "Reference")):
        system = load_system("alanine-dipeptide", solvent=solvent, platform=plat)
        integ = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
        integ.setRandomNumberSeed(1)
        ctx = openmm.Context(system.openmm_system, integ, system.platform)
        ctx.setPositions(system.positions_nm)
        ctx.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        integ.step(100)
        n = steps[plat]
        t = median_time(lambda: integ.step(n), repeats)
        us = t / n * 1e6
        out[label] = {"us_per_step": us, "ns_per_day": (n * 2e-6) / (t / 86400.0)}
    out["reference_vs_cpu_speedup"] = out["vacuum CPU"]["us_per_step"] / out["vacuum Reference"]["us_per_step"]
    return out


def bench_sampling(n_samples: int, repeats: int) -> dict:
    system = load_system("alanine-dipeptide")
    re_times, md_times = [], []
    for r in range(repeats):
        res = sample_boltzmann(system, n_samples, None, seed=r, equilibration=1 * unit.picosecond,
                               chunk_size=n_samples, progress=False, plot=False)
        re_times.append(res.report["production_seconds"])
        md = sample_boltzmann(system, n_samples, None, seed=r, n_replicas=1, equilibration=1 * unit.picosecond,
                              chunk_size=n_samples, progress=False, plot=False)
        md_times.append(md.report["production_seconds"])
    t_re, t_md = statistics.median(re_times), statistics.median(md_times)
    interval = res.config.exchange_interval_ps
    return {
        "n_samples": n_samples,
        "replicas": res.config.n_replicas,
        "temperatures_k": list(res.config.temperatures_k),
        "exchange_interval_ps": interval,
        "replica_exchange": {"samples_per_min": 60 * n_samples / t_re, "ns_per_day_T0": n_samples * interval * 1e-3 / (t_re / 86400),
                             "ns_per_day_all_replicas": res.config.n_replicas * n_samples * interval * 1e-3 / (t_re / 86400),
                             "swap_acceptance": res.report["exchange_acceptance"]},
        "plain_md_300K": {"samples_per_min": 60 * n_samples / t_md, "ns_per_day": n_samples * interval * 1e-3 / (t_md / 86400)},
        "cost_ratio_re_vs_md": t_re / t_md,
    }


def verify(n_samples: int) -> dict:
    system = load_system("alanine-dipeptide")
    t0 = time.perf_counter()
    res = sample_boltzmann(system, n_samples, None, seed=123, progress=True, plot=False)
    ref = reference_populations(system)
    out = {"n_samples": n_samples, "seconds": time.perf_counter() - t0, "populations": res.report["populations"]}
    if ref is not None:
        out["reference_method"] = ref["method"]
        out["comparison"] = compare_to_reference(res.report["populations"], ref["populations"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--verify", type=int, default=0, help="replica-exchange samples for the population check")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "openmm.json"))
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    results: dict = {"machine": f"{pyplatform.node()} ({pyplatform.processor() or pyplatform.machine()}), OpenMM {openmm.__version__}",
                     "quick": args.quick, "repeats": repeats}

    e = results["energies"] = bench_energies(200 if args.quick else 2000, repeats)
    print(f"{'energy evaluations/s':<26} {'ours':>9} {'textbook':>9} {'bare':>9} {'ours/textbook':>14} {'bare/ours':>10}")
    for k, v in e.items():
        print(f"{k:<26} {v['ours_per_s']:>9.0f} {v['textbook_openmm_per_s']:>9.0f} {v['bare_openmm_per_s']:>9.0f} "
              f"{v['speedup_vs_textbook']:>14.2f} {1 / v['fraction_of_bare']:>10.2f}")

    steps = {"Reference": 2000 if args.quick else 10000, "CPU": 100 if args.quick else 500}
    m = results["md"] = bench_md(steps, repeats)
    print(f"\n{'plain MD (2 fs, HBonds)':<26} {'us/step':>9} {'ns/day':>9}")
    for k, v in m.items():
        if isinstance(v, dict):
            print(f"{k:<26} {v['us_per_step']:>9.1f} {v['ns_per_day']:>9.0f}")
    print(f"Reference is {m['reference_vs_cpu_speedup']:.0f}x faster than CPU here")

    s = results["sampling"] = bench_sampling(100 if args.quick else 1000, 1 if args.quick else 3)
    re, md = s["replica_exchange"], s["plain_md_300K"]
    print(f"\nsampling (a sample every {s['exchange_interval_ps']} ps, {s['replicas']} replicas "
          f"{s['temperatures_k'][0]:.0f}-{s['temperatures_k'][-1]:.0f} K)")
    print(f"{'':<26} {'samples/min':>11} {'ns/day T0':>10}")
    print(f"{'replica exchange':<26} {re['samples_per_min']:>11.0f} {re['ns_per_day_T0']:>10.0f}   "
          f"(all replicas {re['ns_per_day_all_replicas']:.0f} ns/day; acceptance "
          + ", ".join(f"{a:.2f}" for a in re["swap_acceptance"]) + ")")
    print(f"{'plain MD 300 K':<26} {md['samples_per_min']:>11.0f} {md['ns_per_day']:>10.0f}")
    print(f"replica exchange costs {s['cost_ratio_re_vs_md']:.2f}x plain MD per sample (ideal {s['replicas']}x)")

    if args.verify:
        v = results["verification"] = verify(args.verify)
        print(f"\nverification: {args.verify} samples in {v['seconds']:.0f} s")
        for key, c in v.get("comparison", {}).items():
            print(f"{key:<10} ours {c['ours']:.4f} +- {c['ours_error']:.4f}   reference {c['reference']:.4f} +- "
                  f"{c['reference_error']:.4f}   z = {c['z']:+.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
