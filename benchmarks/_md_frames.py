"""Shared by the model benchmarks: MD samples from a run directory, or sampled on the spot."""

from __future__ import annotations

import tempfile
from pathlib import Path


def md_samples_or_sample(path: str | Path, n_frames: int, seed: int, prefix: str, what: str):
    """``(directory, scratch)``: ``path`` if it exists, else a temporary directory holding
    ``n_frames`` fresh alanine-dipeptide samples (``scratch``, to ``cleanup()``; else ``None``)."""
    if Path(path).exists():
        return Path(path), None
    from spacetime_md.cli import main as cli

    scratch = tempfile.TemporaryDirectory(prefix=prefix)
    print(f"{path} not found: sampling {n_frames} MD frames (seed {seed}) into {scratch.name} as the {what}")
    cli(["sample", "--system", "alanine-dipeptide", "--n-samples", str(n_frames), "--out", scratch.name,
         "--seed", str(seed)])
    return Path(scratch.name), scratch
