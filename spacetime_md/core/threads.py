"""Torch thread count of a geodesic solve, chosen by measuring one solver call.

On a 2-core CPU a call of the shipped alanine model (forward, one-probe divergence, double
backward) is 1.4-1.6x faster with 2 threads than with 1 on an idle machine, but when other
processes keep the cores busy 2 threads can be many times slower (measured here: a whole
solve 18x slower under a load average of 8). ``num_threads="auto"`` therefore times one
call of the solver's own kind with each candidate count, interleaved, and keeps the fastest.
Float reductions depend on the thread count, so a solve with ``"auto"`` repeats exactly only
when the same count is chosen; the count used is recorded in the result.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import torch

from spacetime_md._cpu import usable_cores

__all__ = ["torch_threads", "choose_num_threads", "auto_thread_candidates", "usable_cores"]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``torch.set_num_threads(n)`` and restore the previous count (``None``: no change)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def auto_thread_candidates() -> tuple[int, ...]:
    """1 and 2 threads (just 1 on a one-core machine)."""
    return (1, 2) if usable_cores() >= 2 else (1,)


def choose_num_threads(call: Callable[[], object], candidates: Sequence[int] | None = None,
                       repeats: int = 2) -> tuple[int, dict[int, float]]:
    """The thread count among ``candidates`` with the fastest ``call()`` (best of ``repeats``, interleaved).

    ``call`` runs once untimed first (allocations, lazy initialisation). Returns the count and
    the measured seconds per count.
    """
    candidates = tuple(auto_thread_candidates() if candidates is None else candidates)
    if len(candidates) == 1:
        return candidates[0], {}
    with torch_threads(candidates[0]):
        call()
    best: dict[int, float] = {}
    for _ in range(repeats):
        for n in candidates:
            with torch_threads(n):
                t0 = time.perf_counter()
                call()
                best[n] = min(best.get(n, float("inf")), time.perf_counter() - t0)
    return min(best, key=best.get), best


def solver_call(denoiser, z0: torch.Tensor, z1: torch.Tensor, config) -> Callable[[], None]:
    """One evaluation like a solver step's: the straight line at the first stage's points, with the
    configured divergence, differentiated twice (``z0``, ``z1``: endpoint vectors ``(D + 1,)``)."""
    from spacetime_md.core.geometry import expectation_params

    n_points = config.n_points[0]
    w = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)[:, None]
    line = ((1 - w) * z0 + w * z1).detach()
    method = config.divergence_for(z0.shape[0] - 1)

    def call() -> None:
        z = line.clone().requires_grad_(True)
        mu = expectation_params(denoiser, z[:, 0], z[:, 1:], divergence=method, n_probes=config.n_probes,
                                create_graph=True, chunk_size=config.chunk_size)
        (mu[0].sum() + mu[1].sum()).backward()

    return call


def resolve_num_threads(num_threads, denoiser, z0: torch.Tensor, z1: torch.Tensor, config) -> int | None:
    """``num_threads`` itself, or for ``"auto"`` the count :func:`choose_num_threads` measures."""
    if num_threads != "auto":
        return num_threads
    return choose_num_threads(solver_call(denoiser, z0, z1, config))[0]
