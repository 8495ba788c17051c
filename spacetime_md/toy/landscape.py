"""Differentiable periodic 2-D landscapes from values on a regular grid (torch only).

A :class:`PeriodicGridPotential` turns a grid of reduced energies (units of kT) on a torus,
e.g. the (phi, psi) free-energy surface of alanine dipeptide, into

- a smooth potential: the periodic cubic B-spline that interpolates the grid values
  (C2, wraps in both coordinates), differentiable by autograd (:meth:`~PeriodicGridPotential.__call__`)
  or with an analytic gradient (:meth:`~PeriodicGridPotential.energy_and_grad`);
- grid lookups for metrics: nearest grid point and bilinear (:meth:`~PeriodicGridPotential.lookup`);
- the minimax (bottleneck) barrier between two points over grid paths
  (:meth:`~PeriodicGridPotential.minimax_barrier`);
- Boltzmann samples by Langevin dynamics, vectorised over chains, with every potential
  evaluation counted (:func:`sample_langevin`, :func:`sample_boltzmann`).

Conventions: points are ``x: (B, 2)`` with ``x[:, 0]`` the first coordinate (phi) and
``x[:, 1]`` the second (psi). ``values[j, i]`` is the energy at
``(lower[0] + i * h[0], lower[1] + j * h[1])`` with ``h = period / n`` — the first coordinate
varies along the last axis, as in a file whose first column varies fastest. The grid has no
repeated last line (it is periodic). Energies are dimensionless (reduced, ``U / kT``).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_same_dtype_device, check_tensor
from spacetime_md.core.samplers import AnnealedLangevinResult, check_method, mala_step
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.errors import NonFiniteError

__all__ = [
    "PeriodicGridPotential",
    "MinimaxResult",
    "LangevinSamples",
    "sample_langevin",
    "sample_boltzmann",
    "sample_annealed_langevin_grid",
    "alanine_dipeptide_fes",
    "ALANINE_FES_FILE",
]

logger = logging.getLogger(__name__)

#: File name of the packaged alanine dipeptide (phi, psi) free-energy grid (89 x 89, kT).
ALANINE_FES_FILE = "alanine_dipeptide_phi_psi_fes.dat"


#: Uniform cubic B-spline basis: the weights of knots ``i-1, i, i+1, i+2`` at ``t in [0, 1)``
#: are ``[1, t, t^2, t^3] @ _BSPLINE_MATRIX``.
_BSPLINE_MATRIX = np.array(
    [[1.0, 4.0, 1.0, 0.0], [-3.0, 0.0, 3.0, 0.0], [3.0, -6.0, 3.0, 0.0], [-1.0, 3.0, -3.0, 1.0]]
) / 6.0


def _cell_polynomials(coeffs: np.ndarray) -> np.ndarray:
    """Bicubic polynomial of every grid cell, shape ``(n_1 * n_0, 16)``.

    ``U = sum_{a,b} P[cell, 4 a + b] t_0^a t_1^b`` with ``t`` the position inside the cell in
    grid units; ``cell = j * n_0 + i`` for the cell whose lower corner is grid point ``(i, j)``.
    """
    n1, n0 = coeffs.shape
    offsets = np.arange(-1, 3)
    i = (np.arange(n0)[:, None] + offsets) % n0  # (n0, 4)
    j = (np.arange(n1)[:, None] + offsets) % n1  # (n1, 4)
    local = coeffs[j[:, None, :, None], i[None, :, None, :]]  # (n1, n0, 4 [j], 4 [i])
    # P[a, b] = sum_{k, l} M[a, k] C[l (j), k (i)] M[b, l]
    poly = np.einsum("ak,yxlk,bl->yxab", _BSPLINE_MATRIX, local, _BSPLINE_MATRIX)
    return poly.reshape(n1 * n0, 16)


def _periodic_bspline_coefficients(values: np.ndarray) -> np.ndarray:
    """Coefficients ``c`` of the periodic cubic B-spline interpolating ``values`` (2-D, FFT solve).

    On a periodic grid the interpolation condition ``(c[i-1] + 4 c[i] + c[i+1]) / 6 = f[i]``
    (in each axis) is a circulant system, diagonal in Fourier space.
    """
    n1, n0 = values.shape
    m0 = (4.0 + 2.0 * np.cos(2.0 * np.pi * np.arange(n0) / n0)) / 6.0
    m1 = (4.0 + 2.0 * np.cos(2.0 * np.pi * np.arange(n1) / n1)) / 6.0
    spectrum = np.fft.fft2(values) / (m1[:, None] * m0[None, :])
    return np.real(np.fft.ifft2(spectrum))


@dataclass
class MinimaxResult:
    """Minimax (bottleneck) path between two grid points.

    Attributes
    ----------
    barrier : float
        The smallest possible maximum energy over grid paths from start to end.
    path : ndarray, shape=(L, 2)
        Coordinates of one such path (fewest grid steps among the minimax paths), wrapped.
    path_indices : ndarray of int, shape=(L, 2)
        Grid indices ``(i, j)`` of the path (``i`` along the first coordinate).
    connectivity : int
        4 or 8 neighbours per grid point.
    """

    barrier: float
    path: np.ndarray
    path_indices: np.ndarray
    connectivity: int


class PeriodicGridPotential:
    """A smooth periodic potential on a 2-D torus, interpolated from grid values.

    Parameters
    ----------
    values : Tensor or ndarray, shape=(n_1, n_0)
        Reduced energies (kT); ``values[j, i]`` is at ``(lower[0] + i h_0, lower[1] + j h_1)``.
    lower : tuple of float
        Coordinates of ``values[0, 0]``; default ``(-pi, -pi)``.
    period : tuple of float
        Periods of the two coordinates; default ``(2 pi, 2 pi)``. Grid spacing ``period / n``.
    dtype : torch.dtype
        Dtype of the stored grid and spline coefficients (inputs of other dtypes are served
        from a cached cast).

    Examples
    --------
    >>> pot = PeriodicGridPotential.from_file("alanine_dipeptide_phi_psi_fes.dat")  # doctest: +SKIP
    >>> x = torch.tensor([[-2.55, 2.7]], dtype=torch.float64, requires_grad=True)
    >>> pot(x).backward()                                                           # doctest: +SKIP
    """

    def __init__(
        self,
        values: Tensor | np.ndarray,
        *,
        lower: tuple[float, float] = (-math.pi, -math.pi),
        period: tuple[float, float] = (2 * math.pi, 2 * math.pi),
        dtype: torch.dtype = torch.float64,
    ):
        if isinstance(values, np.ndarray):
            values = torch.from_numpy(np.ascontiguousarray(values))
        values = check_tensor("values", values, (None, None)).to(dtype)
        if values.shape[0] < 4 or values.shape[1] < 4:
            raise ValueError(f"values: expected a grid of at least 4 x 4 points, got {tuple(values.shape)}")
        if len(lower) != 2 or len(period) != 2:
            raise ValueError(f"lower and period: expected two numbers each, got {lower!r} and {period!r}")
        for p in period:
            check_positive("period", float(p))
        self.values = values
        self.lower = (float(lower[0]), float(lower[1]))
        self.period = (float(period[0]), float(period[1]))
        self.shape = (values.shape[1], values.shape[0])  # (n_0, n_1): points per coordinate
        self.spacing = (self.period[0] / self.shape[0], self.period[1] / self.shape[1])
        coeffs = _periodic_bspline_coefficients(values.double().numpy())
        self._poly = {(torch.float64, "cpu"): torch.from_numpy(_cell_polynomials(coeffs))}
        self._values_by_dtype = {(values.dtype, str(values.device)): values.reshape(-1)}
        self._fast: dict = {}
        self.n_evals = 0

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, *, dtype: torch.dtype = torch.float64) -> "PeriodicGridPotential":
        """Read a text grid of rows ``x0 x1 energy`` (``#`` comments), first column fastest.

        The grid must be complete and equally spaced without a repeated periodic line; the
        period is ``n * spacing`` in each coordinate.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"landscape file: expected an existing file, got {str(path)!r}")
        data = np.loadtxt(path, comments="#", ndmin=2)
        if data.shape[1] != 3:
            raise ValueError(f"{path.name}: expected 3 columns (x0 x1 energy), got {data.shape[1]}")
        if not np.isfinite(data).all():
            raise ValueError(f"{path.name}: expected finite numbers, got {int((~np.isfinite(data)).sum())} NaN/inf entries")
        n_rows = data.shape[0]
        axis0 = np.unique(data[:, 0])
        axis1 = np.unique(data[:, 1])
        n0, n1 = axis0.size, axis1.size
        if n0 * n1 != n_rows or n0 < 4 or n1 < 4:
            raise ValueError(
                f"{path.name}: expected a complete grid of at least 4 x 4 points, got {n_rows} rows "
                f"with {n0} x {n1} distinct coordinates"
            )
        grid0 = data[:, 0].reshape(n1, n0)
        grid1 = data[:, 1].reshape(n1, n0)
        if not (np.allclose(grid0, axis0[None, :]) and np.allclose(grid1, axis1[:, None])):
            raise ValueError(f"{path.name}: expected rows ordered with the first column varying fastest, got another order")
        spacings = []
        for name, axis in (("first", axis0), ("second", axis1)):
            step = np.diff(axis)
            if not np.allclose(step, step.mean(), rtol=1e-6, atol=1e-9):
                raise ValueError(
                    f"{path.name}: expected equally spaced {name}-column values, got spacings from "
                    f"{step.min():.6g} to {step.max():.6g}"
                )
            spacings.append(float(step.mean()))
        values = data[:, 2].reshape(n1, n0)
        return cls(
            values,
            lower=(float(axis0[0]), float(axis1[0])),
            period=(spacings[0] * n0, spacings[1] * n1),
            dtype=dtype,
        )

    def __repr__(self) -> str:
        return (
            f"PeriodicGridPotential(shape={self.shape}, lower={self.lower}, period={self.period}, "
            f"range=[{float(self.values.min()):.4g}, {float(self.values.max()):.4g}])"
        )

    # -- coordinates ----------------------------------------------------------------------

    def wrap(self, x: Tensor) -> Tensor:
        """Map points ``(..., 2)`` into the fundamental cell ``[lower, lower + period)``."""
        lower = x.new_tensor(self.lower)
        period = x.new_tensor(self.period)
        return lower + torch.remainder(x - lower, period)

    def grid_points(self) -> Tensor:
        """Coordinates of all grid points, shape ``(n_1, n_0, 2)`` (matching ``values``)."""
        c0 = self.lower[0] + self.spacing[0] * torch.arange(self.shape[0], dtype=self.values.dtype)
        c1 = self.lower[1] + self.spacing[1] * torch.arange(self.shape[1], dtype=self.values.dtype)
        g1, g0 = torch.meshgrid(c1, c0, indexing="ij")
        return torch.stack([g0, g1], dim=-1)

    def nearest_index(self, x: Tensor) -> Tensor:
        """Grid indices ``(i, j)`` of the nearest grid point (periodic), ``(..., 2)`` long."""
        u = self._grid_units(x)
        i = torch.remainder(torch.round(u[..., 0]).long(), self.shape[0])
        j = torch.remainder(torch.round(u[..., 1]).long(), self.shape[1])
        return torch.stack([i, j], dim=-1)

    def _grid_units(self, x: Tensor) -> Tensor:
        lower = x.new_tensor(self.lower)
        spacing = x.new_tensor(self.spacing)
        return (x - lower) / spacing

    def _table(self, store: dict, dtype: torch.dtype, device) -> Tensor:
        key = (dtype, str(device))
        if key not in store:
            base = next(iter(store.values()))
            store[key] = base.to(dtype=dtype, device=device)
        return store[key]

    def _check_x(self, x: object) -> Tensor:
        return check_tensor("x", x, (None, 2))

    # -- the smooth potential ---------------------------------------------------------------

    def _cell_setup(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cell polynomials ``(B, 4, 4)`` and positions ``t_0, t_1`` ``(B,)`` in the cells."""
        u = self._grid_units(x)
        base = torch.floor(u.detach())
        t = u - base  # gradients flow through t
        base = base.long()
        cell = torch.remainder(base[:, 1], self.shape[1]) * self.shape[0] + torch.remainder(base[:, 0], self.shape[0])
        poly = self._table(self._poly, x.dtype, x.device)[cell].view(-1, 4, 4)
        return poly, t[:, 0], t[:, 1]

    def __call__(self, x: Tensor) -> Tensor:
        """Reduced energy ``U(x)`` (kT) of the interpolating periodic cubic B-spline.

        Differentiable by autograd (any order). ``x: (B, 2) -> (B,)``; each call adds ``B``
        to :attr:`n_evals`.
        """
        x = self._check_x(x)
        self.n_evals += x.shape[0]
        poly, t0, t1 = self._cell_setup(x)
        ones = torch.ones_like(t0)
        m0 = torch.stack([ones, t0, t0 * t0, t0 * t0 * t0], -1)
        m1 = torch.stack([ones, t1, t1 * t1, t1 * t1 * t1], -1)
        return (torch.bmm(poly, m1.unsqueeze(-1)).squeeze(-1) * m0).sum(-1)

    reduced_potential = __call__

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Energy ``(B,)`` and analytic gradient ``(B, 2)`` without autograd (faster).

        Each call adds ``B`` to :attr:`n_evals`.
        """
        x = self._check_x(x).detach()
        self.n_evals += x.shape[0]
        poly, t0, t1 = self._cell_setup(x)
        ones = torch.ones_like(t0)
        t0_2, t1_2 = t0 * t0, t1 * t1
        m0 = torch.stack([ones, t0, t0_2, t0_2 * t0], -1)
        m1 = torch.stack([ones, t1, t1_2, t1_2 * t1], -1)
        dm0 = torch.stack([torch.zeros_like(t0), ones, 2 * t0, 3 * t0_2], -1)
        dm1 = torch.stack([torch.zeros_like(t1), ones, 2 * t1, 3 * t1_2], -1)
        p_m1 = torch.bmm(poly, m1.unsqueeze(-1)).squeeze(-1)  # (B, 4): sum over t1 powers
        m0_p = torch.bmm(m0.unsqueeze(1), poly).squeeze(1)  # (B, 4): sum over t0 powers
        energy = (p_m1 * m0).sum(-1)
        g0 = (p_m1 * dm0).sum(-1) / self.spacing[0]
        g1 = (m0_p * dm1).sum(-1) / self.spacing[1]
        return energy, torch.stack([g0, g1], dim=-1)

    def _fast_constants(self, dtype: torch.dtype, device) -> tuple:
        key = (dtype, str(device))
        if key not in self._fast:
            poly = self._table(self._poly, torch.float64, "cpu").view(-1, 4, 4)
            scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
            d0 = torch.zeros_like(poly)
            d0[:, :3, :] = poly[:, 1:, :] * scale[None, :, None] / self.spacing[0]
            d1 = torch.zeros_like(poly)
            d1[:, :, :3] = poly[:, :, 1:] * scale[None, None, :] / self.spacing[1]
            grads = torch.stack([d0.reshape(-1, 16), d1.reshape(-1, 16)], dim=1)  # (cells, 2, 16)
            lower = torch.tensor(self.lower, dtype=dtype, device=device)
            inv_h = 1.0 / torch.tensor(self.spacing, dtype=dtype, device=device)
            self._fast[key] = (
                -lower * inv_h,  # offset: grid units u = x * inv_h + offset
                inv_h,
                torch.tensor(self.shape, dtype=dtype, device=device),
                torch.tensor([1.0, float(self.shape[0])], dtype=dtype, device=device),
                grads.to(dtype=dtype, device=device).contiguous(),
            )
        return self._fast[key]

    def grad(self, x: Tensor) -> Tensor:
        """Gradient ``dU/dx`` ``(B, 2)`` of the spline at ``x (B, 2)``: the fast path for samplers.

        Fewer tensor operations than :meth:`energy_and_grad` (no energy, shape check only).
        Each call adds ``B`` to :attr:`n_evals`.
        """
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != 2:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (*, 2), got {got}")
        self.n_evals += x.shape[0]
        offset, inv_h, dims, strides, grads = self._fast_constants(x.dtype, x.device)
        u = torch.addcmul(offset, x.detach(), inv_h)
        base = u.floor()
        t = u - base
        # clamp: a non-finite x gives an arbitrary (but valid) cell; callers check finiteness
        cell = torch.mv(torch.remainder(base, dims), strides).long().clamp_(0, grads.shape[0] - 1)
        coeffs = grads.index_select(0, cell)  # (B, 2, 16): d/dx0 and d/dx1 polynomials
        powers = torch.linalg.vander(t, N=4)  # (B, 2, 4): 1, t, t^2, t^3 per coordinate
        monomials = (powers[:, 0, :, None] * powers[:, 1, None, :]).reshape(-1, 16, 1)
        return torch.bmm(coeffs, monomials).squeeze(-1)

    def as_autograd_function(self) -> Callable[[Tensor], Tensor]:
        """The spline energy as a callable whose backward uses the analytic gradient.

        Faster than :meth:`__call__` under autograd (one fused evaluation); first derivatives
        only. Use it as ``reduced_potential`` for Langevin samplers.
        """
        potential = self

        class _Energy(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                energy, grad = potential.energy_and_grad(x)
                ctx.save_for_backward(grad)
                return energy

            @staticmethod
            def backward(ctx, grad_out):
                (grad,) = ctx.saved_tensors
                return grad_out.unsqueeze(-1) * grad

        def energy(x: Tensor) -> Tensor:
            return _Energy.apply(potential._check_x(x))

        return energy

    # -- grid lookups (metrics) ----------------------------------------------------------------

    def lookup(self, x: Tensor, method: Literal["nearest", "bilinear", "spline"] = "nearest") -> Tensor:
        """Energy at points ``(..., 2)`` from the grid: nearest grid point, bilinear, or the spline.

        Lookups do not count as potential evaluations (they are for metrics).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != 2:
            raise ValueError(f"x: expected shape (..., 2), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        flat_x = x.reshape(-1, 2)
        vals = self._table(self._values_by_dtype, x.dtype if x.is_floating_point() else torch.float64, x.device)
        if method == "nearest":
            idx = self.nearest_index(flat_x)
            out = vals[idx[:, 1] * self.shape[0] + idx[:, 0]]
        elif method == "bilinear":
            u = self._grid_units(flat_x.to(vals.dtype))
            base = torch.floor(u)
            t = u - base
            base = base.long()
            i0 = torch.remainder(base[:, 0], self.shape[0])
            j0 = torch.remainder(base[:, 1], self.shape[1])
            i1 = torch.remainder(i0 + 1, self.shape[0])
            j1 = torch.remainder(j0 + 1, self.shape[1])
            n0 = self.shape[0]
            f00, f10 = vals[j0 * n0 + i0], vals[j0 * n0 + i1]
            f01, f11 = vals[j1 * n0 + i0], vals[j1 * n0 + i1]
            a, b = t[:, 0], t[:, 1]
            out = (1 - b) * ((1 - a) * f00 + a * f10) + b * ((1 - a) * f01 + a * f11)
        elif method == "spline":
            before = self.n_evals
            out = self(flat_x.to(vals.dtype))
            self.n_evals = before
        else:
            raise ValueError(f"method: expected 'nearest', 'bilinear' or 'spline', got {method!r}")
        return out.reshape(lead)

    # -- minimax barrier ------------------------------------------------------------------------

    def _neighbours(self, connectivity: int) -> list[tuple[int, int]]:
        if connectivity == 4:
            return [(1, 0), (-1, 0), (0, 1), (0, -1)]
        if connectivity == 8:
            return [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
        raise ValueError(f"connectivity: expected 4 or 8, got {connectivity!r}")

    def minimax_barrier(self, start, end, connectivity: int = 8) -> MinimaxResult:
        """Minimax (bottleneck) barrier between the grid points nearest to ``start`` and ``end``.

        The smallest ``E*`` such that a path of neighbouring grid points (``connectivity``
        4 or 8, wrapping periodically) joins them with every energy ``<= E*``: a lower bound
        on ``max_s U(path(s))`` for paths scored by nearest-grid lookup. Computed with a
        Dijkstra search on the maximum energy along the path.

        Parameters
        ----------
        start, end : sequence of 2 floats or Tensor, shape=(2,)
        connectivity : {4, 8}
        """
        moves = self._neighbours(connectivity)
        n0, n1 = self.shape
        values = self.values.double().numpy()
        ends = []
        for name, p in (("start", start), ("end", end)):
            p = torch.as_tensor(p, dtype=torch.float64)
            if p.shape != (2,) or not bool(torch.isfinite(p).all()):
                raise ValueError(f"{name}: expected two finite coordinates, got {p.tolist()}")
            i, j = self.nearest_index(p[None])[0].tolist()
            ends.append((i, j))
        (si, sj), (ei, ej) = ends
        best = np.full((n1, n0), np.inf)
        parent = -np.ones((n1, n0, 2), dtype=np.int64)
        hops = np.zeros((n1, n0), dtype=np.int64)
        best[sj, si] = values[sj, si]
        heap = [(best[sj, si], 0, si, sj)]
        while heap:
            cost, n_hops, i, j = heapq.heappop(heap)
            if cost > best[j, i] or (cost == best[j, i] and n_hops > hops[j, i]):
                continue
            if (i, j) == (ei, ej):
                break
            for di, dj in moves:
                ni, nj = (i + di) % n0, (j + dj) % n1
                new = max(cost, values[nj, ni])
                if new < best[nj, ni] or (new == best[nj, ni] and n_hops + 1 < hops[nj, ni]):
                    best[nj, ni] = new
                    hops[nj, ni] = n_hops + 1
                    parent[nj, ni] = (i, j)
                    heapq.heappush(heap, (new, n_hops + 1, ni, nj))
        indices = [(ei, ej)]
        while indices[-1] != (si, sj):
            i, j = indices[-1]
            indices.append(tuple(int(v) for v in parent[j, i]))
        path_indices = np.array(indices[::-1], dtype=np.int64)
        path = np.stack(
            [self.lower[0] + self.spacing[0] * path_indices[:, 0], self.lower[1] + self.spacing[1] * path_indices[:, 1]],
            axis=-1,
        )
        return MinimaxResult(
            barrier=float(best[ej, ei]), path=path, path_indices=path_indices, connectivity=connectivity
        )

    # -- Boltzmann distribution of the grid ------------------------------------------------------

    def sample_grid(self, n: int, generator: torch.Generator | None = None, *, jitter: bool = True) -> Tensor:
        """Draw ``n`` points ``(n, 2)`` from the grid's Boltzmann weights ``exp(-values)``.

        With ``jitter`` each point is moved uniformly within its grid cell (centred on the
        grid point). Used to start Langevin chains with the right basin populations.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        logits = -self.values.reshape(-1).double()
        probs = torch.softmax(logits, 0)
        flat = torch.multinomial(probs, n, replacement=True, generator=generator)
        i, j = flat % self.shape[0], flat // self.shape[0]
        x = torch.stack(
            [self.lower[0] + self.spacing[0] * i.double(), self.lower[1] + self.spacing[1] * j.double()], dim=-1
        ).to(self.values.dtype)
        if jitter:
            u = torch.rand(n, 2, generator=generator, dtype=torch.float64).to(x.dtype) - 0.5
            x = x + u * x.new_tensor(self.spacing)
        return self.wrap(x)


@dataclass
class LangevinSamples:
    """Output of :func:`sample_langevin` / :func:`sample_boltzmann`.

    Attributes
    ----------
    samples : Tensor, shape=(S, C, 2)
        Recorded states (``S`` records per chain, ``C`` chains), wrapped into the fundamental cell.
    n_energy_evals : int
        Potential evaluations (energy and gradient at one point count as one).
    acceptance : float or None
        Mean Metropolis acceptance (``method="mala"``), else ``None``.
    wall_time : float
        Seconds.
    """

    samples: Tensor
    n_energy_evals: int
    acceptance: float | None
    wall_time: float

    def flat(self) -> Tensor:
        """All samples as one ``(S * C, 2)`` tensor."""
        return self.samples.reshape(-1, self.samples.shape[-1])


def sample_langevin(
    potential: PeriodicGridPotential,
    x_init: Tensor,
    *,
    n_steps: int,
    step_size: float,
    thin: int = 1,
    burn_in: int = 0,
    method: Literal["ula", "mala"] = "mala",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> LangevinSamples:
    """Overdamped Langevin dynamics on ``potential`` (kT = 1), all chains as one batch.

    ``y <- y - eps grad U(y) + sqrt(2 eps) xi``; with ``method="mala"`` each proposal is
    accepted with the Metropolis-Hastings probability, so the chains sample ``exp(-U)``
    without step-size bias. One energy+gradient evaluation per chain and step.

    Parameters
    ----------
    potential : PeriodicGridPotential
    x_init : Tensor, shape=(C, 2)
        Initial states of ``C`` chains.
    n_steps : int
        Steps after burn-in; every ``thin``-th state is recorded.
    step_size : float
        ``eps`` (units of coordinate^2 per kT).
    thin, burn_in : int
    method : {"ula", "mala"}
    generator : torch.Generator, optional
    progress : bool
    callback : callable, optional
        Called after every recorded state with ``{"step", "state", "acceptance"}``.

    Returns
    -------
    LangevinSamples
    """
    if not isinstance(potential, PeriodicGridPotential):
        raise TypeError(f"potential: expected a PeriodicGridPotential, got {type(potential).__name__}")
    y = check_tensor("x_init", x_init, (None, 2)).detach().clone()
    for name, value, low in (("n_steps", n_steps, 1), ("thin", thin, 1), ("burn_in", burn_in, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    check_positive("step_size", step_size)
    if method not in ("ula", "mala"):
        raise ValueError(f"method: expected 'ula' or 'mala', got {method!r}")
    n_chains = y.shape[0]
    noise_scale = math.sqrt(2.0 * step_size)
    energy, grad = potential.energy_and_grad(y)
    n_evals = n_chains
    n_accepted = 0.0
    n_proposed = 0
    records = []
    total = burn_in + n_steps
    t0 = time.perf_counter()
    iterator = range(total)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="Langevin", unit="step")
    for step in iterator:
        noise = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
        proposal = y - step_size * grad + noise_scale * noise
        p_energy, p_grad = potential.energy_and_grad(proposal)
        n_evals += n_chains
        if method == "mala":
            # log q(y | y') - log q(y' | y) for the Gaussian proposals.
            fwd = noise.square().sum(-1) * 0.5
            back = (y - proposal + step_size * p_grad).square().sum(-1) / (4.0 * step_size)
            log_ratio = energy - p_energy + fwd - back
            u = torch.rand(n_chains, dtype=y.dtype, device=y.device, generator=generator)
            accept = torch.log(u) < log_ratio
            n_accepted += float(accept.sum())
            n_proposed += n_chains
            keep = accept.unsqueeze(-1)
            y = torch.where(keep, proposal, y)
            energy = torch.where(accept, p_energy, energy)
            grad = torch.where(keep, p_grad, grad)
        else:
            y, energy, grad = proposal, p_energy, p_grad
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteError(f"Langevin produced non-finite states at step {step}; reduce step_size ({step_size})")
        if step >= burn_in and (step - burn_in + 1) % thin == 0:
            state = potential.wrap(y)
            records.append(state)
            if callback is not None:
                callback({"step": step, "state": state, "acceptance": n_accepted / max(n_proposed, 1)})
    samples = torch.stack(records) if records else y.new_zeros((0, n_chains, 2))
    return LangevinSamples(
        samples=samples,
        n_energy_evals=n_evals,
        acceptance=(n_accepted / n_proposed) if method == "mala" and n_proposed else None,
        wall_time=time.perf_counter() - t0,
    )


def sample_boltzmann(
    potential: PeriodicGridPotential,
    n_samples: int,
    *,
    n_chains: int = 1000,
    step_size: float = 2e-3,
    thin: int = 10,
    burn_in: int = 200,
    method: Literal["ula", "mala"] = "mala",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> LangevinSamples:
    """Boltzmann samples of ``exp(-U)`` by Langevin chains started from the grid's weights.

    Chains start at points drawn from ``exp(-values)`` on the grid (so basins separated by
    barriers of tens of kT, which Langevin never crosses, start with the right populations),
    relax for ``burn_in`` steps, then record every ``thin``-th state until at least
    ``n_samples`` states are recorded in total (``samples`` has shape ``(S, C, 2)`` with
    ``S * C >= n_samples``; take ``result.flat()[:n_samples]``). Every potential evaluation
    is counted.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
    if isinstance(n_chains, bool) or not isinstance(n_chains, int) or n_chains < 1:
        raise ValueError(f"n_chains: expected a positive integer, got {n_chains!r}")
    n_chains = min(n_chains, n_samples)
    n_records = math.ceil(n_samples / n_chains)
    x_init = potential.sample_grid(n_chains, generator=generator)
    result = sample_langevin(
        potential,
        x_init,
        n_steps=n_records * thin,
        step_size=step_size,
        thin=thin,
        burn_in=burn_in,
        method=method,
        generator=generator,
        progress=progress,
    )
    return result


def sample_annealed_langevin_grid(
    potential: PeriodicGridPotential,
    log_snr: Tensor,
    x: Tensor,
    x_init: Tensor,
    *,
    n_paths: int = 1,
    n_steps: int = 10,
    step_size: float | Tensor = 1e-3,
    generator: torch.Generator | None = None,
    record: Literal["points", "steps"] = "points",
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    method: Literal["ula", "mala"] = "ula",
) -> AnnealedLangevinResult:
    """Algorithm 1 on a grid potential with its analytic gradient (no autograd).

    The same algorithm, arguments, random-number use and result as the core
    :func:`~spacetime_md.core.sample_annealed_langevin` called with ``potential`` as the
    reduced potential — for the same ``generator`` state the two return the same paths (to
    rounding) — but several times faster per step, because the gradient comes from
    :meth:`PeriodicGridPotential.grad` instead of an autograd pass. At curve point ``n``:
    ``y <- y - eps_n (grad U(y) + SNR_n (y - x_n / alpha_n)) + sqrt(2 eps_n) xi``, ``n_steps``
    times, state carried over. Shapes: ``log_snr (T,)``, ``x (T, 2)``, ``x_init (2,)`` or
    ``(n_paths, 2)``; ``paths (P, T, 2)`` or ``(P, T * n_steps, 2)`` (unwrapped angles).
    ``method="mala"`` adds the Metropolis correction (energy and gradient from
    :meth:`PeriodicGridPotential.energy_and_grad`; same decisions as the core sampler).
    """
    if not isinstance(potential, PeriodicGridPotential):
        raise TypeError(f"potential: expected a PeriodicGridPotential, got {type(potential).__name__}")
    dims: dict[str, int] = {}
    x = check_tensor("x", x, ("T", 2), dims=dims)
    log_snr = check_tensor("log_snr", log_snr, ("T",), dims=dims)
    check_same_dtype_device(x=x, log_snr=log_snr)
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
        raise ValueError(f"n_paths: expected an integer >= 1, got {n_paths!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps: expected an integer >= 1, got {n_steps!r}")
    if record not in ("points", "steps"):
        raise ValueError(f"record: expected 'points' or 'steps', got {record!r}")
    check_method(method)
    n_points = x.shape[0]
    x_init = check_tensor("x_init", x_init)
    if x_init.ndim == 1:
        check_tensor("x_init", x_init, (2,))
        y = x_init.to(x.dtype).expand(n_paths, 2).clone()
    else:
        check_tensor("x_init", x_init, (n_paths, 2))
        y = x_init.to(x.dtype).clone()
    if isinstance(step_size, Tensor):
        eps = check_tensor("step_size", step_size, (n_points,)).to(x.dtype)
        if bool((eps <= 0).any()):
            raise ValueError(f"step_size: expected values > 0, got minimum {float(eps.min())}")
    else:
        check_positive("step_size", step_size)
        eps = torch.full((n_points,), float(step_size), dtype=x.dtype, device=x.device)
    centres = x / alpha_sigma(log_snr)[0].unsqueeze(-1)
    stiffness = log_snr.exp().tolist()
    eps_list = eps.tolist()
    noise_list = (2 * eps).sqrt().tolist()
    frames = []
    t0 = time.perf_counter()
    mala = method == "mala"
    if mala:
        energy, grad_u = potential.energy_and_grad(y)
        accepted = torch.zeros(n_points, dtype=torch.float64)
    iterator = range(n_points)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="annealed Langevin", unit="point")
    for n in iterator:
        centre, k, e, c = centres[n], stiffness[n], eps_list[n], noise_list[n]
        for _ in range(n_steps):
            if mala:
                noise = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
                uniform = torch.rand(y.shape[0], dtype=y.dtype, device=y.device, generator=generator)
                y, energy, grad_u, ok = mala_step(potential.energy_and_grad, y, energy, grad_u, centre, k, e,
                                                  noise, uniform)
                accepted[n] += float(ok.double().sum())
            else:
                grad = potential.grad(y).add_(y - centre, alpha=k)
                noise = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
                y = torch.add(y, grad, alpha=-e).add_(noise, alpha=c)
            if record == "steps":
                frames.append(y)
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteError(
                f"annealed Langevin produced non-finite states at curve point {n} "
                f"(log_snr {float(log_snr[n]):.3g}, step size {e:.3g}); reduce step_size"
            )
        if record == "points":
            frames.append(y)
        if callback is not None:
            callback({"point": n, "state": y})
    return AnnealedLangevinResult(
        paths=torch.stack(frames, dim=1), n_energy_evals=n_paths * (n_points * n_steps + int(mala)),
        wall_time=time.perf_counter() - t0, acceptance=accepted / (n_paths * n_steps) if mala else None,
    )


def alanine_dipeptide_fes(*, dtype: torch.dtype = torch.float64) -> PeriodicGridPotential:
    """The packaged (phi, psi) free-energy grid of alanine dipeptide (89 x 89, kT).

    From Holdijk et al. (NeurIPS 2023) via Karczewski et al. (ICLR 2026), Table 1. The
    minimax barrier between ``(-2.55, 2.7)`` and ``(0.95, -0.4)`` is 36.34 (8-neighbour,
    nearest grid point); the paper quotes 36.42.
    """
    ref = resources.files("spacetime_md").joinpath("data", ALANINE_FES_FILE)
    with resources.as_file(ref) as path:
        return PeriodicGridPotential.from_file(path, dtype=dtype)
