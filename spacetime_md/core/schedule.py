"""Noise schedules in ``log_snr`` (DESIGN.md section 2).

Variance preserving (VP): ``alpha^2 = sigmoid(lambda)``, ``sigma^2 = sigmoid(-lambda)`` with
``lambda = log_snr = log(alpha^2 / sigma^2)``; the forward kernel is
``x_t = alpha * x_0 + sigma * eps``.

Variance exploding (EDM): ``x_edm = x_0 + sigma_edm * eps``. The two are related by
``x_vp = alpha * x_edm`` and ``sigma_edm = sigma / alpha = exp(-lambda / 2)``. This module is
the only place that converts; everything else speaks ``log_snr``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "alpha_sigma",
    "snr",
    "log_snr_to_edm_sigma",
    "edm_sigma_to_log_snr",
    "vp_to_edm",
    "edm_to_vp",
]


def _as_tensor(log_snr: Tensor | float) -> Tensor:
    if isinstance(log_snr, Tensor):
        return log_snr
    if isinstance(log_snr, bool) or not isinstance(log_snr, (int, float)):
        raise TypeError(f"log_snr: expected a tensor or a float, got {type(log_snr).__name__}")
    return torch.tensor(float(log_snr), dtype=torch.get_default_dtype())


def alpha_sigma(log_snr: Tensor | float) -> tuple[Tensor, Tensor]:
    """VP signal and noise scales ``(alpha, sigma)`` for ``log_snr``.

    Computed as ``sqrt(sigmoid(+-lambda))`` so that both stay accurate at large ``|lambda|``.

    Parameters
    ----------
    log_snr : Tensor, any shape, or float

    Returns
    -------
    alpha, sigma : Tensor, same shape as ``log_snr``
    """
    lam = _as_tensor(log_snr)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def snr(log_snr: Tensor | float) -> Tensor:
    """Signal-to-noise ratio ``alpha^2 / sigma^2 = exp(log_snr)``."""
    return _as_tensor(log_snr).exp()


def log_snr_to_edm_sigma(log_snr: Tensor | float) -> Tensor:
    """EDM noise level ``sigma_edm = sigma / alpha = exp(-log_snr / 2)``."""
    return (-0.5 * _as_tensor(log_snr)).exp()


def edm_sigma_to_log_snr(sigma: Tensor | float) -> Tensor:
    """Inverse of :func:`log_snr_to_edm_sigma`: ``log_snr = -2 log(sigma_edm)``."""
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        if not sigma > 0 or math.isinf(sigma):
            raise ValueError(f"sigma: expected a finite number > 0, got {sigma}")
    s = _as_tensor(sigma)
    if bool((s <= 0).any()):
        raise ValueError(f"sigma: expected values > 0, got minimum {float(s.min())}")
    return -2.0 * s.log()


def vp_to_edm(x_vp: Tensor, log_snr: Tensor) -> Tensor:
    """Rescale VP noisy points ``(B, D)`` at ``log_snr (B,)`` to EDM scaling: ``x / alpha``."""
    alpha, _ = alpha_sigma(log_snr)
    return x_vp / alpha.unsqueeze(-1)


def edm_to_vp(x_edm: Tensor, log_snr: Tensor) -> Tensor:
    """Rescale EDM noisy points ``(B, D)`` to VP scaling: ``alpha * x``."""
    alpha, _ = alpha_sigma(log_snr)
    return x_edm * alpha.unsqueeze(-1)
