"""Memory-bounded curve energy for large ``D``, and a geodesic solver that uses it.

:func:`spacetime_md.core.curve_energy` evaluates the denoiser on all ``T`` curve points (times
the probes) in one graph, so peak memory grows with ``T * P * D`` times the network's
activations. :func:`chunked_curve_energy` evaluates the curve in chunks of ``chunk_points``
points. The segment term ``<eta_{n+1} - eta_n, mu_{n+1} - mu_n>`` (Eq. 14) couples neighbours,
so consecutive chunks overlap by one point (its expectation parameters are computed twice,
with the same probes). Within a chunk the energy is differentiated at once (forward, Hutchinson
VJP with ``create_graph``, backward) and the gradient w.r.t. the chunk's points is accumulated;
the graph is then freed. The result is a scalar tensor whose backward pass hands back the
accumulated gradient (a custom ``autograd.Function``), so it plugs into any optimiser. Peak
memory is that of one chunk; the cost is one extra point per chunk.

:func:`optimize_geodesic_chunked` is the coarse-to-fine L-BFGS/Adam loop of
:func:`spacetime_md.core.optimize_geodesic` (same :class:`~spacetime_md.core.GeodesicConfig`,
:class:`~spacetime_md.core.SplineCurve` and :class:`~spacetime_md.core.GeodesicResult`) built on
the chunked energy. It supports no constraints (the image experiments need none).

Optional mixed precision: ``amp_dtype`` (e.g. ``torch.bfloat16`` or ``torch.float16`` on CUDA)
runs the denoiser under ``torch.autocast``; the geometry (eta, inner products) stays in the
curve's dtype.

Shapes: T curve points, D data dimension, P probes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import torch
from torch import Tensor

from spacetime_md.core import (
    GeodesicConfig,
    GeodesicResult,
    SpacetimePoint,
    SplineCurve,
    expectation_params,
    natural_params,
    rademacher_probes,
    segment_terms,
)
from spacetime_md.core._validation import check_same_dtype_device, check_tensor
from spacetime_md.core.denoisers import CountingDenoiser, Denoiser
from spacetime_md.core.geometry import clamp_terms
from spacetime_md.errors import NonFiniteError

__all__ = [
    "chunked_curve_energy",
    "chunked_segment_terms",
    "length_from_terms",
    "autocast_denoiser",
    "optimize_geodesic_chunked",
]

logger = logging.getLogger(__name__)


def autocast_denoiser(denoiser: Denoiser, amp_dtype: torch.dtype | None) -> Denoiser:
    """Run ``denoiser`` under ``torch.autocast(device, amp_dtype)``; outputs in the input dtype.

    ``amp_dtype=None`` returns ``denoiser`` unchanged.
    """
    if amp_dtype is None:
        return denoiser
    if amp_dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"amp_dtype: expected torch.float16, torch.bfloat16 or None, got {amp_dtype}")

    def wrapped(x: Tensor, log_snr: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, dtype=amp_dtype):
            out = denoiser(x, log_snr)
        return out.to(x.dtype)

    return wrapped


def _chunk_ranges(n_points: int, chunk_points: int) -> list[tuple[int, int]]:
    """Inclusive point ranges ``[a, b]`` covering all segments; neighbours share one point."""
    ranges, a = [], 0
    while a < n_points - 1:
        b = min(a + chunk_points - 1, n_points - 1)
        ranges.append((a, b))
        a = b
    return ranges


def _check_chunk_points(chunk_points: int) -> int:
    if isinstance(chunk_points, bool) or not isinstance(chunk_points, int) or chunk_points < 2:
        raise ValueError(f"chunk_points: expected an integer >= 2, got {chunk_points!r}")
    return chunk_points


def _check_curve(log_snr: object, x: object) -> tuple[Tensor, Tensor]:
    dims: dict[str, int] = {}
    x = check_tensor("x", x, ("T", None), dims=dims)
    log_snr = check_tensor("log_snr", log_snr, ("T",), dims=dims)
    check_same_dtype_device(x=x, log_snr=log_snr)
    if x.shape[0] < 2:
        raise ValueError(f"log_snr: expected at least 2 curve points, got {x.shape[0]}")
    return log_snr, x


def _resolve_probes(divergence, n_probes, probes, generator, log_snr, x):
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence: expected 'exact' or 'hutchinson', got {divergence!r}")
    if divergence == "exact":
        return None
    if probes is None:
        probes = rademacher_probes(n_probes, tuple(x.shape), dtype=x.dtype, device=x.device, generator=generator)
    return check_tensor("probes", probes, (None, x.shape[0], x.shape[1]))


def _prepare(denoiser, log_snr, x, chunk_points, divergence, n_probes, probes, generator, amp_dtype):
    """Checked curve, probes and (autocast) denoiser of the chunked energy and segment terms."""
    log_snr, x = _check_curve(log_snr, x)
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable, got {type(denoiser).__name__}")
    _check_chunk_points(chunk_points)
    probes = _resolve_probes(divergence, n_probes, probes, generator, log_snr, x)
    return autocast_denoiser(denoiser, amp_dtype), log_snr, x, probes


def _chunk_terms(denoiser, ls_c, x_c, probes_c, divergence, chunk_size, create_graph):
    """Segment terms of one chunk of points ``(log_snr (n,), x (n, D))``, shape ``(n - 1,)``."""
    eta = natural_params(ls_c, x_c)
    mu = expectation_params(
        denoiser, ls_c, x_c, divergence=divergence, probes=probes_c,
        chunk_size=chunk_size, create_graph=create_graph,
    )
    return segment_terms(eta, mu)


def _slice(probes: Tensor | None, a: int, b: int) -> Tensor | None:
    return None if probes is None else probes[:, a : b + 1]


class _ChunkedEnergy(torch.autograd.Function):
    """Energy value in forward; the gradient, accumulated chunk by chunk, is saved for backward."""

    @staticmethod
    def forward(ctx, log_snr, x, denoiser, probes, chunk_points, divergence, chunk_size, clamp, need_grad):
        n_points = x.shape[0]
        scale = 0.5 * (n_points - 1)
        energy = x.new_zeros(())
        grad_ls = torch.zeros_like(log_snr) if need_grad else None
        grad_x = torch.zeros_like(x) if need_grad else None
        for a, b in _chunk_ranges(n_points, chunk_points):
            if need_grad:
                with torch.enable_grad():
                    ls_c = log_snr[a : b + 1].detach().requires_grad_(True)
                    x_c = x[a : b + 1].detach().requires_grad_(True)
                    terms = _chunk_terms(denoiser, ls_c, x_c, _slice(probes, a, b), divergence, chunk_size, True)
                    part = scale * clamp_terms(terms, clamp).sum()
                    g_ls, g_x = torch.autograd.grad(part, (ls_c, x_c))
                grad_ls[a : b + 1] += g_ls
                grad_x[a : b + 1] += g_x
                energy = energy + part.detach()
            else:
                terms = _chunk_terms(denoiser, log_snr[a : b + 1], x[a : b + 1], _slice(probes, a, b),
                                     divergence, chunk_size, False)
                energy = energy + scale * clamp_terms(terms.detach(), clamp).sum()
        if need_grad:
            ctx.save_for_backward(grad_ls, grad_x)
        return energy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grad_ls, grad_x = ctx.saved_tensors
        return grad_out * grad_ls, grad_out * grad_x, None, None, None, None, None, None, None


def chunked_curve_energy(
    denoiser: Denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    chunk_points: int = 16,
    divergence: str = "hutchinson",
    n_probes: int = 1,
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    clamp: str = "segment",
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Discrete curve energy (Eq. 14) evaluated in chunks of curve points, bounded memory.

    Equal to :func:`spacetime_md.core.curve_energy` with the same probes (up to rounding);
    differentiable once w.r.t. ``log_snr`` and ``x`` (the gradient is computed chunk by chunk
    during the forward call whenever grad mode is on and an input requires grad).

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
    chunk_points : int
        Curve points per chunk (>= 2); neighbouring chunks share one point.
    divergence : {"hutchinson", "exact"}
    n_probes : int
        Rademacher probes per point when ``probes`` is not given.
    probes : Tensor, shape=(P, T, D), optional
        Fixed probes (the same ones :func:`spacetime_md.core.curve_energy` would get).
    generator : torch.Generator, optional
    chunk_size : int, optional
        Row limit per denoiser call of the exact divergence.
    clamp : {"segment", "abs", "none"}
        As in :func:`spacetime_md.core.curve_energy`.
    amp_dtype : torch.dtype, optional
        Mixed precision for the denoiser (see :func:`autocast_denoiser`).

    Returns
    -------
    energy : Tensor, shape=()
    """
    if clamp not in ("segment", "abs", "none"):
        raise ValueError(f"clamp: expected 'segment', 'abs' or 'none', got {clamp!r}")
    den, log_snr, x, probes = _prepare(denoiser, log_snr, x, chunk_points, divergence, n_probes, probes, generator,
                                       amp_dtype)
    need_grad = torch.is_grad_enabled() and (log_snr.requires_grad or x.requires_grad)
    return _ChunkedEnergy.apply(log_snr, x, den, probes, chunk_points, divergence, chunk_size, clamp, need_grad)


def chunked_segment_terms(
    denoiser: Denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    chunk_points: int = 16,
    divergence: str = "hutchinson",
    n_probes: int = 1,
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Unclamped segment terms ``(T-1,)`` computed chunk by chunk (no gradient)."""
    den, log_snr, x, probes = _prepare(denoiser, log_snr, x, chunk_points, divergence, n_probes, probes, generator,
                                       amp_dtype)
    parts = []
    with torch.no_grad():
        for a, b in _chunk_ranges(x.shape[0], chunk_points):
            terms = _chunk_terms(den, log_snr[a : b + 1], x[a : b + 1], _slice(probes, a, b), divergence,
                                 chunk_size, False)
            parts.append(terms.detach())
    return torch.cat(parts)


def length_from_terms(terms: Tensor) -> float:
    """Curve length ``sum_n sqrt(max(term_n, 0))``."""
    return float(terms.clamp_min(0.0).sqrt().sum())


def optimize_geodesic_chunked(
    denoiser: Denoiser,
    start: SpacetimePoint,
    end: SpacetimePoint,
    config: GeodesicConfig | None = None,
    *,
    chunk_points: int = 16,
    amp_dtype: torch.dtype | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> GeodesicResult:
    """Spacetime geodesic with the memory-bounded energy (no constraints).

    Same algorithm and settings as :func:`spacetime_md.core.optimize_geodesic`: a natural
    cubic spline with ``config.n_nodes`` free knots starting on the straight line, one stage per
    entry of ``config.n_points`` with Hutchinson probes fixed per stage, L-BFGS (strong Wolfe)
    or Adam, stopping when the best energy improves by less than ``rtol`` (``10 rtol`` on
    coarse stages) over ``patience`` steps. Peak memory is bounded by ``chunk_points``.

    Returns
    -------
    GeodesicResult
        ``length`` and ``energy`` are evaluated on the finest discretisation with fresh probes.
    """
    config = GeodesicConfig() if config is None else config
    if not isinstance(config, GeodesicConfig):
        raise TypeError(f"config: expected a GeodesicConfig, got {type(config).__name__}")
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable, got {type(denoiser).__name__}")
    _check_chunk_points(chunk_points)
    curve = SplineCurve(start, end, config.n_nodes)
    z0, z1 = curve.start, curve.end
    if torch.equal(z0, z1):
        raise ValueError("start and end: expected two different spacetime points, got equal ones")
    dim = z0.shape[0] - 1
    method = config.divergence_for(dim)
    counting = CountingDenoiser(denoiser)
    generator = torch.Generator(device=z0.device).manual_seed(config.seed)
    lr, patience = config.resolved_lr, config.resolved_patience
    history: list[dict[str, Any]] = []
    step, converged, initial_energy = 0, False, math.nan
    t_start = time.perf_counter()

    def energy_at(s: Tensor, probes: Tensor | None) -> Tensor:
        log_snr, x = curve.evaluate(s)
        return chunked_curve_energy(
            counting, log_snr, x, chunk_points=chunk_points, divergence=method, probes=probes,
            chunk_size=config.chunk_size, clamp=config.clamp, amp_dtype=amp_dtype,
        )

    opt = None
    for stage, n_points in enumerate(config.n_points):
        s = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)
        probes = None
        if method == "hutchinson":
            probes = rademacher_probes(config.n_probes, (n_points, dim), dtype=z0.dtype, device=z0.device,
                                       generator=generator)
        if opt is None:
            if config.optimizer == "lbfgs":
                opt = torch.optim.LBFGS([curve.interior], lr=lr, max_iter=1, max_eval=25, history_size=20,
                                        tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
            else:
                opt = torch.optim.Adam([curve.interior], lr=lr)
            with torch.no_grad():
                initial_energy = float(energy_at(s, probes))
        min_steps = config.min_steps if stage == 0 else 1
        rtol = config.rtol if stage == len(config.n_points) - 1 else 10 * config.rtol
        best: list[float] = []
        stage_converged = False
        cache: dict[str, Any] = {}
        for _ in range(config.max_steps):
            last: dict[str, float] = {}

            def closure():
                # torch's L-BFGS re-evaluates, at the start of every step, the point its
                # previous line search ended on; answer that from the cache.
                if cache and torch.equal(cache["params"], curve.interior.detach()):
                    curve.interior.grad = cache["grad"].clone()
                    last["energy"] = cache["energy"]
                    return cache["value"]
                opt.zero_grad()
                energy = energy_at(s, probes)
                if not bool(torch.isfinite(energy.detach())):
                    raise NonFiniteError(
                        f"geodesic energy became non-finite at stage {stage} (n_points={n_points}), "
                        f"step {step}; check the denoiser or lower the learning rate"
                    )
                energy.backward()
                last["energy"] = float(energy.detach())
                cache.update(params=curve.interior.detach().clone(), grad=curve.interior.grad.detach().clone(),
                             energy=last["energy"], value=energy.detach())
                return energy

            opt.step(closure)
            if not bool(torch.isfinite(curve.interior).all()):
                raise NonFiniteError(f"geodesic curve parameters became non-finite at stage {stage}, step {step}")
            info = {"step": step, "stage": stage, "n_points": n_points, "energy": last["energy"],
                    "objective": last["energy"], "penalties": {}}
            history.append(info)
            if callback is not None:
                callback(info)
            step += 1
            best.append(min(last["energy"], best[-1]) if best else last["energy"])
            if len(best) > max(patience, min_steps):
                old, new = best[-1 - patience], best[-1]
                if old - new <= rtol * max(abs(new), 1e-12):
                    stage_converged = True
                    break
        logger.info("chunked stage %d (T=%d): %s after %d steps, energy %.6g", stage, n_points,
                    "converged" if stage_converged else "not converged", len(best), best[-1])
        converged = stage_converged

    s = torch.linspace(0, 1, config.n_points[-1], dtype=z0.dtype, device=z0.device)
    probes = None
    if method == "hutchinson":
        probes = rademacher_probes(config.n_probes, (s.shape[0], dim), dtype=z0.dtype, device=z0.device,
                                   generator=generator)
    with torch.no_grad():
        log_snr, x = curve.evaluate(s)
        terms = chunked_segment_terms(counting, log_snr, x, chunk_points=chunk_points, divergence=method,
                                      probes=probes, chunk_size=config.chunk_size, amp_dtype=amp_dtype)
    energy = 0.5 * (s.shape[0] - 1) * float(clamp_terms(terms, config.clamp).sum())
    return GeodesicResult(
        curve=curve, log_snr=log_snr.detach(), x=x.detach(), energy=energy, length=length_from_terms(terms),
        objective=energy, initial_energy=initial_energy, n_steps=step, n_denoiser_evals=counting.n_evals,
        converged=converged, history=history, wall_time=time.perf_counter() - t_start, config=config,
    )
