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
  evaluation counted (in :mod:`spacetime_md.toy.langevin`: :func:`~spacetime_md.toy.langevin.sample_langevin`,
  :func:`~spacetime_md.toy.langevin.sample_boltzmann`).

Conventions: points are ``x: (B, 2)`` with ``x[:, 0]`` the first coordinate (phi) and
``x[:, 1]`` the second (psi). ``values[j, i]`` is the energy at
``(lower[0] + i * h[0], lower[1] + j * h[1])`` with ``h = period / n`` — the first coordinate
varies along the last axis, as in a file whose first column varies fastest. The grid has no
repeated last line (it is periodic). Energies are dimensionless (reduced, ``U / kT``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_tensor

__all__ = [
    "PeriodicGridPotential",
    "MinimaxResult",
    "alanine_dipeptide_fes",
    "ALANINE_FES_FILE",
]

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


def alanine_dipeptide_fes(*, dtype: torch.dtype = torch.float64) -> PeriodicGridPotential:
    """The packaged (phi, psi) free-energy grid of alanine dipeptide (89 x 89, kT).

    From Holdijk et al. (NeurIPS 2023) via Karczewski et al. (ICLR 2026), Table 1. The
    minimax barrier between ``(-2.55, 2.7)`` and ``(0.95, -0.4)`` is 36.34 (8-neighbour,
    nearest grid point); the paper quotes 36.42.
    """
    ref = resources.files("spacetime_md").joinpath("data", ALANINE_FES_FILE)
    with resources.as_file(ref) as path:
        return PeriodicGridPotential.from_file(path, dtype=dtype)
