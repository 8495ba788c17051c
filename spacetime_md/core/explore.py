"""Options of :func:`~spacetime_md.core.optimize_geodesic` for rough learned models
(``GeodesicConfig.explore_steps``, ``n_starts``; docs/geodesic.md, "A rough learned 2-D
denoiser"): an Adam exploration phase on a jittered discretisation, and the best of several
solves on shorter stage schedules."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import torch
from torch import Tensor

from spacetime_md._cpu import usable_cores
from spacetime_md.errors import NonFiniteError

__all__ = ["explore", "jittered_points", "multistart"]

logger = logging.getLogger("spacetime_md.core.geodesic")


def explore(curve, evaluate, draw, config, z0, on_step, ramp) -> tuple[float, int]:
    """The exploration phase (``config.explore_steps``): Adam on a jittered discretisation with
    ``n_points[0]`` points, fresh points (and Hutchinson probes) every step; returns the straight
    line's energy on the uniform grid and the number of steps."""
    n_points = config.n_points[0]
    generator = torch.Generator(device=z0.device).manual_seed(config.seed + 104729)
    with torch.no_grad():
        s = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)
        initial_energy = float(evaluate(s, draw(n_points), 0.0)[1])
    opt = torch.optim.Adam([curve.interior], lr=config.explore_lr)
    for step in range(config.explore_steps):
        s = jittered_points(n_points, generator, z0.dtype, z0.device)
        opt.zero_grad()
        with torch.enable_grad():
            total, energy, _, penalties = evaluate(s, draw(n_points), ramp(step, config), step, jittered=True)
        if not bool(torch.isfinite(total.detach())):
            raise NonFiniteError(f"geodesic objective became non-finite in the exploration phase, step {step} "
                                 f"(energy {float(energy.detach())}); lower explore_lr")
        total.backward()
        opt.step()
        on_step({"step": step, "stage": 0, "n_points": n_points, "energy": float(energy.detach()),
                 "objective": float(total.detach()), "penalties": penalties, "ramp": ramp(step, config),
                 "explore": True})
    curve.interior.grad = None
    return initial_energy, config.explore_steps


def multistart(solve, denoiser, start, end, config, constraints, *, curve, callback):
    """One solve per start (``solve``: the single-start solver of
    :func:`~spacetime_md.core.optimize_geodesic`): for every ``config.init_dips`` value ``d``
    and every ``k < config.n_starts``, the initial curve dipped by ``d`` on the stages
    ``n_points[k:]``; the best final objective wins. The constraints are set up once, before the
    starts, so every start minimises the same objective; the starts run one after the other or,
    with ``config.start_threads``, in concurrent threads (the same curve). Only the winner's
    held-out score is reported: in threads, a start that ends while others still run is scored at
    once on the core it frees, otherwise the winner is scored at the end with its draws split over
    the threads (the same numbers either way). Returns that start's ``GeodesicResult`` with the
    steps, evaluations and time of all starts."""
    from spacetime_md.core.denoisers import CountingDenoiser
    from spacetime_md.core.geodesic import _check_problem, _holdout_estimate, _setup_constraints

    t_start = time.perf_counter()
    z0, z1, constraints = _check_problem(denoiser, start, end, constraints)
    counting = CountingDenoiser(denoiser)
    _setup_constraints(constraints, counting, z0, z1, config)
    starts = [(dip, k) for dip in config.init_dips for k in range(config.n_starts)]
    if config.start_threads == "auto":  # the cores left by each start's own torch threads
        n_threads = min(len(starts), max(1, usable_cores() // max(1, torch.get_num_threads())))
    else:
        n_threads = min(len(starts), config.start_threads)
    stop = threading.Event()
    lock = threading.Lock()
    state = {"not_started": len(starts), "running": 0}
    early: dict[int, tuple[Any, int]] = {}  # start -> (held-out score, its rows), scored while others ran

    def score_early(i: int, result) -> None:
        """A start that ends while the others still run (none waiting for a thread) is scored at
        once, on the core it would leave idle; the winner's score is then ready (the same numbers)."""
        with lock:
            state["running"] -= 1
            if not (config.holdout_probes and n_threads > 1 and state["not_started"] == 0 and state["running"] > 0):
                return
        counted = CountingDenoiser(denoiser)
        early[i] = (_holdout_estimate(counted, result.log_snr, result.x, config), counted.n_evals)

    def run(i: int) -> Any:
        with lock:
            state["not_started"] -= 1
            state["running"] += 1
        dip, k = starts[i]
        sub = dataclasses.replace(config, n_points=config.n_points[k:], n_starts=1, init_dips=(dip,),
                                  explore_steps=config.explore_steps if k == 0 else 0, holdout_probes=0)
        init = None if curve is None else copy.deepcopy(curve)

        def cb(info, i=i):
            if stop.is_set():
                raise _Cancelled
            if callback is not None:
                callback({**info, "start": i})

        try:
            result = solve(denoiser, start, end, sub, constraints, curve=init, callback=cb, setup=False)
        except BaseException:
            with lock:
                state["running"] -= 1
            raise
        logger.info("start %d (dip %g, n_points %s): objective %.6g", i, dip, sub.n_points, result.objective)
        score_early(i, result)
        return result

    if n_threads <= 1:
        results = [run(i) for i in range(len(starts))]
    else:
        with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="geodesic-start") as pool:
            futures = [pool.submit(run, i) for i in range(len(starts))]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # e.g. Ctrl-C while waiting
                stop.set()
                raise
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                stop.set()  # the other starts stop at their next step (or never start)
                for f in futures:
                    f.cancel()
        if failed:
            raise failed[0].exception()
        results = [f.result() for f in futures]
    objectives = [r.objective for r in results]
    best = min(range(len(results)), key=lambda i: (not math.isfinite(objectives[i]), objectives[i]))
    result = results[best]
    if config.holdout_probes:
        if best in early:  # (only the winner's rows count: the count does not depend on timing)
            result.estimate, rows = early[best]
            counting.n_evals += rows
        else:
            result.estimate = _holdout_estimate(counting, result.log_snr, result.x, config, threads=n_threads)
    if curve is not None:
        with torch.no_grad():
            curve.interior.copy_(result.curve.interior)
        result.curve = curve
    result.initial_energy = results[0].initial_energy
    result.n_steps = sum(r.n_steps for r in results)
    result.n_denoiser_evals = counting.n_evals + sum(r.n_denoiser_evals for r in results)
    result.n_failed_searches = sum(r.n_failed_searches for r in results)
    result.history = [{**h, "start": i} for i, r in enumerate(results) for h in r.history]
    result.start, result.start_objectives = best, objectives  # (its start_dip is its own sub-config's)
    result.wall_time = time.perf_counter() - t_start
    result.config = config
    return result


class _Cancelled(Exception):
    """Raised in a start's thread when another start failed."""


def jittered_points(n_points: int, generator: torch.Generator, dtype, device) -> Tensor:
    """``0``, one uniform draw in each of ``n_points - 2`` equal cells of ``[0, 1]``, ``1``."""
    u = torch.rand(n_points - 2, generator=generator, dtype=dtype, device=device)
    inner = (torch.arange(n_points - 2, dtype=dtype, device=device) + u) / (n_points - 2)
    return torch.cat([torch.zeros(1, dtype=dtype, device=device), inner, torch.ones(1, dtype=dtype, device=device)])
