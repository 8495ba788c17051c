"""Temperature ladders for replica exchange chosen from the system, and exchange diagnostics.

Method
------
A short *pilot* runs plain Langevin MD (the production integrator, time step and friction) at a
few temperatures between the system temperature ``T_0`` and the hottest replica ``T_max``
(default three, geometric) and records the potential energy: mean ``mu(T)`` and standard
deviation ``s(T)``, interpolated linearly in ``T`` in between (exact for a constant heat
capacity, where ``mu`` is linear and ``s`` proportional to ``T``).

For neighbours ``T_i < T_j`` with Gaussian energies the swap acceptance
``E[min(1, exp(X))]`` with ``X = (beta_i - beta_j) (U_i - U_j) ~ N(m, v)``,
``m = (beta_i - beta_j) (mu_i - mu_j)``, ``v = (beta_i - beta_j)^2 (s_i^2 + s_j^2)`` is

    a_ij = Phi(m / sqrt(v)) + exp(m + v / 2) Phi(-(m + v) / sqrt(v))

(:func:`predicted_acceptance`). The ladder is the geometric one from ``T_0`` to ``T_max`` with
the fewest replicas (at least ``min_replicas``) whose smallest predicted ``a_ij`` reaches the
target (:func:`choose_temperatures`). Energy fluctuations grow like the square root of the
degrees of freedom, so bigger molecules get more replicas: alanine dipeptide keeps the four of
the fixed ladder (``300-800 K``), the tetrapeptide gets more (``docs/scaling.md``).

After a run, :func:`exchange_warnings` flags neighbour pairs whose measured acceptance fell
below half the target (or below 0.1 for a ladder given by hand) and runs without round trips of
a walker between the coldest and the hottest replica.

Units inside: K, kJ/mol, ps, fs (OpenMM's ``md_unit_system``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.molecular.system.units import KELVIN, PS, kT_kj_per_mol

if TYPE_CHECKING:
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "DEFAULT_TARGET_ACCEPTANCE",
    "predicted_acceptance",
    "pilot_energy_statistics",
    "choose_temperatures",
    "exchange_warnings",
]

logger = logging.getLogger(__name__)

#: Default target of the smallest neighbour swap acceptance.
DEFAULT_TARGET_ACCEPTANCE = 0.2
#: Replicas of the smallest automatic ladder (the fixed ladder of earlier versions had 4, so
#: systems that need no more, such as alanine dipeptide, keep exactly their earlier samples).
MIN_REPLICAS = 4
MAX_REPLICAS = 64
#: Absolute acceptance floor for warnings about a ladder given by hand.
LOW_ACCEPTANCE = 0.1
#: Swap attempts a neighbour pair needs before its acceptance is judged.
MIN_ATTEMPTS = 50


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def predicted_acceptance(t_i: float, t_j: float, mean_i: float, std_i: float, mean_j: float, std_j: float) -> float:
    """Expected swap acceptance of two replicas at ``t_i, t_j`` (K) with Gaussian potential
    energies ``N(mean, std^2)`` (kJ/mol); see the module docstring."""
    d_beta = 1.0 / kT_kj_per_mol(t_i) - 1.0 / kT_kj_per_mol(t_j)
    m = d_beta * (mean_i - mean_j)
    v = d_beta * d_beta * (std_i * std_i + std_j * std_j)
    if v <= 0.0:
        return 1.0 if m >= 0 else math.exp(m)
    s = math.sqrt(v)
    tail = m + v / 2.0
    return min(1.0, _phi(m / s) + (math.exp(tail) * _phi(-(m + v) / s) if tail < 700 else 0.0))


def pilot_energy_statistics(
    system: "MolecularSystem",
    temperatures_k: Sequence[float],
    *,
    timestep_fs: float,
    friction_per_ps: float,
    seed: int,
    equilibration_ps: float = 5.0,
    production_ps: float = 20.0,
    interval_ps: float = 0.1,
) -> dict[str, Any]:
    """Potential-energy mean and standard deviation (kJ/mol) of plain Langevin MD at each
    temperature, started from the minimised structure; deterministic for a seed on the
    Reference platform.

    Returns
    -------
    dict
        ``temperatures_k``, ``mean_kj_per_mol``, ``std_kj_per_mol`` (lists), ``production_ps``,
        ``n_energies`` (per temperature).
    """
    steps_per_sample = max(1, int(round(interval_ps * 1000.0 / timestep_fs)))
    n_equil = int(round(equilibration_ps * 1000.0 / timestep_fs))
    n_samples = max(2, int(round(production_ps / interval_ps)))
    x0 = system.minimize()
    seeds = np.random.SeedSequence([int(seed), 20261205]).generate_state(len(temperatures_k), dtype=np.uint32)
    means, stds = [], []
    for t, s in zip(temperatures_k, seeds):
        integ = openmm.LangevinMiddleIntegrator(t * KELVIN, friction_per_ps / PS, timestep_fs * unit.femtosecond)
        integ.setRandomNumberSeed(int(s) % (2**31 - 2) + 1)
        ctx = openmm.Context(system.openmm_system, integ, system.platform)
        try:
            ctx.setPositions(x0)
            ctx.applyConstraints(1e-8)
            ctx.setVelocitiesToTemperature(t * KELVIN, int(s) % (2**31 - 2) + 1)
            integ.step(n_equil)
            energies = np.empty(n_samples)
            for k in range(n_samples):
                integ.step(steps_per_sample)
                energies[k] = ctx.getState(getEnergy=True).getPotentialEnergy()._value
        finally:
            del ctx, integ
        if not np.isfinite(energies).all():
            raise ValueError(f"pilot: non-finite energies at {t:g} K; try a smaller timestep or lower max temperature")
        means.append(float(energies.mean()))
        stds.append(float(energies.std(ddof=1)))
    return {"temperatures_k": [float(t) for t in temperatures_k], "mean_kj_per_mol": means,
            "std_kj_per_mol": stds, "production_ps": float(production_ps), "n_energies": n_samples}


def _interpolate(stats: dict[str, Any], t: float) -> tuple[float, float]:
    temps = stats["temperatures_k"]
    mean = float(np.interp(t, temps, stats["mean_kj_per_mol"]))
    std = float(np.interp(t, temps, stats["std_kj_per_mol"]))
    return mean, std


def ladder_acceptance(stats: dict[str, Any], temperatures_k: Sequence[float]) -> list[float]:
    """Predicted acceptance of each neighbour pair of a ladder from pilot statistics."""
    out = []
    for a, b in zip(temperatures_k, temperatures_k[1:]):
        ma, sa = _interpolate(stats, a)
        mb, sb = _interpolate(stats, b)
        out.append(predicted_acceptance(a, b, ma, sa, mb, sb))
    return out


def choose_temperatures(
    stats: dict[str, Any],
    t_min_k: float,
    t_max_k: float,
    target: float = DEFAULT_TARGET_ACCEPTANCE,
    *,
    min_replicas: int = MIN_REPLICAS,
    max_replicas: int = MAX_REPLICAS,
) -> tuple[tuple[float, ...], list[float]]:
    """The geometric ladder ``t_min_k .. t_max_k`` with the fewest replicas (``>= min_replicas``)
    whose smallest predicted neighbour acceptance is at least ``target``.

    Returns the temperatures and their predicted acceptances; with ``max_replicas`` still
    short of the target, that ladder is returned and a warning logged.
    """
    from spacetime_md.molecular.sampling.sampling_config import geometric_temperatures

    if not 0.0 < target < 1.0:
        raise ValueError(f"target_acceptance: expected a number in (0, 1), got {target!r}")
    temps: tuple[float, ...] = (float(t_min_k),)
    acc: list[float] = []
    for n in range(max(2, min_replicas), max_replicas + 1):
        temps = geometric_temperatures(t_min_k, t_max_k, n)
        acc = ladder_acceptance(stats, temps)
        if min(acc) >= target:
            return temps, acc
    logger.warning("ladder: %d replicas reach a predicted acceptance of only %.3f (target %.2f); lower the "
                   "max temperature", max_replicas, min(acc), target)
    return temps, acc


def exchange_warnings(acceptance: Sequence[float], round_trips: int, n_exchanges: int,
                      target: float | None, n_attempted: Sequence[int] | None = None) -> list[str]:
    """Warnings about a finished (or partial) run: low neighbour acceptance, no round trips.

    ``target`` is the ladder's target acceptance (``None`` for a ladder given by hand, which is
    checked against ``LOW_ACCEPTANCE``); pairs with fewer than ``MIN_ATTEMPTS`` swap attempts
    (``n_attempted``, default: enough) are not judged. Round trips are expected only after enough exchanges:
    a walker diffuses over ``R`` slots in about ``R^2 / a`` exchanges (``a`` the mean
    acceptance), so none after ``4 R^2 / a`` exchanges is flagged.
    """
    acc = np.asarray(acceptance, dtype=float)
    if acc.size == 0:
        return []
    out = []
    floor = LOW_ACCEPTANCE if target is None else 0.5 * target
    attempts = np.full(acc.size, MIN_ATTEMPTS) if n_attempted is None else np.asarray(n_attempted)
    low = np.flatnonzero((acc < floor) & (attempts >= MIN_ATTEMPTS))
    if low.size:
        pairs = ", ".join(f"{i}-{i + 1}: {acc[i]:.3f}" for i in low)
        out.append(f"low swap acceptance (< {floor:.2f}) between replicas {pairs}; use more replicas "
                   "(--n-replicas, or the automatic ladder) or a lower --max-temperature")
    n_replicas = acc.size + 1
    expected = 4.0 * n_replicas**2 / max(float(acc.mean()), 1e-3)
    if round_trips == 0 and n_exchanges >= expected:
        out.append(f"no round trip of a walker between the coldest and the hottest replica in {n_exchanges} "
                   f"exchanges (expected one within about {expected:.0f}); the hot replicas do not reach the "
                   "sampled temperature: samples may be stuck in their starting basin")
    return out
