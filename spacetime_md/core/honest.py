"""One stage of the honest geodesic solve: L-BFGS on a fresh Hutchinson probe per step.

Used by :func:`~spacetime_md.core.optimize_geodesic` in honest mode (``resample_every > 0``
with the Hutchinson divergence and ``optimizer="lbfgs"``; docs/geodesic.md). Every step:

1. draws fresh probes (every ``resample_every`` steps, and at once after a failed search);
2. evaluates the objective *and its gradient* at the current curve. With probes drawn just
   now this value is a held-out estimate of the curve's energy (the optimiser was never
   fitted to them): it feeds the best-curve bookkeeping and the stopping test;
3. takes the L-BFGS direction (two-loop recursion over the last ``history_size`` curvature
   pairs ``s = x_k - x_{k-1}``, ``y = g_k - g_{k-1}``; pairs with ``y.s <= 1e-10`` are skipped);
4. runs a backtracking Armijo line search on **value-only** evaluations with the same probes.

A value-only evaluation is the denoiser forward plus one vector-Jacobian product, without
the double backward of a gradient: about a third of a full evaluation on the shipped alanine
model (docs/geodesic.md). torch's L-BFGS with a strong-Wolfe search evaluated the gradient at
every trial point as well, but with the probes redrawn at the next step that gradient served
only the search's curvature test, so half of the solve's double backwards bought nothing.
The first step of each stage has L-BFGS's usual length ``lr * min(1, 1 / |g|_1)``; later
steps start at ``lr`` (the quasi-Newton step).

Shapes: the parameters are the spline's interior knots, any shape (flattened inside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["LbfgsMemory", "HonestStage", "run_honest_stage"]


class LbfgsMemory:
    """Curvature pairs and the two-loop recursion of L-BFGS (Nocedal & Wright, Alg. 7.4).

    The arithmetic mirrors ``torch.optim.LBFGS`` operation for operation (float32 tensors,
    the same update order), so where a step's first trial is accepted the honest solver moves
    exactly as the strong-Wolfe version did.
    """

    def __init__(self, history_size: int = 20):
        self.history_size = history_size
        self.s: list[Tensor] = []
        self.y: list[Tensor] = []
        self.rho: list[Tensor] = []
        self.h_diag: Tensor | float = 1.0

    def push(self, s: Tensor, y: Tensor) -> bool:
        """Store the pair if ``y.s > 1e-10`` (curvature positive); returns whether it was stored."""
        ys = y.dot(s)
        if not ys > 1e-10:
            return False
        if len(self.s) == self.history_size:
            self.s.pop(0), self.y.pop(0), self.rho.pop(0)
        self.s.append(s), self.y.append(y), self.rho.append(1.0 / ys)
        self.h_diag = ys / y.dot(y)
        return True

    def direction(self, grad: Tensor) -> Tensor:
        """``-H grad`` with the limited-memory inverse Hessian ``H``."""
        if not self.s:
            return grad.neg()
        n = len(self.s)
        alphas: list[Tensor] = [grad] * n
        q = grad.neg()
        for i in range(n - 1, -1, -1):
            alphas[i] = self.s[i].dot(q) * self.rho[i]
            q.add_(self.y[i], alpha=-alphas[i])
        r = torch.mul(q, self.h_diag)
        for i in range(n):
            beta = self.y[i].dot(r) * self.rho[i]
            r.add_(self.s[i], alpha=alphas[i] - beta)
        return r

    def __len__(self) -> int:
        return len(self.s)


@dataclass
class HonestStage:
    """What one stage did: steps, failed searches, whether the stopping test ended it."""

    n_steps: int = 0
    n_failed: int = 0
    converged: bool = False
    best_held_out: float = math.inf
    best: list[float] = field(default_factory=list)
    first_energy: float = math.nan


def run_honest_stage(
    params: Tensor,
    full: Callable[[int, Any], tuple[float, float, dict[str, float], Tensor]],
    value: Callable[[int, Any], float],
    draw: Callable[[], Any],
    *,
    max_steps: int,
    patience: int,
    rtol: float,
    lr: float,
    resample_every: int,
    ramp_done: Callable[[int], bool],
    on_step: Callable[[dict[str, Any]], None],
    step0: int = 0,
    history_size: int = 20,
    max_backtracks: int = 4,
    c1: float = 1e-4,
) -> HonestStage:
    """Minimise by honest L-BFGS steps (module docstring); ``params`` ends on the best held-out curve.

    Parameters
    ----------
    params : Tensor
        The curve's interior knots, updated in place.
    full : callable ``(step, probes) -> (objective, energy, penalties, grad)``
        Objective and gradient at the current ``params`` with the given probes.
    value : callable ``(step, probes) -> objective``
        The objective alone (no gradient) at the current ``params``; may be non-finite.
    draw : callable ``() -> probes``
    ramp_done : callable ``(step) -> bool``
        Whether the constraint weights have reached their final value (until then the best
        curve is the latest one and the stopping test waits).
    on_step : callable ``(info) -> None``
        Called after every step with ``step`` (global counter), ``energy``, ``objective``
        (value where the step ended), ``penalties`` and, on fresh probes, ``held_out``.
    step0 : int
        Global step counter at the stage's first step.
    """
    out = HonestStage()
    memory = LbfgsMemory(history_size)
    held_params = None
    prev: tuple[Tensor, Tensor, float] | None = None  # previous step's (grad, direction, step length)
    probes, since_draw, redraw = draw(), 0, False
    for k in range(max_steps):
        step = step0 + k
        if redraw or since_draw >= resample_every:
            probes, since_draw, redraw = draw(), 0, False
        fresh = since_draw == 0
        x0 = params.detach().clone()
        f0, energy, penalties, grad = full(step, probes)
        if k == 0:
            out.first_energy = energy
        grad = grad.reshape(-1)
        if prev is not None and prev[2]:
            memory.push(prev[1].mul(prev[2]), grad.sub(prev[0]))
        d = memory.direction(grad)
        gtd = float(grad.dot(d))
        if not gtd < 0:  # not a descent direction: forget the curvature, go downhill
            memory = LbfgsMemory(history_size)
            d = grad.neg()
            gtd = float(grad.dot(d))
        t = lr if len(memory) else float(min(1.0, 1.0 / grad.abs().sum()) * lr)
        ended, moved = f0, False
        for _ in range(max_backtracks + 1):
            with torch.no_grad():
                params.copy_(x0).add_(d.view_as(params), alpha=t)
            f_t = value(step, probes)
            if math.isfinite(f_t) and f_t <= f0 + c1 * t * gtd:
                ended, moved = f_t, True
                break
            # Backtrack: minimiser of the quadratic through f0, gtd and f_t, kept in [0.1 t, 0.5 t].
            if math.isfinite(f_t):
                denom = 2.0 * (f_t - f0 - gtd * t)
                t_new = -gtd * t * t / denom if denom > 0 else 0.5 * t
            else:
                t_new = 0.1 * t
            t = min(max(t_new, 0.1 * t), 0.5 * t)
        if not moved:
            with torch.no_grad():
                params.copy_(x0)
            out.n_failed += 1
        prev = (grad, d, t if moved else 0.0)
        since_draw += 1
        redraw = not moved
        info = {"step": step, "energy": energy, "objective": ended, "penalties": penalties}
        if fresh:
            info["held_out"] = f0
        on_step(info)
        out.n_steps += 1
        done = ramp_done(step + 1)
        if not fresh:
            continue
        if f0 < out.best_held_out or not done:
            out.best_held_out, held_params = f0, x0
        out.best.append(out.best_held_out)
        if done and len(out.best) > max(patience, 1):
            old, new = out.best[-1 - patience], out.best[-1]
            if old - new <= rtol * max(abs(new), 1e-12):
                out.converged = True
                break
    if held_params is not None:
        with torch.no_grad():
            params.copy_(held_params)
    return out
