"""Smooth spacetime curves with fixed endpoints (DESIGN.md section 4).

A spacetime point is ``(log_snr, x)``; a curve stores it as one vector
``z = (log_snr, x_1, ..., x_D)`` of size ``C = D + 1``. :class:`SplineCurve` is a natural
cubic spline through ``n_nodes + 2`` equally spaced knots in ``s in [0, 1]``: the first and
last knot values are the fixed endpoints, the ``n_nodes`` interior values are the free
parameters (initialised on the straight line). The spline is linear in its knot values, so
evaluation at any ``s`` is one matrix product ``W(s) @ knots`` — vectorised over points.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from spacetime_md.core._validation import check_same_dtype_device, check_tensor

__all__ = ["SpacetimePoint", "SplineCurve", "spline_basis", "straight_line"]


class SpacetimePoint(NamedTuple):
    """A point ``(log_snr, x)`` of spacetime; ``x`` has shape ``(D,)``."""

    log_snr: float
    x: Tensor


def _as_vector(name: str, point: SpacetimePoint | tuple) -> Tensor:
    if not isinstance(point, tuple) or len(point) != 2:
        raise TypeError(f"{name}: expected a SpacetimePoint(log_snr, x), got {type(point).__name__}")
    log_snr, x = point
    x = check_tensor(f"{name}.x", x, (None,))
    log_snr = torch.as_tensor(log_snr, dtype=x.dtype, device=x.device)
    check_tensor(f"{name}.log_snr", log_snr, ())
    return torch.cat([log_snr.reshape(1), x])


def spline_basis(s: Tensor, n_knots: int) -> Tensor:
    """Matrix ``W (T, n_knots)`` with ``spline(s) = W @ knot_values`` (natural cubic spline).

    Knots are equally spaced on ``[0, 1]``; ``s`` outside it is clamped.
    """
    if n_knots < 2:
        raise ValueError(f"n_knots: expected >= 2, got {n_knots}")
    s_np = np.clip(s.detach().cpu().double().numpy(), 0.0, 1.0)
    h = 1.0 / (n_knots - 1)
    # Second derivatives M = C @ y with M_0 = M_last = 0 (natural boundary).
    C = np.zeros((n_knots, n_knots))
    if n_knots > 2:
        m = n_knots - 2
        A = np.zeros((m, m))
        B = np.zeros((m, n_knots))
        for i in range(m):
            A[i, i] = 4.0
            if i > 0:
                A[i, i - 1] = 1.0
            if i < m - 1:
                A[i, i + 1] = 1.0
            B[i, i], B[i, i + 1], B[i, i + 2] = 1.0, -2.0, 1.0
        C[1:-1] = np.linalg.solve(A, B * 6.0 / h**2)
    j = np.minimum((s_np / h).astype(np.int64), n_knots - 2)
    b = (s_np - j * h) / h
    a = 1.0 - b
    eye = np.eye(n_knots)
    W = (
        a[:, None] * eye[j]
        + b[:, None] * eye[j + 1]
        + (h**2 / 6.0) * ((a**3 - a)[:, None] * C[j] + (b**3 - b)[:, None] * C[j + 1])
    )
    return torch.as_tensor(W, dtype=s.dtype, device=s.device)


class SplineCurve(nn.Module):
    """Natural cubic spline curve in spacetime with fixed endpoints.

    Parameters
    ----------
    start, end : SpacetimePoint
        Fixed endpoints ``(log_snr, x (D,))``; dtype and device are taken from ``start.x``.
    n_nodes : int
        Number of free interior knots (>= 1).

    Attributes
    ----------
    interior : nn.Parameter, shape=(n_nodes, D + 1)
        Free knot values ``(log_snr, x)``.
    """

    def __init__(self, start: SpacetimePoint, end: SpacetimePoint, n_nodes: int = 10):
        super().__init__()
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 1:
            raise ValueError(f"n_nodes: expected an integer >= 1, got {n_nodes!r}")
        z0, z1 = _as_vector("start", start), _as_vector("end", end)
        if z0.shape != z1.shape:
            raise ValueError(
                f"end.x: expected shape ({z0.shape[0] - 1},) like start.x, got ({z1.shape[0] - 1},)"
            )
        check_same_dtype_device(start=z0, end=z1)
        self.register_buffer("start", z0)
        self.register_buffer("end", z1)
        w = torch.linspace(0, 1, n_nodes + 2, dtype=z0.dtype, device=z0.device)[1:-1, None]
        self.interior = nn.Parameter((1 - w) * z0 + w * z1)
        self._basis_cache: dict[tuple, Tensor] = {}

    @property
    def n_nodes(self) -> int:
        return self.interior.shape[0]

    @property
    def dim(self) -> int:
        """Data dimension ``D`` (the curve lives in ``D + 1`` dimensions)."""
        return self.interior.shape[1] - 1

    def knots(self) -> Tensor:
        """All knot values ``(n_nodes + 2, D + 1)``, endpoints included."""
        return torch.cat([self.start[None], self.interior, self.end[None]])

    def basis(self, s: Tensor) -> Tensor:
        key = (s.shape[0], float(s[0]), float(s[-1]), s.dtype, s.device) if s.numel() else None
        uniform = key is not None and s.numel() > 1 and bool(
            torch.allclose(s, torch.linspace(key[1], key[2], key[0], dtype=s.dtype, device=s.device))
        )
        if uniform and key in self._basis_cache:
            return self._basis_cache[key]
        W = spline_basis(s, self.n_nodes + 2)
        if uniform:
            self._basis_cache[key] = W
        return W

    def forward(self, s: Tensor) -> Tensor:
        """Curve points ``(T, D + 1)`` at parameters ``s (T,)``."""
        s = check_tensor("s", s, (None,))
        return self.basis(s.to(self.interior.dtype)) @ self.knots()

    def evaluate(self, s: Tensor | int) -> tuple[Tensor, Tensor]:
        """``(log_snr (T,), x (T, D))`` at ``s (T,)``, or at ``T`` equally spaced points if int."""
        if isinstance(s, int) and not isinstance(s, bool):
            if s < 2:
                raise ValueError(f"s: expected at least 2 points, got {s}")
            s = torch.linspace(0, 1, s, dtype=self.interior.dtype, device=self.interior.device)
        z = self(s)
        return z[:, 0], z[:, 1:]

    def refine(self, n_nodes: int) -> "SplineCurve":
        """A new curve with ``n_nodes`` interior knots placed on this curve."""
        new = SplineCurve(
            SpacetimePoint(self.start[0], self.start[1:]),
            SpacetimePoint(self.end[0], self.end[1:]),
            n_nodes,
        )
        s = torch.linspace(0, 1, n_nodes + 2, dtype=self.interior.dtype, device=self.interior.device)
        with torch.no_grad():
            new.interior.copy_(self(s)[1:-1])
        return new

    def extra_repr(self) -> str:
        return f"n_nodes={self.n_nodes}, dim={self.dim}"


def straight_line(start: SpacetimePoint, end: SpacetimePoint, n_points: int) -> tuple[Tensor, Tensor]:
    """The straight spacetime segment between two points: ``(log_snr (T,), x (T, D))``."""
    z0, z1 = _as_vector("start", start), _as_vector("end", end)
    if z0.shape != z1.shape:
        raise ValueError(
            f"end.x: expected shape ({z0.shape[0] - 1},) like start.x, got ({z1.shape[0] - 1},)"
        )
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"n_points: expected an integer >= 2, got {n_points!r}")
    w = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)[:, None]
    z = (1 - w) * z0 + w * z1
    return z[:, 0], z[:, 1:]
