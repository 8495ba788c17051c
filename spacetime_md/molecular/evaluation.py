"""Sampling from a trained denoiser and comparing the samples with held-out MD samples.

Samplers (all in ``log_snr``, model units, noise projected onto the centred subspace):

- ``"ancestral"`` (reverse SDE, DDPM-style): from ``x_t`` at ``l_t`` to ``l_s > l_t`` draw
  ``x_s ~ q(x_s | x_t, x0 = D(x_t))``, i.e. with ``r = exp(l_t - l_s)``
  ``x_s = alpha_s (r / alpha_t) x_t + alpha_s (1 - r) D + sigma_s sqrt(1 - r) P n``;
- ``"ddim"`` (probability-flow ODE, first order): ``x_s = alpha_s D + sigma_s (x_t - alpha_t D) / sigma_t``;
- ``"heun"`` (probability-flow ODE, second order, EDM's Heun step in ``x / alpha`` and
  ``sigma / alpha = exp(-log_snr / 2)``; two denoiser calls per step, the last step is Euler).

First-order samplers lose variance at a rate proportional to the step in ``log_snr`` (for a
Gaussian with the exact denoiser and 100 steps over [-8, 10]: ancestral -8 %, DDIM -4 %,
Heun < 1 %; see ``tests/molecular/test_evaluation.py``).

Both start from ``P n`` at ``log_snr_start`` and return ``D(x, log_snr_end)`` after the last
step, converted to nm with the model's :func:`~spacetime_md.molecular.model.from_model`.

Metrics (:func:`evaluate_samples`), all against held-out MD frames:

- Ramachandran Jensen-Shannon divergence: ``(phi, psi)`` histograms on a ``bins x bins`` grid
  over ``[-pi, pi)^2`` (default 36 x 36, 10 degree bins), JSD in nats (``ln 2`` at most);
  the same statistic between two disjoint MD sets of the same size is the noise floor.
- OpenMM potential energy (kJ/mol, amber99sbildn, vacuum, no constraints, so that every bond
  including X-H counts): median and 90th percentile.
- C7ax population: fraction of frames with ``phi > 0`` (the left-handed half-plane, which in
  vacuum at 300 K is dominated by C7ax).
- Bond lengths: per-bond mean length vs MD (mean and max absolute error, Angstrom) and the RMS
  deviation of sampled bond lengths from the MD per-bond means (model vs MD's own spread).
- Fraction of L chirality at the alanine C-alpha (:mod:`.chirality`).

Alanine dipeptide atom order: phi = (4, 6, 8, 14), psi = (6, 8, 14, 16).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.chirality import ALANINE_DIPEPTIDE_CHIRAL_ATOMS, compute_chirality, fraction_l
from spacetime_md.molecular.model import EquivariantDenoiser, center, from_model

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

__all__ = [
    "PHI_ATOMS",
    "PSI_ATOMS",
    "TARGETS",
    "sample_model",
    "phi_psi",
    "ramachandran_histogram",
    "jensen_shannon",
    "ramachandran_jsd",
    "c7ax_population",
    "bond_length_errors",
    "compute_energies",
    "EvaluationResult",
    "evaluate_samples",
]

logger = logging.getLogger(__name__)

PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)

#: Quality targets of issue 4.
TARGETS = {"rama_jsd": 0.05, "fraction_l": 0.99}


def sample_model(
    model: EquivariantDenoiser | Callable[[Tensor, Tensor], Tensor],
    n_samples: int,
    *,
    dim: int | None = None,
    length_scale_nm: float | None = None,
    n_steps: int = 100,
    method: Literal["ancestral", "ddim", "heun"] = "heun",
    log_snr_start: float = -8.0,
    log_snr_end: float = 10.0,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
    mirror_d: bool = False,
    chiral_atoms: tuple[int, int, int, int] = ALANINE_DIPEPTIDE_CHIRAL_ATOMS,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> np.ndarray:
    """Draw ``n_samples`` structures from the model.

    Parameters
    ----------
    model : EquivariantDenoiser or callable
        Any denoiser ``(x (B, 3N), log_snr (B,)) -> (B, 3N)`` in model units; for a plain
        callable give ``dim`` and ``length_scale_nm`` (it is evaluated in float64 on the CPU).
    n_samples : int
    dim, length_scale_nm : optional
        Default: the model's ``dim`` and ``length_scale_nm``.
    n_steps : int
        Noise levels, evenly spaced in ``log_snr`` (Heun uses about two evaluations each).
    method : {"heun", "ancestral", "ddim"}
        Probability-flow ODE (Heun, 2nd order; DDIM, 1st order) or reverse SDE (ancestral).
    log_snr_start, log_snr_end : float
        First and last noise level (model units).
    batch_size : int
        Structures integrated at once.
    generator : torch.Generator, optional
        CPU generator for the initial noise and the ancestral noise.
    mirror_d : bool
        Post-hoc chirality correction: reflect every sample whose centre ``chiral_atoms`` is D
        (the force field is achiral, so the mirror image has the same energy). Off by default;
        the model's own chirality is what :func:`evaluate_samples` measures.
    chiral_atoms : (CA, N, C, CB)
    progress : bool
    callback : callable, optional
        Called with ``{"batch": k, "n_done": n, "elapsed_s": t}`` after every batch.

    Returns
    -------
    ndarray, shape=(n_samples, N, 3)
        Coordinates in nm (centred).
    """
    if n_samples < 1 or n_steps < 1 or batch_size < 1:
        raise ValueError(
            f"n_samples, n_steps, batch_size: expected integers >= 1, got {n_samples}, {n_steps}, {batch_size}"
        )
    if method not in ("ancestral", "ddim", "heun"):
        raise ValueError(f"method: expected 'heun', 'ancestral' or 'ddim', got {method!r}")
    if not log_snr_start < log_snr_end:
        raise ValueError(f"log_snr_end: expected a value > log_snr_start = {log_snr_start}, got {log_snr_end}")
    dim = getattr(model, "dim", None) if dim is None else dim
    length_scale_nm = getattr(model, "length_scale_nm", None) if length_scale_nm is None else length_scale_nm
    if dim is None or length_scale_nm is None:
        raise ValueError("dim, length_scale_nm: expected values for a denoiser that is not an EquivariantDenoiser, got None")
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    dtype, device = (param.dtype, param.device) if param is not None else (torch.float64, torch.device("cpu"))
    levels = torch.linspace(log_snr_start, log_snr_end, n_steps, dtype=torch.float64)
    alpha, sigma = alpha_sigma(levels)
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples, desc=f"sample ({method})", dynamic_ncols=True)
    start = time.perf_counter()
    done = 0

    def evaluate(x: Tensor, level: Tensor) -> Tensor:
        lam = torch.full((x.shape[0],), float(level), dtype=dtype, device=device)
        return model(x.to(device=device, dtype=dtype), lam).to(torch.float64).cpu()

    with torch.no_grad():
        while done < n_samples:
            b = min(batch_size, n_samples - done)
            x = center(torch.randn(b, dim, generator=generator, dtype=torch.float64))
            for k in range(n_steps):
                denoised = evaluate(x, levels[k])
                if k == n_steps - 1:
                    x = denoised
                    break
                a_t, s_t, a_s, s_s = alpha[k], sigma[k], alpha[k + 1], sigma[k + 1]
                if method == "ddim":
                    x = a_s * denoised + s_s * (x - a_t * denoised) / s_t
                elif method == "heun":
                    # EDM variables: y = x / alpha, noise level e = sigma / alpha.
                    e_t, e_s = s_t / a_t, s_s / a_s
                    y = x / a_t
                    slope = (y - denoised) / e_t
                    y_euler = y + (e_s - e_t) * slope
                    if k + 1 < n_steps - 1:
                        denoised_s = evaluate(a_s * y_euler, levels[k + 1])
                        slope = 0.5 * (slope + (y_euler - denoised_s) / e_s)
                    x = a_s * (y + (e_s - e_t) * slope)
                else:
                    r = math.exp(float(levels[k] - levels[k + 1]))
                    noise = center(torch.randn(b, dim, generator=generator, dtype=torch.float64))
                    x = a_s * (r / a_t) * x + a_s * (1.0 - r) * denoised + s_s * math.sqrt(1.0 - r) * noise
            out.append(from_model(x, length_scale_nm).numpy())
            done += b
            if bar is not None:
                bar.update(b)
            if callback is not None:
                callback({"batch": len(out), "n_done": done, "elapsed_s": time.perf_counter() - start})
    if bar is not None:
        bar.close()
    samples = np.concatenate(out, axis=0)
    if mirror_d:
        is_d = compute_chirality(samples, chiral_atoms) < 0
        samples[is_d, :, 2] *= -1.0
    return samples


def phi_psi(xyz: np.ndarray, phi_atoms: Sequence[int] = PHI_ATOMS, psi_atoms: Sequence[int] = PSI_ATOMS) -> np.ndarray:
    """``(n_frames, 2)`` backbone dihedrals in radians from coordinates ``(n_frames, N, 3)``."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3), got {xyz.shape}")

    def dihedral(a: int, b: int, c: int, d: int) -> np.ndarray:
        b0 = xyz[:, a] - xyz[:, b]
        b1 = xyz[:, c] - xyz[:, b]
        b2 = xyz[:, d] - xyz[:, c]
        b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
        v = b0 - np.sum(b0 * b1n, -1, keepdims=True) * b1n
        w = b2 - np.sum(b2 * b1n, -1, keepdims=True) * b1n
        x = np.sum(v * w, -1)
        y = np.sum(np.cross(b1n, v) * w, -1)
        return np.arctan2(y, x)

    return np.stack([dihedral(*phi_atoms), dihedral(*psi_atoms)], axis=-1)


def ramachandran_histogram(angles: np.ndarray, bins: int = 36) -> np.ndarray:
    """Normalised ``(bins, bins)`` histogram of ``(phi, psi)`` radians over ``[-pi, pi)^2``."""
    angles = np.asarray(angles)
    if angles.ndim != 2 or angles.shape[1] != 2:
        raise ValueError(f"angles: expected shape (n_frames, 2), got {angles.shape}")
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    wrapped = (angles + np.pi) % (2 * np.pi) - np.pi
    hist, _, _ = np.histogram2d(wrapped[:, 0], wrapped[:, 1], bins=[edges, edges])
    total = hist.sum()
    if total == 0:
        raise ValueError("angles: expected at least one frame, got 0")
    return hist / total


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) between two histograms of equal shape."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"q: expected the shape of p {p.shape}, got {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def ramachandran_jsd(xyz_a: np.ndarray, xyz_b: np.ndarray, bins: int = 36) -> float:
    """JSD (nats) between the Ramachandran histograms of two coordinate sets."""
    return jensen_shannon(ramachandran_histogram(phi_psi(xyz_a), bins), ramachandran_histogram(phi_psi(xyz_b), bins))


def c7ax_population(xyz: np.ndarray) -> float:
    """Fraction of frames with ``phi > 0`` (C7ax side of the Ramachandran plane)."""
    return float(np.mean(phi_psi(xyz)[:, 0] > 0))


def bond_length_errors(xyz: np.ndarray, reference: np.ndarray, bonds: Sequence[Sequence[int]]) -> dict[str, float]:
    """Bond-length statistics of ``xyz`` against ``reference`` (both nm), reported in Angstrom.

    Returns
    -------
    dict
        ``mean_abs_error`` / ``max_abs_error``: over bonds, ``|<d>_xyz - <d>_ref|``;
        ``rms_deviation``: RMS over frames and bonds of ``d_xyz - <d>_ref``;
        ``reference_rms_deviation``: the same for the reference itself (thermal spread).
    """
    bonds = np.asarray(bonds, dtype=np.int64)
    if bonds.ndim != 2 or bonds.shape[1] != 2 or len(bonds) == 0:
        raise ValueError(f"bonds: expected shape (n_bonds, 2), got {bonds.shape}")

    def lengths(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)

    d, d_ref = lengths(xyz), lengths(reference)
    ref_mean = d_ref.mean(0)
    err = np.abs(d.mean(0) - ref_mean)
    return {
        "mean_abs_error": float(err.mean() * 10),
        "max_abs_error": float(err.max() * 10),
        "rms_deviation": float(np.sqrt(np.mean((d - ref_mean) ** 2)) * 10),
        "reference_rms_deviation": float(np.sqrt(np.mean((d_ref - ref_mean) ** 2)) * 10),
    }


def compute_energies(xyz: np.ndarray, topology: "mdtraj.Topology", forcefield: str = "amber99sbildn.xml") -> np.ndarray:
    """Vacuum potential energies (kJ/mol) of frames ``(n_frames, N, 3)`` nm, no constraints.

    Uses the OpenMM ``Reference`` platform (fastest for small molecules on these CPUs).
    """
    import openmm
    from openmm import app, unit

    ff = app.ForceField(forcefield)
    system = ff.createSystem(topology.to_openmm(), nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    energies = np.empty(len(xyz))
    for k, frame in enumerate(np.asarray(xyz, dtype=np.float64)):
        context.setPositions(frame)
        energies[k] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energies


@dataclass
class EvaluationResult:
    """Quality of model samples against held-out MD samples (see the module docstring).

    ``*_model`` describe the model's samples, ``*_md`` the held-out MD frames; ``rama_jsd_md``
    is the JSD between two disjoint MD sets with as many frames as the model sample (noise
    floor; ``nan`` when no second MD set was given). ``c7ax_md_all`` is the C7ax population of
    all MD frames given (held-out plus the second set): C7ax is rare and visited in long blocks
    by replica exchange, so a 10 % time block can miss it almost entirely.
    """

    n_samples: int
    n_reference: int
    rama_jsd: float
    rama_jsd_md: float
    energy_median_model: float
    energy_median_md: float
    energy_p90_model: float
    energy_p90_md: float
    c7ax_model: float
    c7ax_md: float
    c7ax_md_all: float
    bond_mean_abs_error: float
    bond_max_abs_error: float
    bond_rms_model: float
    bond_rms_md: float
    fraction_l_model: float
    fraction_l_md: float
    sampler: str = ""
    sampling_time_s: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def passed(self) -> dict[str, bool]:
        """Which of the issue's hard targets are met."""
        return {
            "rama_jsd": self.rama_jsd <= TARGETS["rama_jsd"],
            "fraction_l": self.fraction_l_model >= TARGETS["fraction_l"],
        }

    def to_table(self) -> str:
        """Markdown table: metric, model, MD, target."""
        ok = self.passed()
        rows = [
            ("Ramachandran JSD (nats, 36x36)", f"{self.rama_jsd:.4f}", f"{self.rama_jsd_md:.4f} (MD vs MD)",
             f"<= {TARGETS['rama_jsd']} ({'met' if ok['rama_jsd'] else 'NOT met'})"),
            ("energy median (kJ/mol)", f"{self.energy_median_model:.1f}", f"{self.energy_median_md:.1f}", "close to MD"),
            ("energy 90th percentile (kJ/mol)", f"{self.energy_p90_model:.1f}", f"{self.energy_p90_md:.1f}", "close to MD"),
            ("C7ax population (phi > 0)", f"{self.c7ax_model:.4f}",
             f"{self.c7ax_md:.4f} (all MD frames {self.c7ax_md_all:.4f})", "close to MD"),
            ("bond length, mean abs error of means (A)", f"{self.bond_mean_abs_error:.4f}", "0", "small"),
            ("bond length, max abs error of means (A)", f"{self.bond_max_abs_error:.4f}", "0", "small"),
            ("bond length RMS deviation (A)", f"{self.bond_rms_model:.4f}", f"{self.bond_rms_md:.4f}", "close to MD"),
            ("fraction L-chirality", f"{self.fraction_l_model:.4f}", f"{self.fraction_l_md:.4f}",
             f">= {TARGETS['fraction_l']} ({'met' if ok['fraction_l'] else 'NOT met'})"),
        ]
        lines = [
            f"samples: model {self.n_samples} ({self.sampler}, {self.sampling_time_s:.1f} s), "
            f"held-out MD {self.n_reference}",
            "",
            "| metric | model | MD | target |",
            "|---|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        return "\n".join(lines)


def evaluate_samples(
    samples: np.ndarray,
    reference: np.ndarray,
    topology: "mdtraj.Topology",
    *,
    reference_b: np.ndarray | None = None,
    bins: int = 36,
    energies: bool = True,
    forcefield: str = "amber99sbildn.xml",
    chiral_atoms: tuple[int, int, int, int] = ALANINE_DIPEPTIDE_CHIRAL_ATOMS,
    sampler: str = "",
    sampling_time_s: float = float("nan"),
) -> EvaluationResult:
    """Compare model ``samples`` with MD ``reference`` frames (both ``(n, N, 3)`` nm).

    Parameters
    ----------
    samples, reference : ndarray
    topology : mdtraj.Topology
        Bonds and the force field's system.
    reference_b : ndarray, optional
        A second, disjoint MD set (e.g. training frames) to measure the JSD noise floor with
        ``len(samples)`` frames.
    bins : int
    energies : bool
        Compute OpenMM energies (otherwise the energy fields are ``nan``).
    """
    samples = np.asarray(samples, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    for name, arr in (("samples", samples), ("reference", reference)):
        if arr.ndim != 3 or arr.shape[1:] != (topology.n_atoms, 3):
            raise ValueError(f"{name}: expected shape (n_frames, {topology.n_atoms}, 3), got {arr.shape}")
    rama = ramachandran_jsd(samples, reference, bins)
    floor = float("nan")
    c7ax_all = c7ax_population(reference)
    if reference_b is not None:
        reference_b = np.asarray(reference_b, dtype=np.float64)
        n = min(len(samples), len(reference_b))
        pick = np.linspace(0, len(reference_b) - 1, n).astype(np.int64)
        floor = ramachandran_jsd(reference_b[pick], reference, bins)
        c7ax_all = c7ax_population(np.concatenate([reference_b, reference]))
    if energies:
        e_model = compute_energies(samples, topology, forcefield)
        e_md = compute_energies(reference, topology, forcefield)
    else:
        e_model = e_md = np.full(1, np.nan)
    bonds = [(b[0].index, b[1].index) for b in topology.bonds]
    bl = bond_length_errors(samples, reference, bonds)
    return EvaluationResult(
        n_samples=len(samples),
        n_reference=len(reference),
        rama_jsd=rama,
        rama_jsd_md=floor,
        energy_median_model=float(np.median(e_model)),
        energy_median_md=float(np.median(e_md)),
        energy_p90_model=float(np.percentile(e_model, 90)),
        energy_p90_md=float(np.percentile(e_md, 90)),
        c7ax_model=c7ax_population(samples),
        c7ax_md=c7ax_population(reference),
        c7ax_md_all=c7ax_all,
        bond_mean_abs_error=bl["mean_abs_error"],
        bond_max_abs_error=bl["max_abs_error"],
        bond_rms_model=bl["rms_deviation"],
        bond_rms_md=bl["reference_rms_deviation"],
        fraction_l_model=fraction_l(samples, chiral_atoms),
        fraction_l_md=fraction_l(reference, chiral_atoms),
        sampler=sampler,
        sampling_time_s=sampling_time_s,
    )
