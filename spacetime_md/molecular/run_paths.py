"""The ``spacetime-md paths`` job: load, compute, write outputs (files, report, plots)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spacetime_md._atomic import write_json_atomic
from spacetime_md.molecular.paths import PathConfig, TransitionPaths, compute_transition_paths

__all__ = ["run_paths", "format_table"]

logger = logging.getLogger(__name__)

REFERENCE_HISTOGRAM = "alanine_dipeptide/ramachandran_reference.npz"


def format_table(report: dict[str, Any]) -> str:
    """The printed summary: one row per curve kind, mean +- std over paths."""
    lines = [
        f"{'curve':<10}{'hit':>7}{'max E (kJ/mol)':>20}{'barrier':>18}{'RMSD (A)':>15}{'chiral':>8}{'evals/path':>12}",
    ]
    for kind in ("geodesic", "straight"):
        m = report.get(kind)
        if not m:
            continue
        lines.append(
            f"{kind:<10}{m['target_hit_rate']:>7.0%}"
            f"{m['max_energy_kj_mol']['mean']:>12.1f} +- {m['max_energy_kj_mol']['std']:<5.1f}"
            f"{m['barrier_kj_mol']['mean']:>10.1f} +- {m['barrier_kj_mol']['std']:<5.1f}"
            f"{m['final_heavy_rmsd_angstrom']['mean']:>8.2f} +- {m['final_heavy_rmsd_angstrom']['std']:<4.2f}"
            f"{m['chirality_kept_fraction']:>8.0%}{m['force_evaluations_per_path']:>12d}"
        )
        if "relaxed_barrier_kj_mol" in m:
            r = m["relaxed_barrier_kj_mol"]
            lines.append(f"{'':<10}relaxed barrier {r['mean']:.1f} +- {r['std']:.1f} kJ/mol")
    t = report["timings"]
    g = report["geodesic_curve"]
    lines.append(
        f"geodesic: energy {g['energy']:.4g} (straight line {g['initial_energy']:.4g}), lowest log_snr "
        f"{g['log_snr_min']:.2f}, {g['n_steps']} steps; time: geodesic {t['geodesic_s']:.1f} s, "
        f"paths {t['paths_s']:.1f} s, validation {t['validation_s']:.1f} s, total {t['total_s']:.1f} s"
    )
    return "\n".join(lines)


def _plots(out: Path, result: dict[str, Any], system) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spacetime_md.molecular.system import system_data_path

    written = []
    kinds = [k for k in ("paths", "baseline") if result.get(k) is not None]
    colours = {"geodesic": "tab:red", "straight": "tab:gray"}
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        hist_path = Path(str(system_data_path(REFERENCE_HISTOGRAM)))
    except (FileNotFoundError, ValueError):
        hist_path = None
    if hist_path is not None and hist_path.is_file():
        with np.load(hist_path) as h:
            counts = np.ma.masked_equal(h["counts"], 0)
            ax.pcolormesh(h["phi_edges"], h["psi_edges"], np.ma.log(counts).T, cmap="Blues", shading="flat")
    for key in kinds:
        paths: TransitionPaths = result[key]
        pp = np.asarray(paths.metrics["phi_psi"])
        for p in range(pp.shape[0]):
            ax.plot(pp[p, :, 0], pp[p, :, 1], ".", ms=2, color=colours[paths.kind],
                    label=paths.kind if p == 0 else None)
    ax.set_xlim(-np.pi, np.pi)
    ax.set_ylim(-np.pi, np.pi)
    ax.set_xlabel("phi (rad)")
    ax.set_ylabel("psi (rad)")
    ax.set_title("Transition paths over the Boltzmann samples")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ramachandran.png", dpi=120)
    plt.close(fig)
    written.append("ramachandran.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in kinds:
        paths = result[key]
        s = np.linspace(0, 1, paths.energies.shape[1])
        for p in range(paths.n_paths):
            ax.plot(s, paths.energies[p], color=colours[paths.kind], lw=0.8, alpha=0.7,
                    label=paths.kind if p == 0 else None)
    ax.set_xlabel("curve parameter s")
    ax.set_ylabel("OpenMM potential energy (kJ/mol)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "energies.png", dpi=120)
    plt.close(fig)
    written.append("energies.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in kinds:
        paths = result[key]
        ax.plot(np.linspace(0, 1, paths.log_snr.shape[0]), paths.log_snr, color=colours[paths.kind], label=paths.kind)
    ax.set_xlabel("curve parameter s")
    ax.set_ylabel("log SNR (model units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "log_snr.png", dpi=120)
    plt.close(fig)
    written.append("log_snr.png")
    return written


def run_paths(
    out_dir: str | os.PathLike,
    *,
    system: str = "alanine-dipeptide",
    solvent: str = "vacuum",
    start: Any = "C7eq",
    end: Any = "C7ax",
    config: PathConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    platform: str | None = None,
    plots: bool = True,
    progress: bool = False,
    geodesic: Any = None,
) -> dict[str, Any]:
    """Run the transition-path job and write everything into ``out_dir``.

    ``geodesic``: a :class:`~spacetime_md.core.GeodesicResult` already solved for this pair
    (see :func:`~spacetime_md.molecular.paths.compute_transition_paths`); the solve is skipped
    and ``config.json`` records ``"geodesic": "precomputed"``.

    Writes ``config.json`` (first), one DCD per path plus ``topology.pdb``, all paths in one
    HDF5 per curve kind, ``paths_<kind>.npz``, ``report.json`` and PNG plots. Returns the
    report with an extra ``table`` entry (the printed summary).
    """
    import openmm

    from spacetime_md import __version__
    from spacetime_md.molecular._io import save_npz_atomic
    from spacetime_md.molecular.pretrained import load_checkpoint, load_pretrained
    from spacetime_md.molecular.system import load_system

    config = config or PathConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    mol = load_system(system, solvent=solvent, platform=platform)
    model = load_checkpoint(checkpoint) if checkpoint else load_pretrained(mol.name)
    write_json_atomic(out / "config.json", {
        "command": "paths", "system": mol.name, "solvent": solvent, "start": str(start), "end": str(end),
        "checkpoint": str(checkpoint) if checkpoint else f"pretrained:{mol.name}",
        "platform": mol.platform_name, "path_config": config.to_dict(),
        "model": {"length_scale_nm": model.length_scale_nm, "n_atoms": model.n_atoms},
        # Float reductions depend on the thread count: same seed + same threads = same numbers.
        "torch_num_threads": torch.get_num_threads(),
        "geodesic": "solved" if geodesic is None else "precomputed",
        "versions": {"spacetime_md": __version__, "torch": torch.__version__, "openmm": openmm.__version__},
    })
    files: dict[str, Any] = {}

    def keep(stage: str, value: Any) -> None:
        # Written as soon as each stage finishes: a later failure keeps what was computed.
        if stage == "solve":
            geo = value["geodesic"]
            save_npz_atomic(out / "geodesic.npz", log_snr=geo.log_snr.cpu().numpy(), x=geo.x.cpu().numpy(),
                            start_nm=value["start_nm"], end_nm=value["end_nm"])
        else:
            files[stage] = value.save(out, mol)

    result = compute_transition_paths(mol, model, start, end, config, progress=progress, on_result=keep,
                                      geodesic=geodesic)
    report = result["report"]
    report["files"] = files
    if plots:
        report["plots"] = _plots(out, result, mol)
    write_json_atomic(out / "report.json", report)
    report["table"] = format_table(report)
    return report
