"""Independent reference for state populations: umbrella sampling along phi + MBAR.

Used to check :func:`~spacetime_md.molecular.sample_boltzmann` with a different method. Windows
restrain phi harmonically (periodic distance) to centres spaced evenly around the circle; each
window runs plain Langevin MD at the system temperature (psi is free). The windows are combined
with MBAR (equivalently WHAM without histograms): with biases ``b_k(phi)`` in kT and ``N_k``
samples per window, the free energies solve

    f_k = -ln sum_n exp(-b_k(phi_n)) / sum_l N_l exp(f_l - b_l(phi_n)),

and the unbiased weight of sample ``n`` is ``1 / sum_l N_l exp(f_l - b_l(phi_n))``. Populations of
(phi, psi) states are weighted indicator averages. Errors: the run is cut into ``n_blocks`` time
blocks (block ``j`` of every window together) and MBAR is solved per block; the error is the
standard deviation of the block estimates over ``sqrt(n_blocks)``.

The numbers shipped in ``spacetime_md/data/alanine_dipeptide/reference_populations.json`` come
from ``systems/alanine_dipeptide/reference_populations.py``. Units inside: nm, ps, kJ/mol, K, rad.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm
import openmm.unit as unit

from spacetime_md.molecular.units import KELVIN, NM, PS, kT_kj_per_mol, to_md_float

if TYPE_CHECKING:
    from spacetime_md.molecular.system import MolecularSystem

__all__ = ["solve_mbar", "estimate_populations_umbrella", "reference_populations", "reference_key"]

logger = logging.getLogger(__name__)

REFERENCE_FILE = "alanine_dipeptide/reference_populations.json"


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def solve_mbar(bias_kn: np.ndarray, n_k: np.ndarray, tol: float = 1e-10, max_iter: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Self-consistent MBAR for biased simulations sharing one unbiased potential.

    Parameters
    ----------
    bias_kn : ndarray, shape=(K, Ntot)
        Reduced bias (kT) of every sample under every window.
    n_k : ndarray, shape=(K,)
        Samples drawn in each window.

    Returns
    -------
    f_k : ndarray, shape=(K,)
        Window free energies (kT), ``f_0 = 0``.
    log_w : ndarray, shape=(Ntot,)
        Log unbiased weights, normalised so ``sum exp(log_w) = 1``.
    """
    bias_kn = np.asarray(bias_kn, dtype=np.float64)
    n_k = np.asarray(n_k, dtype=np.float64)
    if bias_kn.ndim != 2 or bias_kn.shape[0] != len(n_k):
        raise ValueError(f"bias_kn: expected shape ({len(n_k)}, Ntot), got {bias_kn.shape}")
    f = np.zeros(len(n_k))
    log_n = np.log(n_k)
    for _ in range(max_iter):
        log_denom = _logsumexp(log_n[:, None] + f[:, None] - bias_kn, axis=0)  # (Ntot,)
        f_new = -_logsumexp(-bias_kn - log_denom[None, :], axis=1)
        f_new -= f_new[0]
        if np.max(np.abs(f_new - f)) < tol:
            f = f_new
            break
        f = f_new
    log_denom = _logsumexp(log_n[:, None] + f[:, None] - bias_kn, axis=0)
    log_w = -log_denom
    log_w -= _logsumexp(log_w, axis=0)
    return f, log_w


def _periodic(d: np.ndarray) -> np.ndarray:
    return (d + np.pi) % (2 * np.pi) - np.pi


def estimate_populations_umbrella(
    system: "MolecularSystem",
    *,
    n_windows: int = 24,
    force_constant: unit.Quantity = 150.0 * unit.kilojoule_per_mole / unit.radian**2,
    window_time: unit.Quantity = 200.0 * unit.picosecond,
    equilibration: unit.Quantity = 10.0 * unit.picosecond,
    sample_interval: unit.Quantity = 0.5 * unit.picosecond,
    timestep: unit.Quantity = 2.0 * unit.femtosecond,
    friction: unit.Quantity = 1.0 / unit.picosecond,
    n_blocks: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Populations of ``system.states`` (and of phi > 0) from umbrella sampling along phi + MBAR.

    Returns
    -------
    dict
        ``{"populations": {name: {"fraction", "error"}}, "method": str, "settings": {...},
        "md_time_ns": float, "wall_seconds": float}``.
    """
    from spacetime_md.molecular.states import assign_states

    if system.phi_indices is None:
        raise ValueError(f"{system.name}: expected a peptide with a phi dihedral, found none")
    if n_blocks < 2:
        raise ValueError(f"n_blocks: expected >= 2, got {n_blocks}")
    k = to_md_float("force_constant", force_constant, unit.kilojoule_per_mole / unit.radian**2)
    t_win = to_md_float("window_time", window_time, PS)
    t_eq = to_md_float("equilibration", equilibration, PS)
    dt_s = to_md_float("sample_interval", sample_interval, PS)
    dt = to_md_float("timestep", timestep, PS)
    gamma = to_md_float("friction", friction, PS**-1)
    temp = system.temperature_k
    beta = 1.0 / kT_kj_per_mol(temp)
    steps_per_sample = max(1, int(round(dt_s / dt)))
    n_per_window = int(round(t_win / dt_s))
    centres = np.linspace(-np.pi, np.pi, n_windows, endpoint=False)

    biased = copy.deepcopy(system.openmm_system)
    force = openmm.CustomTorsionForce(
        "0.5*k_umbrella*d^2; d = min(a, 2*pi - a); a = abs(theta - phi0); pi = 3.141592653589793"
    )
    force.addGlobalParameter("k_umbrella", k)
    force.addGlobalParameter("phi0", 0.0)
    force.addTorsion(*system.phi_indices, [])
    biased.addForce(force)

    rng = np.random.SeedSequence([int(seed), 7])
    seeds = [int(s) % (2**31 - 2) + 1 for s in rng.generate_state(n_windows, dtype=np.uint32)]
    integrator = openmm.LangevinMiddleIntegrator(temp * KELVIN, gamma / PS, dt * PS)
    integrator.setRandomNumberSeed(seeds[0])
    ctx = openmm.Context(biased, integrator, system.platform)
    x = system.minimize().value_in_unit(NM)
    ctx.setPositions(x)
    phi_all, psi_all = [], []
    t0 = time.perf_counter()
    iterator = range(n_windows)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="umbrella windows")
    # Visit windows starting from the one nearest the minimum, walking around the circle, so
    # each window starts from the end of its neighbour.
    phi_start = float(system.compute_phi_psi(x[None])[0, 0])
    first = int(np.argmin(np.abs(_periodic(centres - phi_start))))
    order = [(first + i) % n_windows for i in range(n_windows)]
    results: dict[int, np.ndarray] = {}
    for i in iterator:
        w = order[i]
        ctx.setParameter("phi0", float(centres[w]))
        openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
        ctx.setVelocitiesToTemperature(temp * KELVIN, seeds[w])
        integrator.step(int(round(t_eq / dt)))
        xs = np.empty((n_per_window, system.n_atoms, 3))
        for n in range(n_per_window):
            integrator.step(steps_per_sample)
            xs[n] = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value
        results[w] = system.compute_phi_psi(xs)
    wall = time.perf_counter() - t0
    angles = np.stack([results[w] for w in range(n_windows)])  # (K, n, 2)

    def solve(block: slice) -> dict[str, float]:
        a = angles[:, block]  # (K, m, 2)
        flat = a.reshape(-1, 2)
        bias = 0.5 * k * beta * _periodic(flat[None, :, 0] - centres[:, None]) ** 2  # (K, Ntot)
        _, log_w = solve_mbar(bias, np.full(n_windows, a.shape[1]))
        wts = np.exp(log_w)
        labels = assign_states(flat, system.states) if system.states else np.full(len(flat), -1)
        out = {s.name: float(wts[labels == j].sum()) for j, s in enumerate(system.states)}
        out["phi>0"] = float(wts[flat[:, 0] > 0].sum())
        if "C7ax" in out and "C7eq" in out and out["C7eq"] > 0:
            out["C7ax/C7eq"] = out["C7ax"] / out["C7eq"]
        return out

    full = solve(slice(None))
    size = n_per_window // n_blocks
    blocks = [solve(slice(b * size, (b + 1) * size)) for b in range(n_blocks)]
    populations = {
        key: {"fraction": full[key], "error": float(np.std([b[key] for b in blocks], ddof=1) / math.sqrt(n_blocks))}
        for key in full
    }
    return {
        "populations": populations,
        "method": (
            f"umbrella sampling along phi ({n_windows} windows, {k:g} kJ/mol/rad^2, {t_win:g} ps each, "
            f"plain Langevin MD at {temp:g} K) + MBAR; errors from {n_blocks} time blocks"
        ),
        "settings": {
            "n_windows": n_windows, "force_constant_kj_per_mol_rad2": k, "window_time_ps": t_win,
            "equilibration_ps": t_eq, "sample_interval_ps": dt_s, "timestep_fs": dt * 1000, "friction_per_ps": gamma,
            "n_blocks": n_blocks, "seed": seed, "temperature_k": temp,
        },
        "md_time_ns": n_windows * (t_win + t_eq) * 1e-3,
        "wall_seconds": wall,
        "system": system.fingerprint(),
    }


def reference_key(system: "MolecularSystem") -> str:
    """Key of a system's entry in the reference file: ``"<forcefield files>|<solvent>|<T> K"``."""
    return f"{'+'.join(system.forcefield_files)}|{system.solvent}|{system.temperature_k:g} K|{system.constraints}"


def reference_populations(system: "MolecularSystem") -> dict[str, Any] | None:
    """The shipped reference estimate for this system and settings, or ``None`` if there is none."""
    from spacetime_md.molecular.system import system_data_path

    if system.name != "alanine-dipeptide":
        return None
    try:
        path = system_data_path(REFERENCE_FILE)
    except FileNotFoundError:
        return None
    data = json.loads(path.read_text())
    return data.get(reference_key(system))
