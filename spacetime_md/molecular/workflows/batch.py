"""Batch mode: transition paths for many endpoint pairs on Dask distributed.

A *pairs file* lists endpoint pairs, one task per row (CSV with a header, or YAML)::

    id,start,end,seed,n_paths,constraint,avoid_state
    eq-ax,C7eq,C7ax,,,,
    eq-ax-avoid,C7eq,C7ax,,,avoid,alpha_R
    custom,structures/a.pdb,alpha_R,7,16,,

``start`` and ``end`` are required: a state name of the system (``C7eq``, ``C7ax``,
``alpha_R`` for alanine dipeptide; a ``--states`` file's names for your own molecule) or a PDB
file (relative paths are relative to the pairs file; any suffix other than ``.pdb`` is read
as a state name). The optional
columns override the batch's :class:`~spacetime_md.molecular.paths.config.PathConfig` for that row:
``id`` (the task's folder name; default ``<row>-<start>-<end>``), ``seed``, ``n_paths``,
``constraint``, ``avoid_state``, ``min_log_snr``, ``avoid_log_snr``. A YAML file holds a
list of mappings with the same keys (or a mapping with that list under ``pairs``).

The system is resolved once by the driver, like ``spacetime-md paths`` does it
(:func:`~spacetime_md.molecular.paths.run.resolve_paths_system`: a preset name, a PDB file plus
force field, solvent, CV and state files, or the system the checkpoint records), and handed
to every task as its :meth:`~spacetime_md.molecular.MolecularSystem.spec` dictionary, from
which a worker rebuilds it (:meth:`~spacetime_md.molecular.MolecularSystem.from_spec`); a task's
fingerprint holds the spec's SHA-256.

Every task runs the single-pair job :func:`~spacetime_md.molecular.paths.run.run_paths`
(the ``spacetime-md paths`` command) into ``OUT/<id>/``. The task writes into a hidden
temporary folder first and renames it into place when complete (``os.replace``), so a task
folder that exists is a finished result; it also holds ``task.json`` (the task, its resolved
settings and a summary). ``OUT/manifest.json`` (rewritten atomically by the driver after
every task) records the status of every task and each invocation; ``OUT/config.json`` the
batch's resolved settings; ``OUT/summary.csv`` one line per finished task.

Seeds: a row without ``seed`` gets ``derive_seed(batch_seed, id)`` (a hash of both), so a
task's result depends only on its own row and the batch seed - not on the order of rows, the
number of workers or which worker ran it - and equals ``spacetime-md paths`` run with that
seed and the same settings.

Execution: ``workers=N`` starts an in-process :class:`dask.distributed.LocalCluster` with
``N`` worker processes of one thread each; ``scheduler=ADDRESS`` uses a running cluster (its
workers need ``spacetime_md`` installed and ``OUT`` on a shared file system at the same
path); ``workers=0`` runs the tasks one after another in this process, without Dask. Tasks
on a worker that dies are rescheduled by the Dask scheduler (up to its
``distributed.scheduler.allowed-failures``); a task that raises is retried ``retries``
times. A rerun into the same ``OUT`` skips finished tasks (their folder and ``task.json``
exist with the same settings) and recomputes the rest. Run one batch per output folder at a
time (a starting batch removes temporary folders left by interrupted ones).

Grouped geodesic solves (``group_size=K``, ``--group-size K``): one task then handles up to
``K`` pairs that share the geodesic settings. Their geodesics are solved together by
:func:`~spacetime_md.core.optimize_geodesics` (one batched denoiser call per evaluation of the
objective, which is what fills a GPU; ``device="cuda"`` in the path settings), then each
pair's paths are run and written exactly as above (own folder, own ``task.json``, own
manifest entry; a rerun skips finished pairs of a group). The batched solver keeps per-pair
optimiser state, so a pair's geodesic does not depend on the other pairs in its group (to
float rounding) - but it is a different L-BFGS from the single-pair solve, so the fingerprint
of a grouped task records ``"geodesic_solver": "batched"`` (single-pair tasks have no such key)
and results of the two are not mixed in one output folder.

Units as in :mod:`spacetime_md.molecular.paths.transition` (nm, ps, kJ/mol, K; ``log_snr`` in model units).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from spacetime_md._atomic import atomic_path, write_json_atomic
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.workflows.batch_dask import _connect, close_dask
from spacetime_md.molecular.workflows.batch_execute import (
    _TMP_MARK,
    TASK_FILE,
    _execute_single,
    _groups,
    _read_task_record,
    execute_group,
)
from spacetime_md.molecular.workflows.batch_tasks import BatchTask, _check_unique, read_pairs

__all__ = [
    "BatchResult",
    "run_batch",
]

logger = logging.getLogger(__name__)


MANIFEST_FILE = "manifest.json"


MANIFEST_FORMAT = "spacetime-md-batch-manifest"


@dataclass
class BatchResult:
    """Returned by :func:`run_batch`.

    Attributes
    ----------
    out : Path
    records : dict
        Task id -> record (``status`` ``"done"`` or ``"failed"``, ``seed``, ``summary``, ...).
    computed, skipped, failed : list of str
        Task ids computed by this invocation, found finished already, or failed.
    wall_s : float
    dashboard_link : str or None
    """

    out: Path
    records: dict[str, dict[str, Any]]
    computed: list[str]
    skipped: list[str]
    failed: list[str]
    wall_s: float
    dashboard_link: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _resolve_system_and_checkpoint(checkpoint, system, **system_options):
    """(system, checkpoint file, model): the batch's system (see
    :func:`~spacetime_md.molecular.paths.run.resolve_paths_system`) and the model file, checked
    against each other."""
    from spacetime_md.molecular.model.pretrained import load_checkpoint, resolve_checkpoint
    from spacetime_md.molecular.paths.run import resolve_paths_system, shipped_checkpoint
    from spacetime_md.molecular.paths.structures import check_model_matches_system

    path = resolve_checkpoint(checkpoint).resolve() if checkpoint is not None else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"checkpoint: expected a model file, got missing path {str(path)!r}")
    model = load_checkpoint(path) if path is not None else None
    mol = resolve_paths_system(system, model=model, **system_options)
    if path is None:
        path = shipped_checkpoint(mol)
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint: expected a shipped model for {mol.name} at {str(path)!r}, got none; pass a checkpoint"
            )
        model = load_checkpoint(path)
    check_model_matches_system(model, mol)
    return mol, path.resolve(), model


def _system_sha256(spec: Mapping[str, Any]) -> str:
    """SHA-256 of a system spec (everything but where its PDB came from)."""
    text = json.dumps({k: v for k, v in spec.items() if k != "source_pdb"}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _validate_tasks(tasks, system, base: PathConfig, batch_seed: int):
    """Check every endpoint against the system before anything is submitted."""
    from spacetime_md.molecular.paths.structures import resolve_structure

    configs = {}
    for task in tasks:
        config = task.resolve_config(base, batch_seed)
        for name in ("start", "end"):
            try:
                resolve_structure(system, getattr(task, name), name, allow_mirror=config.allow_mirror)
            except (KeyError, ValueError, FileNotFoundError) as exc:
                text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                raise type(exc)(f"{task._prefix()}{text}") from None
        if task.start == task.end:
            raise ValueError(f"{task._prefix()}start and end: expected two different structures, got {task.start!r} twice")
        if config.constraint == "avoid":
            try:
                resolve_structure(system, config.avoid_state, "avoid_state", allow_mirror=config.allow_mirror)
            except (KeyError, ValueError, FileNotFoundError) as exc:
                text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                raise type(exc)(f"{task._prefix()}{text}") from None
        configs[task.task_id] = config
    return configs


def _cleanup_tmp(out: Path) -> None:
    for entry in out.iterdir():
        if entry.name.startswith(".") and _TMP_MARK in entry.name and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _write_summary_csv(out: Path, records: Mapping[str, Mapping[str, Any]]) -> None:
    keys = ["geodesic_hit_rate", "geodesic_barrier_kj_mol", "straight_hit_rate", "straight_barrier_kj_mol",
            "geodesic_energy", "straight_line_energy", "total_s"]
    with atomic_path(out / "summary.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "status", "start", "end", "seed", *keys])
        for task_id, rec in records.items():
            summary = rec.get("summary") or {}
            writer.writerow([task_id, rec.get("status"), rec.get("start"), rec.get("end"), rec.get("seed"),
                             *[summary.get(k, "") for k in keys]])


def batch_path_config(config: PathConfig, threads_per_task: int) -> PathConfig:
    """``config`` as a batch task runs it: the geodesic solve uses the task's torch threads, and its
    starts run one after the other (the tasks already share the cores)."""
    return dataclasses.replace(config, geodesic=dataclasses.replace(config.geodesic, num_threads=threads_per_task,
                                                                    start_threads=1))


def plan_batch(
    tasks: Sequence[BatchTask],
    mol: Any,
    checkpoint_path: Path,
    configs: Mapping[str, PathConfig],
    out: Path,
    *,
    platform: str | None,
    plots: bool,
    group_size: int,
    threads_per_task: int,
    checkpoint_sha256: str | None = None,
    system_spec: Mapping[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[str], list[str]]:
    """Each task's spec and fingerprint, and which tasks ``out`` already holds finished.

    Writes nothing (``batch --dry-run`` calls it too). Returns ``(specs, records, skipped,
    pending)``; a finished task folder computed with other settings, or a task folder that is
    not a finished result, is a ``ValueError`` naming the task and the fields that differ.
    """
    checkpoint_sha = _sha256(checkpoint_path) if checkpoint_sha256 is None else checkpoint_sha256
    system_spec = _jsonable(mol.spec()) if system_spec is None else system_spec
    system_sha = _system_sha256(system_spec)
    out = Path(out)
    specs: dict[str, dict[str, Any]] = {}
    for task in tasks:
        fingerprint = _jsonable({
            "system": mol.name, "solvent": mol.solvent, "system_sha256": system_sha,
            "start": task.start, "end": task.end,
            "checkpoint_sha256": checkpoint_sha, "platform": platform, "plots": bool(plots),
            "path_config": configs[task.task_id].to_dict(),
            **({"geodesic_solver": "batched"} if group_size > 1 else {}),
        })
        specs[task.task_id] = {"task_id": task.task_id, "out": str(out), "checkpoint": str(checkpoint_path),
                               "threads": threads_per_task, "fingerprint": fingerprint, "system": system_spec}

    # Finished tasks (folder + task.json) are skipped; a folder computed with other settings is an error.
    records: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    pending: list[str] = []
    for task_id, spec in specs.items():
        task_dir = out / task_id
        done = _read_task_record(task_dir)
        if done is not None:
            if done.get("fingerprint") != spec["fingerprint"]:
                old_fp = done.get("fingerprint", {})
                changed = sorted(k for k in set(spec["fingerprint"]) | set(old_fp)
                                 if old_fp.get(k) != spec["fingerprint"].get(k))
                raise ValueError(
                    f"{task_id}: expected the settings its finished result in {str(task_dir)!r} was computed with, "
                    f"got different {changed}; use another output folder or delete that task folder"
                )
            records[task_id] = done
            skipped.append(task_id)
        else:
            if task_dir.exists():  # results are renamed into place whole, so this is not ours
                raise ValueError(
                    f"{task_id}: expected no folder or a finished task folder at {str(task_dir)!r}, got one without "
                    f"{TASK_FILE}; move it away"
                )
            pending.append(task_id)
    return specs, records, skipped, pending


def run_batch(
    pairs: str | os.PathLike | Iterable[BatchTask],
    out_dir: str | os.PathLike,
    *,
    config: PathConfig | None = None,
    system: Any = None,
    solvent: str | None = None,
    forcefield: Any = None,
    cvs: Any = None,
    states: Any = None,
    checkpoint: str | os.PathLike | None = None,
    platform: str | None = None,
    plots: bool = True,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    retries: int = 1,
    threads_per_task: int = 1,
    group_size: int = 1,
    dashboard: bool = True,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Transition paths for every pair of a batch, on a Dask cluster; see the module docstring.

    Parameters
    ----------
    pairs : path or iterable of BatchTask
        A pairs file (see :func:`read_pairs`) or tasks.
    out_dir : path-like
        One folder per task, plus ``manifest.json``, ``config.json`` and ``summary.csv``.
    config : PathConfig, optional
        Settings shared by all tasks (rows may override some); its ``seed`` is ignored, see
        ``seed``.
    system, solvent, forcefield, cvs, states, checkpoint, platform, plots
        As for :func:`~spacetime_md.molecular.paths.run.run_paths`: ``system`` is a preset
        name, a PDB file, a :class:`~spacetime_md.molecular.MolecularSystem` or ``None`` (the
        checkpoint's recorded system, else alanine dipeptide); ``checkpoint`` defaults to the
        shipped model of a preset.
    seed : int
        Batch seed: a row without ``seed`` uses ``derive_seed(seed, id)``.
    workers : int, optional
        Worker processes of the local cluster (default: the number of CPUs); ``0`` runs the
        tasks serially in this process. Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    retries : int
        Extra attempts of a task that raised (worker loss is handled by the scheduler).
    threads_per_task : int
        ``torch.set_num_threads`` inside each task.
    group_size : int
        Pairs whose geodesics one task solves together (batched solver, see the module
        docstring); ``1`` (default) solves each pair alone, like ``spacetime-md paths``.
        With groups, ``retries`` applies to a group that raised as a whole (e.g. worker loss);
        a pair that fails inside a group is recorded as failed.
    dashboard : bool
        Serve the local cluster's dashboard (needs ``bokeh``).
    progress : bool
        tqdm progress bar over the tasks.
    callback : callable, optional
        Called with ``{"event": "start", ...}``, ``{"event": "task", "task_id", "record"}``
        after every finished or failed task, and ``{"event": "end", ...}``.
    """
    t_start = time.perf_counter()
    config = PathConfig() if config is None else config
    if not isinstance(config, PathConfig):
        raise TypeError(f"config: expected a PathConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers: expected an integer >= 0, got {workers!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries: expected an integer >= 0, got {retries!r}")
    if isinstance(threads_per_task, bool) or not isinstance(threads_per_task, int) or threads_per_task < 1:
        raise ValueError(f"threads_per_task: expected an integer >= 1, got {threads_per_task!r}")
    config = batch_path_config(config, threads_per_task)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size: expected an integer >= 1, got {group_size!r}")
    pairs_source = None
    if isinstance(pairs, (str, os.PathLike)):
        pairs_source = str(Path(pairs).resolve())
        tasks = read_pairs(pairs)
    else:
        tasks = list(pairs)
        bad = [t for t in tasks if not isinstance(t, BatchTask)]
        if bad:
            raise TypeError(f"pairs: expected a pairs file or BatchTask objects, got {type(bad[0]).__name__}")
        if not tasks:
            raise ValueError("pairs: expected at least one pair, got none")
        _check_unique(tasks)

    mol, checkpoint_path, _ = _resolve_system_and_checkpoint(
        checkpoint, system, solvent=solvent, forcefield=forcefield, platform=platform, cvs=cvs, states=states
    )
    configs = _validate_tasks(tasks, mol, config, seed)
    checkpoint_sha = _sha256(checkpoint_path)
    system_spec = _jsonable(mol.spec())
    system_sha = _system_sha256(system_spec)
    out = Path(out_dir).resolve()
    from spacetime_md._outputs import prepare_output_dir

    # A batch resumes its own folder (finished pairs are skipped); other commands' results are refused.
    prepare_output_dir(out, "batch", resume=True, ascii_only=True)

    specs, records, skipped, pending = plan_batch(
        tasks, mol, checkpoint_path, configs, out, platform=platform, plots=plots, group_size=group_size,
        threads_per_task=threads_per_task, checkpoint_sha256=checkpoint_sha, system_spec=system_spec,
    )
    _cleanup_tmp(out)

    manifest_path = out / MANIFEST_FILE
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "version": 1, "tasks": {}, "runs": []}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
            if old.get("format") == MANIFEST_FORMAT:
                manifest = old
        except json.JSONDecodeError:
            logger.warning("manifest %s unreadable; rewriting it", manifest_path)
    for task_id, spec in specs.items():
        entry = {"status": "done" if task_id in records else "pending", "dir": task_id,
                 "start": spec["fingerprint"]["start"], "end": spec["fingerprint"]["end"],
                 "seed": spec["fingerprint"]["path_config"]["seed"]}
        if task_id in records:
            entry.update({k: records[task_id].get(k) for k in ("summary", "wall_s", "host", "finished_at")})
        manifest["tasks"][task_id] = entry
    run_info: dict[str, Any] = {"started_at": time.time(), "n_tasks": len(specs), "skipped": len(skipped),
                                "computed": 0, "failed": 0, "workers": workers, "scheduler": scheduler,
                                "pairs": pairs_source, "finished_at": None}
    manifest["runs"].append(run_info)
    write_json_atomic(out / "config.json", {
        "command": "batch", "pairs": pairs_source, "system": mol.name, "solvent": mol.solvent,
        "system_source_pdb": mol.source_pdb, "forcefield_files": list(mol.forcefield_files),
        "cvs_file": str(Path(cvs).resolve()) if isinstance(cvs, (str, os.PathLike)) else None,
        "cv_names": list(mol.cvs.names),
        "states_file": str(Path(states).resolve()) if isinstance(states, (str, os.PathLike)) else None,
        "state_names": [s.name for s in mol.states], "system_sha256": system_sha,
        "checkpoint": str(checkpoint_path), "checkpoint_sha256": checkpoint_sha, "platform": platform,
        "plots": bool(plots), "batch_seed": seed, "path_config": config.to_dict(), "retries": retries,
        "threads_per_task": threads_per_task, "group_size": group_size,
        "tasks": {task_id: {"start": s["fingerprint"]["start"], "end": s["fingerprint"]["end"],
                            "path_config": s["fingerprint"]["path_config"]} for task_id, s in specs.items()},
    }, sort_keys=True)
    write_json_atomic(manifest_path, manifest, sort_keys=True)

    computed: list[str] = []
    failed: list[str] = []

    def finish(task_id: str, record: dict[str, Any] | None, error: BaseException | None) -> None:
        entry = manifest["tasks"][task_id]
        if error is None:
            records[task_id] = record
            entry.update(status="done", error=None,
                         **{k: record.get(k) for k in ("summary", "wall_s", "host", "finished_at")})
            computed.append(task_id)  # by this invocation (possibly by an attempt on a worker lost since)
        else:
            message = " ".join(f"{type(error).__name__}: {error}".split())
            records[task_id] = {"task_id": task_id, "status": "failed", "error": message,
                                "start": entry["start"], "end": entry["end"], "seed": entry["seed"]}
            entry.update(status="failed", error=message)
            failed.append(task_id)
            logger.error("task %s failed: %s", task_id, message)
        run_info.update(computed=len(computed), failed=len(failed), skipped=len(skipped))
        write_json_atomic(manifest_path, manifest, sort_keys=True)
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback({"event": "task", "task_id": task_id, "record": records[task_id]})

    bar = None
    dashboard_link = None
    client = cluster = None
    try:
        if pending and (workers != 0 or scheduler is not None):
            client, cluster = _connect(scheduler, workers, dashboard)
            dashboard_link = client.dashboard_link
            logger.info("dask dashboard: %s", dashboard_link)
        if callback is not None:
            callback({"event": "start", "n_tasks": len(specs), "n_pending": len(pending), "n_skipped": len(skipped),
                      "dashboard": dashboard_link, "out": str(out)})
        if progress and pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc="pairs", unit="pair", dynamic_ncols=True)
        # A unit of work is one task, or a group of tasks whose geodesics are solved together.
        units = _groups(pending, specs, group_size) if group_size > 1 else [[t] for t in pending]
        run_unit = execute_group if group_size > 1 else _execute_single

        def finish_unit(unit: list[str], outcomes: Any, error: BaseException | None) -> None:
            if error is not None:
                for task_id in unit:
                    finish(task_id, None, error)
                return
            for task_id, record, task_error in outcomes:
                finish(task_id, record, task_error)

        if client is None:
            for unit in units:
                for attempt in range(retries + 1):
                    try:
                        outcomes = run_unit([specs[t] for t in unit])
                    except Exception as exc:  # a failed task is recorded; the batch goes on
                        if attempt == retries:
                            finish_unit(unit, None, exc)
                    else:
                        finish_unit(unit, outcomes, None)
                        break
        elif units:
            from distributed import as_completed

            token = uuid.uuid4().hex[:8]
            futures = {
                client.submit(run_unit, [specs[t] for t in unit], key=f"spacetime-md-batch-{unit[0]}-{token}",
                              pure=False, retries=retries): unit
                for unit in units
            }
            for future in as_completed(list(futures)):
                unit = futures[future]
                try:
                    outcomes = future.result()
                except Exception as exc:  # includes KilledWorker after repeated worker loss
                    finish_unit(unit, None, exc)
                else:
                    finish_unit(unit, outcomes, None)
                future.release()
    finally:
        if bar is not None:
            bar.close()
        close_dask(client, cluster)
        run_info["finished_at"] = time.time()
        write_json_atomic(manifest_path, manifest, sort_keys=True)
        _cleanup_tmp(out)
    _write_summary_csv(out, {t: records[t] for t in specs if t in records})
    result = BatchResult(out, {t: records[t] for t in specs if t in records}, computed, skipped, failed,
                         time.perf_counter() - t_start, dashboard_link)
    if not failed:
        from spacetime_md._outputs import finish_output_dir

        finish_output_dir(out, [MANIFEST_FILE, *sorted(specs)])
    if callback is not None:
        callback({"event": "end", "computed": len(computed), "skipped": len(skipped), "failed": len(failed),
                  "wall_s": result.wall_s})
    return result
