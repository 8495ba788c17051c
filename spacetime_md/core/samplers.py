"""Samplers: annealed Langevin along a spacetime curve (Algorithm 1) and DDIM / PF-ODE.

Annealed Langevin (DESIGN.md section 5): for every curve point ``(lambda_n, x_n)`` the target
density is ``exp(-U_n)`` with

    U_n(y) = U(y) + SNR_n / 2 * |y - x_n / alpha_n|^2            (Eq. 19)

where ``U`` is a reduced potential (energy / kT). ``n_steps`` Langevin steps
``y <- y - eps_n grad U_n(y) + sqrt(2 eps_n) xi`` are run per point, carrying the state from
point to point; the states form the transition path. All paths run as one batch.

Two step rules (``method``):

- ``"ula"`` (unadjusted Langevin, the paper's Algorithm 1): every proposal is taken. Its
  stationary density is biased by the step: for a harmonic ``U_n`` of curvature ``k`` the
  variance is ``1 / (k (1 - eps k / 2))`` instead of ``1 / k``, i.e. hotter where the
  restraint is stiff, and it diverges for ``eps k >= 2``.
- ``"mala"`` (Metropolis-adjusted Langevin): the same proposal, accepted with probability
  ``min(1, exp(U_n(y) - U_n(y')) q(y | y') / q(y' | y))``, ``q`` the Gaussian proposal
  density. Each point's chain then leaves ``exp(-U_n)`` exactly invariant at any step size;
  a rejected step repeats the state. It needs ``U`` as well as its gradient at each proposal
  but no extra evaluation (one energy-and-gradient per step, plus one at the start; the
  restraint part is analytic). Non-finite proposals are rejected.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_same_dtype_device, check_tensor
from spacetime_md.core.denoisers import Denoiser
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.errors import NonFiniteError

__all__ = ["AnnealedLangevinResult", "sample_annealed_langevin", "sample_ddim"]

logger = logging.getLogger(__name__)


@dataclass
class AnnealedLangevinResult:
    """Output of :func:`sample_annealed_langevin`.

    Attributes
    ----------
    paths : Tensor, shape=(P, T, D) or (P, T * n_steps, D)
        States after the last step at every curve point (``record="points"``) or after every
        step (``record="steps"``).
    n_energy_evals : int
        Potential (-gradient) evaluations of all paths together: ``P * T * n_steps`` for
        ``"ula"``, ``P * (T * n_steps + 1)`` for ``"mala"``.
    wall_time : float
        Seconds.
    acceptance : Tensor or None, shape=(T,)
        ``"mala"``: the fraction of accepted proposals at each curve point (over paths and
        steps); ``None`` for ``"ula"``.
    """

    paths: Tensor
    n_energy_evals: int
    wall_time: float
    acceptance: Tensor | None = None

    @property
    def acceptance_rate(self) -> float | None:
        """Mean acceptance over all proposals (``None`` for ``"ula"``)."""
        return None if self.acceptance is None else float(self.acceptance.mean())

    @property
    def evals_per_path(self) -> int:
        return self.n_energy_evals // max(self.paths.shape[0], 1)


def _potential_energy_grad(reduced_potential: Callable[[Tensor], Tensor], y: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        y_req = y.detach().requires_grad_(True)
        energy = reduced_potential(y_req)
        if not isinstance(energy, Tensor) or energy.shape != (y.shape[0],):
            got = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
            raise ValueError(f"reduced_potential output: expected shape ({y.shape[0]},), got {got}")
        (grad,) = torch.autograd.grad(energy.sum(), y_req)
    return energy.detach(), grad


def _potential_grad(reduced_potential: Callable[[Tensor], Tensor], y: Tensor) -> Tensor:
    return _potential_energy_grad(reduced_potential, y)[1]


def mala_step(
    energy_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    y: Tensor,
    energy: Tensor,
    grad: Tensor,
    centre: Tensor,
    stiffness: float,
    eps: float,
    noise: Tensor,
    uniform: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Metropolis-adjusted Langevin step on ``U(y) + stiffness / 2 |y - centre|^2``.

    ``energy``, ``grad``: ``U`` and ``grad U`` (without the restraint) at ``y (P, D)``;
    ``noise (P, D)`` standard normal, ``uniform (P,)`` in ``[0, 1)``. Returns the new
    ``(y, energy, grad, accepted)`` with ``accepted (P,)`` boolean. Shared by the core and the
    grid samplers so that both take the same decisions for the same random numbers.
    """
    offset = y - centre
    total = energy + 0.5 * stiffness * (offset * offset).sum(-1)
    drift = grad + stiffness * offset
    proposal = y - eps * drift + (2 * eps) ** 0.5 * noise
    energy_p, grad_p = energy_grad(proposal)
    offset_p = proposal - centre
    total_p = energy_p + 0.5 * stiffness * (offset_p * offset_p).sum(-1)
    back = y - proposal + eps * (grad_p + stiffness * offset_p)
    # log q(y | y') - log q(y' | y); the forward residual y' - y + eps drift is sqrt(2 eps) noise
    log_q = 0.5 * (noise * noise).sum(-1) - (back * back).sum(-1) / (4 * eps)
    accepted = torch.log(uniform) < (total - total_p + log_q)  # NaN -> False: rejected
    keep = accepted.unsqueeze(-1)
    return (torch.where(keep, proposal, y), torch.where(accepted, energy_p, energy),
            torch.where(keep, grad_p, grad), accepted)


def check_annealed_arguments(
    x: Any, log_snr: Any, x_init: Any, n_paths: Any, n_steps: Any, step_size: Any, record: Any, method: Any,
    dim: int | str = "D",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check the arguments of an annealed-Langevin sampler (:func:`sample_annealed_langevin`
    and the toy grid sampler share them); return ``x (T, D)``, ``log_snr (T,)``, the starting
    states ``y (P, D)`` (a copy in ``x``'s dtype) and the step sizes ``eps (T,)``.
    ``dim`` fixes ``D`` where the sampler needs a given dimension."""
    dims: dict[str, int] = {}
    x = check_tensor("x", x, ("T", dim), dims=dims)
    log_snr = check_tensor("log_snr", log_snr, ("T",), dims=dims)
    check_same_dtype_device(x=x, log_snr=log_snr)
    if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
        raise ValueError(f"n_paths: expected an integer >= 1, got {n_paths!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps: expected an integer >= 1, got {n_steps!r}")
    if record not in ("points", "steps"):
        raise ValueError(f"record: expected 'points' or 'steps', got {record!r}")
    check_method(method)
    n_points, dim = x.shape
    x_init = check_tensor("x_init", x_init)
    if x_init.ndim == 1:
        check_tensor("x_init", x_init, (dim,))
        y = x_init.to(x.dtype).expand(n_paths, dim).clone()
    else:
        check_tensor("x_init", x_init, (n_paths, dim))
        y = x_init.to(x.dtype).clone()
    if isinstance(step_size, Tensor):
        eps = check_tensor("step_size", step_size, (n_points,)).to(x.dtype)
        if bool((eps <= 0).any()):
            raise ValueError(f"step_size: expected values > 0, got minimum {float(eps.min())}")
    else:
        check_positive("step_size", step_size)
        eps = torch.full((n_points,), float(step_size), dtype=x.dtype, device=x.device)
    return x, log_snr, y, eps


def sample_annealed_langevin(
    reduced_potential: Callable[[Tensor], Tensor],
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
    """Transition paths by annealed Langevin dynamics along a spacetime curve (Algorithm 1).

    Parameters
    ----------
    reduced_potential : callable ``(y (P, D)) -> (P,)``
        The data potential ``U`` in units of kT, differentiable with autograd.
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
        The curve (VP scaling); the restraint centre at point n is ``x_n / alpha_n``.
    x_init : Tensor, shape=(D,) or (P, D)
        Starting configuration(s).
    n_paths : int
        Number of paths ``P`` (must match ``x_init`` when it is 2-D).
    n_steps : int
        Langevin steps per curve point ``K``.
    step_size : float or Tensor, shape=(T,)
        ``eps_n``; a tensor gives one step size per curve point.
    generator : torch.Generator, optional
        Source of the Gaussian noise (reproducibility).
    record : {"points", "steps"}
    progress : bool
    callback : callable, optional
        Called after every curve point with ``{"point": n, "state": y}``.
    method : {"ula", "mala"}
        Unadjusted (Algorithm 1) or Metropolis-adjusted steps (module docstring). ``"mala"``
        draws one extra uniform number per path and step after the Gaussian noise.

    Returns
    -------
    AnnealedLangevinResult
    """
    if not callable(reduced_potential):
        raise TypeError(f"reduced_potential: expected a callable, got {type(reduced_potential).__name__}")
    x, log_snr, y, eps = check_annealed_arguments(x, log_snr, x_init, n_paths, n_steps, step_size, record, method)
    n_points = x.shape[0]

    alpha, _ = alpha_sigma(log_snr)
    centres = x / alpha.unsqueeze(-1)
    stiffness = log_snr.exp()
    noise_scale = (2 * eps).sqrt()
    frames = []
    t0 = time.perf_counter()
    mala = method == "mala"
    if mala:
        def energy_grad(z: Tensor) -> tuple[Tensor, Tensor]:
            return _potential_energy_grad(reduced_potential, z)

        energy, grad_u = energy_grad(y)
        accepted = torch.zeros(n_points, dtype=torch.float64)
    iterator = range(n_points)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="annealed Langevin", unit="point")
    for n in iterator:
        for _ in range(n_steps):
            noise = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
            if mala:
                uniform = torch.rand(y.shape[0], dtype=y.dtype, device=y.device, generator=generator)
                y, energy, grad_u, ok = mala_step(energy_grad, y, energy, grad_u, centres[n], float(stiffness[n]),
                                                  float(eps[n]), noise, uniform)
                accepted[n] += float(ok.double().sum())
            else:
                grad = _potential_grad(reduced_potential, y) + stiffness[n] * (y - centres[n])
                y = y - eps[n] * grad + noise_scale[n] * noise
            if record == "steps":
                frames.append(y)
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteError(
                f"annealed Langevin produced non-finite states at curve point {n} "
                f"(log_snr {float(log_snr[n]):.3g}, step size {float(eps[n]):.3g}); "
                "reduce step_size"
            )
        if record == "points":
            frames.append(y)
        if callback is not None:
            callback({"point": n, "state": y})
    paths = torch.stack(frames, dim=1).detach()
    return AnnealedLangevinResult(
        paths=paths, n_energy_evals=n_paths * (n_points * n_steps + int(mala)), wall_time=time.perf_counter() - t0,
        acceptance=accepted / (n_paths * n_steps) if mala else None,
    )


def check_method(method: Any) -> None:
    """Raise a ValueError unless ``method`` names a Langevin step rule (``"ula"``, ``"mala"``)."""
    if method not in ("ula", "mala"):
        raise ValueError(f"method: expected 'ula' or 'mala', got {method!r}")


def sample_ddim(
    denoiser: Denoiser,
    x_init: Tensor,
    log_snr: Tensor,
    *,
    return_trajectory: bool = False,
) -> Tensor:
    """Deterministic DDIM / probability-flow ODE sampler in ``log_snr``.

    ``x' = alpha' D + sigma' (x - alpha D) / sigma`` between consecutive noise levels; this is
    the exact PF-ODE step when the denoiser is constant over the step.

    Parameters
    ----------
    denoiser : callable
    x_init : Tensor, shape=(B, D)
        Points at ``log_snr[0]``.
    log_snr : Tensor, shape=(S,)
        Noise levels to visit; increasing values generate (noise to data), decreasing add noise.
    return_trajectory : bool
        Return all states ``(S, B, D)`` instead of the last ``(B, D)``.
    """
    x = check_tensor("x_init", x_init, (None, None))
    log_snr = check_tensor("log_snr", log_snr, (None,))
    if log_snr.shape[0] < 2:
        raise ValueError(f"log_snr: expected at least 2 noise levels, got {log_snr.shape[0]}")
    log_snr = log_snr.to(x.dtype)
    alpha, sigma = alpha_sigma(log_snr)
    traj = [x]
    batch = x.shape[0]
    with torch.no_grad():
        for i in range(log_snr.shape[0] - 1):
            denoised = denoiser(x, log_snr[i].expand(batch))
            eps = (x - alpha[i] * denoised) / sigma[i]
            x = alpha[i + 1] * denoised + sigma[i + 1] * eps
            traj.append(x)
    return torch.stack(traj) if return_trajectory else x
