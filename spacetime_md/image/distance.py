"""Diffusion Edit Distance (Eq. 17) and spacetime geodesics between two images.

Both images are anchored at the small noise level ``t_min`` (EDM sigma in model units,
``log_snr = -2 log t_min``) as VP points ``alpha * x``, exactly as
:func:`spacetime_md.core.diffusion_edit_distance` does; the distance is the length of the
spacetime geodesic between them.

A distance, by construction (issue 25):

- symmetric: every unordered pair is solved once, in a canonical order (the SHA-256 of the
  image values, :func:`~spacetime_md.image.image_key`), with Hutchinson probes seeded from the
  canonical pair (:func:`~spacetime_md.image.pair_seed`); the curve is flipped back to the
  caller's order, so ``d(a, b)`` and ``d(b, a)`` are bitwise equal; ``d(a, a) = 0`` exactly
  (no solve);
- the reported length is re-evaluated on the solved curve, independently of the optimiser's
  probes (:mod:`~spacetime_md.image.length`): with the exact divergence for
  ``D <= EXACT_LENGTH_MAX_DIM`` (no estimator noise), or with held-out Hutchinson draws and
  their standard error;
- the solver is :func:`spacetime_md.core.optimize_geodesics`, the same code path as
  :func:`~spacetime_md.image.distance_matrix`, from a warm-start curve that already dips into
  the noise (:func:`warm_start_curve`).

Without ``chunk_points`` the geodesic is solved by the core's batched solver; with it, pair by
pair by :func:`spacetime_md.image.energy.optimize_geodesic_chunked`, whose peak memory is
bounded by the chunk.

Images here are tensors in the denoiser's data space (model units), shape ``event_shape``.
Shapes: K pairs, T curve points, F strip frames, D = prod(event_shape).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from spacetime_md.core import (
    GeodesicConfig,
    GeodesicResult,
    SpacetimePoint,
    SplineCurve,
    alpha_sigma,
    optimize_geodesics,
    straight_line,
)
from spacetime_md.image.canonical import (
    _anchor,
    _check_count,
    _check_denoiser,
    _check_image,
    _Pair,
    image_key,
    pair_seed,
)
from spacetime_md.image.energy import autocast_denoiser, optimize_geodesic_chunked
from spacetime_md.image.length import _exact_terms, _length_method, _summarise, evaluate_curve_length
from spacetime_md.image.presets import (
    DEFAULT_LENGTH_POINTS,
    DEFAULT_LENGTH_PROBES,
    DEFAULT_T_MIN,
    DEFAULT_WARM_START,
    _check_config,
)

__all__ = [
    "warm_start_curve",
    "ImageGeodesic",
    "image_geodesic",
    "image_edit_distance",
]


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
        equally spaced points with ``length_method`` (not the optimiser's probes); a negative
        segment term counts as in the solver's objective (``config.clamp``: 0 for
        ``"segment"``, its magnitude for ``"abs"``).
    distance_se : float
        Standard error of ``distance`` from the divergence estimator (0 for the exact
        divergence). It does not include the optimiser's spread over probe seeds (see
        ``docs/diffed.md``).
    energy : float
        Curve energy (Eq. 14) at the same points and with the same estimator, negative terms
        counted as in ``distance``.
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
        Segments whose (mean) term is negative (a negative posterior variance of the learned
        model); they add 0 to ``distance`` and ``energy``, or their magnitude when the solver
        counted them so (``config.clamp="abs"``).
    segment_terms : Tensor or None, shape=(length_points - 1,)
        The unclamped exact segment terms of the final length, float64, ``image_a`` first
        (``None`` for the Hutchinson length or identical images).
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
    segment_terms: Tensor | None = None

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


def _length_clamp(result: GeodesicResult | None) -> str:
    """How the reported length counts negative segment terms: as the solver's objective did
    (``|t|`` for ``clamp="abs"``, else 0; no solve, e.g. identical images: 0)."""
    return "abs" if result is not None and result.config.clamp == "abs" else "segment"


@dataclass(frozen=True)
class _LengthSettings:
    """How :func:`_finish` re-evaluates the solved curves' lengths."""

    points: int
    divergence: str
    probes: int
    chunk_points: int | None
    chunk_size: int | None
    amp_dtype: torch.dtype | None

    def common(self, seed: int) -> dict[str, Any]:
        return dict(divergence=self.divergence, n_probes=self.probes, seed=seed, chunk_points=self.chunk_points,
                    chunk_size=self.chunk_size, amp_dtype=self.amp_dtype)


def _finish(denoiser, t_min: float, anchor: float, pairs: list[_Pair], results: list[GeodesicResult],
            flips: list[bool], settings: _LengthSettings, straight_line_energy: bool, wall_time: float,
            end_mu: tuple[Tensor, Tensor] | None = None) -> list[ImageGeodesic]:
    """Lengths of solved canonical pairs, re-evaluated without the optimiser's probes, in the callers' order.

    With the exact divergence (and no mixed precision) the curves of all pairs go through one
    batched evaluation; ``end_mu`` (``(K, 2, D)``, ``(K, 2)``) supplies the endpoints' cached
    expectation parameters.
    """
    with torch.no_grad():
        curves = [r.curve.evaluate(settings.points) for r in results]
    method = _length_method(settings.divergence, curves[0][1].shape[1])
    if method == "exact" and settings.amp_dtype is None:
        terms = _exact_terms(denoiser, torch.stack([c[0] for c in curves]), torch.stack([c[1] for c in curves]),
                             end_mu, **({"chunk_rows": settings.chunk_size} if settings.chunk_size else {}))
        lengths = [(*_summarise(terms[k:k + 1], _length_clamp(r)), method, terms[k])
                   for k, r in enumerate(results)]
    else:
        lengths = [(*evaluate_curve_length(denoiser, ls, xs, clamp=_length_clamp(r), **settings.common(p.seed + 1)),
                    None) for (ls, xs), p, r in zip(curves, pairs, results)]
    out = []
    for (log_snr, x), (length, se, energy, n_neg, method, seg_terms), pair, result, flipped in zip(
            curves, lengths, pairs, results, flips):
        if not math.isfinite(length):
            raise FloatingPointError(f"diffusion edit distance is not finite ({length})")
        line_energy = math.nan
        if straight_line_energy:
            line_l, line_x = straight_line(SpacetimePoint(anchor, result.curve.start[1:]),
                                           SpacetimePoint(anchor, result.curve.end[1:]), settings.points)
            line_energy = evaluate_curve_length(denoiser, line_l, line_x, clamp=_length_clamp(result),
                                                **settings.common(pair.seed + 1))[2]
        if flipped:
            log_snr, x = log_snr.flip(0), x.flip(0)
            seg_terms = None if seg_terms is None else seg_terms.flip(0)
        out.append(ImageGeodesic(denoiser, float(t_min), anchor, length, energy, line_energy, log_snr.detach(),
                                 x.detach(), result, wall_time, settings.chunk_points, settings.amp_dtype,
                                 distance_se=se, reversed=flipped, length_method=method,
                                 length_points=settings.points, n_negative_segments=n_neg, seed=pair.seed,
                                 segment_terms=seg_terms))
    return out


def _zero_geodesic(denoiser, t_min, anchor, alpha, image, chunk_points, amp_dtype, seed, length_points,
                   length_divergence):
    log_snr = torch.full((2,), anchor, dtype=image.dtype, device=image.device)
    x = (alpha * image).expand(2, -1).clone()
    return ImageGeodesic(denoiser, float(t_min), anchor, 0.0, 0.0, 0.0, log_snr, x, None, 0.0, chunk_points,
                         amp_dtype, length_method=_length_method(length_divergence, image.shape[0]),
                         length_points=length_points, seed=seed)


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
    results = _solve_pairs(denoiser, [pair], anchor, alpha, config, chunk_points, amp_dtype, callback, warm_start)
    settings = _LengthSettings(length_points, length_divergence, length_probes, chunk_points, config.chunk_size,
                               amp_dtype)
    (geo,) = _finish(denoiser, t_min, anchor, [pair], results, [flipped], settings, straight_line_energy,
                     time.perf_counter() - t0)
    return geo


def image_edit_distance(denoiser, image_a: Tensor, image_b: Tensor, **options: Any) -> float:
    """Diffusion Edit Distance between two images (Eq. 17): :func:`image_geodesic`'s ``distance``.

    ``options`` are :func:`image_geodesic`'s keyword arguments (``t_min``, ``config``,
    ``chunk_points``, ``amp_dtype``, ``check_range``, ``length_points``, ``length_divergence``,
    ``length_probes``, ``warm_start``); the straight segment's energy is not computed.
    """
    for name in ("callback", "straight_line_energy"):
        if name in options:
            raise TypeError(f"image_edit_distance: unexpected keyword argument {name!r} (use image_geodesic)")
    return image_geodesic(denoiser, image_a, image_b, straight_line_energy=False, **options).distance
