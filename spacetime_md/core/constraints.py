"""Soft constraints of the geodesic solver (DESIGN.md section 4, Sec. 6.4, Eq. 21).

A constraint is any object with ``weight`` and ``penalty(state) -> Tensor`` (optionally
``setup(denoiser, start, end, config)``); :func:`~spacetime_md.core.optimize_geodesic` adds
``ramp * weight * penalty`` to the curve energy, the ramp rising from 0 after a warm-up.
:class:`CurveState` is what a penalty sees at one evaluation of the objective.

Shapes: T curve points, D data dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_tensor
from spacetime_md.core.denoisers import Denoiser
from spacetime_md.core.geometry import bridge_points, expectation_params, kl_increments, natural_params

if TYPE_CHECKING:
    from spacetime_md.core.geodesic import GeodesicConfig

__all__ = ["CurveState", "Constraint", "LowVariance", "AvoidRegion", "Penalty"]


@dataclass
class CurveState:
    """What a constraint sees at one evaluation of the objective.

    ``log_snr (T,)``, ``x (T, D)``, natural and expectation parameters as pairs
    ``((T, D), (T,))``; all carry gradients w.r.t. the curve parameters.
    """

    s: Tensor
    log_snr: Tensor
    x: Tensor
    eta: tuple[Tensor, Tensor]
    mu: tuple[Tensor, Tensor]
    denoiser: Denoiser
    step: int


@runtime_checkable
class Constraint(Protocol):
    """A soft constraint: ``weight * penalty(state)`` is added to the curve energy."""

    weight: float

    def penalty(self, state: CurveState) -> Tensor: ...


@dataclass
class LowVariance:
    """Keep ``log_snr >= min_log_snr`` along the curve (Sec. 6.4): hinge-squared penalty.

    ``penalty = sum_n relu(min_log_snr - log_snr_n)^2 / T``.
    """

    min_log_snr: float
    weight: float = 100.0

    def __post_init__(self):
        if not math.isfinite(self.min_log_snr):
            raise ValueError(f"min_log_snr: expected a finite number, got {self.min_log_snr}")
        check_positive("weight", self.weight, allow_zero=True)

    def setup(self, denoiser, start: Tensor, end: Tensor, config: GeodesicConfig) -> None:
        for name, z in (("start", start), ("end", end)):
            if float(z[0]) < self.min_log_snr:
                raise ValueError(
                    f"LowVariance: expected the {name} point's log_snr >= min_log_snr "
                    f"{self.min_log_snr}, got {float(z[0]):.4g}"
                )

    def penalty(self, state: CurveState) -> Tensor:
        return (self.min_log_snr - state.log_snr).clamp_min(0).square().mean()


class AvoidRegion:
    """Keep ``KL(p(.|z*) || p(.|gamma_s)) >= min_kl`` for a forbidden point ``z*`` (Eq. 21).

    The KL is absolute (integrated from ``z*``, see :func:`~spacetime_md.core.kl_along_curve`).
    Combine with :class:`LowVariance`, otherwise the KL is raised trivially by adding noise.

    Parameters
    ----------
    log_snr : float
        Time coordinate of ``z*``.
    x : Tensor, shape=(D,)
        Space coordinate of ``z*`` (same scaling as the curve).
    min_kl : float
        Threshold.
    weight : float
        Penalty weight; ``penalty = mean_n relu(min_kl - KL_n)^2``.
    n_bridge : int
        Points of the segment from ``z*`` to the curve start used to anchor the KL.
    """

    def __init__(self, log_snr: float, x: Tensor, min_kl: float, weight: float = 10.0, n_bridge: int = 33):
        if isinstance(log_snr, Tensor):
            log_snr = float(log_snr)
        if not isinstance(log_snr, (int, float)) or not math.isfinite(log_snr):
            raise ValueError(f"log_snr: expected a finite number, got {log_snr!r}")
        self.log_snr = float(log_snr)
        self.x = check_tensor("x", x, (None,))
        self.min_kl = float(check_positive("min_kl", min_kl))
        self.weight = float(check_positive("weight", weight, allow_zero=True))
        if n_bridge < 2:
            raise ValueError(f"n_bridge: expected an integer >= 2, got {n_bridge}")
        self.n_bridge = n_bridge
        self._start_kl: Tensor | None = None
        self._mu_ref: tuple[Tensor, Tensor] | None = None
        self._div_kwargs: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"AvoidRegion(log_snr={self.log_snr}, min_kl={self.min_kl}, weight={self.weight})"

    def setup(self, denoiser, start: Tensor, end: Tensor, config: GeodesicConfig) -> None:
        if self.x.shape[0] != start.shape[0] - 1:
            raise ValueError(
                f"AvoidRegion.x: expected shape ({start.shape[0] - 1},), got {tuple(self.x.shape)}"
            )
        ref_x = self.x.to(dtype=start.dtype, device=start.device)
        method = config.divergence_for(ref_x.shape[0])
        # The anchor is computed once; use more probes than the optimiser for a quiet value.
        self._div_kwargs = {"divergence": method, "n_probes": 16 * config.n_probes}
        ref_l = torch.tensor(self.log_snr, dtype=start.dtype, device=start.device)
        kls = []
        with torch.no_grad():
            for z in (start, end):
                b_l, b_x = bridge_points(ref_l, ref_x, z[0], z[1:], self.n_bridge)
                eta = natural_params(b_l, b_x)
                mu = expectation_params(denoiser, b_l, b_x, create_graph=False, **self._div_kwargs)
                mu_ref = (mu[0][0], mu[1][0])
                kls.append(kl_increments(eta, mu, mu_ref).sum())
                if self._mu_ref is None:
                    self._mu_ref = mu_ref
        self._start_kl = kls[0]
        for name, kl in zip(("start", "end"), kls):
            if float(kl) < self.min_kl:
                raise ValueError(
                    f"AvoidRegion: the forbidden region contains the {name} point: expected "
                    f"KL >= min_kl {self.min_kl:.4g}, got {float(kl):.4g}"
                )

    def kl(self, state: CurveState) -> Tensor:
        """Absolute KL from ``z*`` at every curve point, shape ``(T,)``."""
        if self._start_kl is None:
            raise RuntimeError("AvoidRegion.setup() must run before kl(); optimize_geodesic calls it")
        inc = kl_increments(state.eta, state.mu, self._mu_ref)
        return torch.cat([self._start_kl.reshape(1), self._start_kl + inc.cumsum(0)])

    def penalty(self, state: CurveState) -> Tensor:
        return (self.min_kl - self.kl(state)).clamp_min(0).square().mean()


@dataclass
class Penalty:
    """Generic penalty hook: ``weight * fn(state)`` with ``fn(CurveState) -> scalar Tensor``."""

    fn: Callable[[CurveState], Tensor]
    weight: float = 1.0

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn: expected a callable, got {type(self.fn).__name__}")
        check_positive("weight", self.weight, allow_zero=True)

    def penalty(self, state: CurveState) -> Tensor:
        return self.fn(state)
