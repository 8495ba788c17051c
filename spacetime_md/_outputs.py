"""Output directories that never lose another run's results.

Every command that writes a run directory calls :func:`prepare_output_dir` *before* any
expensive work and :func:`finish_output_dir` when it is done. The directory gets a small
marker file, ``.spacetime_md_run.json``, recording which command wrote it, its status
(``"running"`` / ``"finished"``) and the files it produced.

Rules (``OutputExistsError`` otherwise, one line for the CLI):

- a path that is a file, lies under a file, cannot be created or written, or cannot be encoded
  by the writers the command uses (DCD file names must be ASCII) is refused up front;
- a directory holding another command's results (its marker, or a legacy ``config.json``
  naming another command) is refused unless ``overwrite``;
- a directory holding a *finished* run of the same command is refused unless ``overwrite``
  (or ``resume`` for commands that continue runs);
- with ``overwrite`` the old run's recorded outputs are removed first, so no stale file (e.g.
  ``geodesic_path007.dcd`` from a run with more paths) survives next to the new results.

An unfinished run of the same command (status ``"running"``, e.g. killed) is continued or
replaced as the command's own resume logic decides.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

from spacetime_md._atomic import write_json_atomic
from spacetime_md.errors import SpacetimeMDError

__all__ = ["MARKER", "OutputExistsError", "prepare_output_dir", "finish_output_dir", "check_path_encodable"]

MARKER = ".spacetime_md_run.json"


class OutputExistsError(SpacetimeMDError, FileExistsError):
    """The output directory holds results that the run would overwrite."""


def check_path_encodable(path: str | os.PathLike, what: str = "--out", ascii_only: bool = False) -> None:
    """Raise ``ValueError`` if ``path`` cannot be written by the file-system encoding or, with
    ``ascii_only``, by writers limited to ASCII names (mdtraj's DCD/XTC writers)."""
    text = str(path)
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise ValueError(f"{what}: expected a path the file system can encode, got {text!r}") from None
    if ascii_only and not text.isascii():
        bad = next(c for c in text if not c.isascii())
        raise ValueError(
            f"{what}: expected an ASCII path (the DCD trajectory writer cannot encode {bad!r}), got {text!r}"
        )


def _read_marker(out: Path) -> dict | None:
    marker = out / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return {"command": "unknown", "status": "unknown"}
    return data if isinstance(data, dict) else {"command": "unknown", "status": "unknown"}


def _legacy_command(out: Path) -> str | None:
    """The command of a run directory written before markers existed (from its config.json)."""
    config = out / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return "unknown"
    if isinstance(data, dict) and isinstance(data.get("command"), str):
        return data["command"]
    return "unknown"


def prepare_output_dir(
    out: str | os.PathLike,
    command: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    ascii_only: bool = False,
    outputs: Sequence[str] = (),
    dry_run: bool = False,
) -> Path:
    """Check and claim ``out`` for ``command``; return it as a ``Path``.

    Parameters
    ----------
    out : path-like
    command : str
        E.g. ``"paths"``, ``"sample"``; recorded in the marker.
    overwrite : bool
        Replace another run's results (their recorded outputs are deleted first).
    resume : bool
        The command continues an unfinished or finished run of its own in ``out``.
    ascii_only : bool
        The command writes files whose writers need ASCII paths (DCD).
    outputs : sequence of str
        Glob patterns of this command's outputs, removed with ``overwrite`` when the old run
        recorded no file list (legacy directories).
    dry_run : bool
        Check only; create and write nothing.
    """
    out = Path(out)
    check_path_encodable(out, ascii_only=ascii_only)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == out else f"lies under the file {str(parent)!r}"
            raise ValueError(f"--out: expected a directory, got {str(out)!r}, which {what}")
        if parent.exists():
            break
    marker = _read_marker(out) if out.is_dir() else None
    owner = marker.get("command") if marker else (_legacy_command(out) if out.is_dir() else None)
    status = marker.get("status") if marker else ("finished" if owner else None)
    if owner == "unknown" and resume:
        owner = command  # a legacy directory without a marker, continued by its own command
    if owner is not None and not overwrite:
        if owner != command:
            raise OutputExistsError(
                f"--out: {str(out)!r} holds the results of `spacetime-md {owner}`; choose another directory "
                "or pass --overwrite to replace them"
            )
        if status == "finished" and not resume:
            raise OutputExistsError(
                f"--out: {str(out)!r} holds a finished `spacetime-md {command}` run; choose another directory "
                "or pass --overwrite to replace it"
            )
    if dry_run:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out: cannot create {str(out)!r} ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out: cannot write into {str(out)!r} (permission denied)")
    if owner is not None and overwrite and not (owner == command and resume):
        _remove_outputs(out, marker, outputs)
    if not (resume and owner == command):
        _write_marker(out, {"command": command, "status": "running", "started": time.time(), "files": []})
    else:
        data = dict(marker or {"command": command})
        data["status"] = "running"
        _write_marker(out, data)
    return out


def _write_marker(out: Path, data: dict) -> None:
    try:
        write_json_atomic(out / MARKER, data)
    except OSError as exc:
        raise ValueError(f"--out: cannot write into {str(out)!r} ({exc.strerror})") from None


def _remove_outputs(out: Path, marker: dict | None, patterns: Sequence[str]) -> None:
    recorded = list((marker or {}).get("files") or [])
    targets: set[Path] = set()
    for name in recorded:
        p = (out / name)
        if out in p.resolve().parents or p.resolve() == out.resolve():
            targets.add(p)
    for pattern in (*patterns, "config.json", "report.json"):
        targets.update(out.glob(pattern))
    for p in sorted(targets, reverse=True):
        if p.resolve() == out.resolve():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)


def finish_output_dir(out: str | os.PathLike, files: Iterable[str | os.PathLike] = ()) -> None:
    """Mark the run in ``out`` finished and record its output files (relative names)."""
    out = Path(out)
    marker = _read_marker(out) or {}
    names = sorted({str(Path(f).relative_to(out)) if Path(f).is_absolute() else str(f) for f in files}
                   | set(marker.get("files") or []))
    marker.update({"status": "finished", "finished": time.time(), "files": names})
    _write_marker(out, marker)


def list_outputs(out: str | os.PathLike, patterns: Sequence[str]) -> list[str]:
    """Relative names of the files in ``out`` matching ``patterns`` (for :func:`finish_output_dir`)."""
    out = Path(out)
    found: set[str] = set()
    for pattern in patterns:
        found.update(str(p.relative_to(out)) for p in out.glob(pattern) if p.name != MARKER)
    return sorted(found)
