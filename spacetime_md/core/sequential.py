"""Several geodesic problems solved one after the other (the honest mode of ``optimize_geodesics``)."""

from __future__ import annotations

import dataclasses
import time

import torch

from spacetime_md.core.curves import SpacetimePoint
from spacetime_md.core.geodesic import optimize_geodesic

__all__ = ["solve_one_by_one"]


def solve_one_by_one(denoiser, z0, z1, config, per_pair, seeds, setup_seeds, curves, callback, t_start):
    """Honest mode (``resample_every > 0``): each pair by :func:`optimize_geodesic`, in turn.

    Its fresh probe draws, held-out stopping test and best-curve bookkeeping are per pair and
    not implemented in the asynchronous batched L-BFGS; on a CPU, where a denoiser call costs
    in proportion to its rows, batching only saved the per-call overhead anyway.
    """
    results = []
    for k in range(z0.shape[0]):
        devices = [z0.device] if z0.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if setup_seeds is not None:
                torch.manual_seed(setup_seeds[k])
            pair_callback = None if callback is None else (lambda info, k=k: callback({"pair": k, **info}))
            try:
                results.append(optimize_geodesic(
                    denoiser, SpacetimePoint(z0[k, 0], z0[k, 1:]), SpacetimePoint(z1[k, 0], z1[k, 1:]),
                    dataclasses.replace(config, seed=seeds[k], num_threads=None), per_pair[k], curve=curves[k],
                    callback=pair_callback))
            except ValueError as exc:
                raise ValueError(f"pair {k}: {exc}") from None
    wall_time = time.perf_counter() - t_start
    for result in results:
        result.wall_time = wall_time
        result.config = config
    return results
