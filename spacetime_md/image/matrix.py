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
    workers: int = 1,
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

    ``workers > 1`` solves the same batches (same composition, same order of pairs inside each)
    in that many ``spawn``-ed processes with one torch thread each (CPU only; the denoiser is
    pickled to them with its weights, images and anchor expectation parameters go as numpy),
    so every distance is bitwise the one ``workers=1`` gives at one torch thread. It is capped
    by the number of batches; ``callback`` then sees the pairs batch by batch as they finish.
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
    batches = [todo[start:start + batch_pairs] for start in range(0, len(todo), batch_pairs)]
    workers = _check_workers(workers, len(batches), flat)
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

    def record(batch, rows, seconds):
        for (i, j, _, _, _), (d, se, e) in zip(batch, rows):
            dist[i, j] = dist[j, i] = d
            errors[i, j] = errors[j, i] = se
            energy[i, j] = energy[j, i] = e
            times[i, j] = seconds
            logger.info("pair (%d, %d): distance %.5g", i, j, d)
            if callback is not None:
                callback({"i": i, "j": j, "distance": d, "seconds": seconds})
        if bar is not None:
            bar.update(len(batch))

    solve = (denoiser, flat, end_mu, t_min, anchor, alpha, config, chunk_points, amp_dtype, warm_start, settings)
    try:
        if workers == 1:
            for batch in batches:
                t_batch = time.perf_counter()
                rows = _solve_batch(solve, [ij for _, _, ij, _, _ in batch], [p.seed for *_, p, _ in batch],
                                    [f for *_, f in batch])
                record(batch, rows, (time.perf_counter() - t_batch) / len(batch))
        else:
            _run_workers(workers, batches, solve, record)
    finally:
        if bar is not None:
            bar.close()
    extra = {"batch_pairs": batch_pairs, "length_points": length_points, "warm_start": warm_start,
             "length_method": method, "workers": workers}
    return DistanceMatrix(dist, energy, line, times, time.perf_counter() - t0, config, float(t_min), chunk_points,
                          extra, errors)



def _solve_batch(solve, index, seeds, flipped) -> list[tuple[float, float, float]]:
    """Solve one batch: canonical ``index [(first, second)]``, pair seeds, flips ->
    ``[(distance, distance_se, energy)]`` (the same code in-process and in a worker)."""
    denoiser, flat, end_mu, t_min, anchor, alpha, config, chunk_points, amp_dtype, warm_start, settings = solve
    pairs = [_Pair(flat[a], flat[b], seed) for (a, b), seed in zip(index, seeds)]
    results = _solve_pairs(denoiser, pairs, anchor, alpha, config, chunk_points, amp_dtype, None, warm_start)
    ends = None
    if end_mu is not None:
        rows = torch.tensor(index, device=flat.device)  # (k, 2) canonical
        ends = (end_mu[0][rows], end_mu[1][rows])
    geos = _finish(denoiser, t_min, anchor, pairs, results, list(flipped), settings, False, 0.0, end_mu=ends)
    return [(float(g.distance), float(g.distance_se), float(g.energy)) for g in geos]


def _check_workers(workers, n_batches: int, flat: Tensor) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    workers = max(1, min(workers, n_batches))  # no more processes than batches
    if workers > 1 and flat.device.type != "cpu":
        raise ValueError(f"workers: expected 1 for images on {flat.device} (worker processes are CPU only)")
    return workers


_WORKER_SOLVE = None


def _worker_init(payload: bytes) -> None:
    """Worker process: one torch thread, the denoiser and the shared inputs unpickled once."""
    import pickle

    global _WORKER_SOLVE
    torch.set_num_threads(1)
    spec, flat, end_mu, rest = pickle.loads(payload)
    denoiser = _denoiser_from_spec(spec)
    flat = torch.from_numpy(flat)
    if end_mu is not None:
        end_mu = tuple(torch.from_numpy(m) for m in end_mu)
    _WORKER_SOLVE = (denoiser, flat, end_mu, *rest)


def _worker_batch(index, seeds, flipped):
    t0 = time.perf_counter()
    rows = _solve_batch(_WORKER_SOLVE, index, seeds, flipped)
    return rows, (time.perf_counter() - t0) / len(index)


def _denoiser_spec(denoiser):
    """What a worker needs to rebuild ``denoiser``: an image model goes as its settings and
    ``state_dict`` (the adapter holds closures that do not pickle); anything else is pickled."""
    from dataclasses import asdict

    from spacetime_md.image.adapters import ImageDenoiser
    from spacetime_md.image.model import ImageDiffusionModel

    if not isinstance(denoiser, ImageDenoiser):
        return ("pickled", denoiser)
    adapter = {"event_shape": denoiser.event_shape, "prediction": denoiser.prediction,
               "noise_conditioning": denoiser.noise_conditioning, "dtype": denoiser.dtype,
               "data_range": denoiser.data_range}
    net = denoiser.network
    if type(net) is ImageDiffusionModel:
        model = {"event_shape": net.event_shape, "unet": asdict(net.unet_config), "sigma_data": net.sigma_data,
                 "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                 "training": net.training}
        return ("image_model", model, adapter)
    return ("image_network", net, adapter)


def _denoiser_from_spec(spec):
    from spacetime_md.image.adapters import ImageDenoiser
    from spacetime_md.image.model import ImageDiffusionModel, UNetConfig

    if spec[0] == "pickled":
        return spec[1]
    adapter = dict(spec[2])
    if spec[0] == "image_model":
        m = spec[1]
        net = ImageDiffusionModel(tuple(m["event_shape"]), UNetConfig(**m["unet"]), m["sigma_data"])
        net.load_state_dict(m["state_dict"])
        net.train(m["training"]).requires_grad_(False)
    else:
        net = spec[1]
    return ImageDenoiser(net, adapter.pop("event_shape"), adapter.pop("prediction"), **adapter)


def _run_workers(workers: int, batches: list, solve: tuple, record) -> None:
    """Solve ``batches`` in ``workers`` spawned processes; ``record(batch, rows, seconds)`` per batch."""
    import multiprocessing
    import pickle
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    denoiser, flat, end_mu, *rest = solve
    try:
        payload = pickle.dumps((_denoiser_spec(denoiser), flat.detach().cpu().numpy(),
                                None if end_mu is None else tuple(m.detach().cpu().numpy() for m in end_mu),
                                tuple(rest)))
    except Exception as exc:
        raise TypeError(f"workers: the denoiser must be picklable to send it to worker processes "
                        f"({type(exc).__name__}: {exc}); use workers=1") from exc
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(payload,))
    finished = False
    try:
        pending = {pool.submit(_worker_batch, [ij for _, _, ij, _, _ in b], [p.seed for *_, p, _ in b],
                               [f for *_, f in b]): b for b in batches}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                batch = pending.pop(future)
                rows, seconds = future.result()
                record(batch, rows, seconds)
        finished = True
    except BrokenProcessPool:
        raise RuntimeError("distance_matrix: a worker process died (killed or out of memory); "
                           "no distances were returned") from None
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # an error or an interrupt: stop the workers now, leave no orphans
            _stop_pool(pool)


def _stop_pool(pool) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=10)


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
