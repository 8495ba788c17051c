"""The ``spacetime-md paths`` job: load, compute, write outputs (files, report, plots).

The system is a preset name (``"alanine-dipeptide"``), a PDB file, a
:class:`~spacetime_md.molecular.MolecularSystem`, a :meth:`MolecularSystem.spec` dictionary,
or (with a checkpoint and no system) the system the checkpoint records
(:func:`~spacetime_md.molecular.model.pretrained.checkpoint_system`). Units as in
:mod:`spacetime_md.molecular.paths.transition` (nm, ps, kJ/mol, K; radians for angle CVs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spacetime_md._atomic import write_json_atomic
from spacetime_md._outputs import finish_output_dir, list_outputs, prepare_output_dir
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.paths.structures import check_model_matches_system, resolve_structure
from spacetime_md.molecular.paths.transition import TransitionPaths, compute_transition_paths
from spacetime_md.molecular.system.presets import DEFAULT_ENDPOINTS

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = ["run_paths", "format_table", "resolve_paths_system", "shipped_checkpoint", "ALANINE_PRESET",
           "load_geodesic", "geodesic_settings", "model_sha256"]

logger = logging.getLogger(__name__)

REFERENCE_HISTOGRAM = "alanine_dipeptide/ramachandran_reference.npz"
#: The preset whose shipped Ramachandran reference histogram is drawn under its paths.
ALANINE_PRESET = "alanine-dipeptide"
SYSTEM_FILE = "system.json"


def _pct(value: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.0%}"


def format_table(report: dict[str, Any]) -> str:
    """The printed summary: one row per curve kind, mean +- std over paths.

    Below a row: the hit rate of every residue / CV group when there are several, the relaxed
    barrier when computed (``n/a (reason)`` when undefined), and why a column reads ``n/a``; then
    what quenching did to the endpoint structures (when on) and the geodesic's line.
    """
    lines = [
        f"{'curve':<10}{'hit':>7}{'max E (kJ/mol)':>20}{'barrier':>18}{'RMSD (A)':>15}{'chiral':>8}{'evals/path':>12}",
    ]
    notes: list[str] = []
    for kind in ("geodesic", "straight"):
        m = report.get(kind)
        if not m:
            continue
        lines.append(
            f"{kind:<10}{m['target_hit_rate']:>7.0%}"
            f"{m['max_energy_kj_mol']['mean']:>12.1f} +- {m['max_energy_kj_mol']['std']:<5.1f}"
            f"{m['barrier_kj_mol']['mean']:>10.1f} +- {m['barrier_kj_mol']['std']:<5.1f}"
            f"{m['final_heavy_rmsd_angstrom']['mean']:>8.2f} +- {m['final_heavy_rmsd_angstrom']['std']:<4.2f}"
            f"{_pct(m['chirality_kept_fraction'], 8)}{m['force_evaluations_per_path']:>12d}"
        )
        for group, rate in (m.get("target_hit_by_group") or {}).items():
            lines.append(f"{'':<10}hit {group}: {rate:.0%}")
        if m.get("relaxed_barrier_kj_mol") is not None:
            r = m["relaxed_barrier_kj_mol"]
            lines.append(f"{'':<10}relaxed barrier {r['mean']:.1f} +- {r['std']:.1f} kJ/mol")
        elif "relaxed_barrier_na_reason" in m:
            lines.append(f"{'':<10}relaxed barrier n/a ({m['relaxed_barrier_na_reason']})")
        if m.get("chirality_kept_fraction") is None and "chirality_na_reason" in m:
            note = f"chiral: n/a ({m['chirality_na_reason']})"
            if note not in notes:
                notes.append(note)
    lines.extend(notes)
    quench = (report.get("endpoints") or {}).get("quench") or {}
    if "start" in quench:
        ends = [f"{which} {quench[which]['energy_given_kj_mol']:.1f} -> {quench[which]['energy_quenched_kj_mol']:.1f} "
                f"kJ/mol (heavy atoms moved {quench[which]['heavy_atom_shift_angstrom']:.2f} A)"
                for which in ("start", "end") if quench[which].get("used")]
        if ends:
            lines.append(f"endpoints quenched for the solve and restraints: {', '.join(ends)}")
    t = report["timings"]
    g = report["geodesic_curve"]
    first_dip = (g.get("init_dips") or [0.0])[0]
    initial = "straight line" if not first_dip else f"initial curve, dip {first_dip:g}"
    est = g.get("estimate")
    if est:
        counted = ""
        if g.get("clamp") == "abs":  # the optimised quantity first, then the segment-clamped one
            counted = f"|t|-counted {est.get('energy_abs', float('nan')):.4g}, the objective; clamped "
        energy = (f"energy {counted}{est['energy']:.4g} (held-out, {est['n_probes']} probes; unclamped "
                  f"{est['energy_unclamped']:.1f} +- {est['energy_se']:.1f}, {est['n_negative_segments']} of "
                  f"{est['n_segments']} segments negative; {initial} {g['initial_energy']:.4g})")
    else:
        energy = f"energy {g['energy']:.4g} ({initial} {g['initial_energy']:.4g})"
    solved = f"{g['n_steps']} steps" if g.get("reused_from") is None else f"reused {g['reused_from']}"
    if g.get("start_objectives") and g.get("reused_from") is None:
        solved += f" over {len(g['start_objectives'])} starts (best: dip {g.get('start_dip', 0.0):g})"
    lines.append(
        f"geodesic: {energy}, lowest log_snr {g['log_snr_min']:.2f}, {solved}; time: geodesic "
        f"{t['geodesic_s']:.1f} s, paths {t['paths_s']:.1f} s, validation {t['validation_s']:.1f} s, "
        f"total {t['total_s']:.1f} s"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots

_CMAPS = {"geodesic": "autumn", "straight": "Greys"}
_RANGES = {"geodesic": (0.0, 0.85), "straight": (0.35, 1.0)}


def _progress_lines(ax, x: np.ndarray, y: np.ndarray, kind: str, periodic: tuple[bool, bool]):
    """Draw one path as line segments coloured by progress (0 -> 1); segments that wrap a
    periodic axis (jump > pi) are left out instead of crossing the panel."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    pts = np.stack([x, y], axis=-1)
    seg = np.stack([pts[:-1], pts[1:]], axis=1)
    keep = np.ones(len(seg), dtype=bool)
    for axis, is_periodic in enumerate(periodic):
        if is_periodic:
            keep &= np.abs(np.diff(pts[:, axis])) < np.pi
    lo, hi = _RANGES[kind]
    progress = np.linspace(0.0, 1.0, len(seg))
    cmap = plt.get_cmap(_CMAPS[kind])
    lc = LineCollection(seg[keep], colors=cmap(lo + (hi - lo) * progress[keep]), linewidths=0.8,
                        alpha=0.8 if kind == "geodesic" else 0.5, zorder=3 if kind == "geodesic" else 2)
    ax.add_collection(lc)
    return lc


def _legend_and_colourbar(fig, axes, kinds) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.lines import Line2D

    handles = []
    for kind in kinds:  # curve kinds, "geodesic" / "straight"
        lo, hi = _RANGES[kind]
        handles.append(Line2D([], [], color=plt.get_cmap(_CMAPS[kind])(0.5 * (lo + hi)), label=kind))
    handles.append(Line2D([], [], marker="o", ls="", color="k", label="start"))
    handles.append(Line2D([], [], marker="*", ls="", color="k", ms=9, label="target"))
    axes[0].legend(handles=handles, loc="lower left", fontsize=7)
    lo, hi = _RANGES["geodesic"]
    cmap = LinearSegmentedColormap.from_list("progress", plt.get_cmap(_CMAPS["geodesic"])(np.linspace(lo, hi, 64)))
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=list(axes), fraction=0.04, pad=0.02,
                 label="progress along the path (geodesic colours)")


def _endpoint_markers(ax, report: dict[str, Any], cvs: "CollectiveVariables", i: int, j: int | None) -> None:
    ends = report.get("endpoints", {})
    for key, marker, size in (("start_cvs", "o", 5), ("target_cvs", "*", 10)):
        values = ends.get(key)
        if not values:
            continue
        x = (0.0 if key == "start_cvs" else 1.0) if j is None else values[cvs[i].name]
        y = values[cvs[i if j is None else j].name]
        ax.plot([x], [y], marker, color="k", mec="w", ms=size, zorder=5)


def _axis_label(cv) -> str:
    return f"{cv.name} ({cv.unit})"


def _plot_ramachandran(path: Path, result: dict[str, Any], kinds, cvs, system, report) -> None:
    import matplotlib.pyplot as plt

    from spacetime_md.molecular.system.build import system_data_path

    pairs = cvs.ramachandran_pairs()
    n = len(pairs)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.0, 4.8), squeeze=False, layout="constrained")
    axes = list(axes[0])
    hist = None
    if system.name == ALANINE_PRESET and n == 1:
        try:
            hist_path = Path(str(system_data_path(REFERENCE_HISTOGRAM)))
        except (FileNotFoundError, ValueError):
            hist_path = None
        if hist_path is not None and hist_path.is_file():
            with np.load(hist_path) as h:
                hist = (h["phi_edges"].copy(), h["psi_edges"].copy(), h["counts"].copy())
    for ax, (residue, i_phi, i_psi) in zip(axes, pairs):
        if hist is not None:
            counts = np.ma.masked_equal(hist[2], 0)
            ax.pcolormesh(hist[0], hist[1], np.ma.log(counts).T, cmap="Blues", shading="flat")
        for key in kinds:
            paths: TransitionPaths = result[key]
            values = np.asarray(paths.metrics["cvs"])
            for p in range(values.shape[0]):
                _progress_lines(ax, values[p, :, i_phi], values[p, :, i_psi], paths.kind, (True, True))
        _endpoint_markers(ax, report, cvs, i_phi, i_psi)
        ax.set_xlim(-np.pi, np.pi)
        ax.set_ylim(-np.pi, np.pi)
        ax.set_xlabel(_axis_label(cvs[i_phi]))
        ax.set_ylabel(_axis_label(cvs[i_psi]))
        ax.set_title(f"residue {residue}" + (" over the Boltzmann samples" if hist is not None else ""), fontsize=9)
    _legend_and_colourbar(fig, axes, [result[k].kind for k in kinds])
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_cvs(path: Path, result: dict[str, Any], kinds, cvs, report) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.8), layout="constrained")
    for key in kinds:
        paths: TransitionPaths = result[key]
        values = np.asarray(paths.metrics["cvs"])
        s = np.linspace(0.0, 1.0, values.shape[1])
        for p in range(values.shape[0]):
            if len(cvs) >= 2:
                _progress_lines(ax, values[p, :, 0], values[p, :, 1], paths.kind, (cvs[0].periodic, cvs[1].periodic))
            else:
                _progress_lines(ax, s, values[p, :, 0], paths.kind, (False, cvs[0].periodic))
    if len(cvs) >= 2:
        _endpoint_markers(ax, report, cvs, 0, 1)
        ax.set_xlabel(_axis_label(cvs[0]))
        ax.set_ylabel(_axis_label(cvs[1]))
        for cv, setter in ((cvs[0], ax.set_xlim), (cvs[1], ax.set_ylim)):
            if cv.periodic:
                setter(-np.pi, np.pi)
    else:
        _endpoint_markers(ax, report, cvs, 0, None)
        ax.set_xlabel("curve parameter s")
        ax.set_ylabel(_axis_label(cvs[0]))
        if cvs[0].periodic:
            ax.set_ylim(-np.pi, np.pi)
    ax.autoscale_view()
    ax.set_title("Transition paths in the collective variables", fontsize=9)
    _legend_and_colourbar(fig, [ax], [result[k].kind for k in kinds])
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _import_pyplot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _plots(out: Path, result: dict[str, Any], system, report: dict[str, Any]) -> list[str]:
    _import_pyplot()
    import matplotlib.pyplot as plt

    written = []
    cvs = result["cvs"]
    kinds = [k for k in ("paths", "baseline") if result.get(k) is not None]
    colours = {"geodesic": "tab:red", "straight": "tab:gray"}
    if cvs.ramachandran_pairs():
        _plot_ramachandran(out / "ramachandran.png", result, kinds, cvs, system, report)
        written.append("ramachandran.png")
    elif len(cvs):
        _plot_cvs(out / "cvs.png", result, kinds, cvs, report)
        written.append("cvs.png")

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


# --------------------------------------------------------------------------- the job


def resolve_paths_system(
    system: Any = None,
    *,
    model: Any = None,
    solvent: str | None = None,
    forcefield: Any = None,
    platform: str | None = None,
    cvs: Any = None,
    states: Any = None,
) -> "MolecularSystem":
    """The system of a paths job.

    Parameters
    ----------
    system : str, path, MolecularSystem, dict or None
        A preset name, a PDB file, a system, or a :meth:`MolecularSystem.spec` dictionary.
        ``None``: the system ``model`` records (its checkpoint's), else ``"alanine-dipeptide"``.
    model : EquivariantDenoiser, optional
        The loaded checkpoint (only read when ``system`` is ``None``).
    solvent, forcefield, platform
        For a preset or PDB (defaults ``"vacuum"``, ``"amber99sbildn"``); a recorded system
        keeps its own force field and solvent (a different ``solvent`` is an error).
    cvs, states : file or specs, optional
        Replace the collective variables / states (see
        :func:`~spacetime_md.molecular.system.build.resolve_system`).
    """
    from spacetime_md.molecular.model.pretrained import checkpoint_system
    from spacetime_md.molecular.system.build import MolecularSystem, resolve_system

    if isinstance(system, dict):
        mol = MolecularSystem.from_spec(system, platform=platform)
        if solvent is not None and solvent != mol.solvent:
            raise ValueError(f"solvent: the system spec of {mol.name} is in {mol.solvent}, got {solvent!r}")
        return resolve_system(mol, cvs=cvs, states=states)
    if isinstance(system, MolecularSystem):
        return resolve_system(system, cvs=cvs, states=states)
    if system is None and model is not None:
        mol = checkpoint_system(model, platform=platform, solvent=solvent)
        if mol is None:
            raise ValueError(
                "system: the checkpoint records no system (trained before systems were recorded); "
                "pass system='alanine-dipeptide' (--system NAME) or a PDB file of the molecule"
            )
        if forcefield is not None:
            raise ValueError("forcefield: the checkpoint records its force field; pass a system too to change it")
        return resolve_system(mol, cvs=cvs, states=states)
    return resolve_system(ALANINE_PRESET if system is None else system, solvent=solvent or "vacuum",
                          forcefield=forcefield or "amber99sbildn", platform=platform, cvs=cvs, states=states)


def _inline_cv_specs(cvs: "CollectiveVariables") -> list[dict[str, Any]]:
    """CV dictionaries with RMSD references inline (as :meth:`MolecularSystem.spec` stores them)."""
    out = []
    for c in cvs:
        d = c.to_dict()
        if d.get("type") == "rmsd":
            d.pop("reference", None)
            d["reference_nm"] = np.asarray(c.reference).tolist()
        out.append(d)
    return out


def _file_or_none(value: Any) -> str | None:
    return str(Path(value).resolve()) if isinstance(value, (str, os.PathLike)) else None


def run_paths(
    out_dir: str | os.PathLike,
    *,
    system: Any = None,
    solvent: str | None = None,
    forcefield: Any = None,
    cvs: Any = None,
    states: Any = None,
    start: Any = None,
    end: Any = None,
    config: PathConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    platform: str | None = None,
    plots: bool = True,
    progress: bool = False,
    geodesic: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the transition-path job and write everything into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
    system : str, path, MolecularSystem, dict or None
        See :func:`resolve_paths_system`: default the checkpoint's recorded system, or
        alanine dipeptide without a checkpoint.
    solvent, forcefield, cvs, states, platform
        System options (see :func:`resolve_paths_system`).
    start, end : str, path or coordinates
        State names or PDB files; default the preset's pair in
        :data:`~spacetime_md.molecular.system.presets.DEFAULT_ENDPOINTS` (``"C7eq"``/``"C7ax"``
        for alanine dipeptide, ``"all_C7eq"``/``"mid_C7ax"`` for alanine tetrapeptide),
        required for every other system.
    config : PathConfig, optional
    checkpoint : path or shipped model name, optional
        Default: the shipped model of a preset system.
    plots, progress : bool
    geodesic : GeodesicResult or path, optional
        A geodesic already solved for this pair (see
        :func:`~spacetime_md.molecular.paths.transition.compute_transition_paths`), or the ``geodesic.npz``
        of an earlier run (``--geodesic FILE``; checked by :func:`load_geodesic` before
        ``out_dir`` is touched); the solve is skipped and ``config.json`` records
        ``"geodesic": "precomputed"`` (and ``"geodesic_file"``).
    overwrite : bool
        Replace the results of another run in ``out_dir`` (they are removed first); without
        it a directory holding another run's or another command's results is refused
        (:class:`~spacetime_md._outputs.OutputExistsError`).

    Writes ``config.json`` (first; the system's name, source PDB, force field, solvent, CV and
    state files), ``system.json`` (:meth:`MolecularSystem.spec` of the system with the run's
    CVs, RMSD references inline; rebuild with :meth:`MolecularSystem.from_spec`), one DCD per
    path plus ``topology.pdb``, all paths in one HDF5 per curve kind, ``paths_<kind>.npz``,
    ``report.json`` and PNG plots (``ramachandran.png``, one panel per residue, for peptides;
    ``cvs.png`` otherwise; ``energies.png``, ``log_snr.png``). Returns the report with an extra
    ``table`` entry (the printed summary). The system, model and endpoints are checked before
    ``out_dir`` is created.
    """
    import openmm

    from spacetime_md import __version__
    from spacetime_md.molecular._io import save_npz_atomic
    from spacetime_md.molecular.model.pretrained import load_checkpoint

    config = config or PathConfig()
    if not isinstance(config, PathConfig):
        raise TypeError(f"config: expected a PathConfig, got {type(config).__name__}")
    model = load_checkpoint(checkpoint) if checkpoint else None
    mol = resolve_paths_system(system, model=model, solvent=solvent, forcefield=forcefield, platform=platform,
                               cvs=cvs, states=states)
    if model is None:
        model = load_checkpoint(shipped_checkpoint(mol))
    check_model_matches_system(model, mol)
    if start is None or end is None:
        if mol.name not in DEFAULT_ENDPOINTS:
            missing = "start" if start is None else "end"
            names = [s.name for s in mol.states]
            raise ValueError(
                f"{missing}: expected a state name or a PDB file for {mol.name}, got none "
                f"(states: {names if names else 'none defined'})"
            )
        start = DEFAULT_ENDPOINTS[mol.name][0] if start is None else start
        end = DEFAULT_ENDPOINTS[mol.name][1] if end is None else end
    for value, what in ((start, "start"), (end, "end")):
        # A bad endpoint fails before anything is written.
        resolve_structure(mol, value, what, allow_mirror=config.allow_mirror)
    check_memory(config, mol.n_atoms)
    geodesic_file = None
    if isinstance(geodesic, (str, os.PathLike)):
        # Read before out_dir is prepared: --overwrite may remove the very file being reused.
        from spacetime_md.molecular.paths.transition import prepare_geodesic_problem

        geodesic_file = str(geodesic)
        geodesic = load_geodesic(geodesic_file, model, config,
                                 problem=prepare_geodesic_problem(mol, model, start, end, config))
    out = prepare_output_dir(out_dir, "paths", overwrite=overwrite, ascii_only=True, outputs=PATHS_OUTPUTS)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    write_json_atomic(out / "config.json", {
        "command": "paths", "system": mol.name, "system_source_pdb": mol.source_pdb,
        "forcefield_files": list(mol.forcefield_files), "solvent": mol.solvent, "temperature_k": mol.temperature_k,
        "constraints": mol.constraints, "cvs_file": _file_or_none(cvs), "cv_names": list(mol.cvs.names),
        "states_file": _file_or_none(states), "state_names": [s.name for s in mol.states],
        "system_file": SYSTEM_FILE, "start": str(start), "end": str(end),
        "checkpoint": str(checkpoint) if checkpoint else f"pretrained:{mol.name}",
        "platform": mol.platform_name, "path_config": config.to_dict(),
        "model": {"length_scale_nm": model.length_scale_nm, "n_atoms": model.n_atoms,
                  **({"guidance": model.guidance_settings()} if hasattr(model, "guidance_settings") else {})},
        # Float reductions depend on the thread count: same seed + same threads = same numbers.
        "torch_num_threads": config.geodesic.num_threads or torch.get_num_threads(),
        "geodesic": "solved" if geodesic is None else "precomputed",
        **({"geodesic_file": str(Path(geodesic_file).resolve())} if geodesic_file else {}),
        "versions": {"spacetime_md": __version__, "torch": torch.__version__, "openmm": openmm.__version__},
    })
    files: dict[str, Any] = {}

    def keep(stage: str, value: Any) -> None:
        # Written as soon as each stage finishes: a later failure keeps what was computed.
        if stage == "solve":
            geo = value["geodesic"]
            save_npz_atomic(out / "geodesic.npz", log_snr=geo.log_snr.cpu().numpy(), x=geo.x.cpu().numpy(),
                            start_nm=value["start_nm"], end_nm=value["end_nm"])
            write_json_atomic(out / GEODESIC_FILE, geodesic_record(geo, model_hash, config))
            spec = mol.spec()
            spec["cvs"] = _inline_cv_specs(value["cvs"])
            write_json_atomic(out / SYSTEM_FILE, spec)
        else:
            files[stage] = value.save(out, mol)
            if plots and stage == "straight":
                _import_pyplot()  # the baseline comes first: the geodesic's paths may still be running

    model_hash = model_sha256(model)
    result = compute_transition_paths(mol, model, start, end, config, progress=progress, on_result=keep,
                                      geodesic=geodesic)
    report = result["report"]
    if geodesic_file:
        report["geodesic_curve"]["reused_from"] = geodesic_file
    files["system"] = SYSTEM_FILE
    report["files"] = files
    report["system"] = {"name": mol.name, "n_atoms": mol.n_atoms, "source_pdb": mol.source_pdb,
                        "forcefield_files": list(mol.forcefield_files), "solvent": mol.solvent}
    if plots:
        report["plots"] = _plots(out, result, mol, report)
    write_json_atomic(out / "report.json", report)
    finish_output_dir(out, list_outputs(out, PATHS_OUTPUTS))
    report["table"] = format_table(report)
    return report


# --------------------------------------------------------------------------- reusing a geodesic

#: The solved spline of a paths run, beside ``geodesic.npz`` (which holds the discretised curve).
GEODESIC_FILE = "geodesic.json"
#: Version of the ``geodesic.json`` layout that :func:`load_geodesic` reads.
GEODESIC_FILE_VERSION = 1
#: GeodesicConfig fields that leave the geodesic problem unchanged: reuse across them is allowed
#: (threads change float rounding only; the starts' threads not even that).
_REUSE_IGNORED = ("progress", "num_threads", "start_threads")
#: PathConfig fields that define the geodesic problem (the constraint ones only with a constraint).
_PROBLEM_FIELDS = ("endpoint_log_snr", "allow_mirror", "quench_endpoints")
_CONSTRAINT_FIELDS = ("constraint", "min_log_snr", "avoid_state", "avoid_log_snr", "min_kl", "constraint_weight")


def model_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, values), its length scale and,
    for a guided denoiser, its guidance settings."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    digest.update(repr(float(getattr(model, "length_scale_nm", 0.0))).encode())
    settings = getattr(model, "guidance_settings", None)
    if callable(settings):  # a guided denoiser: the same two models with another weight are another model
        digest.update(repr(sorted(settings().items())).encode())
    return digest.hexdigest()


def geodesic_settings(config: PathConfig) -> dict[str, Any]:
    """The settings a reused geodesic must have been solved with (JSON-serialisable)."""
    settings: dict[str, Any] = {k: getattr(config, k) for k in _PROBLEM_FIELDS}
    if config.constraint != "none":
        settings.update({k: getattr(config, k) for k in _CONSTRAINT_FIELDS})
    else:
        settings["constraint"] = "none"
    settings["geodesic"] = {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in config.geodesic.to_dict().items() if k not in _REUSE_IGNORED}
    return json.loads(json.dumps(settings))


def _differences(saved: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(saved) | set(wanted)):
            out += _differences(saved.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == wanted else [f"{prefix[:-1]} {saved!r} (file) vs {wanted!r} (this run)"]


def geodesic_record(geo: Any, model_hash: str, config: PathConfig) -> dict[str, Any]:
    """``geodesic.json``: the solved spline's knots (exact float values), the model's hash, the
    settings it was solved with (:func:`geodesic_settings`) and the solve's summary."""
    knots = geo.curve.knots().detach().cpu().double().numpy()
    return {"version": GEODESIC_FILE_VERSION, "model_sha256": model_hash, "settings": geodesic_settings(config),
            "knots": knots.tolist(), "dtype": str(geo.curve.interior.dtype).replace("torch.", ""),
            "summary": {k: v for k, v in geo.summary().items() if k != "config"}}


def load_geodesic(path: str | os.PathLike, model: torch.nn.Module, config: PathConfig, *, problem: Any) -> Any:
    """A geodesic solved by an earlier ``paths`` run, checked for reuse (``--geodesic FILE``).

    ``path`` is that run's ``geodesic.npz``, its ``geodesic.json`` or its directory; the
    ``geodesic.json`` beside it is read. It must record the same model (:func:`model_sha256`),
    the same settings (:func:`geodesic_settings`: solver settings except threads and progress,
    endpoint ``log_snr``, constraint settings) and the same endpoints as ``problem``
    (:func:`~spacetime_md.molecular.paths.transition.prepare_geodesic_problem`); otherwise ``ValueError``
    with one line saying what differs. Returns a :class:`~spacetime_md.core.GeodesicResult`
    whose ``wall_time`` is the load time and ``n_denoiser_evals`` 0.
    """
    from spacetime_md.core import GeodesicResult, SpacetimePoint, SplineCurve
    from spacetime_md.core.curves import _as_vector
    from spacetime_md.core.estimates import EnergyEstimate

    t0 = time.perf_counter()
    given = Path(path)
    record_path = given / GEODESIC_FILE if given.is_dir() else given.with_name(GEODESIC_FILE)
    where = f"geodesic: {path}"
    if not given.exists():
        raise FileNotFoundError(f"{where}: expected the geodesic.npz of a spacetime-md paths run, got no such file")
    if not record_path.is_file():
        raise ValueError(f"{where}: expected {GEODESIC_FILE} beside it (written by spacetime-md paths since this "
                         "option exists), got none; solve again without --geodesic")
    try:
        record = json.loads(record_path.read_text())
        saved_hash, saved_settings = str(record["model_sha256"]), record["settings"]
        version, summary, dtype_name = int(record["version"]), record["summary"], record["dtype"]
        knots_list = record["knots"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: could not read {record_path.name} ({type(exc).__name__}: {exc})") from None
    if version != GEODESIC_FILE_VERSION:
        raise ValueError(f"{where}: expected file version {GEODESIC_FILE_VERSION}, got {version}")
    wanted_hash = model_sha256(model)
    if saved_hash != wanted_hash:
        raise ValueError(f"{where}: solved with another model (sha256 {saved_hash[:12]} vs this run's "
                         f"{wanted_hash[:12]}); solve again without --geodesic")
    differ = _differences(saved_settings, geodesic_settings(config))
    if differ:
        raise ValueError(f"{where}: solved with other settings ({'; '.join(differ[:3])}"
                         f"{'; ...' if len(differ) > 3 else ''}); solve again without --geodesic")
    z0, z1 = _as_vector("start", problem.start), _as_vector("end", problem.end)
    knots = torch.tensor(knots_list, dtype=torch.float64).to(dtype=getattr(torch, dtype_name, z0.dtype))
    knots = knots.to(dtype=z0.dtype, device=z0.device)
    if knots.ndim != 2 or knots.shape[0] < 3 or knots.shape[1] != z0.shape[0] or not (
        torch.allclose(knots[0], z0, atol=1e-5) and torch.allclose(knots[-1], z1, atol=1e-5)
    ):
        raise ValueError(f"{where}: solved between other endpoints than {problem.start_label} -> "
                         f"{problem.end_label}; solve again without --geodesic")
    curve = SplineCurve(SpacetimePoint(z0[0], z0[1:]), SpacetimePoint(z1[0], z1[1:]), knots.shape[0] - 2)
    with torch.no_grad():
        curve.interior.copy_(knots[1:-1])
        log_snr, x = curve.evaluate(int(summary["n_points"]))
    estimate = summary.get("estimate")
    return GeodesicResult(
        curve=curve, log_snr=log_snr, x=x,
        energy=float(summary["energy"]), length=float(summary["length"]), objective=float(summary["objective"]),
        initial_energy=float(summary["initial_energy"]), n_steps=int(summary["n_steps"]),
        n_denoiser_evals=0, converged=bool(summary["converged"]), wall_time=time.perf_counter() - t0,
        config=config.geodesic, estimate=None if estimate is None else EnergyEstimate(**estimate),
        n_failed_searches=int(summary.get("n_failed_searches", 0)),
    )


def shipped_checkpoint(system: "MolecularSystem") -> Path:
    """The shipped model file of a preset system; ``ValueError`` for any other system."""
    from spacetime_md.molecular.model.pretrained import PRETRAINED, PRETRAINED_SYSTEMS, pretrained_path

    if system.name not in PRETRAINED:
        presets = sorted(set(PRETRAINED_SYSTEMS.values()))
        raise ValueError(
            f"checkpoint: expected a model trained for {system.name} (pass checkpoint=... / --checkpoint); "
            f"shipped models exist for {', '.join(presets)} only"
        )
    return pretrained_path(system.name)


#: Files a paths run writes (removed from a directory that ``overwrite`` reuses).
PATHS_OUTPUTS = ("*_path*.dcd", "*_all_paths.h5", "paths_*.npz", "geodesic.npz", "geodesic.json", "topology.pdb",
                 "*.png", "report.json", "config.json", SYSTEM_FILE)


def estimate_memory_bytes(config: PathConfig, n_atoms: int) -> int:
    """Bytes the frames of a run hold at once (float64 frames and energies of every curve kind, with
    the copies made for export and validation, about 3x)."""
    frames = config.n_frames_per_path
    kinds = 2 if config.baseline else 1
    return int(3 * kinds * config.n_paths * frames * (n_atoms * 3 + 1) * 8)


def check_memory(config: PathConfig, n_atoms: int, fraction: float = 0.5) -> None:
    """Refuse a run whose frames would not fit in ``fraction`` of the machine's memory."""
    need = estimate_memory_bytes(config, n_atoms)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if need > fraction * total:
        raise ValueError(
            f"n_paths: {config.n_paths} paths of {config.n_frames_per_path} frames "
            f"would need about {need / 2**30:.1f} GiB, more than {fraction:.0%} of this machine's "
            f"{total / 2**30:.1f} GiB; use fewer paths, a larger record_every or several runs (spacetime-md batch)"
        )
