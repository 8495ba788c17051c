"""The tasks of a batch: reading a pairs file (CSV or YAML) into :class:`BatchTask` rows.

See :mod:`spacetime_md.molecular.workflows.batch` for the file format and the seeds
(:func:`derive_seed`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from spacetime_md.molecular.paths.transition import PathConfig

__all__ = [
    "BatchTask",
    "PAIR_COLUMNS",
    "derive_seed",
    "read_pairs",
]

#: Columns (CSV) or keys (YAML) a pairs file may use; ``start`` and ``end`` are required.
PAIR_COLUMNS = ("id", "start", "end", "seed", "n_paths", "constraint", "avoid_state", "min_log_snr", "avoid_log_snr")
_INT_COLUMNS = ("seed", "n_paths")
_FLOAT_COLUMNS = ("min_log_snr", "avoid_log_snr")
_STR_COLUMNS = ("constraint", "avoid_state")


_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


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
