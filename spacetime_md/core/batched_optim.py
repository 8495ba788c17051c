"""Per-pair optimisers of :func:`~spacetime_md.core.optimize_geodesics` (batched geodesic solves).

:class:`_LBFGS` keeps a curvature history per pair (the two-loop recursion runs batched over
the pairs starting a step together) and runs one strong-Wolfe line search per pair, written
as a coroutine (:func:`_wolfe_search`) so that the pairs advance asynchronously: each round
makes one batched evaluation of the point every running pair needs next. :class:`_Adam` is
``torch.optim.Adam`` (default betas and eps) with one step count per pair. Both see the K
objectives through the ``_Problem`` of :mod:`spacetime_md.core.batched`.

Shapes: K pairs, C = D + 1, N = n_nodes * C.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generator

import torch
from torch import Tensor

from spacetime_md.core.geodesic import GeodesicConfig, _ramp
from spacetime_md.errors import NonFiniteError

if TYPE_CHECKING:
    from spacetime_md.core.batched import _Evaluation, _Problem

__all__: list[str] = []

# L-BFGS settings, the same as optimize_geodesic's torch.optim.LBFGS.
_HISTORY_SIZE = 20
_MAX_EVALS = 25  # objective evaluations per line search
_C1, _C2 = 1e-4, 0.9  # strong-Wolfe sufficient decrease and curvature constants
_MIN_CURVATURE = 1e-10  # curvature pairs with y.s at or below this are skipped
_BRACKET_RTOL = 1e-6  # the zoom stops at a bracket this narrow relative to its end or the first trial
# Adam settings, torch.optim.Adam's defaults (what optimize_geodesic uses).
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


# --------------------------------------------------------------------------- line search


def _cubic_min(p: tuple, q: tuple, low: float, high: float, fallback: float) -> float:
    """Minimiser of the cubic through ``(t, f, f')`` at ``p`` and ``q``, clipped to ``[low, high]``."""
    (t1, f1, g1), (t2, f2, g2) = p[:3], q[:3]
    if t1 == t2:
        return fallback
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (t1 - t2)
    disc = d1 * d1 - g1 * g2
    if not disc >= 0.0:  # also catches NaN
        return fallback
    d2 = math.copysign(math.sqrt(disc), t2 - t1)
    denom = g2 - g1 + 2.0 * d2
    if denom == 0.0:
        return fallback
    t = t2 - (t2 - t1) * (g2 + d2 - d1) / denom
    if not math.isfinite(t):
        return fallback
    return min(max(t, low), high)


def _wolfe_search(f0: float, gtd0: float, t: float, max_evals: int = _MAX_EVALS) -> Generator[float, tuple, tuple]:
    """Strong-Wolfe line search on ``phi(t) = f(x + t d)``, written as a coroutine.

    Yields trial steps ``t``; is sent ``(phi(t), phi'(t), payload)`` for each; returns
    ``(t, phi(t), payload)`` of the accepted trial, or ``(0.0, f0, None)`` when no trial
    decreased the objective sufficiently. A non-finite ``phi(t)`` is sent as ``inf``. A
    bracketing phase (the step grows while the
    objective keeps decreasing) is followed by a zoom into the bracket by safeguarded cubic
    interpolation (Nocedal & Wright, Numerical Optimization, Algorithms 3.5 and 3.6). The
    driver advances many of these searches in lockstep, one batched evaluation per round.
    """

    def sufficient(t_: float, f_: float) -> bool:
        return f_ <= f0 + _C1 * t_ * gtd0

    def flat_enough(g_: float) -> bool:
        return abs(g_) <= -_C2 * gtd0

    prev = (0.0, f0, gtd0, None)
    t_init = t
    n_evals = 0
    while True:
        f, g, payload = yield t
        n_evals += 1
        cur = (t, f, g, payload)
        if not sufficient(t, f) or (n_evals > 1 and f >= prev[1]):
            lo, hi = prev, cur
            break
        if flat_enough(g):
            return t, f, payload
        if g >= 0:
            lo, hi = cur, prev
            break
        if n_evals >= max_evals:
            return t, f, payload
        t_next = _cubic_min(prev, cur, 1.1 * t, 10.0 * t, fallback=4.0 * t)
        prev, t = cur, t_next
    while n_evals < max_evals:
        a, b = min(lo[0], hi[0]), max(lo[0], hi[0])
        width = b - a
        if width <= _BRACKET_RTOL * max(b, t_init):
            break  # e.g. a kink of the clamped energy: no trial meets the curvature condition
        if math.isfinite(hi[1]):
            t = _cubic_min(lo, hi, a + 0.1 * width, b - 0.1 * width, fallback=0.5 * (a + b))
        else:  # the objective was not finite there: step back hard towards lo
            t = lo[0] + 0.1 * (hi[0] - lo[0])
        f, g, payload = yield t
        n_evals += 1
        cur = (t, f, g, payload)
        if not sufficient(t, f) or f >= lo[1]:
            hi = cur
        else:
            if flat_enough(g):
                return t, f, payload
            if g * (hi[0] - lo[0]) >= 0:
                hi = lo
            lo = cur
    return lo[0], lo[1], lo[3]


# --------------------------------------------------------------------------- optimisers


class _Optimizer:
    """Per-pair state shared by both optimisers: knots and step counts.

    ``run_stage(pairs, stage, n_points, finish_step)`` optimises ``pairs`` at one
    discretisation; after each step of pair ``k`` it calls ``finish_step(k, record)``, which
    records the step and returns whether ``k`` goes on (not converged, steps left).
    """

    def __init__(self, problem: _Problem, interior: Tensor, config: GeodesicConfig):
        if config.explore_steps or config.n_starts > 1 or config.init_dips != (0.0,):
            raise ValueError(
                f"config: explore_steps ({config.explore_steps}), n_starts ({config.n_starts}) and init_dips "
                f"({config.init_dips}) are options of optimize_geodesic, not of the batched optimize_geodesics; "
                "expected 0, 1 and (0.0,)"
            )
        self.problem = problem
        self.interior = interior  # (K, n_nodes, C), detached
        self.config = config
        self.lr = config.resolved_lr
        self.steps = [0] * interior.shape[0]  # optimiser steps per pair, over all stages

    def ramp(self, k: int) -> float:
        return _ramp(self.steps[k], self.config)

    def check_params(self, pairs: list[int], stage: int) -> None:
        finite = torch.isfinite(self.interior[pairs].reshape(len(pairs), -1)).all(-1).tolist()
        for k, ok in zip(pairs, finite):
            if not ok:
                raise NonFiniteError(
                    f"pair {k}: geodesic curve parameters became non-finite at stage {stage}, "
                    f"step {self.steps[k]}; lower the learning rate"
                )

    def evaluate(self, pairs, interior, stage, n_points, directions=None):
        """Objective and gradient of ``pairs`` at ``interior``, plus host values
        ``[total, energy, g.d]`` (``g.d`` only with ``directions``, shape ``(k, N)``)."""
        ev = self.problem.evaluate(pairs, interior, [self.ramp(k) for k in pairs], [self.steps[k] for k in pairs],
                                   grad=True)
        grad = ev.grad.reshape(len(pairs), -1)
        rows = [ev.total, ev.energy]
        if directions is not None:
            rows.append((grad * directions).sum(-1))
        values = torch.stack(rows).tolist()
        return ev, grad, values

    def record(self, ev: _Evaluation, i: int, k: int, values: list[list[float]]) -> dict[str, Any]:
        return {"energy": values[1][i], "objective": values[0][i], "penalties": ev.penalties[i], "ramp": self.ramp(k)}

    def raise_non_finite(self, ev, i, k, stage, n_points, values, interior):
        raise NonFiniteError(
            f"pair {k}: geodesic objective became non-finite (energy {values[1][i]}, penalties {ev.penalties[i]}) "
            f"at stage {stage} (n_points={n_points}), step {self.steps[k]}; check the denoiser over the curve's "
            f"log_snr range [{float(interior[:, 0].min()):.3g}, {float(interior[:, 0].max()):.3g}] "
            "or lower the learning rate"
        )


class _Adam(_Optimizer):
    """``torch.optim.Adam`` (default betas and eps) with one step count per pair.

    One evaluation per step, so every round of a stage evaluates all pairs still running.
    """

    def __init__(self, problem, interior, config):
        super().__init__(problem, interior, config)
        self.exp_avg = torch.zeros_like(interior)
        self.exp_avg_sq = torch.zeros_like(interior)
        self.n_updates = [0] * interior.shape[0]

    def run_stage(self, pairs: list[int], stage: int, n_points: int, finish_step) -> None:
        active = list(pairs)
        while active:
            records = self._step(active, stage, n_points)
            active = [k for k, record in zip(active, records) if finish_step(k, record)]

    def _step(self, pairs: list[int], stage: int, n_points: int) -> list[dict[str, Any]]:
        index = torch.tensor(pairs, device=self.interior.device)
        point = self.interior[index]
        ev, grad, values = self.evaluate(pairs, point, stage, n_points)
        for i, k in enumerate(pairs):
            if not math.isfinite(values[0][i]):
                self.raise_non_finite(ev, i, k, stage, n_points, values, point[i])
        grad = grad.reshape(point.shape)
        exp_avg, exp_avg_sq = self.exp_avg[index], self.exp_avg_sq[index]
        exp_avg.lerp_(grad, 1 - _BETA1)
        exp_avg_sq.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        for k in pairs:
            self.n_updates[k] += 1
        shape = (len(pairs), 1, 1)
        step_size = [self.lr / (1 - _BETA1 ** self.n_updates[k]) for k in pairs]
        bias2_sqrt = [(1 - _BETA2 ** self.n_updates[k]) ** 0.5 for k in pairs]
        denom = (exp_avg_sq.sqrt() / point.new_tensor(bias2_sqrt).reshape(shape)).add_(_EPS)
        # torch's addcdiv(param, exp_avg, denom, value=-step_size): param + (value * exp_avg) / denom
        self.interior[index] = point + point.new_tensor([-s for s in step_size]).reshape(shape) * exp_avg / denom
        self.exp_avg[index], self.exp_avg_sq[index] = exp_avg, exp_avg_sq
        self.check_params(pairs, stage)
        return [self.record(ev, i, k, values) for i, k in enumerate(pairs)]


class _LBFGS(_Optimizer):
    """L-BFGS with one curvature history and one strong-Wolfe line search per pair.

    Within a stage the pairs run asynchronously: every round makes one batched evaluation of
    the point each running pair needs next (its current point after the objective changed,
    or its line search's next trial); a pair whose line search ended updates its history,
    finishes its step and starts the next one (the two-loop recursion batched over the pairs
    starting a step together) before the next round. So rounds hold all running pairs even
    when their line searches take different numbers of trials.

    As in ``optimize_geodesic``'s torch L-BFGS: history of 20 pairs, first step
    ``min(1, 1/|g|_1) * lr`` along ``-g`` (here also the first after a history reset),
    later steps start at ``lr``, at most 25
    evaluations per line search, curvature pairs with ``y.s <= 1e-10`` skipped, the history
    carried over from one stage to the next.
    """

    def __init__(self, problem, interior, config):
        super().__init__(problem, interior, config)
        n_pairs, n_flat = interior.shape[0], interior[0].numel()
        self.s_hist = interior.new_zeros(n_pairs, _HISTORY_SIZE, n_flat)
        self.y_hist = interior.new_zeros(n_pairs, _HISTORY_SIZE, n_flat)
        self.rho = interior.new_zeros(n_pairs, _HISTORY_SIZE)  # 0 marks an empty slot
        self.gamma = interior.new_ones(n_pairs)  # initial inverse-Hessian scale
        self.fresh = [True] * n_pairs  # no curvature history: first trial min(1, 1/|g|_1) * lr
        self.grad = interior.new_zeros(n_pairs, n_flat)  # at the current point
        self.direction = interior.new_zeros(n_pairs, n_flat)  # of the running line search
        self.value: list[dict[str, Any] | None] = [None] * n_pairs  # record at the current point
        self.key: list[tuple | None] = [None] * n_pairs  # (stage, ramp) of value and grad

    def _two_loop(self, index: Tensor, grad: Tensor) -> Tensor:
        """``-H g`` by the two-loop recursion, batched over pairs (newest history last)."""
        s_hist, y_hist, rho = self.s_hist[index], self.y_hist[index], self.rho[index]
        q = -grad
        alphas = []
        for i in range(_HISTORY_SIZE - 1, -1, -1):
            a = rho[:, i] * (s_hist[:, i] * q).sum(-1)
            q = q - a.unsqueeze(-1) * y_hist[:, i]
            alphas.append(a)
        r = q * self.gamma[index].unsqueeze(-1)
        for i in range(_HISTORY_SIZE):
            b = rho[:, i] * (y_hist[:, i] * r).sum(-1)
            r = r + s_hist[:, i] * (alphas[_HISTORY_SIZE - 1 - i] - b).unsqueeze(-1)
        return r

    def _reset(self, pairs: list[int]) -> None:
        """Forget the curvature history; the next step starts like the first one."""
        index = torch.tensor(pairs, device=self.interior.device)
        self.s_hist[index] = 0
        self.y_hist[index] = 0
        self.rho[index] = 0
        self.gamma[index] = 1
        for k in pairs:
            self.fresh[k] = True

    def _start_steps(self, pairs: list[int], searches: dict, trials: dict) -> list[int]:
        """Directions and first trials of ``pairs``; returns the pairs with nothing to search
        (zero gradient), whose step is then already over."""
        device = self.interior.device
        index = torch.tensor(pairs, device=device)
        grad = self.grad[index]
        direction = self._two_loop(index, grad)
        host = torch.stack([(grad * direction).sum(-1), grad.abs().sum(-1)]).tolist()
        bad = [i for i in range(len(pairs)) if not (host[0][i] < 0 and math.isfinite(host[0][i]))]
        if bad:
            # Not a descent direction (curvature from before an objective change): restart
            # those pairs from steepest descent.
            self._reset([pairs[i] for i in bad])
            rows = torch.tensor(bad, device=device)
            direction[rows] = -grad[rows]
            for i, v in zip(bad, (grad[rows] * direction[rows]).sum(-1).tolist()):
                host[0][i] = v
        self.direction[index] = direction
        idle = []
        for i, k in enumerate(pairs):
            if not host[0][i] < 0:  # zero gradient
                idle.append(k)
                continue
            t0 = min(1.0, 1.0 / host[1][i]) * self.lr if self.fresh[k] else self.lr
            self.fresh[k] = False
            searches[k] = _wolfe_search(self.value[k]["objective"], host[0][i], t0)
            trials[k] = next(searches[k])
        return idle

    def _finish_searches(self, outcomes: dict[int, tuple], stage: int) -> None:
        """Move the pairs whose line search ended and update their curvature history."""
        failed = [k for k, out in outcomes.items() if out[2] is None]
        if failed:
            self._reset(failed)  # no sufficient decrease along the L-BFGS direction
        moved = [k for k, out in outcomes.items() if out[2] is not None]
        if not moved:
            return
        index = torch.tensor(moved, device=self.interior.device)
        new_point = torch.stack([outcomes[k][2][0] for k in moved])
        new_grad = torch.stack([outcomes[k][2][1] for k in moved])
        s_vec = new_point - self.interior[index].reshape(len(moved), -1)
        y_vec = new_grad - self.grad[index]
        ys, yy = (s_vec * y_vec).sum(-1), (y_vec * y_vec).sum(-1)
        keep = ys > _MIN_CURVATURE
        if bool(keep.any()):
            upd = index[keep]
            self.s_hist[upd] = torch.cat([self.s_hist[upd, 1:], s_vec[keep].unsqueeze(1)], dim=1)
            self.y_hist[upd] = torch.cat([self.y_hist[upd, 1:], y_vec[keep].unsqueeze(1)], dim=1)
            self.rho[upd] = torch.cat([self.rho[upd, 1:], (1.0 / ys[keep]).unsqueeze(1)], dim=1)
            self.gamma[upd] = ys[keep] / yy[keep]
        self.interior[index] = new_point.reshape((len(moved),) + self.interior.shape[1:])
        self.grad[index] = new_grad
        for k in moved:
            self.value[k] = outcomes[k][2][2]
        self.check_params(moved, stage)

    def run_stage(self, pairs: list[int], stage: int, n_points: int, finish_step) -> None:
        device = self.interior.device
        searches: dict[int, Generator] = {}
        trials: dict[int, float] = {}
        need_value: list[int] = []  # objective changed (new stage or constraint weight): evaluate
        need_step: list[int] = []  # ready to start a step

        def next_step(k: int) -> None:
            (need_value if self.key[k] != (stage, self.ramp(k)) else need_step).append(k)

        for k in pairs:
            next_step(k)
        while need_value or need_step or trials:
            while need_step:
                starting, need_step = need_step, []
                for k in self._start_steps(starting, searches, trials):
                    if finish_step(k, self.value[k]):
                        next_step(k)
            if not (need_value or trials):
                break
            current, trying = list(need_value), list(trials)
            need_value = []
            everyone = current + trying
            index = torch.tensor(everyone, device=device)
            base = self.interior[index].reshape(len(everyone), -1)
            direction = self.direction[index]
            step_sizes = base.new_tensor([0.0] * len(current) + [trials[k] for k in trying]).unsqueeze(-1)
            direction[: len(current)] = 0  # current points: no move, g.d unused
            point = base + step_sizes * direction
            ev, grad, values = self.evaluate(everyone, point.reshape((len(everyone),) + self.interior.shape[1:]),
                                             stage, n_points, directions=direction)
            for i, k in enumerate(current):
                if not math.isfinite(values[0][i]):
                    self.raise_non_finite(ev, i, k, stage, n_points, values, self.interior[k])
                self.grad[k] = grad[i]
                self.value[k] = self.record(ev, i, k, values)
                self.key[k] = (stage, self.ramp(k))
                need_step.append(k)
            ended: dict[int, tuple] = {}
            for i in range(len(current), len(everyone)):
                k = everyone[i]
                f, gtd = values[0][i], values[2][i]
                if not (math.isfinite(f) and math.isfinite(gtd)):
                    f, gtd = math.inf, math.nan
                try:
                    trials[k] = searches[k].send((f, gtd, (point[i], grad[i], self.record(ev, i, k, values))))
                except StopIteration as done:
                    ended[k] = done.value
                    del trials[k], searches[k]
            if ended:
                self._finish_searches(ended, stage)
                for k in ended:
                    if finish_step(k, self.value[k]):
                        next_step(k)
