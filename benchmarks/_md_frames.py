"""Shared by the model benchmarks: MD samples from a run directory, or sampled on the spot."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def md_samples_or_sample(path: str | Path, n_frames: int, seed: int, what: str) -> Iterator[Path]:
    """``path`` if it exists, else a temporary directory (removed on exit) holding ``n_frames``
    fresh alanine-dipeptide samples drawn with ``seed``; ``what`` names them in the message."""
    if Path(path).exists():
        yield Path(path)
        return
    from spacetime_md.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="bench_md_frames_") as scratch:
        print(f"{path} not found: sampling {n_frames} MD frames (seed {seed}) into {scratch} as the {what}")
        cli(["sample", "--system", "alanine-dipeptide", "--n-samples", str(n_frames), "--out", scratch,
             "--seed", str(seed)])
        yield Path(scratch)


def all_frames(path: str | Path) -> np.ndarray:
    """Every frame of the samples at ``path`` (no held-out split), ``(n, N, 3)`` nm."""
    from spacetime_md.molecular.model.dataset import load_dataset

    samples = load_dataset(path, holdout_fraction=0.5)
    return np.concatenate([samples.train_xyz, samples.test_xyz])
