"""The job behind ``spacetime-md committor``: read a paths run, estimate, write the report.

:func:`run_committor` loads the system of a paths run (``system.json``, or the preset named in
``config.json`` for older runs) and its paths; :func:`compute_dihedral_drive_path` builds a
reference path by driving the torsion CVs.

Units inside: nm, ps, kJ/mol, K, radians.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from spacetime_md._atomic import atomic_path, write_text_atomic
from spacetime_md.molecular.workflows.committor import SHOTS_FILE, estimate_committor
from spacetime_md.molecular.workflows.committor_config import CommittorConfig
from spacetime_md.molecular.workflows.committor_result import CommittorResult, plot_committor

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.paths.transition import TransitionPaths
    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.system.states import MetastableState

__all__ = [
    "run_committor",
    "compute_dihedral_drive_path",
]

logger = logging.getLogger(__name__)


RESULT_FILE = "committor.json"
CONFIG_FILE = "config.json"
PLOT_FILE = "committor.png"
REFINED_PDB = "ts_refined_max_energy.pdb"
SADDLE_PDB = "ts_saddle_point.pdb"
#: Files of a ``spacetime-md paths`` run read here: the system (a ``MolecularSystem.spec()``;
#: older runs have only the preset name in ``config.json``) and the report with the endpoint states.
SYSTEM_FILE = "system.json"
REPORT_FILE = "report.json"


def _system_for_paths(paths_dir: Path, platform: str | None):
    """The system of a paths run and its ``config.json``.

    From ``system.json`` (a :meth:`MolecularSystem.spec`, with the run's CVs and states) when the
    run wrote one; older runs name a preset system in ``config.json``.
    """
    from spacetime_md.molecular.system.build import MolecularSystem, known_systems, load_system
    from spacetime_md.molecular.system.presets import preset_name

    cfg = paths_dir / CONFIG_FILE
    if not cfg.is_file():
        raise FileNotFoundError(
            f"paths_dir: expected config.json (written by `spacetime-md paths`) in {paths_dir}, not found"
        )
    data = _read_json(cfg)
    spec_file = paths_dir / SYSTEM_FILE
    if spec_file.is_file():
        spec = _read_json(spec_file)
        if not isinstance(spec, dict):
            raise ValueError(f"{spec_file}: expected a system spec (a JSON object), got {type(spec).__name__}")
        return MolecularSystem.from_spec(spec, platform=platform), data
    if "system" not in data:
        raise ValueError(f"{cfg}: expected a 'system' entry, got keys {sorted(data)}")
    if preset_name(data["system"]) is None:
        raise FileNotFoundError(
            f"paths_dir: expected {SYSTEM_FILE} (the run's system) in {paths_dir} for system {data['system']!r}, "
            f"which is no preset ({', '.join(known_systems())}); rerun `spacetime-md paths`"
        )
    return load_system(data["system"], solvent=data.get("solvent", "vacuum"), platform=platform), data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: expected JSON, got unreadable text ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: expected a readable JSON file, got {exc.strerror or exc}") from None


def _load_paths(paths_dir: Path, kind: str) -> "TransitionPaths":
    """:meth:`TransitionPaths.load` with one-line errors for a missing, truncated or damaged
    ``paths_<kind>.npz`` (or ``report.json``) instead of zip/pickle tracebacks."""
    import zipfile
    import zlib

    from spacetime_md.molecular.paths.transition import TransitionPaths

    npz = paths_dir / f"paths_{kind}.npz"
    report = paths_dir / REPORT_FILE
    if report.is_file():
        _read_json(report)  # its own message names the file
    try:
        paths = TransitionPaths.load(paths_dir, kind=kind)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ValueError(
            f"paths: expected {npz.name} as written by `spacetime-md paths` in {paths_dir}, got a truncated or "
            f"damaged file ({type(exc).__name__}: {' '.join(str(text).split())})"
        ) from None
    frames = np.asarray(paths.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or frames.shape[1] < 2:
        raise ValueError(f"paths: expected frames of shape (paths, T >= 2, atoms, 3) in {npz}, got {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError(f"paths: expected finite coordinates in {npz}, got NaN or infinity")
    return paths


def load_committor_inputs(
    paths_dir: str | os.PathLike,
    kind: str = "geodesic",
    *,
    platform: str | None = None,
    states: str | os.PathLike | None = None,
) -> "tuple[TransitionPaths, MolecularSystem, dict[str, Any], tuple[MetastableState, MetastableState] | None]":
    """Everything :func:`run_committor` reads from a paths directory, checked, before any shot.

    Returns ``(paths, system, paths_config, endpoint_states)``: the ``paths_<kind>.npz`` path set,
    the run's system (with ``states`` loaded if given), its ``config.json`` and the endpoint
    states of its ``report.json`` (``None`` if it recorded none). Missing or unreadable inputs
    raise ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    paths_dir = Path(paths_dir)
    if not paths_dir.is_dir():
        raise FileNotFoundError(
            f"paths_dir: expected a directory written by `spacetime-md paths`, got missing {str(paths_dir)!r}"
        )
    if kind not in ("geodesic", "straight"):
        raise ValueError(f"kind: expected 'geodesic' or 'straight', got {kind!r}")
    if states is not None and not Path(states).is_file():
        raise FileNotFoundError(f"states: expected an existing state file, got {str(states)!r}")
    paths = _load_paths(paths_dir, kind)
    system, paths_config = _system_for_paths(paths_dir, platform)
    if paths.frames.shape[2] != system.n_atoms:
        from spacetime_md.errors import TopologyMismatchError

        raise TopologyMismatchError(
            f"paths: expected frames of {system.n_atoms} atoms like {system.name}, got {paths.frames.shape[2]}"
        )
    if states is not None:
        from spacetime_md.molecular.system.states import load_states

        system.states = load_states(states, system)
    return paths, system, paths_config, _endpoint_states(paths_dir, system)


def _endpoint_states(paths_dir: Path, system: "MolecularSystem") -> "tuple[MetastableState, MetastableState] | None":
    """The start and target states a paths run built around its end structures (``report.json``
    ``endpoints``), if it recorded them and they fit the system's CVs; else ``None``."""
    from spacetime_md.molecular.system.states import _state_from_dict

    report = paths_dir / REPORT_FILE
    if not report.is_file():
        return None
    endpoints = (_read_json(report) or {}).get("endpoints") or {}
    entries = [endpoints.get("start_state"), endpoints.get("target_state")]
    if not all(isinstance(e, dict) for e in entries):
        return None
    states = tuple(_state_from_dict(e, None, None, []) for e in entries)
    for state in states:
        try:
            state.check(system.cvs)
        except ValueError as exc:
            logger.warning("committor: the run's endpoint state %s does not fit the CVs (%s); not used",
                           state.name, exc)
            return None
    return states


def run_committor(
    paths_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    config: CommittorConfig | None = None,
    *,
    platform: str | None = None,
    states: str | os.PathLike | None = None,
    overwrite: bool = False,
    plot: bool = True,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> CommittorResult:
    """The ``spacetime-md committor`` job: load a paths directory, shoot, write outputs.

    Reads ``paths_<kind>.npz``, ``config.json``, ``system.json`` (the run's system with its
    collective variables and states; older runs name a preset in ``config.json``) and the
    endpoint states in ``report.json`` of a ``spacetime-md paths`` run. ``states`` (a state file,
    see :func:`~spacetime_md.molecular.system.states.load_states`) replaces the system's states. Writes
    into ``out_dir`` (default ``PATHS_DIR/committor_<kind>_path<P>``): ``config.json`` (first),
    the checkpoint ``shots.json`` (after every batch), ``committor.json``, ``committor.png``,
    one PDB per transition-state candidate (``ts_candidate_frame<F>.pdb``), the refined
    relaxed-energy maximum (``ts_refined_max_energy.pdb``) and the saddle point next to it
    (``ts_saddle_point.pdb``). A rerun with
    the same settings skips the shots already in ``shots.json``.
    """
    config = CommittorConfig() if config is None else config
    if not isinstance(config, CommittorConfig):
        raise TypeError(f"config: expected a CommittorConfig, got {type(config).__name__}")
    paths_dir = Path(paths_dir)
    paths, system, paths_config, endpoints = load_committor_inputs(paths_dir, config.kind, platform=platform,
                                                                    states=states)
    out = Path(out_dir) if out_dir is not None else paths_dir / f"committor_{config.kind}_path{config.path:03d}"
    from spacetime_md._outputs import finish_output_dir, prepare_output_dir

    # Reruns continue from shots.json (resume); another command's results are never overwritten.
    prepare_output_dir(out, "committor", resume=True, overwrite=overwrite)
    resolved = {
        "command": "committor",
        "paths_dir": str(paths_dir.resolve()),
        "system": system.name,
        "system_source": SYSTEM_FILE if (paths_dir / SYSTEM_FILE).is_file() else f"{CONFIG_FILE} (preset)",
        "solvent": system.solvent,
        "temperature_k": system.temperature_k,
        "platform": system.platform_name,
        "cv_names": list(system.cvs.names),
        "states_file": None if states is None else str(Path(states).resolve()),
        "paths_checkpoint": paths_config.get("checkpoint"),
        "committor_config": config.to_dict(),
    }
    write_text_atomic(out / CONFIG_FILE, json.dumps(resolved, indent=2))
    result = estimate_committor(paths, system, config, out_dir=out, overwrite=overwrite, progress=progress,
                                callback=callback, endpoint_states=endpoints)
    files = {"checkpoint": SHOTS_FILE, "ts_candidates": []}
    for c in result.ts_candidates:
        name = f"ts_candidate_frame{c:03d}.pdb"
        with atomic_path(out / name) as tmp:
            system.to_mdtraj(paths.frames[config.path, c]).save_pdb(str(tmp))
        files["ts_candidates"].append(name)
    if result.refined_positions is not None:
        with atomic_path(out / REFINED_PDB) as tmp:
            system.to_mdtraj(result.refined_positions).save_pdb(str(tmp))
        files["refined_max_energy"] = REFINED_PDB
    if result.saddle_positions is not None:
        with atomic_path(out / SADDLE_PDB) as tmp:
            system.to_mdtraj(result.saddle_positions).save_pdb(str(tmp))
        files["saddle_point"] = SADDLE_PDB
    if plot:
        plot_committor(result, out / PLOT_FILE)
        files["plot"] = PLOT_FILE
    result.extra.update({
        "paths_dir": str(paths_dir.resolve()),
        "system": system.name,
        "kind": config.kind,
        "path": config.path,
        "n_path_frames": int(paths.frames.shape[1]),
        "temperature_k": system.temperature_k,
        "platform": system.platform_name,
        "files": files,
    })
    write_text_atomic(out / RESULT_FILE, json.dumps(result.to_dict(), indent=2))
    finish_output_dir(out, [RESULT_FILE, SHOTS_FILE, CONFIG_FILE, *[f for v in files.values()
                                                                  for f in (v if isinstance(v, list) else [v])]])
    result.extra["out_dir"] = str(out)
    return result


def compute_dihedral_drive_path(
    system: "MolecularSystem",
    start: Any = "C7eq",
    end: Any = "C7ax",
    n_frames: int = 32,
    *,
    waypoints_deg: Sequence[Sequence[float]] | None = None,
) -> "TransitionPaths":
    """A classical reference path: restrained minimisations along a line in torsion-CV space.

    Frame ``i`` is the structure minimised with every torsion CV of the system (for a peptide
    with the default CVs, every backbone phi and psi; see
    :func:`~spacetime_md.molecular.paths.relaxed.cv_torsion_quencher`) restrained to the ``i``-th point
    of the piecewise-linear route through ``waypoints_deg``, starting from the previous frame.
    Points are degrees, one value per torsion CV in the order of ``system.cvs.torsions``, and
    not wrapped: for alanine dipeptide ``(-150, 160)`` to ``(60, -40)`` goes through phi = 0.
    Default route: the start structure's torsions to the end structure's. Deterministic; about
    4 ms per frame for alanine dipeptide.

    Parameters
    ----------
    system : MolecularSystem
        Needs at least one torsion CV.
    start, end : state name, PDB path or coordinates
        See :func:`~spacetime_md.molecular.paths.transition.resolve_structure`; ``end`` only sets the default
        route.
    n_frames : int
    waypoints_deg : array-like, shape=(W >= 2, K), optional
        Route through the K torsion CVs.

    Returns
    -------
    TransitionPaths
        One path (``kind="dihedral-drive"``); energies are the raw OpenMM energies.
    """
    from spacetime_md.molecular.paths.relaxed import cv_torsion_quencher
    from spacetime_md.molecular.paths.transition import TransitionPaths, resolve_structure
    from spacetime_md.molecular.system.energies import evaluate_energies

    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(f"n_frames: expected an integer >= 2, got {n_frames!r}")
    quencher = cv_torsion_quencher(system)
    names = [t.name for t in system.cvs.torsions]
    columns = [system.cvs.index(n) for n in names]
    x0, _ = resolve_structure(system, start, "start")
    if waypoints_deg is None:
        x1, _ = resolve_structure(system, end, "end")
        values = np.atleast_2d(system.compute_cvs(np.stack([x0, x1])))[:, columns]
        waypoints_deg = np.degrees(values)
    way = np.asarray(waypoints_deg, dtype=np.float64)
    if way.ndim != 2 or way.shape[1] != len(names) or len(way) < 2:
        raise ValueError(f"waypoints_deg: expected at least two points of {len(names)} torsion values "
                         f"({', '.join(names)}), got shape {way.shape}")
    seg = np.linalg.norm(np.diff(way, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, cum[-1], n_frames)
    route = np.radians(np.stack([np.interp(t, cum, way[:, k]) for k in range(way.shape[1])], axis=1))
    frames = []
    x = x0
    for point in route:
        _, x = quencher.quench_at(x, point)
        x = np.asarray(x, dtype=np.float64)
        frames.append(x)
    frames = np.asarray(frames)[None]
    energies = np.asarray(evaluate_energies(system, frames[0])._value)[None]
    return TransitionPaths(frames, np.zeros(n_frames), energies, "dihedral-drive",
                           {"waypoints_deg": way.tolist(), "torsions": names})
