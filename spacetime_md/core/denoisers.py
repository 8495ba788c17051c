"""The denoiser protocol and adapters from common network parameterisations.

A denoiser is any callable ``denoiser(x, log_snr) -> x0_hat`` with ``x: (B, D)`` noisy VP
points, ``log_snr: (B,)``, returning ``E[x_0 | x_t]`` of shape ``(B, D)`` (DESIGN.md
section 2). Adapters wrap epsilon-, v- and EDM-style networks into this form; the networks
themselves receive the same ``(B, D)`` tensors (adapters for images add ``event_shape`` on
top, in :mod:`spacetime_md.image`).
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from torch import Tensor

from spacetime_md.core.schedule import alpha_sigma, log_snr_to_edm_sigma

__all__ = ["Denoiser", "CountingDenoiser", "from_epsilon", "from_v", "from_edm"]


@runtime_checkable
class Denoiser(Protocol):
    """``E[x_0 | x_t]`` as a function of VP noisy points and ``log_snr``.

    Shapes: ``x (B, D)``, ``log_snr (B,)`` -> ``(B, D)``.
    """

    def __call__(self, x: Tensor, log_snr: Tensor) -> Tensor: ...


class CountingDenoiser:
    """Wrap a denoiser and count the rows it evaluates (``n_evals``) and calls (``n_calls``)."""

    def __init__(self, denoiser: Denoiser):
        if not callable(denoiser):
            raise TypeError(f"denoiser: expected a callable, got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.n_evals = 0
        self.n_calls = 0

    def __call__(self, x: Tensor, log_snr: Tensor) -> Tensor:
        self.n_evals += x.shape[0]
        self.n_calls += 1
        return self.denoiser(x, log_snr)

    def __repr__(self) -> str:
        return f"CountingDenoiser({self.denoiser!r}, n_evals={self.n_evals})"


def _scales(log_snr: Tensor) -> tuple[Tensor, Tensor]:
    alpha, sigma = alpha_sigma(log_snr)
    return alpha.unsqueeze(-1), sigma.unsqueeze(-1)


def from_epsilon(eps_model: Callable[[Tensor, Tensor], Tensor]) -> Denoiser:
    """Denoiser from a VP noise predictor ``eps_model(x, log_snr) ~ E[eps | x_t]``.

    ``x_0 = (x_t - sigma * eps) / alpha``.
    """

    def denoiser(x: Tensor, log_snr: Tensor) -> Tensor:
        alpha, sigma = _scales(log_snr)
        return (x - sigma * eps_model(x, log_snr)) / alpha

    return denoiser


def from_v(v_model: Callable[[Tensor, Tensor], Tensor]) -> Denoiser:
    """Denoiser from a VP velocity predictor, ``v = alpha * eps - sigma * x_0``.

    With ``alpha^2 + sigma^2 = 1``: ``x_0 = alpha * x_t - sigma * v``.
    """

    def denoiser(x: Tensor, log_snr: Tensor) -> Tensor:
        alpha, sigma = _scales(log_snr)
        return alpha * x - sigma * v_model(x, log_snr)

    return denoiser


def from_edm(edm_denoiser: Callable[[Tensor, Tensor], Tensor]) -> Denoiser:
    """Denoiser from an EDM (variance-exploding) denoiser ``D(x_edm, sigma_edm)``.

    The VP point is rescaled to ``x_edm = x / alpha`` and ``sigma_edm = exp(-log_snr / 2)``;
    both predict the same ``x_0``.
    """

    def denoiser(x: Tensor, log_snr: Tensor) -> Tensor:
        alpha, _ = _scales(log_snr)
        return edm_denoiser(x / alpha, log_snr_to_edm_sigma(log_snr))

    return denoiser
