"""Committor analysis of a transition path: p_B along the path from unbiased OpenMM shots.

The committor ``p_B(x)`` of a configuration ``x`` is the probability that dynamics started
from ``x`` with Maxwell-Boltzmann velocities reaches the target state B before the start
state A. Along a good transition path it rises from 0 (in A) to 1 (in B) and crosses 1/2 at
the transition state. :func:`estimate_committor` measures it for any molecule:

1. **States.** A and B are regions in the space of the system's collective variables
   (:mod:`spacetime_md.molecular.system.cvs`, :mod:`spacetime_md.molecular.system.states`: torsions,
   distances, RMSDs). By default they are the states (of ``system.states``) of the path's first
   and last frame; where the system has no states or a path end is in none, the endpoint states
   of the paths run (built around its start and end structures) are used.
2. **Frames.** ``n_frames`` frames evenly spaced along one path (both ends included), plus
   the frame of highest *relaxed* energy (each frame quenched with all its torsion CVs held, see
   :func:`~spacetime_md.molecular.paths.relaxed.cv_torsion_quencher`) or, with ``energy="raw"``, of
   highest raw OpenMM potential energy (``energy="quenched"``: heavy atoms held). A system whose
   CVs have no torsion has no relaxed energy: the quenched energy is used instead and the
   result says so. With ``refine`` (default) also the *refined* relaxed-energy maximum: the
   path's torsion-CV route around that frame, subdivided and minimised continuously from the
   start side (:func:`~spacetime_md.molecular.paths.relaxed.refine_relaxed_maximum`); at the barrier
   20-fs frames are 20-30 degrees apart in phi, while p_B goes from 0 to 1 within a few degrees.
   Without torsion CVs the refinement is n/a (skipped, with the reason recorded). With
   ``saddle`` (default) also the force field's first-order saddle point next to the refined
   maximum (:func:`~spacetime_md.molecular.paths.saddle.compute_saddle_from_refined`): the refined
   maximum holds every torsion CV, so coordinates the path moved but no CV names stay wherever
   the route left them; the saddle point relaxes all of them except the one unstable direction.
3. **Shots.** From each frame, ``n_shots`` unbiased MD runs (``LangevinMiddleIntegrator`` on
   the system's force field at its temperature), each with fresh Maxwell-Boltzmann velocities.
   Every ``check_interval_steps`` steps (and at time 0) the CVs the two states use are computed
   and tested against A and B (:class:`CVStateChecker`); a shot stops when it is in A or B.
   Shots still in neither after ``max_length_ps`` are *undecided*: counted and reported, and
   left out of the estimate.
4. **Estimate.** ``p_B = n_B / (n_A + n_B)`` with a Wilson score interval (:func:`wilson_interval`).
   The frames with ``p_B`` closest to 1/2 are the transition-state candidates; a path whose
   estimates never reach 1/2 from both sides is reported as not crossing.

Each shot has its own seed derived from ``(seed, frame, shot)`` and its own OpenMM Context, so
results do not depend on how shots are scheduled over worker processes and a resumed run
reproduces an uninterrupted one exactly. :func:`run_committor` is the job behind
``spacetime-md committor``: it loads the system of a paths run (``system.json``, or the preset
named in ``config.json`` for older runs), checkpoints every finished batch of shots to
``shots.json`` and skips them when rerun.

Units inside: nm, ps, kJ/mol, K, radians.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from spacetime_md._atomic import write_text_atomic
from spacetime_md.molecular.workflows.committor_config import CommittorConfig
from spacetime_md.molecular.workflows.committor_result import CommittorResult, _phi_psi_columns, _summarise
from spacetime_md.molecular.workflows.shots import (
    RELAXED_ENERGIES,
    UNDECIDED,
    CVStateChecker,
    _finite_or_none,
    _init_worker,
    _resolve_states,
    _ShotRunner,
    _worker_run,
    select_frames,
)

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.paths.transition import TransitionPaths
    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.system.states import MetastableState

__all__ = [
    "estimate_committor",
]

logger = logging.getLogger(__name__)


SHOTS_FILE = "shots.json"


#: 2: states are regions in CV space (version 1 stored (phi, psi) discs; its shots are not reused).
_CHECKPOINT_VERSION = 2
#: Shots run in the calling process first; once the rest is projected to take longer than this
#: (seconds) there, it goes to the worker processes. Starting a worker (spawn, then importing
#: openmm and spacetime_md) costs about 5 s on a busy 2-core machine, and most alanine-dipeptide
#: shots commit within a few hundred steps (about 3 ms), so small jobs never start one.
WORKERS_AFTER_S = 20.0


def _load_checkpoint(path: Path, fingerprint: dict[str, Any],
                     structures: dict[int, str | None] | None = None) -> dict[int, dict[int, tuple[int, int]]]:
    """Shot outcomes of a checkpoint made with ``fingerprint``; the shots of a structure between
    frames (the refined maximum, the saddle point: ``{key: sha256 of its positions}``) only if
    they were shot from the same structure."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        from spacetime_md.errors import CheckpointError

        raise CheckpointError(f"{path}: expected a JSON shot checkpoint, got unreadable text ({exc})") from exc
    version = data.get("version")
    if version != _CHECKPOINT_VERSION:
        raise ValueError(
            f"out_dir: expected {path.name} of checkpoint version {_CHECKPOINT_VERSION} to resume, got version "
            f"{version} (written before states were regions in CV space; its shots cannot be reused); use another "
            "output directory or overwrite=True (--overwrite)"
        )
    old = data.get("fingerprint", {})
    if old != fingerprint:
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise ValueError(
            f"out_dir: expected {path.name} of the same committor run to resume, got one made with different "
            f"settings ({', '.join(diff)}); use another output directory or overwrite=True"
        )
    outcomes = {int(f): {int(k): (int(v[0]), int(v[1])) for k, v in shots.items()}
                for f, shots in data["frames"].items()}
    stored = data.get("structures_sha256", {})
    for key, sha in (structures or {}).items():
        if stored.get(str(key)) != sha:
            outcomes.pop(key, None)  # shot from another structure (other energy, refinement or search settings)
    return outcomes


def _save_checkpoint(path: Path, fingerprint: dict[str, Any], outcomes: dict[int, dict[int, tuple[int, int]]],
                     structures: dict[int, str | None] | None = None) -> None:
    data = {
        "version": _CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "frames": {str(f): {str(k): list(v) for k, v in sorted(shots.items())} for f, shots in sorted(outcomes.items())},
        "structures_sha256": {str(k): v for k, v in (structures or {}).items()},
    }
    write_text_atomic(path, json.dumps(data))


# --------------------------------------------------------------------------- main entry


def _structure_shots(outcomes: dict[int, dict[int, tuple[int, int]]], key: int,
                     config: CommittorConfig) -> tuple[dict[str, Any], int]:
    """Shot counts, p_B with its interval and the mean commit time of one structure booked off the
    path (the refined maximum, the saddle point), and the MD steps its shots ran."""
    n_a, n_b, n_u, p, low, high, commit, steps = _summarise(outcomes, np.array([key]), config.timestep_fs,
                                                            config.confidence)
    return {"n_start": int(n_a[0]), "n_target": int(n_b[0]), "n_undecided": int(n_u[0]),
            "p_b": _finite_or_none(p[0]), "p_b_interval": [_finite_or_none(low[0]), _finite_or_none(high[0])],
            "mean_commit_ps": _finite_or_none(commit[0])}, steps


def _path_frames(paths: Any, path: int, system: "MolecularSystem") -> tuple[np.ndarray, np.ndarray | None]:
    from spacetime_md.molecular.paths.transition import TransitionPaths

    if isinstance(paths, TransitionPaths):
        if not 0 <= path < paths.n_paths:
            raise ValueError(f"path: expected an index in [0, {paths.n_paths}), got {path}")
        frames, energies = paths.frames[path], paths.energies[path]
    else:
        from spacetime_md.molecular.system.energies import coordinates_to_nm

        frames, energies = coordinates_to_nm("paths", paths, system), None
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[1:] != (system.n_atoms, 3):
        raise ValueError(f"paths: expected frames of shape (T, {system.n_atoms}, 3), got {frames.shape}")
    if len(frames) < 2:
        raise ValueError(f"paths: expected a path of at least 2 frames, got {len(frames)}")
    return frames, energies


def estimate_committor(
    paths: "TransitionPaths | np.ndarray",
    system: "MolecularSystem",
    config: CommittorConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    endpoint_states: "Sequence[MetastableState] | None" = None,
) -> CommittorResult:
    """Committor ``p_B`` at frames of one transition path from unbiased OpenMM shots.

    Parameters
    ----------
    paths : TransitionPaths or array-like, shape=(T, N, 3)
        A path set (``config.path`` picks the path) or one path's frames (nm).
    system : MolecularSystem
        The system the path belongs to; its temperature, force field, platform, collective
        variables and states are used.
    config : CommittorConfig, optional
    out_dir : path, optional
        Directory for the shot checkpoint ``shots.json``; shots recorded there (by an
        interrupted earlier call with the same settings) are not run again.
    overwrite : bool
        Discard an existing checkpoint made with other settings instead of raising.
    progress : bool
        tqdm bar over shots.
    callback : callable, optional
        Called with ``{"frame", "shots_done", "shots_total"}`` after each finished batch.
    endpoint_states : (MetastableState, MetastableState), optional
        Start and target states to fall back on where the system has no states or the path's
        first / last frame is in none of them (e.g. states built around the path's end
        structures with :func:`~spacetime_md.molecular.system.states.endpoint_state`); over
        ``system.cvs``.

    Returns
    -------
    CommittorResult
    """
    from spacetime_md.molecular.paths.relaxed import relaxed_na_reason
    from spacetime_md.molecular.system.energies import evaluate_energies

    t0 = time.perf_counter()
    config = CommittorConfig() if config is None else config
    if not isinstance(config, CommittorConfig):
        raise TypeError(f"config: expected a CommittorConfig, got {type(config).__name__}")
    if endpoint_states is not None and len(endpoint_states) != 2:
        raise ValueError(f"endpoint_states: expected (start, target), got {len(endpoint_states)} states")
    frames_all, energies_all = _path_frames(paths, config.path, system)
    n_path = len(frames_all)
    start, target, sources = _resolve_states(system, frames_all, config, endpoint_states)
    selected = select_frames(n_path, config.n_frames)
    no_torsion = relaxed_na_reason(system)

    if energies_all is None:
        energies_all = np.asarray(evaluate_energies(system, frames_all)._value, dtype=np.float64)
    relaxed_all = None
    source = "raw"
    energy_na_reason = None
    if config.include_max_energy and config.energy != "raw":
        wanted = config.energy
        if wanted == "relaxed" and no_torsion is not None:
            energy_na_reason = no_torsion
            wanted = "quenched"
            logger.warning("committor: relaxed energy %s; using the quenched energy", no_torsion)
        try:
            relaxed_all = RELAXED_ENERGIES[wanted](system, frames_all)
            source = wanted
        except Exception as exc:  # noqa: BLE001 - any OpenMM failure falls back to raw energies
            logger.warning("%s energies failed (%s); using raw OpenMM energies", wanted, exc)
            energy_na_reason = f"n/a: the {wanted} energies failed ({type(exc).__name__}: {exc})"
    max_frame = None
    if config.include_max_energy:
        ranking = relaxed_all if relaxed_all is not None else energies_all
        max_frame = int(np.argmax(ranking))
        selected = np.unique(np.append(selected, max_frame))
    # Shots are kept per frame index; the refined maximum (a structure between frames) is
    # booked under the index one past the path's last frame.
    positions = {int(f): frames_all[f] for f in selected}
    refined = None
    refined_key = n_path
    if not config.refine:
        refined_na_reason = "not requested (refine=False)"
    elif not config.include_max_energy:
        refined_na_reason = "not requested (include_max_energy=False: no highest-energy frame to refine around)"
    elif no_torsion is not None:
        refined_na_reason = f"{no_torsion}, so no torsion route to refine along; skipped"
        logger.warning("committor: refined relaxed-energy maximum %s", refined_na_reason)
    else:
        from spacetime_md.molecular.paths.relaxed import cv_torsion_quencher, refine_relaxed_maximum

        refined_na_reason = None
        quencher = cv_torsion_quencher(system)
        refined = refine_relaxed_maximum(quencher, frames_all, max_frame, window=config.refine_window,
                                         substeps=config.refine_substeps)
        positions[refined_key] = refined.positions
    # The force field's saddle point next to the refined maximum, booked one further on.
    saddle = None
    saddle_key = n_path + 1
    saddle_search_s = 0.0
    from spacetime_md.molecular.paths.saddle import MAX_SADDLE_ATOMS

    if not config.saddle:
        saddle_na_reason = "not requested (saddle=False)"
    elif refined is None:
        saddle_na_reason = f"n/a: no refined relaxed-energy maximum to start from ({refined_na_reason})"
    elif system.n_atoms > MAX_SADDLE_ATOMS:
        saddle_na_reason = (f"n/a: {system.n_atoms} atoms, more than the {MAX_SADDLE_ATOMS} a dense-Hessian saddle "
                            "search is made for")
    else:
        from spacetime_md.molecular.paths.saddle import compute_saddle_from_refined

        t_saddle = time.perf_counter()
        found = compute_saddle_from_refined(system, quencher, refined)
        saddle_search_s = time.perf_counter() - t_saddle
        if found.converged:
            saddle, saddle_na_reason = found, None
            positions[saddle_key] = found.positions
        else:
            saddle_na_reason = (f"n/a: the saddle search from the refined maximum did not converge ({found.n_searches} "
                                f"searches; the first: {found.n_iterations} iterations, rms gradient "
                                f"{found.rms_gradient:.1f} kJ/mol/nm, {found.n_negative} negative Hessian eigenvalues)")
            logger.warning("committor: saddle point %s", saddle_na_reason)

    import openmm

    checker = CVStateChecker.from_system(system, start, target)
    spec = {
        "system_xml": openmm.XmlSerializer.serialize(system.openmm_system),
        "platform": system.platform_name,
        "checker": checker.to_spec(),
        "temperature_k": system.temperature_k,
        "timestep_fs": float(config.timestep_fs),
        "friction_per_ps": float(config.friction_per_ps),
        "check_interval_steps": config.check_interval_steps,
        "max_steps": config.max_steps,
        "seed": config.seed,
    }
    fingerprint = {
        "path_sha256": hashlib.sha256(np.ascontiguousarray(frames_all).tobytes()).hexdigest(),
        "system_sha256": hashlib.sha256(spec["system_xml"].encode()).hexdigest(),
        "platform": spec["platform"],
        "temperature_k": system.temperature_k,
        "start_state": start.name,
        "target_state": target.name,
        # What decides a shot's outcome: the two states' regions and the CVs they use.
        "states_sha256": hashlib.sha256(json.dumps(spec["checker"], sort_keys=True).encode()).hexdigest(),
        **{k: v for k, v in config.to_dict().items() if k not in ("n_frames", "n_shots", "n_workers", "confidence",
                                                                   "include_max_energy", "energy", "kind", "path",
                                                                   "refine", "refine_window", "refine_substeps",
                                                                   "saddle")},
    }
    structures = {key: hashlib.sha256(np.ascontiguousarray(positions[key]).tobytes()).hexdigest()
                  for key in (refined_key, saddle_key) if key in positions}

    checkpoint = None
    outcomes: dict[int, dict[int, tuple[int, int]]] = {}
    if out_dir is not None:
        checkpoint = Path(out_dir) / SHOTS_FILE
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if overwrite and checkpoint.is_file():
            checkpoint.unlink()
        outcomes = _load_checkpoint(checkpoint, fingerprint, structures)
    n_resumed = sum(1 for f in positions for k in outcomes.get(f, {}) if k < config.n_shots)

    # Frames already in A or B commit at t = 0: settled here, without MD or worker processes.
    runner = _ShotRunner(spec)
    pending = {f: [k for k in range(config.n_shots) if k not in outcomes.get(f, {})] for f in positions}
    at_start = {f: runner.initial_state(positions[f]) for f, todo in pending.items() if todo}
    n_todo = sum(len(todo) for todo in pending.values())
    # Batches of the others' pending shots: split each frame's shots over the workers.
    tasks = []
    for f, todo in pending.items():
        if not todo or at_start[f] != UNDECIDED:
            continue
        size = max(1, math.ceil(len(todo) / config.n_workers))
        for i in range(0, len(todo), size):
            tasks.append((f, todo[i : i + size]))
    n_md = sum(len(shots) for _, shots in tasks)
    logger.info("committor: %d structures x %d shots; %d to run (%d with MD), %d from checkpoint",
                len(positions), config.n_shots, n_todo, n_md, n_resumed)

    bar = None
    if progress and n_todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_todo, desc="committor shots", unit="shot")
    done = 0

    def finished(frame: int, results: list[tuple[int, int, int]]) -> None:
        nonlocal done
        store = outcomes.setdefault(frame, {})
        for k, outcome, steps in results:
            store[k] = (outcome, steps)
        done += len(results)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, fingerprint, outcomes, structures)
        if bar is not None:
            bar.update(len(results))
        if callback is not None:
            callback({"frame": frame, "shots_done": done, "shots_total": n_todo})

    try:
        for f, todo in pending.items():
            if todo and at_start[f] != UNDECIDED:
                finished(f, [(k, at_start[f], 0) for k in todo])
        # In this process while the rest looks cheap (or with one worker) ...
        t_local, n_local, n_in_workers = time.perf_counter(), 0, 0
        while tasks:
            f, shots = tasks.pop(0)
            finished(*runner.run(f, positions[f], shots))
            n_local += len(shots)
            per_shot = (time.perf_counter() - t_local) / n_local
            if config.n_workers > 1 and per_shot * sum(len(s) for _, s in tasks) > WORKERS_AFTER_S:
                break
        # ... then in worker processes.
        if tasks:
            logger.info("committor: %d shots left to %d worker processes", sum(len(s) for _, s in tasks),
                        min(config.n_workers, len(tasks)))
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(config.n_workers, len(tasks)), mp_context=ctx,
                                                        initializer=_init_worker, initargs=(spec,)) as pool:
                futures = [pool.submit(_worker_run, f, positions[f], shots) for f, shots in tasks]
                try:
                    for fut in concurrent.futures.as_completed(futures):
                        frame, results = fut.result()
                        finished(frame, results)
                        n_in_workers += len(results)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()

    kept = {f: {k: v for k, v in s.items() if k < config.n_shots} for f, s in outcomes.items()}
    n_a, n_b, n_u, p, low, high, commit, steps = _summarise(kept, selected, config.timestep_fs, config.confidence)
    refined_row = None
    phi_psi_cols = _phi_psi_columns(system.cvs)
    if refined is not None:
        shots, rsteps = _structure_shots(kept, refined_key, config)
        steps += rsteps
        held = dict(zip((t.name for t in system.cvs.torsions), (float(v) for v in np.degrees(refined.angles))))
        phi_psi_deg = None
        if phi_psi_cols is not None:
            names = [system.cvs[k].name for k in phi_psi_cols]
            phi_psi_deg = [held[n] for n in names]
        refined_row = {
            "around_frame": max_frame,
            "window": list(refined.window),
            "frame_position": refined.frame_position,
            "s": refined.frame_position / (n_path - 1),
            "torsions_deg": held,
            "phi_psi_deg": phi_psi_deg,
            "relaxed_energy_kj_mol": refined.energy,
            **shots,
        }
    saddle_row = None
    if saddle is not None:
        shots, ssteps = _structure_shots(kept, saddle_key, config)
        steps += ssteps
        from spacetime_md.molecular.paths.relaxed import _dihedrals

        torsions = {t.name: float(np.degrees(_dihedrals(saddle.positions[None], t.atoms)[0]))
                    for t in system.cvs.torsions}
        saddle_row = {
            "energy_kj_mol": saddle.energy,
            "relaxed_energy_of_refined_kj_mol": refined.energy,
            "torsions_deg": torsions,
            "rms_gradient_kj_mol_nm": saddle.rms_gradient,
            "eigenvalue_kj_mol_nm2": saddle.eigenvalue,
            "n_iterations": saddle.n_iterations,
            "n_searches": saddle.n_searches,
            "search_s": saddle_search_s,
            **shots,
        }
    decided = np.isfinite(p)
    crosses = bool(decided.any() and np.nanmin(p) <= 0.5 <= np.nanmax(p))
    candidates: list[int] = []
    bracket = None
    if crosses:
        # The first place along the path where p_B reaches 1/2: a frame at 0.5, or two neighbours
        # (among the decided frames) on either side.
        idx = np.flatnonzero(decided)
        for a, b in zip(idx[:-1], idx[1:]):
            if p[a] == 0.5 or (p[a] - 0.5) * (p[b] - 0.5) < 0:
                bracket = (int(selected[a]), int(selected[b]))
                break
        else:
            bracket = (int(selected[idx[-1]]),) * 2
        gap = np.abs(p - 0.5)
        best = np.nanmin(gap)
        # Frames that are all-A or all-B are no transition-state candidates, however close.
        if best < 0.5:
            candidates = [int(selected[k]) for k in np.flatnonzero(decided & np.isclose(gap, best))]
    return CommittorResult(
        frames=selected,
        s=selected / (n_path - 1),
        cv_values=np.atleast_2d(system.compute_cvs(frames_all[selected])).reshape(len(selected), len(system.cvs)),
        energies=energies_all[selected],
        relaxed_energies=None if relaxed_all is None else relaxed_all[selected],
        n_start=n_a, n_target=n_b, n_undecided=n_u,
        p_b=p, p_b_low=low, p_b_high=high, mean_commit_ps=commit,
        max_energy_frame=max_frame, max_energy_source=source,
        start_state=start.name, target_state=target.name,
        ts_candidates=candidates, crosses_half=crosses, crossing_bracket=bracket,
        n_shots_run=n_todo, n_shots_resumed=n_resumed, md_steps=steps, n_shots_in_workers=n_in_workers,
        config=config, wall_time_s=time.perf_counter() - t0,
        cv_names=tuple(system.cvs.names), cv_periodic=system.cvs.periodic, phi_psi_columns=phi_psi_cols,
        energy_requested=config.energy, energy_na_reason=energy_na_reason,
        refined=refined_row, refined_na_reason=refined_na_reason,
        refined_positions=None if refined is None else refined.positions,
        saddle=saddle_row, saddle_na_reason=saddle_na_reason,
        saddle_positions=None if saddle is None else saddle.positions,
        states={"start": start.to_dict(), "target": target.to_dict()}, state_sources=sources,
    )
