"""Resuming a training run: the saved state, the fingerprint of its data and settings, and
the checks a resumed run must pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spacetime_md._atomic import write_text_atomic
from spacetime_md.molecular.model.dataset import MolecularDataset
from spacetime_md.molecular.model.pretrained import TRAINING_STATE_FORMAT, read_checkpoint
from spacetime_md.molecular.model.train_config import _MODEL_KEYS, _RESUME_KEYS, CONFIG_FILE, STATE_FILE, TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem

logger = logging.getLogger(__name__)


def _check_resumed_system(saved_spec: dict[str, Any], system: "MolecularSystem") -> None:
    """Resuming must keep the saved run's atoms, force field and solvent (CVs and states may change)."""
    saved = saved_spec.get("fingerprint") or {}
    now = system.fingerprint()
    changed = [k for k in ("n_atoms", "forcefield_files", "solvent", "constraints") if k in saved and saved[k] != now[k]]
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"resume: expected the system of the saved run ({saved_spec.get('name')}), got {detail}")


def _data_fingerprint(dataset: MolecularDataset) -> dict[str, Any]:
    """sha256 of the frames a run trains and validates on: float32 nm after stride and hold-out.

    The shapes are hashed too, so the same frames split differently give another hash.
    """
    digest = hashlib.sha256()
    for name, xyz in (("train", dataset.train_xyz), ("test", dataset.test_xyz)):
        digest.update(f"{name} {[int(n) for n in xyz.shape]}\n".encode())
        for start in range(0, xyz.shape[0], 4096):
            digest.update(np.ascontiguousarray(xyz[start:start + 4096], dtype="<f4").tobytes())
    return {
        "sha256": digest.hexdigest(),
        "train_shape": [int(n) for n in dataset.train_xyz.shape],
        "test_shape": [int(n) for n in dataset.test_xyz.shape],
        "files": list(dataset.sources),
    }


def _describe_data(fingerprint: dict[str, Any]) -> str:
    n_frames = int(fingerprint["train_shape"][0]) + int(fingerprint["test_shape"][0])
    text = f"sha256 {fingerprint['sha256'][:12]}..., {n_frames} frames"
    names = [Path(f).name for f in fingerprint.get("files") or ()]
    if names:
        text += f" ({', '.join(names)})" if len(names) <= 3 else f" ({', '.join(names[:2])}, ... {len(names)} files)"
    return text


def _legacy_world_size(out: Path) -> int:
    """Processes of a run whose training state has no fingerprint (from its ``config.json``; else 1)."""
    try:
        return int(json.loads((out / CONFIG_FILE).read_text())["derived"]["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _read_resume_state(config: TrainConfig, world_size: int = 1) -> dict[str, Any]:
    """The training state in ``config.out``, its settings checked against ``config``'s.

    Raises ``ValueError`` when there is no state to continue or when a setting that changes
    what the run computes (:data:`_RESUME_KEYS`; ``batch_size`` as the global batch over
    ``world_size`` processes) differs from the saved run's; the message names each field with
    its saved and its new value. A state written before fingerprints existed is checked
    against the settings it recorded (its ``train_config``).
    """
    state_path = Path(config.out) / STATE_FILE
    if not state_path.exists():
        raise ValueError(f"resume: expected {state_path} to continue, found none; drop --resume to start a new run")
    payload = read_checkpoint(state_path)
    if payload["format"] != TRAINING_STATE_FORMAT:
        raise ValueError(f"out: expected {STATE_FILE} to be a training state, got format {payload['format']!r}")
    fingerprint = payload.get("fingerprint")
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("settings"), dict):
        saved, saved_world = fingerprint["settings"], int(fingerprint.get("world_size", 1))
    else:  # before fingerprints: the recorded config (older ones lack the newer keys)
        recorded = payload.get("train_config") or {}
        saved = {k: recorded[k] for k in _RESUME_KEYS if k in recorded}
        saved.update({k: recorded.get(k) for k in _MODEL_KEYS})
        saved_world = _legacy_world_size(state_path.parent)
    saved = {"graph": "dense", **saved}  # states from before the sparse graph were dense
    unused = ("focus_log_snr_min", "focus_log_snr_max") if not saved.get("focus_fraction") and not config.focus_fraction else ()
    if saved["graph"] == "dense" and config.graph == "dense":
        unused += ("graph_cutoff_nm",)
    changed = []
    for key in _RESUME_KEYS:
        if key not in saved or key in unused:
            continue
        old, new = saved[key], getattr(config, key)
        if key == "batch_size":  # the global batch: DDP runs and single-process runs resume each other
            if old is None or old * saved_world != new * world_size:
                changed.append((key, _batch_text(old, saved_world), _batch_text(new, world_size)))
        elif old != new:
            changed.append((key, repr(old), repr(new)))
    if changed:
        what = "architecture, scaling and seed" if all(k in _MODEL_KEYS for k, _, _ in changed) else "training settings"
        detail = ", ".join(f"{k}: {old} -> {new}" for k, old, new in changed)
        values = "value" if len(changed) == 1 else "values"
        raise ValueError(
            f"resume: expected the same {what} as the saved run, got {detail} (saved in {state_path}); "
            f"start a new --out or pass the original {values}"
        )
    return payload


def _batch_text(batch_size: Any, world_size: int) -> str:
    return repr(batch_size) if world_size == 1 else f"{batch_size!r} x {world_size} processes"


def _check_resumed_data(payload: dict[str, Any], data: dict[str, Any], state_path: Path) -> None:
    """Resuming must train on the saved run's frames (by hash); a state without a hash gets a warning."""
    saved = (payload.get("fingerprint") or {}).get("data")
    if not isinstance(saved, dict) or "sha256" not in saved:
        logger.warning(
            "resume: %s was written without a fingerprint of its training data (spacetime_md %s); whether "
            "the data are the saved run's cannot be checked", state_path, payload.get("spacetime_md_version", "unknown"),
        )
        return
    if saved["sha256"] != data["sha256"]:
        raise ValueError(
            f"resume: expected the same training data as the saved run, got data: {_describe_data(saved)} -> "
            f"{_describe_data(data)} (saved in {state_path}); start a new --out or pass the original data"
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric lines of steps <= ``step`` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    write_text_atomic(path, "".join(line + "\n" for line in kept))
