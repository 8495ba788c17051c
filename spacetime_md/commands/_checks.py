"""Option checks every command shares: ranges shown in ``--help`` and checked first, output
files, memory estimates.

Imports nothing heavy (no torch, OpenMM or mdtraj), so every command can use it before its
expensive imports.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: Largest seed every command accepts (NumPy, torch and OpenMM seeding all take it).
SEED_MAX = 2**32 - 1
#: Most threads or worker processes an option may ask for.
THREADS_MAX = 256


# --------------------------------------------------------------------------- option checks


def _number(value: float | None) -> str:
    """``4294967295``, ``0.1``, ``1e-06``: integers in full, other numbers as ``%g``."""
    if value is None:
        return ""
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True)
class OptionRange:
    """The valid values of a numeric command-line option.

    ``low``/``high`` are the bounds (``None``: unbounded), each closed unless ``low_open`` /
    ``high_open``. Floats must also be finite (``nan`` and ``inf`` parse as floats).
    ``flag`` overrides the option name derived from the argparse ``dest``.

    An option that a command declares with :func:`add_numeric` also carries its argparse
    ``default``, its ``help`` text (the range is put in by :func:`ranged`), a ``note`` appended
    after it, and ``required``: one table per command holds each numeric flag once, for both
    ``--help`` and :func:`check_options`.
    """

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    flag: str | None = None
    default: float | None = None
    help: str | None = None
    note: str = ""
    required: bool = False

    def bounds(self) -> str:
        """``">= 1"``, ``"in (0, 1)"`` or ``"finite"``: the range as the --help texts show it."""
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "finite"

    def describe(self) -> str:
        """``"an integer >= 1"``, ``"a number in (0, 1)"``, ``"a finite number > 0"``."""
        kind = "an integer" if self.integer else ("a number" if self.low is not None and self.high is not None
                                                  else "a finite number")
        bounds = self.bounds()
        return kind if bounds == "finite" else f"{kind} {bounds}"

    def contains(self, value: float) -> bool:
        if self.integer:
            if isinstance(value, bool) or not isinstance(value, int):
                return False
        elif not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def check(self, flag: str, value: float) -> None:
        """Raise ``ValueError("FLAG: expected RANGE, got VALUE")`` for a value outside the range."""
        if not self.contains(value):
            raise ValueError(f"{self.flag or flag}: expected {self.describe()}, got {value}")


def int_range(low: int | None = None, high: int | None = None, **kwargs) -> OptionRange:
    """An integer option in ``[low, high]``."""
    return OptionRange(low, high, integer=True, **kwargs)


def float_range(low: float | None = None, high: float | None = None, **kwargs) -> OptionRange:
    """A finite float option between ``low`` and ``high`` (closed unless ``low_open``/``high_open``)."""
    return OptionRange(low, high, **kwargs)


SEED = int_range(0, SEED_MAX)


def ranged(text: str, option: OptionRange) -> str:
    """``text`` with the option's range put before a trailing ``(default ...)``."""
    head, sep, tail = text.rpartition(" (default")
    if not sep:
        return f"{text}, {option.bounds()}" if text else option.bounds()
    return f"{head}, {option.bounds()}{sep}{tail}"


def add_numeric(parser: argparse.ArgumentParser, ranges: Mapping[str, OptionRange], *dests: str) -> None:
    """Add the numeric options ``dests`` of ``ranges`` (keyed by argparse ``dest``) to ``parser``.

    Each becomes ``--dest-with-dashes`` (or its ``flag``) of type ``int`` or ``float``, with the
    table's default and its help text, range included.
    """
    for dest in dests:
        option = ranges[dest]
        if option.help is None:
            raise ValueError(f"{dest}: expected an option with a help text, got none")
        parser.add_argument(option.flag or "--" + dest.replace("_", "-"), dest=dest,
                            type=int if option.integer else float, default=option.default,
                            required=option.required, help=ranged(option.help, option) + option.note)


def check_options(args: argparse.Namespace, ranges: Mapping[str, OptionRange]) -> None:
    """Check every option of ``ranges`` (keyed by argparse ``dest``) that was given a value."""
    for dest, option in ranges.items():
        value = getattr(args, dest, None)
        if value is not None:
            option.check("--" + dest.replace("_", "-"), value)


def parse_workers(value: str | int) -> int | str:
    """``--workers``: ``"auto"`` or an integer in [1, 256]."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= THREADS_MAX:
        raise ValueError(f"--workers: expected 'auto' or an integer in [1, {THREADS_MAX}], got {value!r}")
    return n


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_file(path: str | os.PathLike, flag: str, *, beside: tuple[str, ...] = ()) -> Path:
    """Check up front that a command can write the file ``path`` (and the ``beside`` suffixes,
    e.g. ``(".json",)`` for the settings file written next to it); missing folders are created
    when it is written. Raises ``ValueError`` for a directory, a path under a file, an unwritable
    folder or a name the file system cannot encode."""
    from spacetime_md._outputs import check_path_encodable

    path = Path(path)
    check_path_encodable(path, flag)
    for target in (path, *(path.with_suffix(s) for s in beside)):
        if target.is_dir():
            raise ValueError(f"{flag}: expected a file name, got {str(target)!r}, which is a directory")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise ValueError(f"{flag}: expected a file in a directory, got {str(path)!r}, which lies under the file "
                         f"{str(existing)!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: cannot write into {str(existing)!r} (permission denied)")
    return path


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def total_memory_bytes() -> int | None:
    """Physical memory of this machine, ``None`` where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def check_memory_need(need: float, what: str, advice: str, fraction: float = 0.5) -> None:
    """Refuse a run that would need more than ``fraction`` of this machine's memory.

    The message reads ``"{what} would need about X of memory, more than 50% of this machine's Y;
    {advice}"``, so ``what`` starts with the flag to change.
    """
    total = total_memory_bytes()
    if total is not None and need > fraction * total:
        raise ValueError(f"{what} would need about {format_bytes(need)} of memory, more than {fraction:.0%} of "
                         f"this machine's {format_bytes(total)}; {advice}")


# --------------------------------------------------------------------------- the command
