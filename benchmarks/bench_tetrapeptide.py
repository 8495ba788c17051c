"""Alanine tetrapeptide transition paths with the shipped model, end to end (issue 22).

Two endpoint pairs of Ace-(Ala)3-Nme (amber99sbildn, vacuum, 300 K), both ends with Boltzmann
weight in the training data:

- ``default``: all_C7eq -> mid_C7ax (the ``paths --system alanine-tetrapeptide`` default; one
  residue, ALA3, crosses to phi > 0);
- ``two-residue``: all_C7eq -> nterm_alpha_R (ALA2 and ALA3 both change, to alpha_R).

Per pair it measures, against the issue's targets:

- end to end: geodesic + ``--e2e-paths`` validated geodesic paths (no baseline) from one
  ``run_paths`` call; the geodesic's wall time (goal <= 60 s) and the total (goal <= 5 min);
- ``--n-paths`` paths per curve (geodesic, and the straight spacetime line as baseline) on the
  geodesic solved above: target hit on every residue (goal >= 95 %), chirality of every frame
  (goal 100 %), raw maximum energy geodesic vs straight line;
- p_B at each of the first ``--committor-paths`` geodesic paths' refined relaxed-energy maximum
  and at the force field's saddle point next to it (the ``committor`` workflow, ``--shots`` shots
  each): fraction within 0.5 +- 0.2 (goal >= 75 %), for both.

Writes ``benchmarks/results/tetrapeptide.json``; the protocol actually run (paths, shots) is in
the file, so a scaled-down run says so.

    python benchmarks/bench_tetrapeptide.py [--n-paths 64] [--committor-paths 64] [--shots 20]
        [--pairs default two-residue] [--checkpoint FILE] [--work DIR] [--quick] [--out FILE] [--resume]
    python benchmarks/bench_tetrapeptide.py --merge A.json B.json --out FILE   # pairs run separately
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

PAIRS = {"default": ("all_C7eq", "mid_C7ax"), "two-residue": ("all_C7eq", "nterm_alpha_R")}
TOLERANCE = 0.2
GOALS = {"target_hit_rate_min": 0.95, "chirality_kept_fraction_min": 1.0, "geodesic_s_max": 60.0,
         "end_to_end_s_max": 300.0, "p_b_within_fraction_min": 0.75}


def curve_metrics(m: dict) -> dict:
    out = {"n_paths": m.get("n_paths"), "target_hit_rate": m["target_hit_rate"],
           "target_hit_by_group": m.get("target_hit_by_group"),
           "chirality_kept_fraction": m["chirality_kept_fraction"],
           "max_energy_kj_mol": m["max_energy_kj_mol"]}
    return out


def run_pair(name: str, start: str, end: str, args, work: Path, row: dict, save) -> dict:
    """Fill ``row`` stage by stage, calling ``save()`` after each (a cut-short run keeps what it has)."""
    done = dict(row) if args.resume else {}
    row.update({"start": start, "end": end})
    e2e_dir, full_dir = work / f"{name}_e2e", work / f"{name}_paths"
    if "end_to_end" in done and "paths" in done:  # --resume: only the committor stage is (re)run
        print(f"[{name}] reusing the end-to-end and paths stages of {args.out}", flush=True)
    else:
        run_paths_stages(name, start, end, args, e2e_dir, full_dir, row, save)
    committor_stage(name, args, full_dir, row, done.get("committor", {}).get("paths", []), save)
    return row


def run_paths_stages(name, start, end, args, e2e_dir: Path, full_dir: Path, row: dict, save) -> float:
    from spacetime_md.molecular.paths.config import PathConfig
    from spacetime_md.molecular.paths.run import run_paths

    # 1. End to end: geodesic + validated geodesic paths, one call, as a user runs it.
    config = PathConfig(n_paths=args.e2e_paths, seed=args.seed, baseline=False)
    t0 = time.perf_counter()
    rep = run_paths(e2e_dir, system="alanine-tetrapeptide", start=start, end=end, config=config,
                    checkpoint=args.checkpoint, plots=False, overwrite=True)
    total = time.perf_counter() - t0
    row["end_to_end"] = {"n_paths": args.e2e_paths, "baseline": False, "wall_time_s": total,
                         "geodesic_s": rep["timings"]["geodesic_s"], "timings": rep["timings"],
                         "geodesic": curve_metrics(rep["geodesic"])}
    print(f"[{name}] end to end: {args.e2e_paths} validated paths in {total:.1f} s "
          f"(geodesic {rep['timings']['geodesic_s']:.1f} s)\n{rep['table']}", flush=True)
    save()

    # 2. Many paths per curve on the same geodesic (plus the straight-line baseline).
    config = PathConfig(n_paths=args.n_paths, seed=args.seed)
    t0 = time.perf_counter()
    rep = run_paths(full_dir, system="alanine-tetrapeptide", start=start, end=end, config=config,
                    checkpoint=args.checkpoint, plots=False, overwrite=True, geodesic=e2e_dir / "geodesic.npz")
    row["paths"] = {"n_paths_per_curve": args.n_paths, "wall_time_s": time.perf_counter() - t0,
                    "geodesic": curve_metrics(rep["geodesic"]), "straight": curve_metrics(rep["straight"])}
    print(f"[{name}] {args.n_paths} paths per curve\n{rep['table']}", flush=True)
    save()
    return total


def committor_stage(name, args, full_dir: Path, row: dict, previous: list, save) -> None:
    """3. p_B at each geodesic path's refined relaxed-energy maximum (paths in ``previous`` kept)."""
    from spacetime_md.molecular.workflows.committor_config import CommittorConfig
    from spacetime_md.molecular.workflows.committor_run import run_committor

    base = CommittorConfig(n_frames=args.frames, n_shots=args.shots, n_workers=args.workers, seed=args.seed,
                           kind="geodesic")
    # Paths measured before the saddle point was shot from (or with other shots) are run again.
    pbs = [c for c in previous if "saddle_p_b" in c and c.get("n_shots") == args.shots and "shot_seed" in c]
    pbs = pbs[: next((i for i, c in enumerate(pbs) if c["path"] != i), len(pbs))]
    t0 = time.perf_counter()
    for p in range(len(pbs), min(args.committor_paths, args.n_paths)):
        # Each path its own shot seeds: paths of one geodesic often reach the same saddle point,
        # and shared seeds would repeat the same shots there instead of estimating p_B again.
        res = run_committor(full_dir, None, dataclasses.replace(base, path=p, seed=args.seed * 100_000 + p),
                            plot=False, overwrite=True)
        r, sp = res.refined, res.saddle
        pb = None if r is None else r["p_b"]
        spb = None if sp is None else sp["p_b"]
        pbs.append({"path": p, "n_shots": args.shots, "shot_seed": res.config.seed, "refined_p_b": pb,
                    "refined_p_b_interval": None if r is None else r["p_b_interval"],
                    "refined_phi_psi_deg": None if r is None else r["phi_psi_deg"],
                    "refined_relaxed_energy_kj_mol": None if r is None else r["relaxed_energy_kj_mol"],
                    "saddle_p_b": spb, "saddle_p_b_interval": None if sp is None else sp["p_b_interval"],
                    "saddle_energy_kj_mol": None if sp is None else sp["energy_kj_mol"],
                    "saddle_torsions_deg": None if sp is None else sp["torsions_deg"],
                    "saddle_search_s": None if sp is None else sp["search_s"],
                    "saddle_searches": None if sp is None else sp["n_searches"],
                    "saddle_na_reason": res.saddle_na_reason,
                    "undecided": int(res.n_undecided.sum()), "shots": res.n_shots_total,
                    "wall_time_s": res.wall_time_s})
        print(f"[{name}] committor path {p}: refined p_B {pb}, saddle p_B {spb} "
              f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        row["committor"] = {"n_paths": len(pbs), "n_shots": args.shots, "n_frames": args.frames, "paths": pbs,
                            "complete": False}
        save()
    def within_and_median(key: str):
        values = [c[key] for c in pbs if c.get(key) is not None]
        within = [v for v in values if abs(v - 0.5) <= TOLERANCE]
        return (len(within) / len(pbs) if pbs else None), (float(np.median(values)) if values else None)

    refined_within, refined_median = within_and_median("refined_p_b")
    saddle_within, saddle_median = within_and_median("saddle_p_b")
    energies = sorted({round(c["saddle_energy_kj_mol"], 1) for c in pbs if c.get("saddle_energy_kj_mol") is not None})
    row["committor"] = {"n_paths": len(pbs), "n_shots": args.shots, "n_frames": args.frames,
                        "within_fraction": refined_within, "median_p_b": refined_median,
                        "saddle_within_fraction": saddle_within, "saddle_median_p_b": saddle_median,
                        # One value where every path's search reached the same transition state.
                        "saddle_energies_kj_mol": energies,
                        "wall_time_s": time.perf_counter() - t0, "paths": pbs, "complete": True}
    total = row["end_to_end"]["wall_time_s"]
    g, s = row["paths"]["geodesic"], row["paths"]["straight"]
    row["goals"] = {
        "target_hit": g["target_hit_rate"] >= GOALS["target_hit_rate_min"],
        "chirality": g["chirality_kept_fraction"] is not None and g["chirality_kept_fraction"] >= 1.0,
        "max_energy_below_straight": g["max_energy_kj_mol"]["mean"] < s["max_energy_kj_mol"]["mean"],
        "geodesic_time": row["end_to_end"]["geodesic_s"] <= GOALS["geodesic_s_max"],
        "end_to_end_time": total <= GOALS["end_to_end_s_max"],
        "p_b_within": bool(pbs) and row["committor"]["within_fraction"] >= GOALS["p_b_within_fraction_min"],
        "p_b_within_at_saddle": bool(pbs) and saddle_within is not None
        and saddle_within >= GOALS["p_b_within_fraction_min"],
    }
    save()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-paths", type=int, default=64, help="paths per curve (default 64)")
    parser.add_argument("--e2e-paths", type=int, default=8, help="validated paths of the timed end-to-end run")
    parser.add_argument("--committor-paths", type=int, default=64, help="geodesic paths whose p_B is estimated")
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--frames", type=int, default=2, help="evenly spaced frames per path besides the maximum")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    parser.add_argument("--checkpoint", default=None, help="default: the shipped alanine-tetrapeptide model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/bench_tetrapeptide", help="directory for the paths runs")
    parser.add_argument("--quick", action="store_true", help="4 paths per curve, 2 committor paths, 10 shots")
    parser.add_argument("--out", default="benchmarks/results/tetrapeptide.json")
    parser.add_argument("--resume", action="store_true",
                        help="keep the stages already in --out (e.g. raise --committor-paths without redoing paths)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine the pairs of result files into --out")
    args = parser.parse_args(argv)
    if args.merge:
        merged: dict = {}
        for file in args.merge:
            part = json.loads(Path(file).read_text())
            pairs = part.pop("pairs")
            merged = merged or {**part, "pairs": {}}
            if part["protocol"] != merged["protocol"]:
                print(f"note: {file} ran another protocol: {part['protocol']}")
                merged.setdefault("protocols", {})[file] = part["protocol"]
            merged["pairs"].update(pairs)
        Path(args.out).write_text(json.dumps(merged, indent=2))
        print(f"written {args.out} ({', '.join(merged['pairs'])})")
        return 0
    if args.quick:
        args.n_paths, args.e2e_paths, args.committor_paths, args.shots = 4, 2, 2, 10
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"benchmark": "tetrapeptide", "system": "alanine-tetrapeptide",
                    "checkpoint": args.checkpoint or "pretrained:alanine-tetrapeptide",
                    "protocol": {"n_paths_per_curve": args.n_paths, "e2e_paths": args.e2e_paths,
                                 "committor_paths": args.committor_paths, "shots": args.shots,
                                 "frames": args.frames, "seed": args.seed,
                                 "full_protocol": args.n_paths >= 64 and args.committor_paths >= 64
                                 and args.shots >= 20},
                    "goals": GOALS, "pairs": {}}
    if args.resume and out.is_file():
        report["pairs"] = json.loads(out.read_text())["pairs"]

    def save() -> None:
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(out)

    for name in args.pairs:
        start, end = PAIRS[name]
        report["pairs"].setdefault(name, {})
        run_pair(name, start, end, args, work, report["pairs"][name], save)
        save()
    print(f"{'pair':<13}{'hit':>6}{'chiral':>8}{'max E geo':>11}{'max E line':>12}{'geodesic s':>12}"
          f"{'e2e s':>8}{'p_B in 0.5+-0.2: refined max':>30}{'saddle point':>14}")
    for name, r in report["pairs"].items():
        g, s, c = r["paths"]["geodesic"], r["paths"]["straight"], r["committor"]
        frac = "n/a" if c["within_fraction"] is None else f"{c['within_fraction']:.0%} of {c['n_paths']}"
        sfrac = "n/a" if c.get("saddle_within_fraction") is None else f"{c['saddle_within_fraction']:.0%}"
        print(f"{name:<13}{g['target_hit_rate']:>6.0%}{g['chirality_kept_fraction']:>8.1%}"
              f"{g['max_energy_kj_mol']['mean']:>11.1f}{s['max_energy_kj_mol']['mean']:>12.1f}"
              f"{r['end_to_end']['geodesic_s']:>12.1f}{r['end_to_end']['wall_time_s']:>8.1f}{frac:>30}{sfrac:>14}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
