"""Langevin samplers on a :class:`~spacetime_md.toy.landscape.PeriodicGridPotential`, vectorised
over chains, with every potential evaluation counted: Boltzmann samples
(:func:`sample_langevin`, :func:`sample_boltzmann`) and annealed Langevin through a
diffusion schedule (:func:`sample_annealed_langevin_grid`).

Conventions as in :mod:`spacetime_md.toy.landscape`: points ``x: (B, 2)``, reduced energies
(``U / kT``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_tensor
from spacetime_md.core.samplers import AnnealedLangevinResult, check_annealed_arguments, mala_step
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.errors import NonFiniteError
from spacetime_md.toy.landscape import PeriodicGridPotential

__all__ = [
    "LangevinSamples",
    "sample_langevin",
    "sample_boltzmann",
    "sample_annealed_langevin_grid",
]


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
    x, log_snr, y, eps = check_annealed_arguments(x, log_snr, x_init, n_paths, n_steps, step_size, record, method,
                                                  dim=2)
    n_points = x.shape[0]
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
