"""Independent references for state populations (different methods from replica exchange).

Two estimators, both plain Langevin MD at the system temperature with a bias on one torsion
only, reweighted exactly. The biased torsion is a collective variable of the system
(:mod:`.cvs`): by default the phi of its first residue with a backbone (phi, psi) pair ("phi 2"
of alanine dipeptide), or ``bias_cv``; states are assigned through the system's CVs:

:func:`estimate_populations_umbrella`
    Umbrella sampling: windows restrain phi harmonically (periodic distance) to centres spaced
    evenly around the circle, combined with MBAR (equivalently WHAM without histograms): with
    biases ``b_k(phi)`` in kT and ``N_k`` samples per window, the free energies solve

        f_k = -ln sum_n exp(-b_k(phi_n)) / sum_l N_l exp(f_l - b_l(phi_n)),

    and the unbiased weight of sample ``n`` is ``1 / sum_l N_l exp(f_l - b_l(phi_n))``.
    Errors: MBAR solved per time block (block ``j`` of every window together).
:func:`estimate_populations_flat_bias`
    One long run with a fixed bias ``V(phi) = -0.9 kT F(phi)``, where ``F`` is a Fourier fit of a
    short umbrella + MBAR profile; each sample has weight ``exp(V / kT)``, exact whatever the
    quality of ``F``; the walker crosses the phi barriers hundreds of times per ns, so this is far
    more precise per MD step than windows. Errors: jackknife over time blocks. This one produces
    the shipped numbers (``systems/alanine_dipeptide/reference_populations.py`` ->
    ``spacetime_md/data/alanine_dipeptide/reference_populations.json``).

Units inside: nm, ps, kJ/mol, K, rad.
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

from spacetime_md.molecular.system.units import KELVIN, NM, PS, kT_kj_per_mol, to_md_float

if TYPE_CHECKING:
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "solve_mbar",
    "estimate_populations_umbrella",
    "estimate_populations_flat_bias",
    "fit_free_energy_profile",
    "merge_reference_runs",
    "reference_populations",
    "reference_key",
]

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
    return_samples: bool = False,
    bias_cv: str | None = None,
) -> dict[str, Any]:
    """Populations of ``system.states`` (and of phi > 0) from umbrella sampling along phi + MBAR.

    ``bias_cv`` names the torsion CV to bias (default: the phi of the system's first backbone
    (phi, psi) pair). With ``return_samples=True`` returns the pooled CV values ``cv_values``
    (radians / nm, shape (M, K), the biased torsion in column ``bias_column``) and their MBAR
    ``log_weights`` instead (used to build the bias of :func:`estimate_populations_flat_bias`).

    Returns
    -------
    dict
        ``{"populations": {name: {"fraction", "error"}}, "method": str, "settings": {...},
        "md_time_ns": float, "wall_seconds": float}``.
    """
    from spacetime_md.molecular.system.states import assign_states

    col = _bias_column(system, bias_cv)
    positive = _positive_key(system, col)
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
    force.addTorsion(*system.cvs[col].atoms, [])
    biased.addForce(force)

    rng = np.random.SeedSequence([int(seed), 7])
    seeds = [int(s) % (2**31 - 2) + 1 for s in rng.generate_state(n_windows, dtype=np.uint32)]
    integrator = openmm.LangevinMiddleIntegrator(temp * KELVIN, gamma / PS, dt * PS)
    integrator.setRandomNumberSeed(seeds[0])
    ctx = openmm.Context(biased, integrator, system.platform)
    x = system.minimize().value_in_unit(NM)
    ctx.setPositions(x)
    t0 = time.perf_counter()
    iterator = range(n_windows)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="umbrella windows")
    # Visit windows starting from the one nearest the minimum, walking around the circle, so
    # each window starts from the end of its neighbour.
    phi_start = float(system.compute_cvs(x[None])[0, col])
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
        results[w] = system.compute_cvs(xs)
    wall = time.perf_counter() - t0
    values = np.stack([results[w] for w in range(n_windows)])  # (windows, n, K)
    n_cvs = values.shape[-1]

    def solve(block: slice) -> dict[str, float]:
        a = values[:, block]  # (windows, m, K)
        flat = a.reshape(-1, n_cvs)
        bias = 0.5 * k * beta * _periodic(flat[None, :, col] - centres[:, None]) ** 2  # (windows, Ntot)
        _, log_w = solve_mbar(bias, np.full(n_windows, a.shape[1]))
        wts = np.exp(log_w)
        labels = assign_states(flat, system.states, system.cvs) if system.states else np.full(len(flat), -1)
        out = {s.name: float(wts[labels == j].sum()) for j, s in enumerate(system.states)}
        out[positive] = float(wts[flat[:, col] > 0].sum())
        if "C7ax" in out and "C7eq" in out and out["C7eq"] > 0:
            out["C7ax/C7eq"] = out["C7ax"] / out["C7eq"]
        return out

    full = solve(slice(None))
    if return_samples:
        flat = values.reshape(-1, n_cvs)
        bias = 0.5 * k * beta * _periodic(flat[None, :, col] - centres[:, None]) ** 2
        _, log_w = solve_mbar(bias, np.full(n_windows, n_per_window))
        return {"cv_values": flat, "bias_column": col, "cv_names": list(system.cvs.names), "log_weights": log_w,
                "md_time_ns": n_windows * (t_win + t_eq) * 1e-3, "wall_seconds": wall}
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
            "n_windows": n_windows, "bias_cv": system.cvs[col].name, "force_constant_kj_per_mol_rad2": k, "window_time_ps": t_win,
            "equilibration_ps": t_eq, "sample_interval_ps": dt_s, "timestep_fs": dt * 1000, "friction_per_ps": gamma,
            "n_blocks": n_blocks, "seed": seed, "temperature_k": temp,
        },
        "md_time_ns": n_windows * (t_win + t_eq) * 1e-3,
        "wall_seconds": wall,
        "system": system.fingerprint(),
    }


def _bias_column(system: "MolecularSystem", bias_cv: str | None) -> int:
    """Column in ``system.cvs`` of the torsion to bias: ``bias_cv``, else the first residue's phi."""
    from spacetime_md.molecular.system.cvs import Torsion

    if bias_cv is not None:
        col = system.cvs.index(bias_cv)
        if not isinstance(system.cvs[col], Torsion):
            raise ValueError(f"bias_cv: expected a torsion collective variable, got {bias_cv!r} ({system.cvs[col].kind})")
        return col
    pairs = system.cvs.ramachandran_pairs()
    if not pairs:
        raise ValueError(
            f"{system.name}: expected a backbone phi among the collective variables (or a torsion CV named by "
            f"bias_cv) to bias, found none"
        )
    return pairs[0][1]


def _positive_key(system: "MolecularSystem", col: int) -> str:
    """``"phi>0"`` for the one backbone phi of a single-residue peptide, else ``"<cv name>>0"``."""
    pairs = system.cvs.ramachandran_pairs()
    if len(pairs) == 1 and pairs[0][1] == col:
        return "phi>0"
    return f"{system.cvs[col].name}>0"


def reference_key(system: "MolecularSystem") -> str:
    """Key of a system's entry in the reference file: ``"<forcefield files>|<solvent>|<T> K"``."""
    return f"{'+'.join(system.forcefield_files)}|{system.solvent}|{system.temperature_k:g} K|{system.constraints}"


def reference_populations(system: "MolecularSystem") -> dict[str, Any] | None:
    """The shipped reference estimate for this system and settings, or ``None`` if there is none."""
    from spacetime_md.molecular.system.build import system_data_path

    if system.name != "alanine-dipeptide":
        return None
    try:
        path = system_data_path(REFERENCE_FILE)
    except FileNotFoundError:
        return None
    data = json.loads(path.read_text())
    return data.get(reference_key(system))


def _fourier_design(phi: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(phi)]
    for m in range(1, order + 1):
        cols += [np.cos(m * phi), np.sin(m * phi)]
    return np.stack(cols, axis=-1)


def fit_free_energy_profile(phi: np.ndarray, log_weights: np.ndarray, order: int = 6, bins: int = 72) -> np.ndarray:
    """Fourier coefficients (kT) of ``F(phi) = -ln p(phi)`` from weighted samples.

    Returns ``c`` with ``F(phi) ~ c[0] + sum_m c[2m-1] cos(m phi) + c[2m] sin(m phi)``.
    """
    w = np.exp(np.asarray(log_weights) - np.max(log_weights))
    hist, edges = np.histogram(phi, bins=bins, range=(-np.pi, np.pi), weights=w)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = hist > 0
    f = -np.log(hist[ok] / hist.sum())
    coef, *_ = np.linalg.lstsq(_fourier_design(centres[ok], order), f, rcond=None)
    return coef


def _jackknife_ratio(num_blocks: np.ndarray, den_blocks: np.ndarray) -> tuple[float, float]:
    n = len(num_blocks)
    full = num_blocks.sum() / den_blocks.sum()
    loo = (num_blocks.sum() - num_blocks) / (den_blocks.sum() - den_blocks)
    return float(full), float(math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))


def estimate_populations_flat_bias(
    system: "MolecularSystem",
    *,
    production: unit.Quantity = 10.0 * unit.nanosecond,
    sample_interval: unit.Quantity = 0.5 * unit.picosecond,
    flatten: float = 0.9,
    fourier_order: int = 6,
    umbrella_window_time: unit.Quantity = 40.0 * unit.picosecond,
    umbrella_equilibration: unit.Quantity = 5.0 * unit.picosecond,
    equilibration: unit.Quantity = 10.0 * unit.picosecond,
    timestep: unit.Quantity = 2.0 * unit.femtosecond,
    friction: unit.Quantity = 1.0 / unit.picosecond,
    n_blocks: int = 20,
    seed: int = 0,
    progress: bool = False,
    bias_cv: str | None = None,
) -> dict[str, Any]:
    """Populations from one long MD run at the system temperature with a fixed phi bias, reweighted.

    ``bias_cv`` names the biased torsion CV (default: the phi of the system's first backbone
    (phi, psi) pair).

    1. A short umbrella run (:func:`estimate_populations_umbrella`, ``umbrella_window_time`` per
       window) + MBAR gives a rough free-energy profile ``F(phi)``, fitted by a Fourier series.
    2. Langevin MD at the system temperature with the bias ``V(phi) = -flatten * kT * F(phi)``
       (a ``CustomTorsionForce``) walks across phi freely; every sample gets the exact weight
       ``exp(V(phi) / kT)``, so the estimate does not depend on the accuracy of the profile.
    3. Populations are weighted state fractions; errors are jackknife over ``n_blocks`` time
       blocks.
    """
    from spacetime_md.molecular.system.states import assign_states

    if not (0.0 <= flatten <= 1.0):
        raise ValueError(f"flatten: expected a value in [0, 1], got {flatten}")
    col = _bias_column(system, bias_cv)
    t_prod = to_md_float("production", production, PS)
    dt_s = to_md_float("sample_interval", sample_interval, PS)
    dt = to_md_float("timestep", timestep, PS)
    gamma = to_md_float("friction", friction, PS**-1)
    temp = system.temperature_k
    kT = kT_kj_per_mol(temp)
    t0 = time.perf_counter()
    pre = estimate_populations_umbrella(
        system, window_time=umbrella_window_time, equilibration=umbrella_equilibration, seed=seed,
        return_samples=True, bias_cv=system.cvs[col].name,
    )
    coef = fit_free_energy_profile(pre["cv_values"][:, col], pre["log_weights"], order=fourier_order)
    # V(theta) = -flatten * kT * (F(theta) - c0), in kJ/mol.
    terms = []
    for m in range(1, fourier_order + 1):
        a, b = float(coef[2 * m - 1]), float(coef[2 * m])
        terms.append(f"({a!r})*cos({m}*theta) + ({b!r})*sin({m}*theta)")
    expression = f"-({float(flatten * kT)!r})*(" + " + ".join(terms) + ")"
    biased = copy.deepcopy(system.openmm_system)
    force = openmm.CustomTorsionForce(expression)
    force.addTorsion(*system.cvs[col].atoms, [])
    biased.addForce(force)

    def bias_kj(phi: np.ndarray) -> np.ndarray:
        return -flatten * kT * (_fourier_design(phi, fourier_order) @ coef - coef[0])

    seed_int = int(np.random.SeedSequence([int(seed), 11]).generate_state(1)[0]) % (2**31 - 2) + 1
    integrator = openmm.LangevinMiddleIntegrator(temp * KELVIN, gamma / PS, dt * PS)
    integrator.setRandomNumberSeed(seed_int)
    ctx = openmm.Context(biased, integrator, system.platform)
    ctx.setPositions(system.minimize().value_in_unit(NM))
    ctx.setVelocitiesToTemperature(temp * KELVIN, seed_int)
    integrator.step(int(round(to_md_float("equilibration", equilibration, PS) / dt)))
    n = int(round(t_prod / dt_s))
    steps = max(1, int(round(dt_s / dt)))
    xs = np.empty((n, system.n_atoms, 3))
    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="biased MD", mininterval=2.0)
    for i in iterator:
        integrator.step(steps)
        xs[i] = ctx.getState(getPositions=True).getPositions(asNumpy=True)._value
    values = system.compute_cvs(xs)
    phi = values[:, col]
    log_w = bias_kj(phi) / kT
    w = np.exp(log_w - log_w.max())
    labels = assign_states(values, system.states, system.cvs) if system.states else np.full(n, -1)
    indicators = {s.name: labels == j for j, s in enumerate(system.states)}
    indicators[_positive_key(system, col)] = phi > 0
    size = n // n_blocks
    den = np.add.reduceat(w[: size * n_blocks], np.arange(0, size * n_blocks, size))
    populations = {}
    for key, ind in indicators.items():
        num = np.add.reduceat((w * ind)[: size * n_blocks], np.arange(0, size * n_blocks, size))
        frac, err = _jackknife_ratio(num, den)
        populations[key] = {"fraction": frac, "error": err}
    if "C7ax" in indicators and "C7eq" in indicators:
        a = np.add.reduceat((w * indicators["C7ax"])[: size * n_blocks], np.arange(0, size * n_blocks, size))
        b = np.add.reduceat((w * indicators["C7eq"])[: size * n_blocks], np.arange(0, size * n_blocks, size))
        frac, err = _jackknife_ratio(a, b)
        populations["C7ax/C7eq"] = {"fraction": frac, "error": err}
    ess = float(w.sum() ** 2 / (w**2).sum())
    n_cross = int(np.sum(np.abs(np.diff(np.sign(phi))) > 0))
    return {
        "populations": populations,
        "method": (
            f"one {t_prod / 1000:g} ns Langevin MD run at {temp:g} K with a fixed bias -{flatten:g} F(phi) "
            f"(Fourier order {fourier_order}, F from a short umbrella-sampling + MBAR run), reweighted "
            f"exactly by exp(V/kT); errors: jackknife over {n_blocks} time blocks"
        ),
        "settings": {
            "production_ps": t_prod, "bias_cv": system.cvs[col].name, "sample_interval_ps": dt_s, "flatten": flatten, "fourier_order": fourier_order,
            "umbrella_window_time_ps": to_md_float("umbrella_window_time", umbrella_window_time, PS),
            "timestep_fs": dt * 1000, "friction_per_ps": gamma, "n_blocks": n_blocks, "seed": seed,
            "temperature_k": temp, "bias_fourier_coefficients_kT": coef.tolist(),
        },
        "n_samples": n,
        "weight_ess": ess,
        "phi_sign_changes": n_cross,
        "md_time_ns": t_prod * 1e-3 + pre["md_time_ns"],
        "wall_seconds": time.perf_counter() - t0,
        "system": system.fingerprint(),
    }


def merge_reference_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine independent equal-length runs: mean fractions, error ``sqrt(sum err^2) / n``."""
    if not runs:
        raise ValueError("runs: expected at least one result, got none")
    n = len(runs)
    keys = [k for k in runs[0]["populations"] if all(k in r["populations"] for r in runs)]
    populations = {
        k: {
            "fraction": float(np.mean([r["populations"][k]["fraction"] for r in runs])),
            "error": float(math.sqrt(sum(r["populations"][k]["error"] ** 2 for r in runs)) / n),
        }
        for k in keys
    }
    seeds = [r["settings"]["seed"] for r in runs]
    return {
        "populations": populations,
        "method": (f"{n} independent runs (seeds {seeds}) of: " if n > 1 else "") + runs[0]["method"],
        "md_time_ns": float(sum(r["md_time_ns"] for r in runs)),
        "wall_seconds": float(sum(r["wall_seconds"] for r in runs)),
        "system": runs[0]["system"],
        "runs": runs,
    }
