"""The denoiser protocol and adapters from common network parameterisations.

A denoiser is any callable ``denoiser(x, log_snr) -> x0_hat`` with ``x: (B, D)`` noisy VP
points, ``log_snr: (B,)``, returning ``E[x_0 | x_t]`` of shape ``(B, D)`` (DESIGN.md
section 2). Adapters wrap epsilon-, v- and EDM-style networks into this form; the networks
themselves receive the same ``(B, D)`` tensors (adapters for images add ``event_shape`` on
top, in :mod:`spacetime_md.image`).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from spacetime_md.core.schedule import alpha_sigma, log_snr_to_edm_sigma

__all__ = ["Denoiser", "CountingDenoiser", "AutoGuidedDenoiser", "from_epsilon", "from_v", "from_edm"]


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
        self._lock = threading.Lock()  # the counts stay exact when threads share the wrapper

    def __call__(self, x: Tensor, log_snr: Tensor) -> Tensor:
        with self._lock:
            self.n_evals += x.shape[0]
            self.n_calls += 1
        return self.denoiser(x, log_snr)

    def __repr__(self) -> str:
        return f"CountingDenoiser({self.denoiser!r}, n_evals={self.n_evals})"


class AutoGuidedDenoiser(nn.Module):
    r"""Autoguidance: extrapolate a denoiser away from a weaker version of itself.

    ``D_w(x, l) = D(x, l) + (w - 1) (D(x, l) - G(x, l))`` for ``log_snr_min <= l < log_snr_max``
    and ``D(x, l)`` at every other level (Karras et al., "Guiding a diffusion model with a bad
    version of itself", NeurIPS 2024; the limited interval follows Kynkaanniemi et al., 2024).
    ``G`` models the same data worse, e.g. an early snapshot of the same training run: where
    both err the same way (too much mass between modes, the typical under-fitting of a small
    model), the difference points away from the error, so ``w > 1`` sharpens the sample
    distribution towards the data without the loss of diversity of a plain temperature.
    ``w = 1`` is ``D`` itself (``G`` is then never called).

    With ``edge_width = 0`` (hard interval) ``D_w`` is discontinuous in ``log_snr`` at the
    interval's ends: a sampling-time denoiser, not one to differentiate through those levels.
    With ``edge_width > 0`` the guidance is switched on and off smoothly,

        D_w = D + (w - 1) s(l) (D - G),   s(l) = sigmoid((l - l_min) / h) sigmoid((l_max - l) / h),

    ``h = edge_width``, so ``D_w`` is smooth in ``log_snr`` and a geodesic can use it (the
    shipped ``alanine-dipeptide`` model is such a pair, ``h = 0.5``). Guidance then enters the
    spacetime geometry through ``w div D - (w - 1) div G`` as well as the mean.

    Parameters
    ----------
    denoiser, guide : Denoiser
        ``(x (B, D), log_snr (B,)) -> (B, D)``, the same data dimension and units.
    weight : float
        Guidance weight ``w`` (finite, ``>= 0``; ``0`` returns the guide).
    log_snr_min, log_snr_max : float
        Levels where guidance applies (default: all); with a hard interval, rows outside only
        evaluate ``D``.
    edge_width : float
        ``h`` above (finite, ``>= 0``; default 0, the hard interval). Rows where ``s(l) <
        1e-9`` skip the guide.

    Attributes not defined here (``dim``, ``length_scale_nm``, ``metadata``, ...) are looked up
    on ``denoiser``, so the wrapper stands in for the model it guides.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        guide: Denoiser,
        weight: float = 2.0,
        log_snr_min: float = -math.inf,
        log_snr_max: float = math.inf,
        edge_width: float = 0.0,
    ):
        super().__init__()
        for name, fn in (("denoiser", denoiser), ("guide", guide)):
            if not callable(fn):
                raise TypeError(f"{name}: expected a callable denoiser, got {type(fn).__name__}")
        weight = float(weight)
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight: expected a finite number >= 0, got {weight}")
        if math.isnan(log_snr_min) or math.isnan(log_snr_max) or not log_snr_min < log_snr_max:
            raise ValueError(
                f"log_snr_min, log_snr_max: expected log_snr_min < log_snr_max, got {log_snr_min}, {log_snr_max}"
            )
        self.denoiser = denoiser
        self.guide = guide
        self.weight = weight
        self.log_snr_min = float(log_snr_min)
        self.log_snr_max = float(log_snr_max)
        edge_width = float(edge_width)
        if not (math.isfinite(edge_width) and edge_width >= 0.0):
            raise ValueError(f"edge_width: expected a finite number >= 0, got {edge_width}")
        self.edge_width = edge_width

    @property
    def smooth(self) -> bool:
        """Whether ``D_w`` is smooth in ``log_snr`` (usable in a geodesic): ``w = 1``, no finite
        interval end, or ``edge_width > 0``."""
        return (self.weight == 1.0 or self.edge_width > 0.0
                or (math.isinf(self.log_snr_min) and math.isinf(self.log_snr_max)))

    def guidance_settings(self) -> dict[str, float]:
        """``weight``, ``log_snr_min``, ``log_snr_max`` and ``edge_width`` (plain floats)."""
        return {"weight": self.weight, "log_snr_min": self.log_snr_min, "log_snr_max": self.log_snr_max,
                "edge_width": self.edge_width}

    def profile(self, log_snr: Tensor) -> Tensor:
        """``s(l)``: the share of the guidance applied at each level, ``(B,)`` in [0, 1]."""
        if self.edge_width == 0.0:
            return ((log_snr >= self.log_snr_min) & (log_snr < self.log_snr_max)).to(log_snr.dtype)
        h = self.edge_width
        return torch.sigmoid((log_snr - self.log_snr_min) / h) * torch.sigmoid((self.log_snr_max - log_snr) / h)

    def forward(self, x: Tensor, log_snr: Tensor) -> Tensor:
        denoised = self.denoiser(x, log_snr)
        if self.weight == 1.0:
            return denoised
        # One path for both profiles: the hard interval's is 0 / 1, so its rows are the interval's.
        share = self.profile(log_snr)
        rows = (share >= 1e-9).nonzero().squeeze(-1)
        if rows.numel() == 0:
            return denoised
        scale = ((self.weight - 1.0) * share[rows]).unsqueeze(-1).to(denoised.dtype)
        if rows.numel() == log_snr.shape[0]:
            return denoised + scale * (denoised - self.guide(x, log_snr))
        correction = scale * (denoised[rows] - self.guide(x[rows], log_snr[rows]))
        return denoised.index_add(0, rows, correction)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("denoiser")
            if inner is None:
                inner = self.__dict__.get("denoiser")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    def extra_repr(self) -> str:
        edge = f", edge_width={self.edge_width}" if self.edge_width else ""
        return f"weight={self.weight}, log_snr=[{self.log_snr_min}, {self.log_snr_max}){edge}"


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
