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
columns override the batch's :class:`~spacetime_md.molecular.paths.transition.PathConfig` for that row:
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

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from spacetime_md._atomic import atomic_path, write_json_atomic
from spacetime_md.errors import SpacetimeMDError
from spacetime_md.molecular.paths.transition import PathConfig

__all__ = [
    "BatchTask",
    "BatchResult",
    "PAIR_COLUMNS",
    "derive_seed",
    "read_pairs",
    "run_batch",
]

logger = logging.getLogger(__name__)

#: Columns (CSV) or keys (YAML) a pairs file may use; ``start`` and ``end`` are required.
PAIR_COLUMNS = ("id", "start", "end", "seed", "n_paths", "constraint", "avoid_state", "min_log_snr", "avoid_log_snr")
_INT_COLUMNS = ("seed", "n_paths")
_FLOAT_COLUMNS = ("min_log_snr", "avoid_log_snr")
_STR_COLUMNS = ("constraint", "avoid_state")

MANIFEST_FILE = "manifest.json"
TASK_FILE = "task.json"
MANIFEST_FORMAT = "spacetime-md-batch-manifest"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_TMP_MARK = ".tmp-"


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class BatchTask:
    """One endpoint pair of a batch.

    Attributes
    ----------
    task_id : str
        Folder name of the task's results (letters, digits, ``_ . -``).
    start, end : str
        State name or absolute PDB path.
    overrides : dict
        Per-task :class:`PathConfig` fields (``seed``, ``n_paths``, ``constraint``, ...).
    where : str
        Where the task was defined (``"pairs.csv line 3"``), for error messages.
    """

    task_id: str
    start: str
    end: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    where: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.task_id, str) or not _ID_PATTERN.match(self.task_id):
            raise ValueError(
                f"{self._prefix()}id: expected letters, digits, '_', '.' or '-' (at most 100, not starting "
                f"with '_', '.' or '-'), got {self.task_id!r}"
            )
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{self._prefix()}{name}: expected a state name or a PDB path, got {value!r}")
        unknown = sorted(set(self.overrides) - set(PAIR_COLUMNS[3:]))
        if unknown:
            raise ValueError(f"{self._prefix()}expected overrides among {list(PAIR_COLUMNS[3:])}, got {unknown}")

    def _prefix(self) -> str:
        return f"{self.where}: " if self.where else ""

    def resolve_config(self, base: PathConfig, batch_seed: int) -> PathConfig:
        """The task's settings: ``base`` with the row's overrides and its seed."""
        overrides = dict(self.overrides)
        overrides.setdefault("seed", derive_seed(batch_seed, self.task_id))
        try:
            return dataclasses.replace(base, **overrides)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self._prefix()}{exc}") from None


def derive_seed(batch_seed: int, task_id: str) -> int:
    """Seed of a task without its own: a hash of the batch seed and the task id, in [0, 2**31)."""
    if isinstance(batch_seed, bool) or not isinstance(batch_seed, int):
        raise TypeError(f"batch_seed: expected an int, got {type(batch_seed).__name__}")
    digest = hashlib.sha256(f"spacetime-md-batch:{batch_seed}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _label(spec: str) -> str:
    name = Path(spec).stem if spec.lower().endswith(".pdb") else spec
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("_.-") or "x"


def _parse_value(column: str, raw: Any, where: str) -> Any:
    if column in _INT_COLUMNS:
        if isinstance(raw, bool):
            raise ValueError(f"{where}: {column}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            value = raw
        else:
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"{where}: {column}: expected an integer, got {raw!r}") from None
        low = 0 if column == "seed" else 1
        if value < low:
            raise ValueError(f"{where}: {column}: expected an integer >= {low}, got {value}")
        return value
    if column in _FLOAT_COLUMNS:
        try:
            return float(str(raw).strip()) if not isinstance(raw, (int, float)) or isinstance(raw, bool) else float(raw)
        except ValueError:
            raise ValueError(f"{where}: {column}: expected a number, got {raw!r}") from None
    if not isinstance(raw, str):
        raise ValueError(f"{where}: {column}: expected text, got {raw!r}")
    return raw.strip()


def _parse_row(raw: Mapping[str, Any], where: str, base_dir: Path, index: int) -> BatchTask:
    unknown = [k for k in raw if k not in PAIR_COLUMNS]
    if unknown:
        raise ValueError(f"{where}: expected columns among {list(PAIR_COLUMNS)}, got unknown {unknown}")
    values = {k: v for k, v in raw.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    for name in ("start", "end"):
        if name not in values:
            raise ValueError(f"{where}: {name}: expected a state name or a PDB path, got nothing")
        if not isinstance(values[name], str):
            raise ValueError(f"{where}: {name}: expected a state name or a PDB path, got {values[name]!r}")
        spec = values[name].strip()
        if spec.lower().endswith(".pdb"):
            path = Path(spec)
            path = path if path.is_absolute() else base_dir / path
            if not path.is_file():
                raise FileNotFoundError(f"{where}: {name}: expected a PDB file, got missing path {str(path)!r}")
            spec = str(path.resolve())
        values[name] = spec
    overrides = {k: _parse_value(k, v, where) for k, v in values.items() if k not in ("id", "start", "end")}
    if "id" in values:
        task_id = str(values["id"]).strip()
    else:
        task_id = f"{index:04d}-{_label(values['start'])}-{_label(values['end'])}"
    return BatchTask(task_id, values["start"], values["end"], overrides, where)


def read_pairs(path: str | os.PathLike) -> list[BatchTask]:
    """Read a pairs file (``.csv`` with a header row, or ``.yaml`` / ``.yml``).

    Blank CSV lines and lines starting with ``#`` are skipped. Raises ``ValueError`` naming
    the file and line (CSV) or entry (YAML) of the first bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs: expected a CSV or YAML file, got missing path {str(path)!r}")
    suffix = path.suffix.lower()
    base_dir = path.resolve().parent
    tasks: list[BatchTask] = []
    if suffix == ".csv":
        with open(path, newline="") as handle:
            lines = (line for line in handle if line.strip() and not line.lstrip().startswith("#"))
            reader = csv.reader(lines)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path.name}: expected a header row with at least 'start,end', got an empty file")
            header = [h.strip() for h in header]
            missing = [c for c in ("start", "end") if c not in header]
            unknown = [c for c in header if c not in PAIR_COLUMNS]
            if missing or unknown:
                raise ValueError(
                    f"{path.name}: expected a header with 'start' and 'end' and optional {list(PAIR_COLUMNS[3:]) + ['id']}, "
                    f"got {header}" + (f" (unknown {unknown})" if unknown else "")
                )
            if len(set(header)) != len(header):
                raise ValueError(f"{path.name}: expected each column once, got {header}")
            for row in reader:
                where = f"{path.name} row {len(tasks) + 1}"
                if len(row) != len(header):
                    raise ValueError(f"{where}: expected {len(header)} values ({','.join(header)}), got {len(row)}: {row}")
                tasks.append(_parse_row(dict(zip(header, row)), where, base_dir, len(tasks)))
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path.name}: expected YAML, got a parse error: {' '.join(str(exc).split())}") from None
        if isinstance(data, Mapping) and "pairs" in data:
            data = data["pairs"]
        if not isinstance(data, list):
            raise ValueError(f"{path.name}: expected a list of pairs (or a mapping with 'pairs'), got {type(data).__name__}")
        for i, entry in enumerate(data):
            where = f"{path.name} entry {i + 1}"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected a mapping with 'start' and 'end', got {entry!r}")
            tasks.append(_parse_row({str(k): v for k, v in entry.items()}, where, base_dir, i))
    else:
        raise ValueError(f"pairs: expected a .csv, .yaml or .yml file, got {path.name!r}")
    if not tasks:
        raise ValueError(f"{path.name}: expected at least one pair, got none")
    _check_unique(tasks)
    return tasks


def _check_unique(tasks: Sequence[BatchTask]) -> None:
    seen: dict[str, BatchTask] = {}
    for task in tasks:
        if task.task_id in seen:
            first = seen[task.task_id]
            raise ValueError(
                f"id: expected unique task ids, got {task.task_id!r} twice ({first.where or 'first'} and {task.where or 'later'})"
            )
        seen[task.task_id] = task


# --------------------------------------------------------------------------- one task (runs on a worker)


def _read_task_record(task_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((task_dir / TASK_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _task_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "geodesic_energy": report["geodesic_curve"]["energy"],
        "straight_line_energy": report["geodesic_curve"]["initial_energy"],
        "total_s": report["timings"]["total_s"],
    }
    for kind in ("geodesic", "straight"):
        if kind in report:
            summary[f"{kind}_hit_rate"] = report[kind]["target_hit_rate"]
            summary[f"{kind}_barrier_kj_mol"] = report[kind]["barrier_kj_mol"]["mean"]
    return summary


def execute_task(spec: Mapping[str, Any], geodesic: Any = None) -> dict[str, Any]:
    """Run one task described by ``spec`` (built by :func:`run_batch`) and return its record.

    Idempotent: if the task folder already holds a finished result, nothing is computed and
    the stored record is returned with ``"reused": True``. ``geodesic``: the pair's geodesic
    when it was solved already (grouped solves, :func:`execute_group`).
    """
    import torch

    from spacetime_md.molecular.paths.run import run_paths

    out_root = Path(spec["out"])
    final = out_root / spec["task_id"]
    existing = _read_task_record(final)
    if existing is not None and existing.get("fingerprint") == spec["fingerprint"]:
        return {**existing, "reused": True}
    tmp = out_root / f".{spec['task_id']}{_TMP_MARK}{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(int(spec["threads"]))
        t0, c0 = time.perf_counter(), time.process_time()
        fp = spec["fingerprint"]
        report = run_paths(
            tmp, system=spec["system"], start=fp["start"], end=fp["end"],
            config=PathConfig.from_dict(fp["path_config"]), checkpoint=spec["checkpoint"],
            platform=fp["platform"], plots=fp["plots"], progress=False, geodesic=geodesic,
        )
        record = {
            "task_id": spec["task_id"],
            "status": "done",
            "start": fp["start"],
            "end": fp["end"],
            "seed": fp["path_config"]["seed"],
            "fingerprint": fp,
            "summary": _task_summary(report),
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "finished_at": time.time(),
        }
        write_json_atomic(tmp / TASK_FILE, record, sort_keys=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another attempt of the same task finished first (its folder is complete): keep it.
            done = _read_task_record(final)
            if done is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return {**done, "reused": True}
        return {**record, "reused": False}
    finally:
        torch.set_num_threads(previous_threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _solve_geodesics(problems: Mapping[str, tuple[Any, PathConfig]]) -> dict[str, Any]:
    """Task id -> GeodesicResult, or the exception its solve raised.

    One batched solve for all ``problems`` (:func:`~spacetime_md.core.optimize_geodesics`);
    if it raises (a group too large for the device, one pair's objective non-finite), each
    pair is solved alone by the same solver, which gives it the result it had in the group.
    """
    from spacetime_md.core import optimize_geodesics

    def solve(ids: list[str]) -> list[Any]:
        chosen = [problems[i] for i in ids]
        return optimize_geodesics(
            chosen[0][0].model, [p.start for p, _ in chosen], [p.end for p, _ in chosen], chosen[0][1].geodesic,
            [p.constraints for p, _ in chosen], setup_seeds=[c.seed for _, c in chosen],
        )

    ids = list(problems)
    if not ids:
        return {}
    try:
        return dict(zip(ids, solve(ids)))
    except Exception as exc:
        logger.warning("grouped geodesic solve failed (%s: %s); solving the %d pairs one by one",
                       type(exc).__name__, exc, len(ids))
    results: dict[str, Any] = {}
    for task_id in ids:
        try:
            results[task_id] = solve([task_id])[0]
        except Exception as exc:
            results[task_id] = exc
    return results


def execute_group(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any] | None, BaseException | None]]:
    """Run a group of tasks whose geodesics are solved together; see the module docstring.

    Returns ``(task_id, record, None)`` or ``(task_id, None, exception)`` per task: a pair
    that fails (while its endpoints are prepared, its geodesic is solved or its paths are run)
    does not fail its neighbours. Loading the system or the model is shared, so its failure
    raises for the group. Idempotent like :func:`execute_task`.
    """
    import torch

    from spacetime_md.molecular.paths.transition import prepare_geodesic_problem
    from spacetime_md.molecular.model.pretrained import load_checkpoint
    from spacetime_md.molecular.system.build import MolecularSystem

    outcomes: dict[str, tuple[dict[str, Any] | None, BaseException | None]] = {}
    todo = []
    for spec in specs:
        existing = _read_task_record(Path(spec["out"]) / spec["task_id"])
        if existing is not None and existing.get("fingerprint") == spec["fingerprint"]:
            outcomes[spec["task_id"]] = ({**existing, "reused": True}, None)
        else:
            todo.append(spec)
    geodesics: dict[str, Any] = {}
    if todo:
        previous_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(int(todo[0]["threads"]))
            fp0 = todo[0]["fingerprint"]
            mol = MolecularSystem.from_spec(todo[0]["system"], platform=fp0["platform"])
            model = load_checkpoint(todo[0]["checkpoint"])
            problems = {}
            for spec in todo:
                fp = spec["fingerprint"]
                config = PathConfig.from_dict(fp["path_config"])
                try:
                    problems[spec["task_id"]] = (prepare_geodesic_problem(mol, model, fp["start"], fp["end"], config),
                                                 config)
                except Exception as exc:
                    outcomes[spec["task_id"]] = (None, exc)
            geodesics = _solve_geodesics(problems)
        finally:
            torch.set_num_threads(previous_threads)
    for spec in todo:
        task_id = spec["task_id"]
        if task_id in outcomes:
            continue
        if isinstance(geodesics[task_id], BaseException):
            outcomes[task_id] = (None, geodesics[task_id])
            continue
        try:
            outcomes[task_id] = (execute_task(spec, geodesic=geodesics[task_id]), None)
        except Exception as exc:
            outcomes[task_id] = (None, exc)
    return [(spec["task_id"], *outcomes[spec["task_id"]]) for spec in specs]


def _execute_single(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any], None]]:
    """:func:`execute_task` for a unit of one task, in :func:`execute_group`'s return format
    (an exception propagates, so the scheduler's retries apply)."""
    (spec,) = specs
    return [(spec["task_id"], execute_task(spec), None)]


def _groups(pending: Sequence[str], specs: Mapping[str, Mapping[str, Any]], size: int) -> list[list[str]]:
    """Consecutive chunks of at most ``size`` pending tasks with equal geodesic settings."""
    by_key: dict[str, list[str]] = {}
    for task_id in pending:
        pc = specs[task_id]["fingerprint"]["path_config"]
        key = json.dumps([pc.get("geodesic"), pc.get("device"), pc.get("endpoint_log_snr")], sort_keys=True)
        by_key.setdefault(key, []).append(task_id)
    return [ids[i:i + size] for ids in by_key.values() for i in range(0, len(ids), size)]


# --------------------------------------------------------------------------- the batch (driver)


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
    from spacetime_md.molecular.paths.transition import check_model_matches_system
    from spacetime_md.molecular.model.pretrained import load_checkpoint, resolve_checkpoint
    from spacetime_md.molecular.paths.run import resolve_paths_system, shipped_checkpoint

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
    from spacetime_md.molecular.paths.transition import resolve_structure

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
    """``config`` as a batch task runs it: the geodesic solve uses the task's torch threads."""
    return dataclasses.replace(config, geodesic=dataclasses.replace(config.geodesic, num_threads=threads_per_task))


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


def _connect(scheduler: str | None, workers: int | None, dashboard: bool):
    """A Dask client (and the local cluster it owns, if any)."""
    import warnings

    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SpacetimeMDError(
            "batch: expected dask.distributed to be installed for parallel runs (pip install 'spacetime-md[cluster]'), "
            f"got {type(exc).__name__}: {exc}; or use workers=0 (serial)"
        ) from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"scheduler: expected the address of a running Dask scheduler, got {scheduler!r} ({' '.join(str(exc).split())})"
            ) from None
    import dask

    n = workers if workers is not None else (os.cpu_count() or 1)
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers; with the many small
    # tensors of a geodesic solve that made it 2-4x slower here (measured), so unset it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            warnings.catch_warnings():
        # The scheduler's HTTP server moves to a free port when 8787 is taken (the link printed
        # says where); that is no reason for a multi-line warning.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":8787" if dashboard else None)
    try:
        return Client(cluster), cluster
    except BaseException:
        close_dask(None, cluster)
        raise


#: Loggers whose records while a client and its cluster shut down are connection noise (e.g. a
#: ``CommClosedError`` traceback from a worker stream that closes after the scheduler).
SHUTDOWN_LOGGERS = ("distributed", "tornado", "asyncio")


@contextlib.contextmanager
def _quiet_shutdown(level: int = logging.CRITICAL):
    """Raise :data:`SHUTDOWN_LOGGERS` and their existing children to ``level`` and ignore
    warnings; restored on exit. Only for the teardown: task errors are reported through their
    futures (and recorded in the manifest) before it starts."""
    import warnings

    names = set(SHUTDOWN_LOGGERS) | {name for name in logging.root.manager.loggerDict
                                     if name.split(".")[0] in SHUTDOWN_LOGGERS}
    saved = {}
    for name in names:
        log = logging.getLogger(name)
        saved[name] = log.level
        log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def close_dask(client: Any, cluster: Any, timeout: float = 20.0) -> None:
    """Close ``client``, then the local ``cluster`` it owns (either may be ``None``), quietly.

    The client goes first, so the scheduler does not see it vanish with the workers; each close
    gets ``timeout`` seconds. Worker processes can take longer than Dask's 4 s to exit on a busy
    machine and are then killed by their nanny, and streams that close in the wrong order log
    ``CommClosedError`` tracebacks: neither matters once every result is on disk, so the
    ``distributed`` loggers are raised to CRITICAL meanwhile and a failing close is logged at
    DEBUG level instead of raised.
    """
    with _quiet_shutdown():
        for what, obj in (("client", client), ("cluster", cluster)):
            if obj is None:
                continue
            try:
                obj.close(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - shutdown noise (CommClosedError, TimeoutError, OSError)
                logger.debug("closing the Dask %s: %s: %s", what, type(exc).__name__, exc)
