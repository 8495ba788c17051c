"""Atomic writes of numpy files (the generic helpers live in :mod:`spacetime_md._atomic`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spacetime_md._atomic import atomic_path, write_atomic, write_json_atomic

__all__ = ["atomic_path", "write_json_atomic", "save_npz_atomic", "save_npy_atomic", "write_atomic"]


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
