"""Diffusion Edit Distance (Eq. 17): geodesic length between two anchored data points."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_tensor
from spacetime_md.core.curves import SpacetimePoint
from spacetime_md.core.denoisers import Denoiser
from spacetime_md.core.geodesic import GeodesicConfig, GeodesicResult, optimize_geodesic
from spacetime_md.core.schedule import alpha_sigma, edm_sigma_to_log_snr

__all__ = ["diffusion_edit_distance"]


def diffusion_edit_distance(
    denoiser: Denoiser,
    x_a: Tensor,
    x_b: Tensor,
    t_min: float = 0.1,
    config: GeodesicConfig | None = None,
    *,
    return_result: bool = False,
) -> float | tuple[float, GeodesicResult]:
    """Diffusion Edit Distance between two clean data points (Eq. 17).

    Both points are anchored at the small noise level ``t_min`` (an EDM sigma,
    ``log_snr = -2 log t_min``; never ``t = 0``, where the posteriors are Dirac deltas) as the
    VP spacetime points ``(log_snr, alpha * x)``; the distance is the length of the spacetime
    geodesic between them.

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
    x_a, x_b : Tensor, shape=(D,)
        Clean data points (flattened).
    t_min : float
        Anchor noise level (EDM sigma, > 0).
    config : GeodesicConfig, optional
    return_result : bool
        Also return the :class:`GeodesicResult`.

    Returns
    -------
    distance : float
    """
    x_a = check_tensor("x_a", x_a, (None,))
    x_b = check_tensor("x_b", x_b, (x_a.shape[0],))
    check_positive("t_min", t_min)
    log_snr = float(edm_sigma_to_log_snr(t_min))
    alpha, _ = alpha_sigma(log_snr)
    if torch.equal(x_a, x_b):
        result = None
        distance = 0.0
    else:
        result = optimize_geodesic(
            denoiser,
            SpacetimePoint(log_snr, float(alpha) * x_a),
            SpacetimePoint(log_snr, float(alpha) * x_b.to(x_a.dtype)),
            config,
        )
        distance = result.length
    if not math.isfinite(distance):
        raise FloatingPointError(f"diffusion edit distance is not finite ({distance})")
    return (distance, result) if return_result else distance
