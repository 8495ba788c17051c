"""Committor profiles of geodesic transition paths vs the straight-line baseline (issue 9).

For paths of a `spacetime-md paths` run directory (which holds both kinds), estimates p_B at
``--frames`` evenly spaced frames plus the frame of highest relaxed energy, with ``--shots``
unbiased OpenMM shots each, and reports per curve kind:

- whether p_B crosses 1/2 along the path, and the transition-state candidate (p_B closest to 1/2);
- p_B of the highest-relaxed-energy frame and of the *refined* relaxed-energy maximum (the
  path's (phi, psi) route around that frame subdivided and relaxed, see
  ``CommittorConfig.refine``) and of the force field's saddle point next to it
  (``CommittorConfig.saddle``), and whether each lies within 0.5 +- 0.2. The goal, for the
  geodesic paths (the energy maximum of a good path is its transition state): the median p_B at
  the refined maximum within 0.5 +- 0.2, and at least ``GOAL_FRACTION`` of the paths within;
- undecided shots and wall time.

``--dense SHOTS`` re-estimates, for each geodesic path, p_B at *every* recorded frame of the
crossing window (between the evaluated frames that bracket the first p_B >= 1/2, widened to
include the highest-relaxed-energy frame) with SHOTS shots each, and reports p_B of the
highest-relaxed-energy frame there, the frame whose p_B is closest to 1/2 with its (phi, psi),
and the spread of relaxed energies across the window: it tells whether a miss comes from the
frame spacing or from the relaxed-energy criterion itself. The window also covers the maximum of
every frame-wise criterion (``relaxed``: (phi, psi) held; ``quenched``: heavy atoms held), and
p_B at each is reported on the same shots; ``--energy`` picks the criterion of the coarse run.

Path ``p`` of the ``i``-th run directory shoots with seed ``100000 * --seed + 1000 * i + p``, so
two paths that share a structure (the saddle point) give two independent estimates there.

``--reference`` adds the classical dihedral-drive path (restrained minimisations along a line
in (phi, psi)) as a third profile. Results are resumable (each path's shots are checkpointed in
``PATHS_DIR/committor_<kind>_path<P>``) and written as JSON.

    spacetime-md paths --out runs/c7eq_c7ax --relaxed
    python benchmarks/bench_committor.py [runs/c7eq_c7ax ...] [--frames 10] [--shots 20] [--paths 2] [--quick]
        [--workers 2] [--reference] [--dense SHOTS] [--energy quenched|relaxed|raw]
        [--refine-window 2] [--refine-substeps 10]
        [--out benchmarks/results/committor.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from spacetime_md.molecular.workflows.committor_config import ENERGIES, CommittorConfig
from spacetime_md.molecular.workflows.committor_run import compute_dihedral_drive_path, run_committor
from spacetime_md.molecular.workflows.committor import estimate_committor
from spacetime_md.molecular.paths.transition import TransitionPaths

TOLERANCE = 0.2
#: Share of paths whose refined maximum must lie within the tolerance (with 20 shots, a point at
#: exactly p_B = 1/2 falls within 0.5 +- 0.2 with probability 0.96, so "every path" would fail
#: by chance on a large set).
GOAL_FRACTION = 0.75


def headline(rows: dict[str, list[dict]], goal: bool) -> dict:
    """Flat numbers for ``run_all.py``: per curve, paths, paths within the tolerance at the refined
    maximum and at the highest-energy frame, and the refined maximum's median p_B."""
    out: dict = {"goal_met": int(goal)}
    for kind, rs in rows.items():
        rpb = [r["refined_p_b"] for r in rs if r.get("refined_p_b") is not None]
        out[f"{kind}_paths"] = len(rs)
        out[f"{kind}_refined_within"] = sum(r.get("refined_within_tolerance", False) for r in rs)
        out[f"{kind}_frame_within"] = sum(r["max_energy_within_tolerance"] for r in rs)
        out[f"{kind}_refined_median_p_b"] = float(np.median(rpb)) if rpb else float("nan")
        spb = [r["saddle_p_b"] for r in rs if r.get("saddle_p_b") is not None]
        out[f"{kind}_saddle_within"] = sum(r.get("saddle_within_tolerance", False) for r in rs)
        out[f"{kind}_saddle_median_p_b"] = float(np.median(spb)) if spb else float("nan")
    return out


def goal_met(rows: list[dict]) -> bool:
    """The benchmark's goal on one curve's rows (see ``GOAL_FRACTION``)."""
    pb = [r["refined_p_b"] for r in rows if r.get("refined_p_b") is not None]
    if not rows or len(pb) < len(rows):
        return False
    within = sum(r["refined_within_tolerance"] for r in rows)
    return bool(abs(float(np.median(pb)) - 0.5) <= TOLERANCE and within >= GOAL_FRACTION * len(rows))


def summarise(result) -> dict:
    k = int(np.flatnonzero(result.frames == result.max_energy_frame)[0])
    p = result.p_b[k]
    row = {
        "crosses_half": result.crosses_half,
        "ts_candidates": result.ts_candidates,
        "max_energy_frame": result.max_energy_frame,
        "max_energy_source": result.max_energy_source,
        "max_energy_s": float(result.s[k]),
        "max_energy_p_b": None if not np.isfinite(p) else float(p),
        "max_energy_p_b_interval": [float(result.p_b_low[k]), float(result.p_b_high[k])],
        "max_energy_within_tolerance": bool(np.isfinite(p) and abs(p - 0.5) <= TOLERANCE),
        "p_b_profile": [None if not np.isfinite(v) else float(v) for v in result.p_b],
        "s": result.s.tolist(),
        "shots": result.n_shots_total,
        "undecided": int(result.n_undecided.sum()),
        "wall_time_s": result.wall_time_s,
        "message": result.message,
    }
    # p_B at the two structures off the path, each with what places it
    for prefix, r, where in (("refined", result.refined, ("frame_position", "phi_psi_deg")),
                             ("saddle", result.saddle, ("energy_kj_mol", "torsions_deg"))):
        if r is not None:
            row.update({
                f"{prefix}_p_b": r["p_b"],
                f"{prefix}_p_b_interval": r["p_b_interval"],
                f"{prefix}_within_tolerance": bool(r["p_b"] is not None and abs(r["p_b"] - 0.5) <= TOLERANCE),
                **{f"{prefix}_{key}": r[key] for key in where},
            })
    row["saddle_na_reason"] = result.saddle_na_reason
    return row


def dense_window(system, paths: TransitionPaths, result, base: CommittorConfig, path: int, n_shots: int) -> dict:
    """p_B at every frame of one geodesic path's crossing window (see the module docstring).

    The window also covers the highest-energy frame of every criterion in ``RELAXED_ENERGIES``
    (computed on the whole path), so the criteria are compared on the same shots.
    """
    from spacetime_md.molecular.workflows.shots import RELAXED_ENERGIES

    frames = np.asarray(paths.frames[path], dtype=np.float64)
    energies = {name: fn(system, frames) for name, fn in RELAXED_ENERGIES.items()}
    maxima = {name: int(np.argmax(e)) for name, e in energies.items()}
    maxima[result.max_energy_source] = result.max_energy_frame
    evaluated, p_b = result.frames, np.nan_to_num(result.p_b, nan=0.0)
    k = int(np.argmax(p_b >= 0.5)) if (p_b >= 0.5).any() else len(p_b) - 1
    lo = int(evaluated[max(k - 1, 0)])
    hi = int(evaluated[min(k + 1, len(evaluated) - 1)])
    lo = max(min(lo, *(m - 2 for m in maxima.values())), 0)
    hi = min(max(hi, *(m + 2 for m in maxima.values())), len(frames) - 1)
    window = frames[lo : hi + 1]
    cfg = dataclasses.replace(base, n_frames=len(window), n_shots=n_shots, include_max_energy=False, energy="raw",
                              start_state=result.start_state, target_state=result.target_state, kind="geodesic",
                              path=0)
    dense = estimate_committor(window, system, cfg)
    index = lo + dense.frames
    relaxed = energies["relaxed"][index]
    at_max = float(dense.p_b[int(np.flatnonzero(index == result.max_energy_frame)[0])])
    half = int(np.nanargmin(np.abs(dense.p_b - 0.5)))
    phi, psi = np.degrees(dense.phi_psi[half])
    row = {"window": [lo, hi], "shots_per_frame": n_shots, "max_energy_frame": result.max_energy_frame,
           "max_energy_p_b": at_max, "max_energy_within_tolerance": bool(abs(at_max - 0.5) <= TOLERANCE),
           "closest_to_half_frame": int(index[half]), "closest_to_half_p_b": float(dense.p_b[half]),
           "closest_to_half_phi_psi_deg": [float(phi), float(psi)],
           "relaxed_energy_window_kj_mol": [float(relaxed.min()), float(relaxed.max())],
           "relaxed_energy_top3_spread_kj_mol": float(np.ptp(np.sort(relaxed)[-3:])),
           "p_b": dense.p_b.tolist(), "frames": index.tolist(), "relaxed_energies": relaxed.tolist(),
           "criteria": {}}
    for name, frame in maxima.items():
        pb = float(dense.p_b[int(np.flatnonzero(index == frame)[0])])
        row["criteria"][name] = {"frame": frame, "p_b": pb, "within_tolerance": bool(abs(pb - 0.5) <= TOLERANCE)}
    print(f"[geodesic path {path}, dense] frames {lo}-{hi} x {n_shots} shots: p_B at the {result.max_energy_source}-energy maximum "
          f"(frame {result.max_energy_frame}) {at_max:.2f}; closest to 1/2: frame {index[half]} p_B "
          f"{dense.p_b[half]:.2f} at (phi, psi) = ({phi:.1f}, {psi:.1f}) deg; top-3 relaxed energies within "
          f"{row['relaxed_energy_top3_spread_kj_mol']:.2f} kJ/mol; p_B at each criterion's maximum: "
          + ", ".join(f"{n} {c['p_b']:.2f} (frame {c['frame']})" for n, c in row["criteria"].items()))
    return row


def worker_scaling(n_shots: int, n_workers: int) -> dict:
    """Same shots (barrier frames of the dihedral-drive path) in this process vs in workers.

    The workers are forced (``WORKERS_AFTER_S = 0``); their time includes starting them.
    Results are identical by construction (per-shot seeds); the ratio is the speed-up.
    """
    import spacetime_md.molecular.workflows.committor as committor
    from spacetime_md.molecular import load_system

    system = load_system("alanine-dipeptide")
    frames = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=32).frames[0]
    frames = frames[system.assign_states(frames) == -1]
    cfg = CommittorConfig(n_frames=len(frames), n_shots=n_shots, start_state="C7eq", target_state="C7ax",
                          include_max_energy=False, n_workers=1)
    times = {}
    saved = committor.WORKERS_AFTER_S
    try:
        committor.WORKERS_AFTER_S = 0.0
        for workers in (1, n_workers):
            t = time.perf_counter()
            r = estimate_committor(frames, system, dataclasses.replace(cfg, n_workers=workers))
            times[workers] = time.perf_counter() - t
    finally:
        committor.WORKERS_AFTER_S = saved
    out = {"shots": r.n_shots_total, "md_steps": r.md_steps, "in_process_s": times[1],
           f"workers_{n_workers}_s": times[n_workers], "speedup": times[1] / times[n_workers]}
    print(f"worker scaling: {r.n_shots_total} shots, {r.md_steps} MD steps: in-process {times[1]:.1f} s, "
          f"{n_workers} workers {times[n_workers]:.1f} s (start-up included): speed-up {out['speedup']:.2f}x")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths_dirs", nargs="*", metavar="PATHS_DIR",
                        help="output directories of `spacetime-md paths` (with the baseline; several are pooled); "
                             "default: run the main command's job (shipped model, 4 paths per kind) into a temporary "
                             "directory")
    parser.add_argument("--quick", action="store_true", help="fewer frames and shots (for run_all.py --quick)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--paths", type=int, default=1, help="paths per kind (0, 1, ...; default 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-length-ps", type=float, default=5.0)
    parser.add_argument("--energy", choices=ENERGIES, default=CommittorConfig.energy,
                        help="energy that picks the highest-energy frame (default: the committor's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refine-window", type=int, default=CommittorConfig.refine_window,
                        help="frames on each side of the highest-energy frame that the refinement covers")
    parser.add_argument("--refine-substeps", type=int, default=CommittorConfig.refine_substeps)
    parser.add_argument("--dense", type=int, metavar="SHOTS", default=0,
                        help="also p_B at every frame of each geodesic path's crossing window, SHOTS shots each")
    parser.add_argument("--reference", action="store_true", help="also the dihedral-drive reference path")
    parser.add_argument("--scaling", type=int, metavar="SHOTS", default=0,
                        help="also time SHOTS shots per barrier frame in-process vs --workers processes")
    parser.add_argument("--out", default="benchmarks/results/committor.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.shots = min(args.frames, 8), min(args.shots, 10)
    scratch = None
    if not args.paths_dirs:
        import tempfile

        from spacetime_md.molecular.paths.config import PathConfig
        from spacetime_md.molecular.paths.run import run_paths

        scratch = tempfile.TemporaryDirectory(prefix="bench_committor_")
        args.paths_dirs = [scratch.name]
        print(f"no paths directory given: running C7eq -> C7ax with the shipped model into {scratch.name}")
        run_paths(scratch.name, config=PathConfig(n_paths=max(args.paths, 1), seed=args.seed), plots=False)

    base = CommittorConfig(n_frames=args.frames, n_shots=args.shots, n_workers=args.workers,
                           max_length_ps=args.max_length_ps, seed=args.seed, energy=args.energy,
                           refine_window=args.refine_window, refine_substeps=args.refine_substeps)
    rows: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    system = None
    if args.dense or args.reference:
        from spacetime_md.molecular.workflows.committor_run import _system_for_paths

        system, _ = _system_for_paths(Path(args.paths_dirs[0]), None)
    for i, paths_dir in enumerate(args.paths_dirs):
        for kind in ("geodesic", "straight"):
            paths = TransitionPaths.load(paths_dir, kind=kind)
            for p in range(min(args.paths, paths.n_paths)):
                # Each path its own shot seeds: paths of one curve often share a transition state
                # (the saddle point), and shared seeds would repeat one draw there.
                seed = args.seed * 100_000 + 1_000 * i + p
                result = run_committor(paths_dir, None, dataclasses.replace(base, kind=kind, path=p, seed=seed))
                rows.setdefault(kind, []).append({"paths_dir": paths_dir, "path": p, **summarise(result)})
                print(f"[{paths_dir}: {kind} path {p}]\n{result.format_table()}\n")
                if args.dense and kind == "geodesic":
                    rows[kind][-1]["dense"] = dense_window(system, paths, result, base, p, args.dense)
    if args.reference:
        ref = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=32)
        result = estimate_committor(ref, system, base, out_dir=Path(args.paths_dirs[0]) / "committor_dihedral_drive")
        rows["dihedral-drive"] = [{"path": 0, **summarise(result)}]
        print(f"[dihedral-drive reference]\n{result.format_table()}\n")

    geo = rows.get("geodesic", [])
    goal = goal_met(geo)
    summary = headline(rows, goal)
    print(f"{'curve':<16}{'paths':>6}{'crosses 1/2':>13}{'median p_B at max E':>21}{'within 0.5+-0.2':>17}"
          f"{'refined: median p_B':>21}{'within':>9}{'saddle: median p_B':>20}{'within':>9}{'undecided':>11}")
    for kind, rs in rows.items():
        pb = [r["max_energy_p_b"] for r in rs if r["max_energy_p_b"] is not None]
        print(f"{kind:<16}{len(rs):>6}{sum(r['crosses_half'] for r in rs):>9}/{len(rs):<3}"
              f"{(np.median(pb) if pb else float('nan')):>21.2f}"
              f"{sum(r['max_energy_within_tolerance'] for r in rs):>13}/{len(rs):<3}"
              f"{summary[f'{kind}_refined_median_p_b']:>21.2f}"
              f"{summary[f'{kind}_refined_within']:>6}/{len(rs):<3}"
              f"{summary[f'{kind}_saddle_median_p_b']:>20.2f}"
              f"{summary[f'{kind}_saddle_within']:>6}/{len(rs):<3}"
              f"{sum(r['undecided'] for r in rs):>11}")
    if args.dense and geo:
        dense = [r["dense"] for r in geo]
        phis = ", ".join(f"{d['closest_to_half_phi_psi_deg'][0]:.0f}" for d in dense)
        hits = sum(d["max_energy_within_tolerance"] for d in dense)
        print(f"dense windows ({args.dense} shots per frame): p_B at the {base.energy}-energy maximum within 0.5 +- "
              f"{TOLERANCE} for {hits}/{len(dense)} geodesic paths; p_B closest to 1/2 at phi = {phis} deg")
        for name in dense[0]["criteria"]:
            n_in = sum(d["criteria"][name]["within_tolerance"] for d in dense)
            print(f"  same shots, highest {name} energy: within 0.5 +- {TOLERANCE} for {n_in}/{len(dense)}")
    print(f"goal (p_B at the geodesic paths' refined highest-relaxed-energy point: median within 0.5 +- {TOLERANCE}, "
          f"and at least {GOAL_FRACTION:.0%} of the paths within): {'met' if goal else 'NOT met'}; "
          f"total {time.perf_counter() - t0:.1f} s")

    report: dict = {"paths_dirs": [str(Path(d).resolve()) for d in args.paths_dirs], "config": base.to_dict(),
                    "tolerance": TOLERANCE, "goal_met": goal, "curves": rows, "summary": summary,
                    "wall_time_s": time.perf_counter() - t0}
    if args.scaling:
        report["worker_scaling"] = worker_scaling(args.scaling, args.workers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths_config = Path(args.paths_dirs[0]) / "config.json"
    if paths_config.is_file():
        report["paths_checkpoint"] = json.loads(paths_config.read_text()).get("checkpoint")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"written {out}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
