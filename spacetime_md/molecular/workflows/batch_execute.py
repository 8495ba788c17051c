"""One batch task, or a group of tasks with geodesics solved together, as a worker runs it.

A task writes into a hidden temporary folder and renames it into place when complete;
see :mod:`spacetime_md.molecular.workflows.batch`. Units: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from spacetime_md._atomic import write_json_atomic
from spacetime_md.molecular.paths.transition import PathConfig

logger = logging.getLogger(__name__)


TASK_FILE = "task.json"


_TMP_MARK = ".tmp-"


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

    from spacetime_md.molecular.model.pretrained import load_checkpoint
    from spacetime_md.molecular.paths.transition import prepare_geodesic_problem
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
