"""Equivariance checks for molecular denoisers (in the spirit of e3nn's ``assert_equivariant``).

A denoiser ``D(x (B, 3N), log_snr (B,)) -> (B, 3N)`` on centred coordinates should satisfy,
for every rotation ``R`` and translation ``t``,

    D(R x + t, l) = R D(x, l)

(translations are removed by centring, so the output is unchanged by ``t`` and always
centred). For a chirality-aware model a reflection ``S`` must *not* commute:
``D(S x, l) != S D(x, l)``; :func:`reflection_change` measures by how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "random_rotation",
    "apply_transform",
    "EquivarianceReport",
    "equivariance_errors",
    "assert_equivariant",
    "reflection_change",
]


def random_rotation(
    n: int | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Haar-random proper rotation(s): ``(3, 3)`` or ``(n, 3, 3)`` with ``det = +1``."""
    shape = (1 if n is None else n, 3, 3)
    a = torch.randn(shape, dtype=dtype, generator=generator)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.unsqueeze(-1)
    return q[0] if n is None else q


def apply_transform(x: Tensor, rotation: Tensor, translation: Tensor | None = None) -> Tensor:
    """``x (B, 3N) -> x R^T + t`` applied to every atom; ``rotation (3, 3)`` or ``(B, 3, 3)``."""
    pos = x.reshape(x.shape[0], -1, 3)
    rot = rotation if rotation.ndim == 3 else rotation.unsqueeze(0)
    pos = pos @ rot.transpose(-1, -2)
    if translation is not None:
        pos = pos + translation.reshape(-1, 1, 3)
    return pos.reshape(x.shape)


@dataclass
class EquivarianceReport:
    """Largest absolute deviations found by :func:`equivariance_errors`.

    Attributes
    ----------
    rotation_translation : float
        ``max |D(R x + t) - R D(x)|`` over trials.
    centring : float
        ``max |sum_atoms D(x)|`` (outputs must be centred).
    batch_permutation : float
        ``max |D(x[perm])[inv] - D(x)|`` (rows must not interact).
    scale : float
        ``max |D(x)|``, for relative comparisons.
    """

    rotation_translation: float
    centring: float
    batch_permutation: float
    scale: float


def equivariance_errors(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    log_snr: Tensor,
    *,
    n_trials: int = 3,
    generator: torch.Generator | None = None,
) -> EquivarianceReport:
    """Measure rotation/translation equivariance, centring and batch-order independence.

    Parameters
    ----------
    denoiser : callable
    x : Tensor, shape=(B, 3N)
    log_snr : Tensor, shape=(B,)
    n_trials : int
        Random (rotation, translation) pairs; each row of the batch gets its own rotation.
    """
    if x.ndim != 2 or x.shape[1] % 3 != 0:
        raise ValueError(f"x: expected shape (B, 3N), got {tuple(x.shape)}")
    with torch.no_grad():
        out = denoiser(x, log_snr)
        err = 0.0
        for _ in range(n_trials):
            rot = random_rotation(x.shape[0], dtype=x.dtype, generator=generator).to(x.device)
            shift = 3.0 * torch.randn(x.shape[0], 3, dtype=x.dtype, generator=generator).to(x.device)
            lhs = denoiser(apply_transform(x, rot, shift), log_snr)
            rhs = apply_transform(out, rot)
            err = max(err, float((lhs - rhs).abs().max()))
        centring = float(out.reshape(x.shape[0], -1, 3).sum(1).abs().max())
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        permuted = denoiser(x[perm], log_snr[perm])
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        batch_err = float((permuted[inverse] - out).abs().max())
    return EquivarianceReport(err, centring, batch_err, float(out.abs().max()))


def assert_equivariant(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    log_snr: Tensor,
    *,
    atol: float | None = None,
    n_trials: int = 3,
    generator: torch.Generator | None = None,
) -> EquivarianceReport:
    """Raise ``AssertionError`` unless ``D(R x + t) = R D(x)``, ``D`` is centred and batch
    order is irrelevant, all to ``atol`` (default 1e-9 in float64, 1e-4 in float32).

    Returns the :class:`EquivarianceReport` on success.
    """
    if atol is None:
        atol = 1e-9 if x.dtype == torch.float64 else 1e-4
    report = equivariance_errors(denoiser, x, log_snr, n_trials=n_trials, generator=generator)
    failures = []
    if not report.rotation_translation <= atol:
        failures.append(f"rotation/translation error {report.rotation_translation:.3e}")
    if not report.centring <= atol:
        failures.append(f"output centre {report.centring:.3e}")
    if not report.batch_permutation <= atol:
        failures.append(f"batch permutation error {report.batch_permutation:.3e}")
    if failures:
        raise AssertionError(
            f"denoiser is not equivariant: expected errors <= {atol:.1e}, got " + ", ".join(failures)
        )
    return report


def reflection_change(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    log_snr: Tensor,
) -> float:
    """Relative violation of reflection equivariance, ``max |D(S x) - S D(x)| / max |D(x)|``.

    ``S`` is the mirror ``z -> -z``. Zero (to rounding) for an E(3)-equivariant model, clearly
    positive for a chirality-aware one.
    """
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=x.dtype, device=x.device))
    with torch.no_grad():
        out = denoiser(x, log_snr)
        lhs = denoiser(apply_transform(x, mirror), log_snr)
        rhs = apply_transform(out, mirror)
    return float((lhs - rhs).abs().max() / out.abs().max().clamp_min(1e-300))
