"""Diffusion Edit Distance (Eq. 17) and spacetime geodesics between images.

Both images are anchored at the small noise level ``t_min`` (EDM sigma in model units,
``log_snr = -2 log t_min``) as VP points ``alpha * x``, exactly as
:func:`spacetime_md.core.diffusion_edit_distance` does; the distance is the length of the
spacetime geodesic between them.

A distance, by construction (issue 25):

- symmetric: every unordered pair is solved once, in a canonical order (the SHA-256 of the
  image values, :func:`image_key`), with Hutchinson probes seeded from the canonical pair
  (:func:`pair_seed`); the curve is flipped back to the caller's order, so ``d(a, b)`` and
  ``d(b, a)`` are bitwise equal; ``d(a, a) = 0`` exactly (no solve);
- the reported length is re-evaluated on the solved curve, independently of the optimiser's
  probes: with the exact divergence for ``D <= EXACT_LENGTH_MAX_DIM`` (no estimator noise), or
  with held-out Hutchinson draws and their standard error;
- fast for matrices: pairs are solved in batches by :func:`spacetime_md.core.optimize_geodesics`
  (one denoiser call per evaluation for the whole batch), from a warm-start curve that already
  dips into the noise (:func:`warm_start_curve`).

Without ``chunk_points`` the geodesic is solved by the core's batched solver; with it, pair by
pair by :func:`spacetime_md.image.energy.optimize_geodesic_chunked`, whose peak memory is
bounded by the chunk.

Images here are tensors in the denoiser's data space (model units), shape ``event_shape``.
Shapes: N images, T curve points, F strip frames, D = prod(event_shape).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
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
    SplineCurve,
    alpha_sigma,
    edm_sigma_to_log_snr,
    optimize_geodesics,
    straight_line,
)
from spacetime_md.core.estimates import draw_probes
from spacetime_md.core._validation import check_positive, check_tensor
from spacetime_md.image.energy import autocast_denoiser, chunked_segment_terms, optimize_geodesic_chunked
from spacetime_md.image.io import atomic_path

__all__ = [
    "DEFAULT_T_MIN",
    "DEFAULT_LENGTH_POINTS",
    "DEFAULT_LENGTH_PROBES",
    "DEFAULT_WARM_START",
    "DEFAULT_BATCH_PAIRS",
    "EXACT_LENGTH_MAX_DIM",
    "IMAGE_PRESETS",
    "resolve_preset",
    "image_key",
    "pair_seed",
    "evaluate_curve_length",
    "warm_start_curve",
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

#: Points of the final length evaluation.
DEFAULT_LENGTH_POINTS = 32
#: Hutchinson draws of the final length when the exact divergence is not used.
DEFAULT_LENGTH_PROBES = 16
#: ``length_divergence="auto"`` evaluates the final length exactly up to this ``D``
#: (``D`` denoiser rows per curve point).
EXACT_LENGTH_MAX_DIM = 1024
#: ``log_snr`` half-way along the warm-start curve (EDM sigma 0.61).
DEFAULT_WARM_START = 1.0
#: Pairs per batched solve in :func:`distance_matrix`.
DEFAULT_BATCH_PAIRS = 16

#: Named geodesic settings for images. ``fast`` is what the CLI uses by default; ``matrix`` is
#: for many pairs (distance matrices, nearest neighbours); ``accurate`` for single pairs.
#: Timings and spreads: ``docs/diffed.md`` (``benchmarks/bench_diffed.py``).
IMAGE_PRESETS: dict[str, GeodesicConfig] = {
    "matrix": GeodesicConfig(n_nodes=4, n_points=(8,), n_probes=1, probe_layout="curve", max_steps=20,
                             min_steps=5, rtol=1e-3, divergence="hutchinson"),
    "fast": GeodesicConfig(n_nodes=4, n_points=(8, 16), n_probes=4, probe_layout="curve", max_steps=30,
                           min_steps=5, rtol=1e-3, divergence="hutchinson"),
    "accurate": GeodesicConfig(n_nodes=6, n_points=(8, 16, 32), n_probes=8, probe_layout="curve", max_steps=100,
                               rtol=1e-4, divergence="hutchinson"),
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


def image_key(image: Tensor) -> str:
    """SHA-256 of an image's values (as float64) and shape: the canonical order of a pair.

    The same image gives the same key whatever its dtype (float32 -> float64 is exact), device
    or memory layout.
    """
    arr = image.detach().to("cpu", torch.float64).contiguous().numpy()
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def pair_seed(seed: int, key_a: str, key_b: str) -> int:
    """Probe seed of the pair ``{a, b}``: a function of ``seed`` and the *unordered* pair of keys."""
    lo, hi = sorted((key_a, key_b))
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{lo}:{hi}".encode()).digest()[:8], "big") >> 1


@dataclass
class ImageGeodesic:
    """A spacetime geodesic between two images, in the caller's order (``image_a`` first).

    The geodesic is solved once per *unordered* pair: the two images are put in a canonical
    order (:func:`image_key`), the probes are seeded from the canonical pair (:func:`pair_seed`),
    and the curve is flipped back when the caller's order is the other one, so swapping the
    arguments gives the bitwise same distance and the reversed curve.

    Attributes
    ----------
    distance : float
        Diffusion Edit Distance: length of the solved curve, re-evaluated on ``length_points``
        equally spaced points with ``length_method`` (not the optimiser's probes).
    distance_se : float
        Standard error of ``distance`` from the divergence estimator (0 for the exact
        divergence). It does not include the optimiser's spread over probe seeds (see
        ``docs/diffed.md``).
    energy : float
        Segment-clamped curve energy (Eq. 14) at the same points and with the same estimator.
    straight_line_energy : float
        The same for the straight spacetime segment between the anchors (``nan`` when not
        computed, e.g. in :func:`distance_matrix`).
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
        Curve points (VP scaling, flat), from ``image_a`` to ``image_b``.
    anchor_log_snr : float
        ``-2 log t_min``.
    result : GeodesicResult or None
        Solver output in the *canonical* order (``None`` for identical images).
    reversed : bool
        Whether the caller's order is the reverse of the canonical one (``result`` runs from
        ``image_b`` to ``image_a``).
    length_method : {"exact", "hutchinson"}
    length_points : int
    n_negative_segments : int
        Segments whose (mean) term is negative; they add 0 to the length.
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
    distance_se: float = 0.0
    reversed: bool = False
    length_method: str = "exact"
    length_points: int = 0
    n_negative_segments: int = 0
    seed: int = 0

    @property
    def log_snr_min(self) -> float:
        """Highest noise reached (smallest ``log_snr``) along the curve."""
        return float(self.log_snr.min())

    def denoising_means(self, n_frames: int = 9) -> tuple[Tensor, Tensor]:
        """``E[x_0 | x_t]`` at ``n_frames`` equally spaced curve parameters, ``image_a`` first.

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
            if self.reversed:
                log_snr, x = log_snr.flip(0), x.flip(0)
        den = autocast_denoiser(self.denoiser, self.amp_dtype)
        with torch.no_grad():
            means = den(x.detach(), log_snr.detach())
        return log_snr.detach(), self.denoiser.unflatten(means)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable numbers (no tensors)."""
        out = {
            "distance": self.distance,
            "distance_se": self.distance_se,
            "length_method": self.length_method,
            "length_points": self.length_points,
            "n_negative_segments": self.n_negative_segments,
            "energy": self.energy,
            "straight_line_energy": self.straight_line_energy,
            "t_min": self.t_min,
            "anchor_log_snr": self.anchor_log_snr,
            "log_snr_min": self.log_snr_min,
            "wall_time": self.wall_time,
            "chunk_points": self.chunk_points,
            "reversed": self.reversed,
            "pair_seed": self.seed,
        }
        if self.result is not None:
            res = self.result.summary()
            out.update({k: res[k] for k in ("n_steps", "n_denoiser_evals", "converged", "initial_energy")})
            out["geodesic_config"] = res["config"]
        return out


@dataclass(frozen=True)
class _Length:
    length: float
    se: float
    energy: float
    n_negative: int
    method: str


def _length_method(method: str, dim: int) -> str:
    if method not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"length_divergence: expected 'auto', 'exact' or 'hutchinson', got {method!r}")
    if method == "auto":
        return "exact" if dim <= EXACT_LENGTH_MAX_DIM else "hutchinson"
    return method


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def evaluate_curve_length(
    denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    divergence: str = "auto",
    n_probes: int = 16,
    seed: int = 0,
    chunk_points: int | None = None,
    chunk_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, float, float, int, str]:
    """Length of a discretised curve with its standard error, independent of the optimiser.

    ``"exact"`` (``"auto"`` for ``D <= EXACT_LENGTH_MAX_DIM``): ``D`` denoiser rows per point,
    no estimator noise (standard error 0). ``"hutchinson"``: ``n_probes`` independent draws of
    one Rademacher vector shared along the curve (the noise cancels in neighbouring
    differences); the length of the mean segment terms, with a jackknife standard error over
    the draws.

    Parameters
    ----------
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)

    Returns
    -------
    length, standard_error, energy, n_negative_segments, method
    """
    method = _length_method(divergence, x.shape[1])
    n_points = x.shape[0]
    kwargs = dict(chunk_points=chunk_points or n_points, chunk_size=chunk_size, amp_dtype=amp_dtype)
    if method == "exact":
        per_draw = chunked_segment_terms(denoiser, log_snr, x, divergence="exact", **kwargs)[None]
    else:
        _check_count("length_probes", n_probes, 2)
        gen = torch.Generator(device=x.device).manual_seed(int(seed))
        probes = draw_probes(n_probes, n_points, x.shape[1], "curve", dtype=x.dtype, device=x.device, generator=gen)
        per_draw = torch.stack([
            chunked_segment_terms(denoiser, log_snr, x, divergence="hutchinson", probes=probes[p:p + 1], **kwargs)
            for p in range(n_probes)
        ])
    per_draw = per_draw.double()
    mean = per_draw.mean(0)
    length = float(mean.clamp_min(0).sqrt().sum())
    energy = 0.5 * (n_points - 1) * float(mean.clamp_min(0).sum())
    se = 0.0
    if per_draw.shape[0] > 1:
        n = per_draw.shape[0]
        loo = (per_draw.sum(0, keepdim=True) - per_draw) / (n - 1)  # leave-one-out means
        loo_len = loo.clamp_min(0).sqrt().sum(-1)
        se = float(((n - 1) / n * (loo_len - loo_len.mean()).square().sum()).sqrt())
    return length, se, energy, int((mean < 0).sum()), method


def warm_start_curve(start: SpacetimePoint, end: SpacetimePoint, n_nodes: int, dip_log_snr: float | None) -> SplineCurve:
    """Initial curve: ``log_snr`` dips to ``dip_log_snr`` half-way (a sine bump), ``x`` runs on
    the straight line between the endpoints scaled by ``alpha(log_snr) / alpha(anchor)``.

    Image geodesics first add noise, then remove it (DESIGN.md section 1); starting there
    instead of on the straight line saves optimiser steps. ``None``: the straight line.
    """
    curve = SplineCurve(start, end, n_nodes)
    if dip_log_snr is None:
        return curve
    z0, z1 = curve.start, curve.end
    anchor = float(torch.minimum(z0[0], z1[0]))
    if dip_log_snr >= anchor:
        return curve
    s = torch.arange(1, n_nodes + 1, dtype=z0.dtype, device=z0.device) / (n_nodes + 1)
    line = (1 - s)[:, None] * z0 + s[:, None] * z1
    log_snr = line[:, 0] - (line[:, 0] - dip_log_snr) * torch.sin(math.pi * s)
    scale = alpha_sigma(log_snr)[0] / alpha_sigma(line[:, 0])[0]
    with torch.no_grad():
        curve.interior[:, 0] = log_snr
        curve.interior[:, 1:] = scale[:, None] * line[:, 1:]
    return curve


@dataclass
class _Pair:
    first: Tensor  # canonical first image, flat (D,)
    second: Tensor
    seed: int


def _solve_pairs(denoiser, pairs: list[_Pair], anchor: float, alpha: float, config: GeodesicConfig,
                 chunk_points, amp_dtype, callback, warm_start) -> list[GeodesicResult]:
    """Geodesics of canonical pairs: one batched solve (or the chunked solver pair by pair)."""
    starts = [SpacetimePoint(anchor, alpha * p.first) for p in pairs]
    ends = [SpacetimePoint(anchor, alpha * p.second) for p in pairs]
    if chunk_points is not None:
        return [optimize_geodesic_chunked(denoiser, s, e, dataclasses.replace(config, seed=p.seed),
                                          chunk_points=chunk_points, amp_dtype=amp_dtype, callback=callback)
                for s, e, p in zip(starts, ends, pairs)]
    curves = [warm_start_curve(s, e, config.n_nodes, warm_start) for s, e in zip(starts, ends)]
    return optimize_geodesics(denoiser, starts, ends, config, seeds=[p.seed for p in pairs], curves=curves,
                              callback=callback)


def _finish(denoiser, t_min, anchor, pair: _Pair, result: GeodesicResult, flipped: bool, config, length_points,
            length_divergence, length_probes, chunk_points, amp_dtype, straight_line_energy: bool,
            wall_time: float) -> ImageGeodesic:
    with torch.no_grad():
        log_snr, x = result.curve.evaluate(length_points)
    common = dict(divergence=length_divergence, n_probes=length_probes, seed=pair.seed + 1, chunk_points=chunk_points,
                  chunk_size=config.chunk_size, amp_dtype=amp_dtype)
    length, se, energy, n_neg, method = evaluate_curve_length(denoiser, log_snr, x, **common)
    if not math.isfinite(length):
        raise FloatingPointError(f"diffusion edit distance is not finite ({length})")
    line_energy = math.nan
    if straight_line_energy:
        line_l, line_x = straight_line(SpacetimePoint(anchor, result.curve.start[1:]),
                                       SpacetimePoint(anchor, result.curve.end[1:]), length_points)
        line_energy = evaluate_curve_length(denoiser, line_l, line_x, **common)[2]
    if flipped:
        log_snr, x = log_snr.flip(0), x.flip(0)
    return ImageGeodesic(denoiser, float(t_min), anchor, length, energy, line_energy, log_snr.detach(), x.detach(),
                         result, wall_time, chunk_points, amp_dtype, distance_se=se, reversed=flipped,
                         length_method=method, length_points=length_points, n_negative_segments=n_neg,
                         seed=pair.seed)


def _zero_geodesic(denoiser, t_min, anchor, alpha, image, chunk_points, amp_dtype, seed, length_points,
                   length_divergence):
    log_snr = torch.full((2,), anchor, dtype=image.dtype, device=image.device)
    x = (alpha * image).expand(2, -1).clone()
    return ImageGeodesic(denoiser, float(t_min), anchor, 0.0, 0.0, 0.0, log_snr, x, None, 0.0, chunk_points,
                         amp_dtype, length_method=_length_method(length_divergence, image.shape[0]),
                         length_points=length_points, seed=seed)


def _check_config(config):
    config = IMAGE_PRESETS["fast"] if config is None else config
    if not isinstance(config, GeodesicConfig):
        raise TypeError(f"config: expected a GeodesicConfig, got {type(config).__name__}")
    return config


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
    length_points: int = DEFAULT_LENGTH_POINTS,
    length_divergence: str = "auto",
    length_probes: int = DEFAULT_LENGTH_PROBES,
    warm_start: float | None = DEFAULT_WARM_START,
    straight_line_energy: bool = True,
) -> ImageGeodesic:
    """Spacetime geodesic between two images anchored at ``t_min``, symmetric by construction.

    The pair is solved in a canonical order (:func:`image_key`) with probes seeded from the
    canonical pair (:func:`pair_seed` of ``config.seed``), then flipped back to the caller's
    order: ``image_geodesic(a, b)`` and ``image_geodesic(b, a)`` give the bitwise same distance.
    The solver is :func:`spacetime_md.core.optimize_geodesics` (one pair; the same code path as
    :func:`distance_matrix`), or the chunked solver with ``chunk_points``. The reported length is
    re-evaluated on the solved curve at ``length_points`` points with the exact divergence
    (``D <= EXACT_LENGTH_MAX_DIM``; no estimator noise) or ``length_probes`` held-out Hutchinson
    draws (with a standard error).

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
        Default ``IMAGE_PRESETS["fast"]``; ``config.seed`` is mixed with the pair's keys.
    chunk_points : int, optional
        Memory-bounded energy with this many curve points per chunk (chunked solver).
    amp_dtype : torch.dtype, optional
        Mixed precision for the denoiser (chunked solver only, e.g. ``torch.bfloat16`` on GPU).
    callback : callable, optional
        Called after every optimiser step.
    check_range : bool
        Refuse images outside the denoiser's ``data_range`` (8-bit pixels, ``[0, 1]`` pixels for a
        ``(-1, 1)`` model) with a ``ValueError``; ``False`` skips the check.
    length_points : int
        Points of the final length evaluation (>= 2).
    length_divergence : {"auto", "exact", "hutchinson"}
    length_probes : int
        Hutchinson draws of the final length (>= 2; ``"hutchinson"`` only).
    warm_start : float or None
        ``log_snr`` of the initial curve half-way (:func:`warm_start_curve`); ``None`` starts on
        the straight line. Not used by the chunked solver.
    straight_line_energy : bool
        Also evaluate the straight segment's energy (one more length evaluation).

    Returns
    -------
    ImageGeodesic
    """
    event_shape = _check_denoiser(denoiser)
    data_range = getattr(denoiser, "data_range", None) if check_range else None
    a = _check_image("image_a", image_a, event_shape, data_range)
    b = _check_image("image_b", image_b, event_shape, data_range).to(a.dtype)
    config = _check_config(config)
    if amp_dtype is not None and chunk_points is None:
        raise ValueError("amp_dtype: expected chunk_points to be set too (mixed precision uses the chunked solver)")
    _check_count("length_points", length_points, 2)
    _length_method(length_divergence, a.numel())
    anchor, alpha = _anchor(t_min)
    x_a, x_b = a.reshape(-1), b.reshape(-1)
    t0 = time.perf_counter()
    key_a, key_b = image_key(x_a), image_key(x_b)
    seed = pair_seed(config.seed, key_a, key_b)
    if torch.equal(x_a, x_b):
        return _zero_geodesic(denoiser, t_min, anchor, alpha, x_a, chunk_points, amp_dtype, seed, length_points,
                              length_divergence)
    flipped = key_a > key_b
    pair = _Pair(x_b, x_a, seed) if flipped else _Pair(x_a, x_b, seed)
    (result,) = _solve_pairs(denoiser, [pair], anchor, alpha, config, chunk_points, amp_dtype, callback, warm_start)
    return _finish(denoiser, t_min, anchor, pair, result, flipped, config, length_points, length_divergence,
                   length_probes, chunk_points, amp_dtype, straight_line_energy, time.perf_counter() - t0)


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
    length_points: int = DEFAULT_LENGTH_POINTS,
    length_divergence: str = "auto",
    length_probes: int = DEFAULT_LENGTH_PROBES,
    warm_start: float | None = DEFAULT_WARM_START,
) -> float:
    """Diffusion Edit Distance between two images (Eq. 17); see :func:`image_geodesic`."""
    return image_geodesic(denoiser, image_a, image_b, t_min=t_min, config=config, chunk_points=chunk_points,
                          amp_dtype=amp_dtype, check_range=check_range, length_points=length_points,
                          length_divergence=length_divergence, length_probes=length_probes,
                          warm_start=warm_start, straight_line_energy=False).distance


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
    the ``matrix`` preset; ``docs/diffed.md``). Identical images get distance 0 without
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
            todo.append((i, j, _Pair(flat[first], flat[second], pair_seed(config.seed, keys[i], keys[j])), flipped))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="distance matrix", unit="pair")
    t0 = time.perf_counter()
    try:
        for start in range(0, len(todo), batch_pairs):
            batch = todo[start:start + batch_pairs]
            t_batch = time.perf_counter()
            results = _solve_pairs(denoiser, [p for _, _, p, _ in batch], anchor, alpha, config, chunk_points,
                                   amp_dtype, None, warm_start)
            geos = [_finish(denoiser, t_min, anchor, p, r, flipped, config, length_points, length_divergence,
                            length_probes, chunk_points, amp_dtype, False, 0.0)
                    for (_, _, p, flipped), r in zip(batch, results)]
            seconds = (time.perf_counter() - t_batch) / len(batch)
            for (i, j, _, _), geo in zip(batch, geos):
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
             "length_method": _length_method(length_divergence, flat.shape[1])}
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
