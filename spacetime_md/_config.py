"""Reading dataclass settings from JSON files given on the command line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_config_fields"]


def read_config_fields(path: str | os.PathLike, cls: type, option: str, section: str) -> dict[str, Any]:
    """The fields of dataclass ``cls`` stored in the JSON file ``path``.

    The file is either a JSON object of ``cls`` fields or a run's ``config.json`` holding them
    under ``section`` (e.g. ``"path_config"``). Errors name ``option`` (e.g. ``"--config"``)
    and say what was expected and what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option}: expected a JSON file, got missing path {str(path)!r}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option}: expected JSON, got a parse error in {path.name}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get(section), dict):
        data = data[section]
    if not isinstance(data, dict):
        raise ValueError(f"{option}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{option}: expected {cls.__name__} fields {sorted(known)}, got unknown {unknown}")
    return data
