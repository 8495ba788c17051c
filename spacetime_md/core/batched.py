"""Several spacetime geodesics solved together, with batched denoiser calls.

:func:`optimize_geodesics` solves ``K`` independent geodesic problems - ``K`` endpoint pairs
with the same denoiser and :class:`~spacetime_md.core.GeodesicConfig` - together. Every
evaluation of the objective makes one denoiser call (exact divergence: one call on the
``D``-fold replicated batch; Hutchinson: one call on the ``P``-fold replicated batch) on the
curve points of all pairs being evaluated, up to ``K * T`` points instead of ``K`` calls on
``T`` points each. On a GPU that fills the device; on a CPU, where the cost grows with the
rows, it saves the per-call overhead only.

The pairs are independent: the result for pair ``k`` does not depend on which other pairs
are in the batch, up to the floating-point rounding of a larger denoiser batch (float64
toy problems: equal to 1e-8; a float32 model on the non-smooth one-probe Hutchinson energy
can let rounding differences grow along the optimisation - alanine dipeptide, shipped model:
most pairs within 1e-5, one pair in four of ``bench_geodesic_batch.py --quick`` 7 % apart).

- Each pair has its own optimiser state. L-BFGS: per-pair curvature history (the two-loop
  recursion runs batched over the pairs starting a step together) and a per-pair
  strong-Wolfe line search. Within a stage the pairs run asynchronously: each round makes
  one batched evaluation of the point every running pair needs next (a line-search trial,
  or its current point after the objective changed), so a pair whose line search takes
  many trials does not hold the others back. Adam: elementwise, per-pair step counts (the
  same update as ``torch.optim.Adam``), one round per step.
- Honest mode (``config.resample_every > 0`` with Hutchinson probes) solves the pairs one
  after the other with :func:`~spacetime_md.core.optimize_geodesic` (same results as solving
  each alone; no batched calls).
- Each pair has its own convergence test (``rtol`` / ``patience`` / ``min_steps`` as in
  :func:`~spacetime_md.core.optimize_geodesic`). The coarse-to-fine stages advance
  together: a pair that has converged in a stage is frozen - not evaluated, so it costs
  nothing - until the last pair has finished that stage.
- Hutchinson probes of pair ``k`` come from a generator seeded with ``seeds[k]`` (default
  ``config.seed``) and are drawn in the same order as by ``optimize_geodesic``, so pair
  ``k`` solves exactly the problem ``optimize_geodesic`` would.
- Constraint ``setup`` runs per pair on a forked global RNG (the AvoidRegion anchor draws
  its probes from it), so every pair's setup sees the RNG state at entry (or, with
  ``setup_seeds``, the global RNG seeded with its own seed).

With Adam, pair ``k``'s result equals ``optimize_geodesic``'s (same updates in the same
order). With L-BFGS the optimiser is this module's own (torch's ``LBFGS`` holds one history
for all its parameters, which would couple the pairs): its path differs from
``optimize_geodesic``'s in details of the line search. With a smooth objective both reach
the same optimum (exact divergence, toy mixtures: energies within 1e-3); with the noisy
one-probe Hutchinson energy they stop at different points within the tolerance.

Constraint penalties are evaluated pair by pair (a Python loop over the pairs that have
constraints; each penalty sees its pair's :class:`~spacetime_md.core.CurveState`); the
denoiser call stays batched.

Shapes: K pairs, T curve points, D data dimension, C = D + 1, P probes, N = n_nodes * C.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from spacetime_md.core.curves import SpacetimePoint, SplineCurve, _as_vector, spline_basis
from spacetime_md.core.denoisers import CountingDenoiser, Denoiser
from spacetime_md.core.geodesic import Constraint, CurveState, GeodesicConfig, GeodesicResult, _ramp
from spacetime_md.core.batched_optim import _Adam, _LBFGS
from spacetime_md.core.estimates import draw_probes as _draw_probes
from spacetime_md.core.geometry import clamp_terms, expectation_params, natural_params

__all__ = ["optimize_geodesics"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- input checks


def _is_constraint(c: object) -> bool:
    return hasattr(c, "penalty") and hasattr(c, "weight")


def _check_pairs(starts: Any, ends: Any) -> tuple[Tensor, Tensor]:
    """Stacked endpoint vectors ``(K, C)``; errors name the pair index."""
    for name, value in (("starts", starts), ("ends", ends)):
        if isinstance(value, SpacetimePoint) or isinstance(value, Tensor) or not isinstance(value, Sequence):
            raise TypeError(
                f"{name}: expected a sequence of SpacetimePoint (one per pair), got {type(value).__name__}"
                + ("; use optimize_geodesic for one pair" if isinstance(value, SpacetimePoint) else "")
            )
    if len(starts) == 0:
        raise ValueError("starts: expected at least one pair, got none")
    if len(ends) != len(starts):
        raise ValueError(f"ends: expected {len(starts)} points (one per start), got {len(ends)}")
    z0s, z1s = [], []
    ref = None
    for k, (a, b) in enumerate(zip(starts, ends)):
        z0, z1 = _as_vector(f"starts[{k}]", a), _as_vector(f"ends[{k}]", b)
        if ref is None:
            ref = z0
        for name, z in ((f"starts[{k}]", z0), (f"ends[{k}]", z1)):
            if z.shape != ref.shape:
                raise ValueError(
                    f"{name}.x: expected shape ({ref.shape[0] - 1},) like starts[0].x, got ({z.shape[0] - 1},)"
                )
            if z.dtype != ref.dtype:
                raise ValueError(f"{name}.x: expected dtype {ref.dtype} like starts[0].x, got {z.dtype}")
            if z.device != ref.device:
                raise ValueError(f"{name}.x: expected device {ref.device} like starts[0].x, got {z.device}")
        if torch.equal(z0, z1):
            raise ValueError(f"pair {k}: start and end: expected two different spacetime points, got equal ones")
        z0s.append(z0)
        z1s.append(z1)
    return torch.stack(z0s), torch.stack(z1s)


def _check_seeds(seeds: Sequence[int] | None, n_pairs: int, default: int, name: str = "seeds") -> list[int]:
    if seeds is None:
        return [default] * n_pairs
    if isinstance(seeds, (int, str)) or not isinstance(seeds, Sequence):
        raise TypeError(f"{name}: expected a sequence of {n_pairs} integers (one per pair), got {type(seeds).__name__}")
    if len(seeds) != n_pairs:
        raise ValueError(f"{name}: expected {n_pairs} integers (one per pair), got {len(seeds)}")
    for k, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{name}[{k}]: expected an integer >= 0, got {seed!r}")
    return list(seeds)


def _per_pair_constraints(constraints: Any, n_pairs: int) -> list[list[Constraint]]:
    """One list of constraints per pair, each constraint object used by one pair only.

    ``constraints`` is a flat sequence of constraints shared by every pair, or one sequence
    per pair. Constraints keep per-pair state from ``setup`` (AvoidRegion's anchor), so an
    object used by several pairs is deep-copied for every pair after the first that uses it.
    """
    if constraints is None:
        return [[] for _ in range(n_pairs)]
    if isinstance(constraints, (str, Tensor)) or not isinstance(constraints, Sequence):
        raise TypeError(
            f"constraints: expected a sequence of constraints, or one sequence of constraints per pair, "
            f"got {type(constraints).__name__}"
        )
    items = list(constraints)
    if all(_is_constraint(c) for c in items):
        per_pair = [list(items) for _ in range(n_pairs)]
    else:
        if len(items) != n_pairs:
            raise ValueError(
                f"constraints: expected a sequence of constraints shared by all pairs, or {n_pairs} sequences "
                f"(one per pair), got {len(items)} entries"
            )
        per_pair = []
        for k, entry in enumerate(items):
            if _is_constraint(entry) or isinstance(entry, (str, Tensor)) or not isinstance(entry, Sequence):
                raise TypeError(
                    f"constraints[{k}]: expected a sequence of constraints for pair {k}, got {type(entry).__name__}"
                )
            for j, c in enumerate(entry):
                if not _is_constraint(c):
                    raise TypeError(
                        f"constraints[{k}][{j}]: expected an object with penalty() and weight, got {type(c).__name__}"
                    )
            per_pair.append(list(entry))
    seen: set[int] = set()
    for k, entry in enumerate(per_pair):
        for j, c in enumerate(entry):
            if id(c) in seen:
                entry[j] = copy.deepcopy(c)
            else:
                seen.add(id(c))
    return per_pair


# --------------------------------------------------------------------------- objective


class _Evaluation:
    """Objective of some pairs at one discretisation (rows follow ``pairs``)."""

    __slots__ = ("pairs", "total", "energy", "terms", "penalties", "grad", "log_snr", "x")

    def __init__(self, pairs, total, energy, terms, penalties, grad, log_snr, x):
        self.pairs = pairs
        self.total = total  # (k,)
        self.energy = energy  # (k,)
        self.terms = terms  # (k, T - 1)
        self.penalties = penalties  # list of dicts
        self.grad = grad  # (k, n_nodes, C) or None
        self.log_snr = log_snr  # (k, T)
        self.x = x  # (k, T, D)


class _Problem:
    """The K objectives; one batched denoiser call per evaluation."""

    def __init__(self, denoiser, z0: Tensor, z1: Tensor, config: GeodesicConfig, constraints, pair_denoisers):
        self.counting = CountingDenoiser(denoiser)
        self.z0, self.z1 = z0, z1
        self.config = config
        self.dim = z0.shape[1] - 1
        self.method = config.divergence_for(self.dim)
        self.constraints = constraints
        self.pair_denoisers = pair_denoisers
        self.n_evals = [0] * z0.shape[0]  # denoiser rows of the batched calls, per pair
        self.s: Tensor | None = None
        self.basis: Tensor | None = None
        self.probes: Tensor | None = None

    def set_stage(self, n_points: int, n_knots: int, probes: Tensor | None) -> None:
        z0 = self.z0
        self.s = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)
        self.basis = spline_basis(self.s, n_knots)  # (T, n_knots)
        self.probes = probes  # (K, P, T, D) or None

    def evaluate(self, pairs: list[int], interior: Tensor, ramps: list[float], steps: list[int],
                 grad: bool) -> _Evaluation:
        """Objective of ``pairs`` at knots ``interior (k, n_nodes, C)``; gradient if ``grad``."""
        n_pairs = len(pairs)
        index = torch.tensor(pairs, device=self.z0.device)
        leaf = interior.detach().requires_grad_(grad)
        n_points, dim = self.s.shape[0], self.dim
        with torch.set_grad_enabled(grad):
            knots = torch.cat([self.z0[index].unsqueeze(1), leaf, self.z1[index].unsqueeze(1)], dim=1)
            z = torch.matmul(self.basis, knots)  # (k, T, C)
            log_snr, x = z[..., 0], z[..., 1:]
            flat_l, flat_x = log_snr.reshape(-1), x.reshape(-1, dim)
            eta = natural_params(flat_l, flat_x)
            probes = None
            if self.probes is not None:
                # (k, P, T, D) -> (P, k * T, D): probe p of pair k's point t at row k * T + t.
                probes = self.probes[index].transpose(0, 1).reshape(-1, n_pairs * n_points, dim)
            before = self.counting.n_evals
            mu = expectation_params(
                self.counting, flat_l, flat_x, divergence=self.method, probes=probes,
                chunk_size=self.config.chunk_size, create_graph=grad,
            )
            share = (self.counting.n_evals - before) // n_pairs
            eta_x, eta_s = eta[0].reshape(n_pairs, n_points, dim), eta[1].reshape(n_pairs, n_points)
            mu_x, mu_s = mu[0].reshape(n_pairs, n_points, dim), mu[1].reshape(n_pairs, n_points)
            terms = (eta_x.diff(dim=1) * mu_x.diff(dim=1)).sum(-1) + eta_s.diff(dim=1) * mu_s.diff(dim=1)
            energy = 0.5 * (n_points - 1) * clamp_terms(terms, self.config.clamp).sum(-1)
            penalties: list[dict[str, float]] = [{} for _ in pairs]
            total = energy
            if any(self.constraints[k] for k in pairs):
                totals = []
                for i, k in enumerate(pairs):
                    total_k = energy[i]
                    if self.constraints[k]:
                        state = CurveState(self.s, log_snr[i], x[i], (eta_x[i], eta_s[i]), (mu_x[i], mu_s[i]),
                                           self.pair_denoisers[k], steps[i])
                        for j, c in enumerate(self.constraints[k]):
                            p = c.penalty(state)
                            penalties[i][f"{type(c).__name__}_{j}"] = float(p.detach())
                            if c.weight and ramps[i]:
                                total_k = total_k + ramps[i] * c.weight * p
                    totals.append(total_k)
                total = torch.stack(totals)
            g = torch.autograd.grad(total.sum(), leaf)[0] if grad else None
        for k in pairs:
            self.n_evals[k] += share
        return _Evaluation(pairs, total.detach(), energy.detach(), terms.detach(), penalties, g,
                           log_snr.detach(), x.detach())


# --------------------------------------------------------------------------- driver


def optimize_geodesics(
    denoiser: Denoiser,
    starts: Sequence[SpacetimePoint],
    ends: Sequence[SpacetimePoint],
    config: GeodesicConfig | None = None,
    constraints: Sequence[Constraint] | Sequence[Sequence[Constraint]] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    setup_seeds: Sequence[int] | None = None,
    curves: Sequence[SplineCurve] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> list[GeodesicResult]:
    """Spacetime geodesics of ``K`` endpoint pairs, solved together with batched denoiser calls.

    Each pair's problem is the one :func:`~spacetime_md.core.optimize_geodesic` solves, and
    each pair is optimised independently of the others (see the module docstring); every
    evaluation of the objective makes one denoiser call on the curve points of all pairs
    being evaluated (with ``config.chunk_size``, the exact divergence splits it into chunks).

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
        Must treat batch rows independently (as the exact divergence already requires).
    starts, ends : sequence of SpacetimePoint
        ``K`` pairs ``(log_snr, x (D,))``, all with the same ``D``, dtype and device (those
        of ``starts[0].x``).
    config : GeodesicConfig, optional
        Shared by all pairs.
    constraints : sequence, optional
        Either constraints applied to every pair (``[LowVariance(2.0)]``) or one sequence of
        constraints per pair (``[[LowVariance(2.0)], [], [avoid]]``). An object used by
        several pairs is deep-copied per pair (``setup`` stores per-pair state). Penalties
        are evaluated pair by pair.
    seeds : sequence of int, optional
        Seed of each pair's Hutchinson probes; default ``config.seed`` for every pair (what
        ``optimize_geodesic`` uses).
    setup_seeds : sequence of int, optional
        Seed the global torch RNG with ``setup_seeds[k]`` before pair ``k``'s constraint
        ``setup`` (inside a fork: the caller's RNG state is left as it was). Default: every
        pair's setup sees the RNG state at entry. Lets a caller that seeds each job (e.g.
        ``spacetime-md batch``) make a pair's result independent of its batch neighbours.
    curves : sequence of SplineCurve, optional
        Warm starts, one per pair, all with the same ``n_nodes``; their endpoints must equal
        the pair's. They are optimised in place and returned as ``result.curve``. Default:
        straight lines with ``config.n_nodes`` knots.
    callback : callable, optional
        Called after every step of every pair with a dict ``pair, step, stage, n_points,
        energy, objective, penalties, ramp``.

    Returns
    -------
    list of GeodesicResult
        One per pair, in order. ``n_denoiser_evals`` counts the denoiser rows spent on that
        pair (its share of the batched calls plus its constraints' own calls); ``wall_time``
        is the time of the whole batch.

    Raises
    ------
    ValueError, TypeError
        Bad input; the message names the pair (``starts[2].x: ...``, ``pair 2: ...``).
    NonFiniteError
        A pair's objective or curve became non-finite (names the pair; the batch stops).
    """
    config = GeodesicConfig() if config is None else config
    if not isinstance(config, GeodesicConfig):
        raise TypeError(f"config: expected a GeodesicConfig, got {type(config).__name__}")
    from spacetime_md.core.threads import resolve_num_threads, torch_threads

    threads = config.num_threads
    if threads == "auto" and callable(denoiser):
        z0, z1 = _check_pairs(starts, ends)
        threads = resolve_num_threads(threads, denoiser, z0[0], z1[0], config)
    with torch_threads(threads):
        return _optimize_geodesics(denoiser, starts, ends, config, constraints, seeds=seeds,
                                   setup_seeds=setup_seeds, curves=curves, callback=callback)


def _optimize_geodesics(denoiser, starts, ends, config, constraints, *, seeds, setup_seeds, curves,
                        callback) -> list[GeodesicResult]:
    t_start = time.perf_counter()
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable, got {type(denoiser).__name__}")
    z0, z1 = _check_pairs(starts, ends)
    n_pairs, dim = z0.shape[0], z0.shape[1] - 1
    seeds = _check_seeds(seeds, n_pairs, config.seed)
    if setup_seeds is not None:
        setup_seeds = _check_seeds(setup_seeds, n_pairs, config.seed, "setup_seeds")
    per_pair = _per_pair_constraints(constraints, n_pairs)

    if curves is None:
        curves = [SplineCurve(SpacetimePoint(z0[k, 0], z0[k, 1:]), SpacetimePoint(z1[k, 0], z1[k, 1:]), config.n_nodes)
                  for k in range(n_pairs)]
    else:
        if isinstance(curves, SplineCurve) or not isinstance(curves, Sequence) or len(curves) != n_pairs:
            got = len(curves) if isinstance(curves, Sequence) else type(curves).__name__
            raise ValueError(f"curves: expected {n_pairs} SplineCurve warm starts (one per pair), got {got}")
        curves = list(curves)
        for k, curve in enumerate(curves):
            if not isinstance(curve, SplineCurve):
                raise TypeError(f"curves[{k}]: expected a SplineCurve, got {type(curve).__name__}")
            if curve.n_nodes != curves[0].n_nodes:
                raise ValueError(f"curves[{k}]: expected n_nodes {curves[0].n_nodes} like curves[0], got {curve.n_nodes}")
            if curve.start.shape != z0[k].shape or not (
                torch.allclose(curve.start, z0[k]) and torch.allclose(curve.end, z1[k])
            ):
                raise ValueError(f"curves[{k}]: expected a warm-start curve with the same endpoints as pair {k}")
    n_knots = curves[0].n_nodes + 2
    if config.resample_every > 0 and config.divergence_for(dim) == "hutchinson":
        from spacetime_md.core.sequential import solve_one_by_one

        return solve_one_by_one(denoiser, z0, z1, config, per_pair, seeds, setup_seeds, curves, callback, t_start)

    pair_denoisers = [CountingDenoiser(denoiser) for _ in range(n_pairs)]
    for k in range(n_pairs):
        devices = [z0.device] if z0.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if setup_seeds is not None:
                torch.manual_seed(setup_seeds[k])
            for c in per_pair[k]:
                if hasattr(c, "setup"):
                    try:
                        c.setup(pair_denoisers[k], z0[k], z1[k], config)
                    except ValueError as exc:
                        raise ValueError(f"pair {k}: {exc}") from None

    problem = _Problem(denoiser, z0, z1, config, per_pair, pair_denoisers)
    interior = torch.stack([curve.interior.detach() for curve in curves]).clone()
    optimizer = (_LBFGS if config.optimizer == "lbfgs" else _Adam)(problem, interior, config)
    generators = [torch.Generator(device=z0.device).manual_seed(seed) for seed in seeds]
    histories: list[list[dict[str, Any]]] = [[] for _ in range(n_pairs)]
    converged = [False] * n_pairs
    initial_energy = [math.nan] * n_pairs
    patience = config.resolved_patience
    everyone = list(range(n_pairs))

    def draw_probes(n_points: int) -> Tensor | None:
        if problem.method != "hutchinson":
            return None
        return torch.stack([
            _draw_probes(config.n_probes, n_points, dim, config.probe_layout, dtype=z0.dtype, device=z0.device,
                        generator=gen)
            for gen in generators
        ])

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"geodesics ({n_pairs} pairs)", unit="pair-step")
    try:
        for stage, n_points in enumerate(config.n_points):
            problem.set_stage(n_points, n_knots, draw_probes(n_points))
            if stage == 0:
                ev = problem.evaluate(everyone, optimizer.interior, [0.0] * n_pairs, optimizer.steps, grad=False)
                initial_energy = ev.energy.tolist()
            min_steps = config.min_steps if stage == 0 else 1
            # Coarse stages only provide a warm start: a looser tolerance is enough.
            rtol = config.rtol if stage == len(config.n_points) - 1 else 10 * config.rtol
            best: list[list[float]] = [[] for _ in range(n_pairs)]
            stage_steps = [0] * n_pairs
            stage_converged = [False] * n_pairs

            def finish_step(k: int, record: dict[str, Any]) -> bool:
                """Record pair k's step; whether it goes on (the convergence test of optimize_geodesic)."""
                info = {"pair": k, "step": optimizer.steps[k], "stage": stage, "n_points": n_points, **record}
                histories[k].append({key: v for key, v in info.items() if key != "pair"})
                if callback is not None:
                    callback(info)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(stage=stage, T=n_points, pair=k, energy=f"{record['energy']:.4g}")
                optimizer.steps[k] += 1
                stage_steps[k] += 1
                total = record["objective"]
                best[k].append(min(total, best[k][-1]) if best[k] else total)
                ramp_done = _ramp(optimizer.steps[k], config) >= 1.0 or not per_pair[k]
                if ramp_done and len(best[k]) > max(patience, min_steps):
                    old, new = best[k][-1 - patience], best[k][-1]
                    if old - new <= rtol * max(abs(new), 1e-12):
                        stage_converged[k] = True
                        return False
                return stage_steps[k] < config.max_steps

            optimizer.run_stage(everyone, stage, n_points, finish_step)
            logger.info("stage %d (T=%d): %d of %d pairs converged", stage, n_points, sum(stage_converged), n_pairs)
            converged = stage_converged
    finally:
        if bar is not None:
            bar.close()

    problem.set_stage(config.n_points[-1], n_knots, draw_probes(config.n_points[-1]))
    final = problem.evaluate(everyone, optimizer.interior, [optimizer.ramp(k) for k in everyone], optimizer.steps,
                             grad=False)
    terms = final.terms
    tiny = torch.finfo(terms.dtype).tiny
    lengths = terms.clamp_min(tiny).sqrt().where(terms > 0, terms.new_zeros(())).sum(-1)
    energies, totals, lengths = final.energy.tolist(), final.total.tolist(), lengths.tolist()
    wall_time = time.perf_counter() - t_start
    results = []
    for k, curve in enumerate(curves):
        with torch.no_grad():
            curve.interior.copy_(optimizer.interior[k])
        results.append(GeodesicResult(
            curve=curve,
            log_snr=final.log_snr[k].clone(),
            x=final.x[k].clone(),
            energy=energies[k],
            length=lengths[k],
            objective=totals[k],
            initial_energy=initial_energy[k],
            n_steps=optimizer.steps[k],
            n_denoiser_evals=problem.n_evals[k] + pair_denoisers[k].n_evals,
            converged=converged[k],
            history=histories[k],
            wall_time=wall_time,
            config=config,
        ))
    return results
