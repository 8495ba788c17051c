"""Spacetime geodesics by curve-energy minimisation (DESIGN.md section 4).

:func:`optimize_geodesic` minimises the discrete curve energy (Eq. 14) of a
:class:`~spacetime_md.core.curves.SplineCurve` with fixed endpoints, plus optional constraint
penalties (Sec. 6.4, Eq. 21):

- coarse-to-fine: the energy is discretised with ``n_points[0]`` points first, then each
  following stage refines the discretisation, warm-started from the previous stage;
- each stage stops on a convergence criterion (relative improvement of the best objective
  over ``patience`` steps below ``rtol``) or after ``max_steps``;
- optimiser L-BFGS with strong-Wolfe line search (default) or Adam; in honest mode L-BFGS
  runs :mod:`spacetime_md.core.honest`'s stage (value-only Armijo search, see below);
- the Hutchinson divergence uses probe vectors that are fixed within a stage (common random
  numbers), so the objective is deterministic and L-BFGS applies; with ``resample_every=k``
  fresh probes are drawn every ``k`` steps and after a step that failed to decrease the
  objective (see "Honest mode" below);
- non-finite energies raise :class:`~spacetime_md.errors.NonFiniteError`;
- for rough learned models (options, off by default): ``explore_steps`` replaces the first
  stage by Adam on a jittered discretisation, and ``n_starts`` keeps the best of several
  solves on the stage schedules ``n_points[k:]`` (docs/geodesic.md, "A rough learned 2-D
  denoiser").

Honest mode (``resample_every > 0``, Hutchinson only). A fixed probe is a biased objective that
the optimiser learns to exploit: on the shipped alanine model, L-BFGS drove the one-probe
per-point clamped energy to 0 while the exact energy rose again after its minimum. With
fresh probes, the first evaluation after a draw scores the current curve with probes it was
never fitted to - a held-out, unbiased estimate. The stage keeps the curve with the best
held-out value (not the last one), stops when that value has not improved by ``rtol`` over
``patience`` draws, and a step that fails its line search triggers a new draw at once instead
of more line searches on a flat, exploited objective. The line search checks sufficient
decrease on value-only evaluations (no double backward, about a third of a gradient
evaluation); the gradient at a trial point, which the strong-Wolfe search also computed,
would only serve its curvature test, since the next step redraws the probes anyway
(:mod:`spacetime_md.core.honest`). ``probe_layout="curve"`` shares each
probe vector along the curve, so the estimator noise cancels in the differences of
neighbouring points (see :mod:`spacetime_md.core.estimates`). The result's ``estimate`` is a
held-out score with ``holdout_probes`` fresh draws: unbiased unclamped energy, its standard
error and the number of negative segments.

Constraints are objects with ``weight`` and ``penalty(state) -> Tensor`` (and optionally
``setup(denoiser, start, end, config)``); their weights are ramped from 0 to full after a
warm-up (:mod:`spacetime_md.core.constraints`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive
from spacetime_md.core.constraints import AvoidRegion, Constraint, CurveState, LowVariance, Penalty
from spacetime_md.core.curves import SpacetimePoint, SplineCurve, _as_vector
from spacetime_md.core.denoisers import CountingDenoiser, Denoiser
from spacetime_md.core.estimates import EnergyEstimate, draw_probes, estimate_curve_energy
from spacetime_md.core.geometry import _length_from_terms, clamp_terms, expectation_params, natural_params, segment_terms
from spacetime_md.core.honest import HonestStage, run_honest_stage
from spacetime_md.core.threads import resolve_num_threads, torch_threads
from spacetime_md.errors import NonFiniteError

__all__ = [
    "GeodesicConfig",
    "GeodesicResult",
    "CurveState",
    "Constraint",
    "LowVariance",
    "AvoidRegion",
    "Penalty",
    "optimize_geodesic",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeodesicConfig:
    """Settings of :func:`optimize_geodesic`.

    Parameters
    ----------
    n_nodes : int
        Free interior knots of the spline curve.
    n_points : tuple of int
        Coarse-to-fine discretisations of the energy, one stage each (increasing).
    optimizer : {"lbfgs", "adam"}
    lr : float, optional
        Learning rate; default 1.0 for L-BFGS (with line search) and 0.1 for Adam.
    max_steps : int
        Maximum optimiser steps per stage.
    rtol : float
        Convergence: relative improvement of the best objective over ``patience`` steps
        (``10 * rtol`` for the coarse stages, which only provide a warm start).
    patience : int, optional
        Window of the convergence test (honest mode: in probe draws); default 5 (L-BFGS) or 50 (Adam).
    min_steps : int
        Steps of the first stage before the convergence test applies (L-BFGS starts with
        small steps, which would otherwise look like convergence). Later stages reuse the
        optimiser state, so they may stop after ``patience`` steps. Not used in honest mode.
    divergence : {"auto", "exact", "hutchinson"}
        ``"auto"`` uses exact divergence for ``D <= exact_max_dim``, Hutchinson otherwise.
    n_probes : int
        Hutchinson probes per curve point.
    exact_max_dim : int
        Largest ``D`` for which ``"auto"`` picks the exact divergence.
    chunk_size : int, optional
        Row limit per denoiser call for the exact divergence.
    clamp : {"segment", "abs", "none"}
        Clamping of negative segment terms; see :func:`~spacetime_md.core.curve_energy`.
        ``"segment"`` (default) is needed with learned models: their Jacobian trace can be
        negative, and then the exact unclamped energy is unbounded below along such regions
        (alanine, shipped model: the unclamped exact energy of solved curves is negative).
    probe_layout : {"point", "curve"}
        Hutchinson probes: independent per curve point, or one vector shared by the whole
        curve (noise cancels in neighbouring differences; see ``core.estimates``).
    resample_every : int
        0: probes fixed within a stage. ``k > 0``: honest mode (module docstring): fresh
        probes every ``k`` steps and after a failed line search; best curve and stopping
        test by the held-out values. Ignored with the exact divergence.
    holdout_probes : int
        Fresh probe draws of the held-out score ``GeodesicResult.estimate`` (0: none).
    constraint_warmup : int
        Optimiser steps with constraint weights at 0.
    constraint_ramp : int
        Steps over which constraint weights then rise linearly to their full value.
    seed : int
        Seed of the probe vectors.
    progress : bool
        Show a tqdm progress bar.
    explore_steps : int
        0 (default): off. ``k > 0``: the first stage (``n_points[0]`` points) is replaced by
        ``k`` Adam steps (lr ``explore_lr``) on a *jittered* discretisation: every step draws
        new interior parameter values, one uniformly in each of ``n_points[0] - 2`` equal cells
        of ``[0, 1]``, and weights each segment term by its own ``1 / ds``. A fixed coarse grid
        aliases a rough learned model's energy (its optimum can be far from the fine one); a
        jittered grid is a noisy, unaliased estimate, and Adam's noise explores. The later
        stages (``n_points[1:]``, at least one) run as usual. Float32: a segment term scales
        like ``ds^2``, so ``term / ds`` vanishes with ``ds`` (a zero ``ds`` counts 0, not NaN),
        and Adam's step is at most about ``explore_lr`` per knot coordinate whatever the
        gradient's scale, so a rare rounding spike on a short segment cannot throw the knots.
    explore_lr : float
        Adam learning rate of the exploration phase.
    n_starts : int
        1 (default): one solve. ``m > 1``: ``m`` solves from the same initial curve (the
        straight line or ``curve``); start ``k`` runs the stages ``n_points[k:]`` (start 0 with
        the exploration phase if ``explore_steps > 0``, the others without), and the result is
        the start with the lowest objective at the final discretisation ``n_points[-1]``
        (``GeodesicResult.start``, ``start_objectives``; steps, evaluations and time add up).
        On a rough learned model the coarse-to-fine path decides which local minimum L-BFGS
        ends in; cheap starts with different paths, keeping the best, are a global strategy
        (docs/geodesic.md, "A rough learned 2-D denoiser"). Needs ``n_starts <= len(n_points)``.
        :func:`~spacetime_md.core.optimize_geodesics` (batched) refuses both options (except
        in honest mode, where it runs :func:`optimize_geodesic` pair by pair).
    init_dips : tuple of float
        ``(0.0,)`` (default): the solve starts from the straight line (or ``curve``). Otherwise
        one solve per value ``d >= 0``, from the initial curve with its interior log_snr lowered
        by ``d sin(pi s)`` (a curve that adds noise in the middle, as geodesics do), and the
        start with the lowest final objective wins, as with ``n_starts`` (the two combine: every
        dip runs every start). On a learned model the straight line can end in a local minimum
        that adds too little noise: for a 64-channel alanine-dipeptide model it converged at
        energy 342 (lowest log_snr 3.6) where a dip of 3 reached 272 (lowest log_snr 1.1) and
        paths over the lower saddle (docs/geodesic.md, "Initial dips").
    num_threads : int, "auto" or None
        torch threads used during the solve (restored afterwards); ``None`` keeps the
        current setting; ``"auto"`` times one solver call with 1 and 2 threads and keeps
        the faster (:mod:`spacetime_md.core.threads`). Float reductions depend on the thread count, so the same seed and
        thread count give the same curve.
    start_threads : int or "auto"
        With several starts (``n_starts``, ``init_dips``): Python threads that run the starts
        concurrently. 1 (default): one after the other; ``"auto"``: one per start, at most the
        usable cores divided by the solve's torch threads. Each start has its own probe generator and optimiser, and the constraints
        are set up once before the starts, so the result is bit for bit the one of
        ``start_threads=1`` with the same ``num_threads``. Torch releases the GIL inside its
        operators and each start runs its own backward passes, so on a 2-core CPU two starts
        with ``num_threads=1`` take about the time of one (docs/geodesic.md, "Initial dips").
        Every thread's operators use the process's torch thread count: combine with
        ``num_threads=1``. A ``callback`` is then called from the threads.
    """

    n_nodes: int = 10
    n_points: tuple[int, ...] = (16, 32, 64, 128)
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float | None = None
    max_steps: int = 200
    rtol: float = 1e-4
    patience: int | None = None
    min_steps: int = 10
    divergence: Literal["auto", "exact", "hutchinson"] = "auto"
    n_probes: int = 4
    exact_max_dim: int = 16
    chunk_size: int | None = None
    clamp: Literal["segment", "abs", "none"] = "segment"
    probe_layout: Literal["point", "curve"] = "point"
    resample_every: int = 0
    holdout_probes: int = 0
    constraint_warmup: int = 0
    constraint_ramp: int = 0
    seed: int = 0
    progress: bool = False
    num_threads: int | Literal["auto"] | None = None
    explore_steps: int = 0
    explore_lr: float = 0.1
    n_starts: int = 1
    init_dips: tuple[float, ...] = (0.0,)
    start_threads: int | Literal["auto"] = 1

    def __post_init__(self):
        if isinstance(self.n_points, int):
            object.__setattr__(self, "n_points", (self.n_points,))
        object.__setattr__(self, "n_points", tuple(int(n) for n in self.n_points))
        if not self.n_points or any(n < 2 for n in self.n_points):
            raise ValueError(f"n_points: expected a non-empty sequence of integers >= 2, got {self.n_points}")
        if list(self.n_points) != sorted(self.n_points):
            raise ValueError(f"n_points: expected increasing (coarse to fine), got {self.n_points}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer: expected 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.divergence not in ("auto", "exact", "hutchinson"):
            raise ValueError(
                f"divergence: expected 'auto', 'exact' or 'hutchinson', got {self.divergence!r}"
            )
        if self.clamp not in ("segment", "abs", "none"):
            raise ValueError(f"clamp: expected 'segment', 'abs' or 'none', got {self.clamp!r}")
        for name in ("n_nodes", "max_steps", "n_probes", "n_starts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.probe_layout not in ("point", "curve"):
            raise ValueError(f"probe_layout: expected 'point' or 'curve', got {self.probe_layout!r}")
        for name in ("constraint_warmup", "constraint_ramp", "exact_max_dim", "min_steps", "resample_every",
                     "holdout_probes", "explore_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        check_positive("rtol", self.rtol, allow_zero=True)
        check_positive("explore_lr", self.explore_lr)
        if self.explore_steps and len(self.n_points) < 2:
            raise ValueError(f"explore_steps: expected n_points with at least 2 stages (the first one explores), "
                             f"got {self.n_points}")
        dips = self.init_dips
        if isinstance(dips, numbers.Real) and not isinstance(dips, bool):
            dips = (dips,)
        try:
            dips = tuple(dips)
        except TypeError:
            dips = ()
        if not dips or len(set(dips)) != len(dips) or any(
            isinstance(d, bool) or not isinstance(d, numbers.Real) or not math.isfinite(d) or d < 0 for d in dips
        ):
            raise ValueError(f"init_dips: expected a non-empty sequence of distinct finite numbers >= 0 (log_snr), "
                             f"got {self.init_dips!r}")
        object.__setattr__(self, "init_dips", tuple(float(d) for d in dips))
        if self.n_starts > len(self.n_points):
            raise ValueError(f"n_starts: expected at most len(n_points) = {len(self.n_points)} (start k runs "
                             f"n_points[k:]), got {self.n_starts}")
        if self.lr is not None:
            check_positive("lr", self.lr)
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience: expected an integer >= 1, got {self.patience!r}")
        if self.num_threads not in (None, "auto") and (
            isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 1
        ):
            raise ValueError(f"num_threads: expected an integer >= 1, 'auto' or None, got {self.num_threads!r}")
        if self.start_threads != "auto" and (
            isinstance(self.start_threads, bool) or not isinstance(self.start_threads, int) or self.start_threads < 1
        ):
            raise ValueError(f"start_threads: expected an integer >= 1 or 'auto', got {self.start_threads!r}")

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (1.0 if self.optimizer == "lbfgs" else 0.1)

    @property
    def resolved_patience(self) -> int:
        return self.patience if self.patience is not None else (5 if self.optimizer == "lbfgs" else 50)

    def divergence_for(self, dim: int) -> str:
        if self.divergence != "auto":
            return self.divergence
        return "exact" if dim <= self.exact_max_dim else "hutchinson"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GeodesicResult:
    """Outcome of :func:`optimize_geodesic`.

    Attributes
    ----------
    curve : SplineCurve
        The optimised curve (evaluate anywhere with ``curve.evaluate(s)``).
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
        The curve at the final discretisation (detached).
    energy : float
        Curve energy (Eq. 14) at the final discretisation, without penalties.
    length : float
        Curve length at the final discretisation.
    objective : float
        Energy plus weighted penalties.
    initial_energy : float
        Energy of the initial curve (the straight line or ``curve``; with several starts, the
        first start's, dipped by ``init_dips[0]``) at the first stage's discretisation.
    n_steps : int
        Optimiser steps over all stages.
    n_denoiser_evals : int
        Denoiser rows evaluated (the divergence counts its replicated rows).
    converged : bool
        Whether the final stage met the convergence criterion.
    history : list of dict
        One entry per step: ``step``, ``stage``, ``n_points``, ``energy``, ``objective``.
    wall_time : float
        Seconds.
    estimate : EnergyEstimate, optional
        Held-out score of the final curve (``config.holdout_probes`` fresh draws, or exact):
        unbiased unclamped energy with its standard error, negative segments.
    n_failed_searches : int
        L-BFGS steps that did not decrease the objective (honest mode: steps whose Armijo
        search failed, after which the curve stays put and probes are redrawn).
    start : int
        With ``config.n_starts > 1`` or several ``config.init_dips``: the winning start, in the
        order dip by dip, then ``k`` (start ``k`` ran ``n_points[k:]``); else 0.
    start_objectives : list of float
        With several starts: each start's final objective (in ``summary()`` only then).
    start_dip : float
        The winning start's ``init_dips`` value (``config.init_dips[0]`` with one dip).
    """

    curve: SplineCurve
    log_snr: Tensor
    x: Tensor
    energy: float
    length: float
    objective: float
    initial_energy: float
    n_steps: int
    n_denoiser_evals: int
    converged: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0
    config: GeodesicConfig | None = None
    estimate: EnergyEstimate | None = None
    n_failed_searches: int = 0
    num_threads: int | None = None
    start: int = 0
    start_objectives: list[float] = field(default_factory=list)
    start_dip: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (no tensors)."""
        starts = {"start": self.start, "start_objectives": list(self.start_objectives),
                  "start_dip": self.start_dip} if self.start_objectives else {}
        return {
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
            "n_failed_searches": self.n_failed_searches,
            "num_threads": self.num_threads,
            **starts,
            "energy": self.energy,
            "length": self.length,
            "objective": self.objective,
            "initial_energy": self.initial_energy,
            "n_points": int(self.log_snr.shape[0]),
            "n_steps": self.n_steps,
            "n_denoiser_evals": self.n_denoiser_evals,
            "converged": self.converged,
            "wall_time": self.wall_time,
            "log_snr_min": float(self.log_snr.min()),
            "log_snr_max": float(self.log_snr.max()),
            "config": None if self.config is None else self.config.to_dict(),
        }


def _ramp(step: int, config: GeodesicConfig) -> float:
    if step < config.constraint_warmup:
        return 0.0
    if config.constraint_ramp == 0:
        return 1.0
    return min(1.0, (step - config.constraint_warmup + 1) / config.constraint_ramp)


def _search_wall(curve: SplineCurve, start_value: float) -> Tensor:
    """Objective of a line-search trial that left the finite region (float32 on a rough learned
    model: an extrapolated step can overflow): a finite value far above the step's start, with a
    zero gradient, so that the strong-Wolfe search zooms back instead of failing the solve."""
    curve.interior.grad = torch.zeros_like(curve.interior)
    return torch.tensor(1e3 * abs(start_value) + 1e6, dtype=curve.interior.dtype)


def _honest_stage(curve, s, evaluate, draw, config, constraints, stage, step0, on_step) -> HonestStage:
    """One honest-mode L-BFGS stage (:mod:`spacetime_md.core.honest`) on ``curve.interior``."""
    n_points = s.shape[0]

    def full(step: int, probes: Tensor):
        curve.interior.grad = None
        with torch.enable_grad():
            total, energy, _, penalties = evaluate(s, probes, _ramp(step, config), step)
            if not bool(torch.isfinite(total.detach())):
                raise NonFiniteError(
                    f"geodesic objective became non-finite (energy {float(energy.detach())}, "
                    f"penalties {penalties}) at stage {stage} (n_points={n_points}), step {step}; "
                    "check the denoiser over the curve's log_snr range "
                    f"[{float(curve.interior[:, 0].detach().min()):.3g}, "
                    f"{float(curve.interior[:, 0].detach().max()):.3g}] or lower the learning rate"
                )
            (grad,) = torch.autograd.grad(total, curve.interior)
        return float(total.detach()), float(energy.detach()), penalties, grad

    def value(step: int, probes: Tensor) -> float:
        if not bool(torch.isfinite(curve.interior.detach()).all()):
            return math.inf  # the Armijo search backtracks
        with torch.no_grad():
            return float(evaluate(s, probes, _ramp(step, config), step)[0])

    def stage_step(info: dict[str, Any]) -> None:
        on_step({"step": info["step"], "stage": stage, "n_points": n_points, "energy": info["energy"],
                 "objective": info["objective"], "penalties": info["penalties"], "ramp": _ramp(info["step"], config),
                 **({"held_out": info["held_out"]} if "held_out" in info else {})})

    return run_honest_stage(
        curve.interior, full, value, draw, max_steps=config.max_steps, patience=config.resolved_patience,
        rtol=config.rtol if stage == len(config.n_points) - 1 else 10 * config.rtol, lr=config.resolved_lr,
        resample_every=config.resample_every,
        ramp_done=lambda step: _ramp(step, config) >= 1.0 or not constraints, on_step=stage_step, step0=step0,
    )


def optimize_geodesic(
    denoiser: Denoiser,
    start: SpacetimePoint,
    end: SpacetimePoint,
    config: GeodesicConfig | None = None,
    constraints: Sequence[Constraint] = (),
    *,
    curve: SplineCurve | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> GeodesicResult:
    """Spacetime geodesic between ``start`` and ``end`` by curve-energy minimisation.

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
    start, end : SpacetimePoint
        ``(log_snr, x (D,))``; the curve's dtype and device follow ``start.x``.
    config : GeodesicConfig, optional
    constraints : sequence of Constraint
        E.g. ``[LowVariance(2.0), AvoidRegion(4.0, x_star, min_kl=5.0)]``.
    curve : SplineCurve, optional
        Warm start (its endpoints must equal ``start`` and ``end``); default straight line.
    callback : callable, optional
        Called after every step with a dict ``step, stage, n_points, energy, objective,
        penalties``.

    Returns
    -------
    GeodesicResult
    """
    config = GeodesicConfig() if config is None else config
    if not isinstance(config, GeodesicConfig):
        raise TypeError(f"config: expected a GeodesicConfig, got {type(config).__name__}")
    threads = config.num_threads
    if threads == "auto" and callable(denoiser):
        threads = resolve_num_threads(threads, denoiser, _as_vector("start", start), _as_vector("end", end), config)
    with torch_threads(threads):
        if config.n_starts == 1 and len(config.init_dips) == 1:
            result = _optimize_geodesic(denoiser, start, end, config, constraints, curve=curve, callback=callback)
        else:
            from spacetime_md.core.explore import multistart

            result = multistart(_optimize_geodesic, denoiser, start, end, config, constraints, curve=curve,
                                callback=callback)
    result.num_threads = threads if threads is not None else torch.get_num_threads()
    return result


def _holdout_estimate(denoiser, log_snr: Tensor, x: Tensor, config: GeodesicConfig,
                      threads: int = 1) -> EnergyEstimate:
    """The held-out score of a final curve (``config.holdout_probes`` draws of a generator of its own)."""
    holdout = torch.Generator(device=x.device).manual_seed(config.seed + 7919)
    return estimate_curve_energy(denoiser, log_snr, x, divergence=config.divergence_for(x.shape[1]),
                                 n_probes=max(config.holdout_probes, 1), probe_layout=config.probe_layout,
                                 generator=holdout, chunk_size=config.chunk_size, threads=threads)


def _check_problem(denoiser, start, end, constraints) -> tuple[Tensor, Tensor, list]:
    """The endpoint vectors ``(z0, z1)`` and the constraints as a list, after the input checks."""
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable, got {type(denoiser).__name__}")
    z0, z1 = _as_vector("start", start), _as_vector("end", end)
    if z0.shape != z1.shape:
        raise ValueError(f"end.x: expected shape ({z0.shape[0] - 1},) like start.x, got ({z1.shape[0] - 1},)")
    if torch.equal(z0, z1):
        raise ValueError("start and end: expected two different spacetime points, got equal ones")
    constraints = list(constraints)
    for c in constraints:
        if not hasattr(c, "penalty") or not hasattr(c, "weight"):
            raise TypeError(f"constraints: expected objects with penalty() and weight, got {type(c).__name__}")
    return z0, z1, constraints


def _setup_constraints(constraints, denoiser, z0: Tensor, z1: Tensor, config: GeodesicConfig) -> None:
    for c in constraints:
        if hasattr(c, "setup"):
            c.setup(denoiser, z0, z1, config)


def _optimize_geodesic(denoiser, start, end, config, constraints, *, curve, callback,
                       setup: bool = True) -> GeodesicResult:
    z0, z1, constraints = _check_problem(denoiser, start, end, constraints)
    dim = z0.shape[0] - 1
    method = config.divergence_for(dim)
    counting = CountingDenoiser(denoiser)
    t_start = time.perf_counter()

    if setup:  # (several starts: set up once, before them)
        _setup_constraints(constraints, counting, z0, z1, config)

    if curve is None:
        curve = SplineCurve(start, end, config.n_nodes)
    elif not (torch.allclose(curve.start, z0) and torch.allclose(curve.end, z1)):
        raise ValueError("curve: expected a warm-start curve with the same endpoints as start and end")
    if config.init_dips[0]:  # a single start (multistart hands each start one dip)
        with torch.no_grad():
            w = torch.linspace(0, 1, curve.n_nodes + 2, dtype=curve.interior.dtype, device=curve.interior.device)[1:-1]
            curve.interior[:, 0] -= config.init_dips[0] * torch.sin(math.pi * w)

    generator = torch.Generator(device=z0.device).manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    step = 0
    converged = False
    initial_energy = math.nan
    lr, patience = config.resolved_lr, config.resolved_patience

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="geodesic", unit="step")

    def evaluate(s: Tensor, probes: Tensor | None, ramp: float, at_step: int | None = None, jittered: bool = False):
        log_snr, x = curve.evaluate(s)
        eta = natural_params(log_snr, x)
        mu = expectation_params(
            counting, log_snr, x, divergence=method, probes=probes, chunk_size=config.chunk_size,
            create_graph=torch.is_grad_enabled(),
        )
        terms = segment_terms(eta, mu)
        if jittered:  # unequal spacing: each segment's term over its own ds
            energy = 0.5 * (clamp_terms(terms, config.clamp) / s.diff().clamp_min(torch.finfo(s.dtype).tiny)).sum()
        else:
            energy = 0.5 * (s.shape[0] - 1) * clamp_terms(terms, config.clamp).sum()
        penalties = {}
        total = energy
        if constraints:
            state = CurveState(s, log_snr, x, eta, mu, counting, step if at_step is None else at_step)
            for i, c in enumerate(constraints):
                p = c.penalty(state)
                penalties[f"{type(c).__name__}_{i}"] = float(p.detach())
                if c.weight and ramp:
                    total = total + ramp * c.weight * p
        return total, energy, terms, penalties

    honest = config.resample_every > 0 and method == "hutchinson"

    def draw(n_points: int) -> Tensor | None:
        if method != "hutchinson":
            return None
        return draw_probes(config.n_probes, n_points, dim, config.probe_layout, dtype=z0.dtype, device=z0.device,
                           generator=generator)

    n_failed = 0

    def on_step(info: dict[str, Any]) -> None:
        history.append(info)
        if callback is not None:
            callback(info)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(stage=info["stage"], T=info["n_points"], energy=f"{info['energy']:.4g}")

    first_stage = 0
    if config.explore_steps:
        from spacetime_md.core.explore import explore

        initial_energy, step = explore(curve, evaluate, draw, config, z0, on_step, _ramp)
        first_stage = 1

    try:
        for stage, n_points in enumerate(config.n_points):
            if stage < first_stage:
                continue
            s = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)
            honest_lbfgs = honest and config.optimizer == "lbfgs"
            probes = None if honest_lbfgs else draw(n_points)  # the honest stage draws its own
            # One optimiser for all stages: the L-BFGS curvature history (and Adam's moments)
            # learnt on the coarse discretisation carries over to the finer ones.
            if stage == first_stage:
                if config.optimizer == "lbfgs":
                    opt = torch.optim.LBFGS(
                        [curve.interior], lr=lr, max_iter=1, max_eval=25, history_size=20,
                        tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
                    )
                else:
                    opt = torch.optim.Adam([curve.interior], lr=lr)
            min_steps = config.min_steps if stage == first_stage else 1
            if honest_lbfgs:
                outcome = _honest_stage(curve, s, evaluate, lambda n=n_points: draw(n), config, constraints,
                                        stage, step, on_step)
                if stage == 0:  # (after exploration: the straight line's energy is already known)
                    initial_energy = outcome.first_energy
                step += outcome.n_steps
                n_failed += outcome.n_failed
                converged = outcome.converged
                logger.info("stage %d (T=%d): %s after %d steps, held-out objective %.6g", stage, n_points,
                            "converged" if converged else "not converged", outcome.n_steps, outcome.best_held_out)
                continue
            if stage == 0:
                with torch.no_grad():
                    initial_energy = float(evaluate(s, probes, 0.0)[1])
            best: list[float] = []
            stage_converged = False
            cache: dict[str, Any] = {}
            # Coarse stages only provide a warm start: a looser tolerance is enough.
            rtol = config.rtol if stage == len(config.n_points) - 1 else 10 * config.rtol
            since_draw, redraw = 0, False
            held_best, held_params = math.inf, None  # honest mode: best held-out value and its curve
            for _ in range(config.max_steps):
                ramp = _ramp(step, config)
                if honest and (redraw or since_draw >= config.resample_every):
                    probes, since_draw, redraw = draw(n_points), 0, False
                    cache.clear()  # a new objective: its first value at this curve is held out
                if cache.get("key") is not None and cache["key"][1] != ramp:
                    cache.clear()  # the objective changed with the constraint ramp
                fresh = honest and since_draw == 0
                last: dict[str, Any] = {}
                seen: list[tuple[Tensor, float]] = []

                def closure():
                    # torch's L-BFGS re-evaluates, at the start of every step, the point its
                    # previous line search ended on; answer that from the cache.
                    if cache.get("key") is not None and torch.equal(cache["params"], curve.interior.detach()):
                        curve.interior.grad = cache["grad"].clone()
                        last.update(cache["last"])
                        seen.append((cache["params"], last["total"]))
                        return cache["total"]
                    opt.zero_grad()
                    if seen and not bool(torch.isfinite(curve.interior.detach()).all()):
                        return _search_wall(curve, seen[0][1])  # a trial step overflowed the knots
                    total, energy, _, penalties = evaluate(s, probes, ramp)
                    if not bool(torch.isfinite(total.detach())):
                        if seen:  # a line-search trial, not the step's start: push the search back
                            return _search_wall(curve, seen[0][1])
                        raise NonFiniteError(
                            f"geodesic objective became non-finite (energy {float(energy.detach())}, "
                            f"penalties {penalties}) at stage {stage} (n_points={n_points}), step {step}; "
                            "check the denoiser over the curve's log_snr range "
                            f"[{float(curve.interior[:, 0].detach().min()):.3g}, {float(curve.interior[:, 0].detach().max()):.3g}] "
                            "or lower the learning rate"
                        )
                    total.backward()
                    last.update(total=float(total.detach()), energy=float(energy.detach()), penalties=penalties)
                    cache.update(key=(stage, ramp), params=curve.interior.detach().clone(),
                                 grad=curve.interior.grad.detach().clone(), total=total.detach(), last=dict(last))
                    seen.append((cache["params"], last["total"]))
                    return total

                opt.step(closure)
                since_draw += 1
                if not bool(torch.isfinite(curve.interior).all()):
                    raise NonFiniteError(
                        f"geodesic curve parameters became non-finite at stage {stage}, step {step}; "
                        "lower the learning rate"
                    )
                ended = next((v for p, v in reversed(seen) if torch.equal(p, curve.interior.detach())), last["total"])
                failed = config.optimizer == "lbfgs" and bool(seen) and not ended < seen[0][1]
                n_failed += failed
                info = {"step": step, "stage": stage, "n_points": n_points, "energy": last["energy"],
                        "objective": ended, "penalties": last["penalties"], "ramp": ramp}
                if fresh:
                    info["held_out"] = seen[0][1]
                history.append(info)
                if callback is not None:
                    callback(info)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(stage=stage, T=n_points, energy=f"{last['energy']:.4g}")
                step += 1
                ramp_done = _ramp(step, config) >= 1.0 or not constraints
                if honest:
                    redraw = failed
                    if not fresh:
                        continue
                    # The first value after a draw scores the step's start curve with unseen probes.
                    if seen[0][1] < held_best or not ramp_done:
                        held_best, held_params = seen[0][1], seen[0][0].clone()
                    best.append(held_best)
                else:
                    best.append(min(ended, best[-1]) if best else ended)
                if ramp_done and len(best) > max(patience, min_steps if not honest else 1):
                    old, new = best[-1 - patience], best[-1]
                    if old - new <= rtol * max(abs(new), 1e-12):
                        stage_converged = True
                        break
            if held_params is not None:
                with torch.no_grad():
                    curve.interior.copy_(held_params)
                if isinstance(opt, torch.optim.LBFGS):
                    opt.state.clear()  # the kept curve is not where the history ended
            logger.info("stage %d (T=%d): %s after %d steps, objective %.6g", stage, n_points,
                        "converged" if stage_converged else "not converged", len(best), best[-1])
            converged = stage_converged
    finally:
        if bar is not None:
            bar.close()

    s = torch.linspace(0, 1, config.n_points[-1], dtype=z0.dtype, device=z0.device)
    probes = draw(s.shape[0])
    with torch.no_grad():
        log_snr, x = curve.evaluate(s)
        total, energy, terms, _ = evaluate(s, probes, _ramp(step, config))
    estimate = _holdout_estimate(counting, log_snr, x, config) if config.holdout_probes else None
    return GeodesicResult(
        curve=curve,
        log_snr=log_snr.detach(),
        x=x.detach(),
        energy=float(energy.detach()),
        length=float(_length_from_terms(terms.detach())),
        objective=float(total.detach()),
        initial_energy=initial_energy,
        n_steps=step,
        n_denoiser_evals=counting.n_evals,
        converged=converged,
        history=history,
        estimate=estimate,
        n_failed_searches=n_failed,
        wall_time=time.perf_counter() - t_start,
        config=config,
        start_dip=config.init_dips[0],
    )
