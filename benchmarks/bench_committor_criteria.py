"""Which relaxation puts a path's relaxed-energy maximum at p_B = 1/2? (issue 9, transition states)

Reads the dense committor windows written by ``bench_committor.py RUN_DIR --dense SHOTS`` (p_B at
every recorded frame of each geodesic path's crossing window) and, for each window, re-quenches
every frame with a different set of dihedrals restrained to the frame's own values, takes the
frame of highest relaxed energy and looks up its p_B. Restraint sets:

- ``phi,psi``: the project's criterion (:class:`~spacetime_md.molecular.paths.relaxed.DihedralQuencher`);
  every set is quenched by :class:`~spacetime_md.molecular.paths.relaxed.TorsionQuencher` (same restraint,
  force constant and minimiser);
- ``phi,psi,theta`` and ``phi,theta``: theta = dihedral O(ACE)-C(ACE)-N-CA, the extra coordinate
  the alanine-dipeptide isomerisation literature points to in vacuum (phi and psi alone do not
  describe the committor there);
- ``phi``: the main rotation only.

It prints, per set, how many paths have p_B within 0.5 +- 0.2 at their maximum, and writes JSON.

    python benchmarks/bench_committor.py runs/ala2 --paths 8 --frames 48 --shots 20 --dense 40 \\
        --out runs/committor_dense.json
    python benchmarks/bench_committor_criteria.py runs/ala2 runs/committor_dense.json

Without arguments (as ``run_all.py`` calls it) it first runs the main command's job into a
temporary directory and its dense committor windows (``--quick``: 2 paths, 10 + 20 shots).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spacetime_md._atomic import write_json_atomic
from spacetime_md.molecular.workflows.committor_run import _system_for_paths
from spacetime_md.molecular.paths.transition import TransitionPaths
from spacetime_md.molecular.paths.relaxed import TorsionQuencher

TOLERANCE = 0.2
THETA = (5, 4, 6, 8)  # O(ACE), C(ACE), N, CA (zero-based, common PDB order)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths_dir", nargs="?", default=None,
                        help="the `spacetime-md paths` run the dense windows were measured on (default: run one)")
    parser.add_argument("dense_json", nargs="?", default=None, help="output of bench_committor.py --dense")
    parser.add_argument("--quick", action="store_true", help="without arguments: 2 paths, fewer shots")
    parser.add_argument("--out", default="benchmarks/results/committor_criteria.json")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if (args.paths_dir is None) != (args.dense_json is None):
        parser.error("expected both PATHS_DIR and DENSE_JSON, or neither")
    scratch = None
    if args.paths_dir is None:
        import tempfile

        import bench_committor
        from spacetime_md.molecular.paths.config import PathConfig
        from spacetime_md.molecular.paths.run import run_paths

        scratch = tempfile.TemporaryDirectory(prefix="bench_committor_criteria_")
        n_paths, shots, dense = (2, 10, 20) if args.quick else (8, 20, 40)
        print(f"no run given: the main command's job with {n_paths} paths into {scratch.name}, then dense windows")
        run_paths(scratch.name, config=PathConfig(n_paths=n_paths, seed=0), plots=False)
        args.paths_dir, args.dense_json = scratch.name, str(Path(scratch.name) / "dense.json")
        bench_committor.main([scratch.name, "--paths", str(n_paths), "--frames", "48", "--shots", str(shots),
                              "--dense", str(dense), "--out", args.dense_json])
    report = json.loads(Path(args.dense_json).read_text())
    rows = [r for r in report["curves"].get("geodesic", []) if "dense" in r]
    if not rows:
        raise SystemExit(f"error: {args.dense_json}: expected geodesic paths with 'dense' windows "
                         "(run bench_committor.py --dense SHOTS), got none")
    system, _ = _system_for_paths(Path(args.paths_dir), None)
    paths = TransitionPaths.load(args.paths_dir, kind="geodesic")
    phi, psi = tuple(system.phi_indices), tuple(system.psi_indices)
    sets = {"phi,psi": [phi, psi], "phi,psi,theta": [phi, psi, THETA], "phi,theta": [phi, THETA], "phi": [phi]}
    quenchers = {name: TorsionQuencher(system.openmm_system, t, platform=system.platform_name)
                 for name, t in sets.items()}
    results = {name: [] for name in sets}
    for r in rows:
        frames = np.asarray(r["dense"]["frames"])
        p_b = np.asarray(r["dense"]["p_b"], dtype=float)
        x = np.asarray(paths.frames[r["path"]][frames], dtype=float)
        cells = []
        for name, quench in quenchers.items():
            i = int(np.argmax(quench.quench_frames(x)))
            results[name].append({"path": r["path"], "frame": int(frames[i]), "p_b": float(p_b[i]),
                                  "within": bool(abs(p_b[i] - 0.5) <= TOLERANCE)})
            cells.append(f"{name} {p_b[i]:.2f}{'*' if results[name][-1]['within'] else ' '}")
        print(f"path {r['path']}: p_B at the relaxed-energy maximum: " + "; ".join(cells))
    summary = {name: sum(x["within"] for x in res) for name, res in results.items()}
    print("paths with p_B within 0.5 +- 0.2 at the maximum: "
          + ", ".join(f"{name} {n}/{len(rows)}" for name, n in summary.items())
          + f" ({time.perf_counter() - t0:.1f} s)")
    out = write_json_atomic(args.out, {
        "dense_json": str(args.dense_json), "theta_atoms": THETA, "tolerance": TOLERANCE, "n_paths": len(rows),
        "summary": {f"within_{k}": v for k, v in summary.items()}, "per_path": results,
        "wall_time_s": time.perf_counter() - t0})
    print(f"written {out}")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
