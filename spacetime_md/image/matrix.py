"""Diffusion Edit Distance matrices: all pairs of a set of images, solved in batches.

Each unordered pair ``i < j`` is the problem :func:`~spacetime_md.image.image_geodesic` solves
for it (canonical order, pair seed); ``batch_pairs`` pairs at a time go through
:func:`spacetime_md.core.optimize_geodesics` (one denoiser call per evaluation for all of
them). Work shared between pairs is done once: the expectation parameters of every image at
the anchor (the fixed endpoints of its ``N - 1`` geodesics) are computed once per image, and the
final exact lengths of a batch are evaluated in one batched call.

Shapes: N images, D = prod(event_shape).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from spacetime_md.core import GeodesicConfig
from spacetime_md.core._validation import check_tensor
from spacetime_md.image.canonical import (
    _anchor,
    _check_count,
    _check_denoiser,
    _check_image,
    _Pair,
    image_key,
    pair_seed,
)
from spacetime_md.image.distance import _finish, _LengthSettings, _solve_pairs
from spacetime_md.image.io import atomic_path
from spacetime_md.image.length import _exact_mu, _length_method
from spacetime_md.image.presets import (
    DEFAULT_BATCH_PAIRS,
    DEFAULT_LENGTH_POINTS,
    DEFAULT_LENGTH_PROBES,
    DEFAULT_T_MIN,
    DEFAULT_WARM_START,
    _check_config,
)

__all__ = ["DistanceMatrix", "distance_matrix", "write_matrix_csv"]

logger = logging.getLogger(__name__)


@dataclass
class DistanceMatrix:
    """Pairwise Diffusion Edit Distances.

    Attributes
    ----------
    distances : ndarray, shape=(N, N)
        Symmetric, zero diagonal (each unordered pair is solved once, in its canonical order).
    standard_errors : ndarray, shape=(N, N)
        Estimator standard error of each distance (0 with the exact divergence).
    energies, straight_line_energies : ndarray, shape=(N, N)
        ``straight_line_energies`` is ``nan`` (not computed for matrices).
    pair_times : ndarray, shape=(N, N)
        Seconds per pair: the wall time of its batch divided by the batch's pairs (0 elsewhere).
    """

    distances: np.ndarray
    energies: np.ndarray
    straight_line_energies: np.ndarray
    pair_times: np.ndarray
    wall_time: float
    config: GeodesicConfig
    t_min: float
    chunk_points: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    standard_errors: np.ndarray | None = None

    @property
    def pairs_per_minute(self) -> float:
        n = self.distances.shape[0]
        return 60.0 * n * (n - 1) / 2 / self.wall_time if self.wall_time > 0 else math.inf

    def summary(self) -> dict[str, Any]:
        n = self.distances.shape[0]
        iu = np.triu_indices(n, 1)
        return {
            "distances": self.distances.tolist(),
            "standard_errors": None if self.standard_errors is None else self.standard_errors.tolist(),
            "n_images": n,
            "n_pairs": len(iu[0]),
            "median_seconds_per_pair": float(np.median(self.pair_times[iu])) if len(iu[0]) else 0.0,
            "pairs_per_minute": self.pairs_per_minute,
            "wall_time": self.wall_time,
            "t_min": self.t_min,
            "chunk_points": self.chunk_points,
            "geodesic_config": self.config.to_dict(),
            **self.extra,
        }


def distance_matrix(
    denoiser,
    images: Tensor,
    *,
    t_min: float = DEFAULT_T_MIN,
    config: GeodesicConfig | None = None,
    chunk_points: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    check_range: bool = True,
    batch_pairs: int = DEFAULT_BATCH_PAIRS,
    length_points: int = DEFAULT_LENGTH_POINTS,
    length_divergence: str = "auto",
    length_probes: int = DEFAULT_LENGTH_PROBES,
    warm_start: float | None = DEFAULT_WARM_START,
) -> DistanceMatrix:
    """Diffusion Edit Distance between all pairs of ``images (N, *event_shape)``.

    Each unordered pair ``i < j`` is solved once, in its canonical order with its own probe
    seed, exactly the problem :func:`image_geodesic` solves for it; ``batch_pairs`` pairs at a
    time go through :func:`spacetime_md.core.optimize_geodesics` (one denoiser call per
    evaluation for all of them). A pair's distance equals :func:`image_geodesic`'s up to the
    floating-point rounding of a larger denoiser batch: 1e-6 in float64, but in float32 the
    rounding grows along an unconverged optimisation (up to 3.6 % measured on 8x8 digits with
    the ``matrix`` preset; ``docs/diffed.md``). With the exact divergence, every image's
    expectation parameters at the anchor are computed once (not once per pair) and a batch's
    final lengths are evaluated in one call; ``length_points=17`` halves the cost of the final
    length against the default 32 (``docs/diffed.md``). Identical images get distance 0 without
    a solve. ``callback`` receives ``{"i", "j", "distance", "seconds"}`` after each pair.
    Every image is checked against the denoiser's ``data_range`` before the first pair
    (``check_range``, see :func:`image_geodesic`).
    """
    event_shape = _check_denoiser(denoiser)
    images = check_tensor("images", images, (None, *event_shape))
    data_range = getattr(denoiser, "data_range", None) if check_range else None
    for k in range(images.shape[0]):
        _check_image(f"images[{k}]", images[k], event_shape, data_range)
    if images.shape[0] < 2:
        raise ValueError(f"images: expected at least 2 images, got {images.shape[0]}")
    config = _check_config(config)
    _check_count("batch_pairs", batch_pairs, 1)
    _check_count("length_points", length_points, 2)
    _length_method(length_divergence, int(np.prod(event_shape)))
    anchor, alpha = _anchor(t_min)
    n = images.shape[0]
    flat = images.reshape(n, -1)
    keys = [image_key(flat[k]) for k in range(n)]
    dist, energy, times, errors = (np.zeros((n, n)) for _ in range(4))
    line = np.full((n, n), np.nan)
    np.fill_diagonal(line, 0.0)
    todo = []
    for i in range(n):
        for j in range(i + 1, n):
            if torch.equal(flat[i], flat[j]):
                continue
            flipped = keys[i] > keys[j]
            first, second = (j, i) if flipped else (i, j)
            pair = _Pair(flat[first], flat[second], pair_seed(config.seed, keys[i], keys[j]))
            todo.append((i, j, (first, second), pair, flipped))
    settings = _LengthSettings(length_points, length_divergence, length_probes, chunk_points, config.chunk_size,
                               amp_dtype)
    method = _length_method(length_divergence, flat.shape[1])
    t0 = time.perf_counter()
    end_mu = None
    if method == "exact" and amp_dtype is None and todo:
        # every image is the fixed endpoint of its N - 1 geodesics: its exact mu once, not once per pair
        end_mu = _exact_mu(denoiser, flat.new_full((n,), anchor), alpha * flat,
                           **({"chunk_rows": config.chunk_size} if config.chunk_size else {}))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="distance matrix", unit="pair")
    try:
        for start in range(0, len(todo), batch_pairs):
            batch = todo[start:start + batch_pairs]
            t_batch = time.perf_counter()
            pairs = [p for _, _, _, p, _ in batch]
            results = _solve_pairs(denoiser, pairs, anchor, alpha, config, chunk_points, amp_dtype, None, warm_start)
            ends = None
            if end_mu is not None:
                index = torch.tensor([ij for _, _, ij, _, _ in batch], device=flat.device)  # (k, 2) canonical
                ends = (end_mu[0][index], end_mu[1][index])
            geos = _finish(denoiser, t_min, anchor, pairs, results, [f for *_, f in batch], settings, False, 0.0,
                           end_mu=ends)
            seconds = (time.perf_counter() - t_batch) / len(batch)
            for (i, j, _, _, _), geo in zip(batch, geos):
                dist[i, j] = dist[j, i] = geo.distance
                errors[i, j] = errors[j, i] = geo.distance_se
                energy[i, j] = energy[j, i] = geo.energy
                times[i, j] = seconds
                logger.info("pair (%d, %d): distance %.5g", i, j, geo.distance)
                if callback is not None:
                    callback({"i": i, "j": j, "distance": geo.distance, "seconds": seconds})
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    extra = {"batch_pairs": batch_pairs, "length_points": length_points, "warm_start": warm_start,
             "length_method": method}
    return DistanceMatrix(dist, energy, line, times, time.perf_counter() - t0, config, float(t_min), chunk_points,
                          extra, errors)


def write_matrix_csv(path: str | os.PathLike, names: list[str], distances: np.ndarray) -> Path:
    """Write a labelled square matrix as CSV (header row and first column are ``names``), atomically."""
    distances = np.asarray(distances)
    if distances.shape != (len(names), len(names)):
        raise ValueError(f"distances: expected shape ({len(names)}, {len(names)}), got {distances.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([""] + list(names))
            for name, row in zip(names, distances):
                writer.writerow([name] + [f"{v:.6g}" for v in row])
    return Path(path)
