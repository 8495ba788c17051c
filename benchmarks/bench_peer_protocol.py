"""The field's alanine dipeptide path-sampling protocol, for our geodesic and the straight line (issue 21).

Protocol (PIPS, TPS-DPS, TR-LV; metric code of TPS-DPS): C5 (phi -147, psi 174 deg) -> C7ax
(phi 65, psi 18 deg), amber99sbildn, vacuum, 300 K, 1 fs steps, 64 paths, endpoint structures as
given (MD snapshots, not minimised), every step a frame. Metrics:

- THP: final frame's (phi, psi) within 0.75 rad (periodic Euclidean) of the target structure's,
  with the true phi atoms (4, 6, 8, 14) (TPS-DPS's code uses 1, 6, 8, 14);
- ETS: maximum absolute OpenMM potential energy over every frame of a path, mean +- std
  (population std, as TPS-DPS's ``jnp.std``) over the paths that hit;
- RMSD: heavy-atom Kabsch RMSD of the final frame to the target structure (Angstrom), mean +- std
  over all paths, as issue 21 defines it. TPS-DPS's metric code aligns and averages over *every*
  atom, hydrogens included, so the all-atom RMSD is printed beside it (``rmsd_all``).

Rows: our geodesic and the straight spacetime line, (a) with 1 ps per path by the time-budget
sampler (``--path-time-ps 1 --friction-per-ps 1``; the arrival friction, 10/ps after the curve's
largest restrained-minimum jump, is its default), (b) with 1 ps as uniform steps (64 points x
16 steps, friction 10: the shipped sampler at 1 ps), (c) at our default (64 x 300 steps = 19.2 ps,
friction 10) and (d) 19.2 ps by the time-budget sampler (friction 10).
Seeds 0 and 1 (the geodesic is solved once; the seed drives the Langevin noise). Force
evaluations and wall time per path, and the model's one-off cost from its model card, are
printed beside the published rows.

Every row quenches the endpoint structures for the solve and the restraints (the package's
default, ``PathConfig.quench_endpoints``); the paths start from the given start structure and the
metrics are taken against the given end structure (``result["end_nm"]``).

Endpoints: ``--start-pdb`` / ``--end-pdb`` (the peers' files when you have them). Without them,
stand-ins are made the way the peers made theirs, as MD snapshots: from the shipped C7eq / C7ax
structure, phi and psi are restrained (2000 kJ/mol/rad^2) to (-147, 174) / (65, 18) deg,
minimised, and run 5 ps at 300 K (Langevin, 1 fs, 1/ps, seeds 1 / 2); the last frame is written,
not minimised.

    python benchmarks/bench_peer_protocol.py [--n-paths 64] [--seeds 0 1] [--variants budget uniform default default-budget]
        [--friction-1ps 1] [--budget-ps 1 2] [--out FILE]

Published rows (1 ps, 64 paths), as collected in BENCHMARKS.md:
PIPS: Holdijk et al., NeurIPS 2023, as evaluated by TPS-DPS (Seong et al., ICLR 2025);
TPS-DPS: rerun over 3 seeds by the TR-LV authors; TR-LV and SMD as reported by TR-LV.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from spacetime_md.molecular.system.presets import ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI  # noqa: E402

PUBLISHED = [
    # name, THP %, ETS, ETS std, RMSD, RMSD std, training
    ("PIPS (as evaluated by TPS-DPS)", 43.75, 28.17, 10.86, 0.66, 0.15, "~275 A100-h"),
    ("TPS-DPS (rerun by TR-LV, 3 seeds)", 39.58, 46.34, 10.16, 0.47, 0.18, "~20.7 A100-h"),
    ("TR-LV", 61.25, 49.11, 5.84, 0.29, 0.03, "-"),
    ("SMD", 54.69, 78.40, 12.76, 0.56, 0.27, "none"),
]
PHI, PSI = ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI  # the preset's true torsion atoms
STAND_INS = {"C5": ("alanine_dipeptide/C7eq.pdb", (-147.0, 174.0), 1),
             "C7ax": ("alanine_dipeptide/C7ax.pdb", (65.0, 18.0), 2)}  # OpenMM seed 0 = random


def make_stand_in(system, name: str, out_dir: Path) -> Path:
    """An MD snapshot at the peers' (phi, psi) (see the module docstring)."""
    import copy

    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from spacetime_md.molecular.system.build import system_data_path

    path = out_dir / f"{name}.pdb"
    if path.is_file():  # made by an earlier run: reuse, so a cached geodesic still matches
        return path
    pdb_rel, (phi, psi), seed = STAND_INS[name]
    pdb = app.PDBFile(str(system_data_path(pdb_rel)))
    omm = copy.deepcopy(system.openmm_system)
    force = openmm.CustomTorsionForce("0.5*k*min(d, 2*pi-d)^2; d = abs(theta-theta0); pi = 3.141592653589793")
    force.addGlobalParameter("k", 2000.0)
    force.addPerTorsionParameter("theta0")
    for atoms, value in ((PHI, phi), (PSI, psi)):
        force.addTorsion(*atoms, [np.deg2rad(value)])
    omm.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(omm, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.getPositions())
    openmm.LocalEnergyMinimizer.minimize(context, 1.0)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(5000)
    with open(path, "w") as fh:
        app.PDBFile.writeFile(pdb.topology, context.getState(getPositions=True).getPositions(), fh)
    return path


def dihedral(x: np.ndarray, atoms) -> np.ndarray:
    """Torsion (rad) of ``atoms`` in ``x (..., N, 3)``, written out so the bench checks our CVs."""
    b0 = x[..., atoms[0], :] - x[..., atoms[1], :]
    b1 = x[..., atoms[2], :] - x[..., atoms[1], :]
    b2 = x[..., atoms[3], :] - x[..., atoms[2], :]
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def peer_metrics(system, paths, target_nm: np.ndarray, written_every: int = 1) -> dict:
    """THP, ETS, RMSD as TPS-DPS defines them (module docstring), from OpenMM energies of every frame.

    ``written_every``: also the ETS over every ``written_every``-th frame (``ets_written``), i.e. over
    the frames a run with that ``record_every`` writes (the shipped 19.2 ps default keeps every 20th
    step); the dynamics do not depend on how often frames are kept, so these are the same frames.
    """
    from spacetime_md.molecular.paths.structures import kabsch_rmsd

    final = paths.frames[:, -1]
    wrap = lambda a: np.angle(np.exp(1j * a))  # noqa: E731
    dphi = wrap(dihedral(final, PHI) - dihedral(target_nm, PHI))
    dpsi = wrap(dihedral(final, PSI) - dihedral(target_nm, PSI))
    hit = dphi**2 + dpsi**2 < 0.75**2
    energies = np.asarray(paths.energies)
    ets = energies.max(axis=1)
    ets_written = energies[:, written_every - 1::written_every].max(axis=1)
    rmsd = 10.0 * kabsch_rmsd(final, target_nm, system.heavy_atom_indices)
    rmsd_all = 10.0 * kabsch_rmsd(final, target_nm)  # every atom
    return {
        "thp": 100.0 * float(hit.mean()),
        "ets": float(ets[hit].mean()) if hit.any() else None,
        "ets_std": float(ets[hit].std()) if hit.any() else None,
        "written_every": int(written_every),
        "ets_written": float(ets_written[hit].mean()) if hit.any() else None,
        "ets_written_std": float(ets_written[hit].std()) if hit.any() else None,
        "rmsd": float(rmsd.mean()), "rmsd_std": float(rmsd.std()),
        "rmsd_all": float(rmsd_all.mean()), "rmsd_all_std": float(rmsd_all.std()),
        "chirality": 100.0 * float(paths.metrics["chirality_kept_fraction"]),
        "frames_per_path": int(paths.frames.shape[1]),
    }


def written_ets(m: dict) -> str:
    """`` (frames written every K steps: ETS +- std)`` for a row whose default keeps every K-th step, else ""."""
    if m["written_every"] <= 1 or m["ets_written"] is None:
        return ""
    return f" (frames written every {m['written_every']} steps: {m['ets_written']:.1f} +- {m['ets_written_std']:.1f})"


def model_cost(checkpoint: str = "alanine-dipeptide") -> dict:
    """Data and training cost from a shipped model's card; "n/a" for a checkpoint file of your own."""
    from spacetime_md.molecular.model.pretrained import PRETRAINED, pretrained_path

    if checkpoint not in PRETRAINED:
        return {"data": "n/a (not a shipped model: no card)", "training_min": None, "machine": "n/a"}
    card = json.loads(pretrained_path(checkpoint).with_suffix(".json").read_text())
    return {"data": card.get("data", ""), "training_min": card["training"]["wall_time_min"],
            "machine": card["training"]["machine"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-pdb")
    parser.add_argument("--end-pdb")
    parser.add_argument("--n-paths", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--friction-1ps", type=float, default=1.0, help="friction (1/ps) of the 1 ps budget rows")
    parser.add_argument("--budget-ps", type=float, nargs="+", default=[1.0],
                        help="simulated time per path (ps) of the time-budget rows (variant 'budget'; default 1)")
    parser.add_argument("--work", default="runs/peer_protocol", help="folder for the stand-in endpoints")
    parser.add_argument("--variants", nargs="+", choices=("budget", "uniform", "default", "default-budget"),
                        default=["budget", "uniform", "default", "default-budget"])
    parser.add_argument("--checkpoint", default="alanine-dipeptide",
                        help="shipped model name or checkpoint file (default: the shipped default model)")
    parser.add_argument("--init-dips", type=float, nargs="+", default=None,
                        help="GeodesicConfig.init_dips of the solve (default: DEFAULT_GEODESIC's)")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import dataclasses

    from spacetime_md.core import optimize_geodesic
    from spacetime_md.molecular import load_system
    from spacetime_md.molecular.paths.config import PathConfig
    from spacetime_md.molecular.paths.transition import compute_transition_paths, prepare_geodesic_problem
    from spacetime_md.molecular.model.pretrained import load_checkpoint

    system = load_system("alanine-dipeptide")
    model = load_checkpoint(args.checkpoint)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = Path(args.start_pdb) if args.start_pdb else make_stand_in(system, "C5", work)
    end = Path(args.end_pdb) if args.end_pdb else make_stand_in(system, "C7ax", work)

    from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC

    base = PathConfig(n_paths=args.n_paths, geodesic=DEFAULT_GEODESIC if args.init_dips is None else
                      dataclasses.replace(DEFAULT_GEODESIC, init_dips=tuple(args.init_dips)))
    problem = prepare_geodesic_problem(system, model, start, end, base)
    t0 = time.perf_counter()
    geo = optimize_geodesic(problem.model, problem.start, problem.end, base.geodesic, problem.constraints)
    geo_s = time.perf_counter() - t0
    print(f"endpoints {start} -> {end}; geodesic solved once in {geo_s:.1f} s "
          f"({geo.n_denoiser_evals} denoiser rows), energy {geo.energy:.1f} (initial curve {geo.initial_energy:.1f})",
          flush=True)

    known = {
        # record_every=1 everywhere: the protocol keeps every step (a replaced PathConfig would keep
        # the base config's resolved record_every of 20).
        **{f"budget{ps:g}": (f"{ps:g} ps, time budget", dict(path_time_ps=ps, friction_per_ps=args.friction_1ps,
                                                             record_every=1)) for ps in args.budget_ps},
        "uniform": ("1 ps, uniform 64x16", dict(n_points=64, n_steps=16, record_every=1)),
        "default": ("19.2 ps default 64x300", dict(record_every=1)),
        "default-budget": ("19.2 ps, time budget", dict(path_time_ps=19.2, record_every=1)),
    }
    variants = [known[f"budget{ps:g}"] for v in args.variants if v == "budget" for ps in args.budget_ps]
    variants += [known[v] for v in args.variants if v != "budget"]
    rows = []
    for label, overrides in variants:
        for seed in args.seeds:
            config = dataclasses.replace(base, seed=seed, **overrides)
            t1 = time.perf_counter()
            if config.n_frames_per_path != (config.total_steps or config.n_points * config.n_steps):
                raise RuntimeError(f"{label}: expected every step recorded, got record_every={config.record_every}")
            # the frames this variant would write with its own record_every (20 for the default)
            written = dataclasses.replace(config, record_every=None).record_every
            result = compute_transition_paths(system, model, start, end, config, geodesic=geo)
            wall = time.perf_counter() - t1
            timings = result["report"]["timings"]
            for kind, paths in (("geodesic", result["paths"]), ("straight", result["baseline"])):
                m = peer_metrics(system, paths, result["end_nm"], written_every=written)
                m.update(label=label, kind=kind, seed=seed,
                         force_evals_per_path=paths.metrics["force_evaluations_per_path"],
                         sampling_s_per_path=timings["paths_s"] / (2 * config.n_paths),
                         wall_s=wall, friction=config.friction_per_ps)
                rows.append(m)
                print(f"{label:24s} {kind:8s} seed {seed}: THP {m['thp']:5.1f} %  ETS "
                      f"{m['ets'] if m['ets'] is not None else float('nan'):6.1f} +- "
                      f"{m['ets_std'] if m['ets_std'] is not None else float('nan'):5.1f}{written_ets(m)}"
                      f"  RMSD {m['rmsd']:.2f} +- "
                      f"{m['rmsd_std']:.2f} (all atoms {m['rmsd_all']:.2f})  chirality {m['chirality']:.0f} %  {m['force_evals_per_path']} steps/path, "
                      f"{m['sampling_s_per_path']:.3f} s/path", flush=True)
            del result

    cost = model_cost(args.checkpoint)
    minutes = cost["training_min"]
    train_cell = "model n/a (no card)" if minutes is None else f"model {minutes:.0f} min CPU, once"
    print("\n| method | THP % | ETS kJ/mol | RMSD A | force evals / path | s / path | training |")
    print("|---|---|---|---|---|---|---|")
    for name, thp, ets, ets_sd, rmsd, rmsd_sd, train in PUBLISHED:
        print(f"| {name} | {thp:.2f} | {ets:.2f} +- {ets_sd:.2f} | {rmsd:.2f} +- {rmsd_sd:.2f} | 1 000 (1 ps) | | {train} |")
    for m in rows:
        ets = "n/a" if m["ets"] is None else f"{m['ets']:.1f} +- {m['ets_std']:.1f}{written_ets(m)}"
        print(f"| spacetime_md {m['kind']}, {m['label']}, seed {m['seed']} | {m['thp']:.1f} | {ets} | "
              f"{m['rmsd']:.2f} +- {m['rmsd_std']:.2f} | {m['force_evals_per_path']} | {m['sampling_s_per_path']:.3f} | "
              f"{train_cell} |")
    print(f"\nOne-off model cost (model card): data {cost['data']}; training {'n/a' if minutes is None else f'{minutes:g} min'} "
          f"({cost['machine']}). Geodesic: {geo_s:.1f} s once per pair, shared by all rows.")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "geodesic_s": geo_s, "model_cost": cost,
                                              "start": str(start), "end": str(end)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
