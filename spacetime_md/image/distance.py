"""Diffusion Edit Distance (Eq. 17) and spacetime geodesics between images.

Both images are anchored at the small noise level ``t_min`` (EDM sigma in model units,
``log_snr = -2 log t_min``) as VP points ``alpha * x``, exactly as
:func:`spacetime_md.core.diffusion_edit_distance` does; the distance is the length of the
spacetime geodesic between them. Without ``chunk_points`` the geodesic is solved by the core
(:func:`spacetime_md.core.optimize_geodesic`); with it, by
:func:`spacetime_md.image.energy.optimize_geodesic_chunked`, whose peak memory is bounded by
the chunk.

Images here are tensors in the denoiser's data space (model units), shape ``event_shape``.
Shapes: N images, T curve points, F strip frames, D = prod(event_shape).
"""

from __future__ import annotations

import csv
import dataclasses
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

from spacetime_md.core import (
    GeodesicConfig,
    GeodesicResult,
    SpacetimePoint,
    alpha_sigma,
    diffusion_edit_distance,
    edm_sigma_to_log_snr,
    rademacher_probes,
    straight_line,
)
from spacetime_md.core._validation import check_positive, check_tensor
from spacetime_md.image.energy import (
    autocast_denoiser,
    chunked_segment_terms,
    optimize_geodesic_chunked,
)
from spacetime_md.image.io import atomic_path

__all__ = [
    "DEFAULT_T_MIN",
    "IMAGE_PRESETS",
    "resolve_preset",
    "ImageGeodesic",
    "image_geodesic",
    "image_edit_distance",
    "DistanceMatrix",
    "distance_matrix",
    "write_matrix_csv",
]

logger = logging.getLogger(__name__)

#: Default anchor noise level (EDM sigma in model units; data in [-1, 1]).
DEFAULT_T_MIN = 0.1

#: Named geodesic settings for images. ``fast`` is what the CLI uses by default.
IMAGE_PRESETS: dict[str, GeodesicConfig] = {
    # Tens of seconds per 8x8 digit pair on one CPU thread (see benchmarks/bench_image.py).
    "fast": GeodesicConfig(n_nodes=6, n_points=(16, 32), n_probes=2, max_steps=100, min_steps=5, rtol=1e-3,
                           divergence="hutchinson"),
    # Several minutes per pair on one CPU thread.
    "accurate": GeodesicConfig(n_nodes=10, n_points=(16, 32, 64), n_probes=4, max_steps=300,
                               divergence="hutchinson"),
}


def resolve_preset(name: str = "fast", *, seed: int = 0, max_steps: int | None = None) -> GeodesicConfig:
    """A copy of ``IMAGE_PRESETS[name]`` with ``seed`` (and ``max_steps``) replaced."""
    if name not in IMAGE_PRESETS:
        raise ValueError(f"preset: expected one of {sorted(IMAGE_PRESETS)}, got {name!r}")
    changes: dict[str, Any] = {"seed": seed}
    if max_steps is not None:
        changes["max_steps"] = max_steps
    return dataclasses.replace(IMAGE_PRESETS[name], **changes)


def _check_denoiser(denoiser) -> tuple[int, ...]:
    shape = getattr(denoiser, "event_shape", None)
    if not callable(denoiser) or shape is None:
        raise TypeError(
            f"denoiser: expected an image denoiser with an event_shape (see spacetime_md.image.adapters), "
            f"got {type(denoiser).__name__}"
        )
    return tuple(shape)


def _check_image(name: str, image: object, event_shape: tuple[int, ...], data_range=None) -> Tensor:
    """Shape, finiteness and -- when the denoiser knows its ``data_range`` -- the value range.

    Images outside the model's range, 8-bit pixels (values up to 255) and ``[0, 1]`` pixels
    handed to a ``(-1, 1)`` model would otherwise give a silently wrong distance.
    """
    image = check_tensor(name, image, event_shape)
    if data_range is None:
        return image
    low, high = data_range
    lo, hi = float(image.min()), float(image.max())
    slack = 1e-3 * (high - low)
    convert = "convert pixels p in [0, 1] with model.to_model(p) = 2 p - 1" if (low, high) == (-1.0, 1.0) else \
        f"rescale it to [{low:g}, {high:g}]"
    if hi > 2.0 and hi <= 255.0 + slack and lo >= -slack:
        raise ValueError(f"{name}: expected model units in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}] "
                         f"(8-bit pixels?): divide by 255, then {convert}")
    if lo < low - slack or hi > high + slack:
        raise ValueError(f"{name}: expected model units in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}]: "
                         f"{convert}")
    if low < 0.0 and lo >= 0.0 and hi <= 1.0 + slack and (high - low) >= 1.5:
        raise ValueError(f"{name}: expected model units in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}], "
                         f"which look like [0, 1] pixels: {convert} (or pass check_range=False if this image "
                         f"really has no value below 0)")
    return image


def _anchor(t_min: float) -> tuple[float, float]:
    check_positive("t_min", t_min)
    log_snr = float(edm_sigma_to_log_snr(float(t_min)))
    return log_snr, float(alpha_sigma(log_snr)[0])


@dataclass
class ImageGeodesic:
    """A spacetime geodesic between two images.

    Attributes
    ----------
    distance : float
        Diffusion Edit Distance (geodesic length).
    energy : float
        Geodesic energy, evaluated with the same probes as ``straight_line_energy``.
    straight_line_energy : float
        Energy of the straight spacetime segment between the anchors.
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
        Curve points (VP scaling, flat).
    anchor_log_snr : float
        ``-2 log t_min``.
    result : GeodesicResult or None
        Solver output (``None`` for identical images).
    """

    denoiser: Any
    t_min: float
    anchor_log_snr: float
    distance: float
    energy: float
    straight_line_energy: float
    log_snr: Tensor
    x: Tensor
    result: GeodesicResult | None
    wall_time: float
    chunk_points: int | None = None
    amp_dtype: torch.dtype | None = None

    @property
    def log_snr_min(self) -> float:
        """Highest noise reached (smallest ``log_snr``) along the curve."""
        return float(self.log_snr.min())

    def denoising_means(self, n_frames: int = 9) -> tuple[Tensor, Tensor]:
        """``E[x_0 | x_t]`` at ``n_frames`` equally spaced curve parameters.

        Returns
        -------
        log_snr : Tensor, shape=(F,)
        images : Tensor, shape=(F, *event_shape)
            In model units.
        """
        if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
            raise ValueError(f"n_frames: expected an integer >= 2, got {n_frames!r}")
        if self.result is None:
            log_snr = self.log_snr[:1].expand(n_frames)
            x = self.x[:1].expand(n_frames, -1)
        else:
            with torch.no_grad():
                log_snr, x = self.result.curve.evaluate(n_frames)
        den = autocast_denoiser(self.denoiser, self.amp_dtype)
        with torch.no_grad():
            means = den(x.detach(), log_snr.detach())
        return log_snr.detach(), self.denoiser.unflatten(means)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable numbers (no tensors)."""
        out = {
            "distance": self.distance,
            "energy": self.energy,
            "straight_line_energy": self.straight_line_energy,
            "t_min": self.t_min,
            "anchor_log_snr": self.anchor_log_snr,
            "log_snr_min": self.log_snr_min,
            "wall_time": self.wall_time,
            "chunk_points": self.chunk_points,
        }
        if self.result is not None:
            res = self.result.summary()
            out.update({k: res[k] for k in ("n_steps", "n_denoiser_evals", "converged", "initial_energy")})
            out["geodesic_config"] = res["config"]
        return out


def _check_energies(denoiser, start, end, geo_log_snr, geo_x, config, chunk_points, amp_dtype):
    """Geodesic and straight-line energies with the same (fresh) probes, for reporting."""
    n_points = geo_log_snr.shape[0]
    line_log_snr, line_x = straight_line(start, end, n_points)
    dim = geo_x.shape[1]
    method = config.divergence_for(dim)
    probes = None
    if method == "hutchinson":
        gen = torch.Generator(device=geo_x.device).manual_seed(config.seed + 1)
        probes = rademacher_probes(config.n_probes, (n_points, dim), dtype=geo_x.dtype, device=geo_x.device,
                                   generator=gen)
    kwargs = dict(chunk_points=chunk_points or n_points, divergence=method, probes=probes,
                  chunk_size=config.chunk_size, amp_dtype=amp_dtype)
    energies = []
    for ls, xs in ((geo_log_snr, geo_x), (line_log_snr, line_x)):
        terms = chunked_segment_terms(denoiser, ls, xs, **kwargs)
        clamped = terms.clamp_min(0) if config.clamp == "segment" else terms
        energies.append(0.5 * (n_points - 1) * float(clamped.sum()))
    return energies


def image_geodesic(
    denoiser,
    image_a: Tensor,
    image_b: Tensor,
    *,
    t_min: float = DEFAULT_T_MIN,
    config: GeodesicConfig | None = None,
    chunk_points: int | None = None,
    amp_dtype: torch.dtype | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    check_range: bool = True,
) -> ImageGeodesic:
    """Spacetime geodesic between two images anchored at ``t_min``.

    Parameters
    ----------
    denoiser : ImageDenoiser
        Any callable core denoiser with ``event_shape``, ``unflatten`` (see
        :mod:`spacetime_md.image.adapters`).
    image_a, image_b : Tensor, shape=event_shape
        Images in the denoiser's data space (model units).
    t_min : float
        Anchor noise level (EDM sigma, > 0).
    config : GeodesicConfig, optional
        Default ``IMAGE_PRESETS["fast"]``.
    chunk_points : int, optional
        Memory-bounded energy with this many curve points per chunk.
    amp_dtype : torch.dtype, optional
        Mixed precision for the denoiser (chunked solver only, e.g. ``torch.bfloat16`` on GPU).
    callback : callable, optional
        Called after every optimiser step (chunked solver only).
    check_range : bool
        Refuse images outside the denoiser's ``data_range`` (8-bit pixels, ``[0, 1]`` pixels for a
        ``(-1, 1)`` model) with a ``ValueError``; ``False`` skips the check.

    Returns
    -------
    ImageGeodesic
    """
    event_shape = _check_denoiser(denoiser)
    data_range = getattr(denoiser, "data_range", None) if check_range else None
    a = _check_image("image_a", image_a, event_shape, data_range)
    b = _check_image("image_b", image_b, event_shape, data_range).to(a.dtype)
    config = IMAGE_PRESETS["fast"] if config is None else config
    if not isinstance(config, GeodesicConfig):
        raise TypeError(f"config: expected a GeodesicConfig, got {type(config).__name__}")
    if amp_dtype is not None and chunk_points is None:
        raise ValueError("amp_dtype: expected chunk_points to be set too (mixed precision uses the chunked solver)")
    anchor, alpha = _anchor(t_min)
    x_a, x_b = a.reshape(-1), b.reshape(-1)
    t0 = time.perf_counter()
    if torch.equal(x_a, x_b):
        log_snr = torch.full((2,), anchor, dtype=a.dtype, device=a.device)
        x = (alpha * x_a).expand(2, -1).clone()
        return ImageGeodesic(denoiser, float(t_min), anchor, 0.0, 0.0, 0.0, log_snr, x, None,
                             time.perf_counter() - t0, chunk_points, amp_dtype)
    start, end = SpacetimePoint(anchor, alpha * x_a), SpacetimePoint(anchor, alpha * x_b)
    if chunk_points is None:
        distance, result = diffusion_edit_distance(denoiser, x_a, x_b, t_min, config, return_result=True)
    else:
        result = optimize_geodesic_chunked(denoiser, start, end, config, chunk_points=chunk_points,
                                           amp_dtype=amp_dtype, callback=callback)
        distance = result.length
    if not math.isfinite(distance):
        raise FloatingPointError(f"diffusion edit distance is not finite ({distance})")
    energy, line_energy = _check_energies(denoiser, start, end, result.log_snr, result.x, config, chunk_points,
                                          amp_dtype)
    return ImageGeodesic(denoiser, float(t_min), anchor, float(distance), energy, line_energy, result.log_snr,
                         result.x, result, time.perf_counter() - t0, chunk_points, amp_dtype)


def image_edit_distance(
    denoiser,
    image_a: Tensor,
    image_b: Tensor,
    *,
    t_min: float = DEFAULT_T_MIN,
    config: GeodesicConfig | None = None,
    chunk_points: int | None = None,
    amp_dtype: torch.dtype | None = None,
    check_range: bool = True,
) -> float:
    """Diffusion Edit Distance between two images (Eq. 17); see :func:`image_geodesic`."""
    return image_geodesic(denoiser, image_a, image_b, t_min=t_min, config=config, chunk_points=chunk_points,
                          amp_dtype=amp_dtype, check_range=check_range).distance


@dataclass
class DistanceMatrix:
    """Pairwise Diffusion Edit Distances.

    Attributes
    ----------
    distances : ndarray, shape=(N, N)
        Symmetric, zero diagonal (pair ``(i, j)`` is solved once for ``i < j`` and mirrored).
    energies, straight_line_energies : ndarray, shape=(N, N)
    pair_times : ndarray, shape=(N, N)
        Seconds per solved pair (0 elsewhere).
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

    def summary(self) -> dict[str, Any]:
        n = self.distances.shape[0]
        iu = np.triu_indices(n, 1)
        return {
            "distances": self.distances.tolist(),
            "n_images": n,
            "n_pairs": len(iu[0]),
            "median_seconds_per_pair": float(np.median(self.pair_times[iu])) if len(iu[0]) else 0.0,
            "wall_time": self.wall_time,
            "t_min": self.t_min,
            "chunk_points": self.chunk_points,
            "geodesic_config": self.config.to_dict(),
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
) -> DistanceMatrix:
    """Diffusion Edit Distance between all pairs of ``images (N, *event_shape)``.

    ``N (N - 1) / 2`` geodesics are solved (``i < j``); the matrix is mirrored. ``callback``
    receives ``{"i", "j", "distance", "seconds"}`` after each pair. Every image is checked
    against the denoiser's ``data_range`` before the first pair (``check_range``, see
    :func:`image_geodesic`).
    """
    event_shape = _check_denoiser(denoiser)
    images = check_tensor("images", images, (None, *event_shape))
    data_range = getattr(denoiser, "data_range", None) if check_range else None
    for k in range(images.shape[0]):
        _check_image(f"images[{k}]", images[k], event_shape, data_range)
    if images.shape[0] < 2:
        raise ValueError(f"images: expected at least 2 images, got {images.shape[0]}")
    config = IMAGE_PRESETS["fast"] if config is None else config
    n = images.shape[0]
    dist, energy, line, times = (np.zeros((n, n)) for _ in range(4))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    iterator = pairs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(pairs, desc="distance matrix", unit="pair")
    t0 = time.perf_counter()
    for i, j in iterator:
        geo = image_geodesic(denoiser, images[i], images[j], t_min=t_min, config=config,
                             chunk_points=chunk_points, amp_dtype=amp_dtype, check_range=False)
        dist[i, j] = dist[j, i] = geo.distance
        energy[i, j] = energy[j, i] = geo.energy
        line[i, j] = line[j, i] = geo.straight_line_energy
        times[i, j] = geo.wall_time
        logger.info("pair (%d, %d): distance %.5g in %.2f s", i, j, geo.distance, geo.wall_time)
        if callback is not None:
            callback({"i": i, "j": j, "distance": geo.distance, "seconds": geo.wall_time})
    return DistanceMatrix(dist, energy, line, times, time.perf_counter() - t0, config, float(t_min), chunk_points)


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
