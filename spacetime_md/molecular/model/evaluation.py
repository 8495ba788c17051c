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
step, converted to nm with the model's :func:`~spacetime_md.molecular.model.denoiser.from_model`.

Metrics (:func:`evaluate_samples`), all against held-out MD frames, through the system's
collective variables (:mod:`.cvs`), states (:mod:`.states`) and chiral centres
(:mod:`.chirality`), so any molecule works:

- Ramachandran Jensen-Shannon divergence **per residue**: each residue's ``(phi, psi)``
  histogram on a ``bins x bins`` grid over ``[-pi, pi)^2`` (default 36 x 36, 10 degree bins),
  JSD in nats (``ln 2`` at most); ``rama_jsd`` is the mean over residues (for alanine
  dipeptide, its one residue). The same statistic between two disjoint MD sets of the same size
  is the noise floor. A molecule without a backbone (phi, psi) pair gets a JSD over its first
  two CVs instead (periodic CVs on ``[-pi, pi)``, others on the MD range plus two overflow
  bins), or "n/a" without CVs.
- OpenMM potential energy (kJ/mol, the system's force field, no cutoff, no constraints, so
  that every bond including X-H counts): median and 90th percentile.
- State populations of the system's states (model and MD, block-averaged errors,
  :func:`~spacetime_md.molecular.sampling.populations.state_populations`).
- C7ax population: fraction of frames with ``phi > 0`` (the left-handed half-plane, which in
  vacuum at 300 K is dominated by C7ax); defined for a molecule with one (phi, psi) pair and a
  state called C7ax (alanine dipeptide), "n/a" otherwise. Every residue's ``phi > 0``
  fraction is in ``rama_jsd_by_residue``.
- Bond lengths: per-bond mean length vs MD (mean and max absolute error, Angstrom) and the RMS
  deviation of sampled bond lengths from the MD per-bond means (model vs MD's own spread).
- Chirality of every stereocentre of the topology: the fraction of frames with each centre's
  handedness in the reference structure (L for an amino acid's C-alpha), per centre and for
  all centres at once (``fraction_l_*``); "n/a (no chiral centre in the topology)" otherwise.

Undefined quantities are ``None`` with a ``*_na_reason`` string (``null`` in JSON) and print
as "n/a (reason)". Units inside: nm, radians, kJ/mol.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.system.chirality import (
    NO_CHIRAL_CENTRE,
    ChiralCentre,
    chiral_centres_from_topology,
    compute_chirality,
)
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser, center, from_model

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.system.states import MetastableState
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "TARGETS",
    "sample_model",
    "phi_psi",
    "ramachandran_histogram",
    "cv_histogram",
    "jensen_shannon",
    "ramachandran_jsd",
    "ramachandran_jsd_by_residue",
    "cv_jsd",
    "c7ax_population",
    "bond_length_errors",
    "compute_energies",
    "EvaluationResult",
    "evaluate_samples",
]

logger = logging.getLogger(__name__)

#: Quality targets of issue 4.
TARGETS = {"rama_jsd": 0.05, "fraction_l": 0.99}

NO_RAMACHANDRAN = "no residue with both backbone phi and psi among the collective variables"
NO_CVS = "no collective variables; pass a --cvs file"


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
    chiral_atoms: Sequence[int] | Sequence[Sequence[int]] | None = None,
    chiral_signs: Sequence[int] | None = None,
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
        Post-hoc chirality correction: reflect every sample in which more chiral centres have
        the wrong handedness than the right one (with one centre: whose C-alpha is D); the
        force field is achiral, so the mirror image has the same energy. Off by default; the
        model's own chirality is what :func:`evaluate_samples` measures.
    chiral_atoms : (X, a, b, c) or sequence of them, optional
        The chiral centres (:func:`~spacetime_md.molecular.system.chirality.chiral_centres_from_topology`,
        ``(CA, N, C, CB)`` for a C-alpha); required with ``mirror_d``.
    chiral_signs : sequence of int, optional
        The right sign of each centre's signed volume (default ``+1``: L for C-alpha quads).
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
    centres, signs = _chiral_quads(chiral_atoms, chiral_signs) if mirror_d else ([], np.zeros(0))
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
    if mirror_d and centres:
        right = np.stack([compute_chirality(samples, quad) == s for quad, s in zip(centres, signs)], axis=1)
        wrong = np.stack([compute_chirality(samples, quad) == -s for quad, s in zip(centres, signs)], axis=1)
        flip = wrong.sum(1) > right.sum(1)
        samples[flip, :, 2] *= -1.0
    return samples


def _chiral_quads(chiral_atoms: Any, chiral_signs: Any) -> tuple[list[tuple[int, ...]], np.ndarray]:
    if chiral_atoms is None:
        raise ValueError("chiral_atoms: expected the chiral centres to check with mirror_d=True, got None")
    items = list(chiral_atoms)
    if len(items) == 4 and all(isinstance(a, (int, np.integer)) for a in items):
        items = [items]
    quads = [tuple(int(a) for a in q) for q in items]
    if any(len(q) != 4 for q in quads):
        raise ValueError(f"chiral_atoms: expected (centre, a, b, c) quadruples, got {quads}")
    signs = np.ones(len(quads), dtype=np.int64) if chiral_signs is None else np.asarray(chiral_signs, dtype=np.int64)
    if signs.shape != (len(quads),) or not np.isin(signs, (-1, 1)).all():
        raise ValueError(f"chiral_signs: expected {len(quads)} values of +1 or -1, got {np.asarray(chiral_signs).tolist()}")
    return quads, signs


def _preset_phi_psi_atoms() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The alanine-dipeptide preset's (phi 2, psi 2) atoms (legacy defaults, see :mod:`.presets`)."""
    from spacetime_md.molecular.system.presets import ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI

    return ALANINE_DIPEPTIDE_PHI, ALANINE_DIPEPTIDE_PSI


def phi_psi(
    xyz: np.ndarray, phi_atoms: Sequence[int] | None = None, psi_atoms: Sequence[int] | None = None
) -> np.ndarray:
    """``(n_frames, 2)`` dihedrals in radians of two atom quadruples from ``(n_frames, N, 3)``.

    Legacy helper for one (phi, psi) pair; the default atoms are the alanine-dipeptide preset's
    (:mod:`.presets`). Any molecule: ``system.compute_cvs`` and
    :meth:`~spacetime_md.molecular.system.cvs.CollectiveVariables.ramachandran_pairs`.
    """
    from spacetime_md.molecular.system.dihedrals import compute_dihedrals

    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3), got {xyz.shape}")
    if phi_atoms is None or psi_atoms is None:
        default_phi, default_psi = _preset_phi_psi_atoms()
        phi_atoms = default_phi if phi_atoms is None else phi_atoms
        psi_atoms = default_psi if psi_atoms is None else psi_atoms
    return np.asarray(compute_dihedrals(xyz, [tuple(phi_atoms), tuple(psi_atoms)]))


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


def _cv_edges(reference: np.ndarray, periodic: bool, bins: int) -> np.ndarray:
    """Bin edges of one CV: ``[-pi, pi)`` for an angle; else the reference's range (10 % margin)
    between two overflow bins, so mass the reference never visits still counts."""
    if periodic:
        return np.linspace(-np.pi, np.pi, bins + 1)
    lo, hi = float(np.min(reference)), float(np.max(reference))
    margin = 0.1 * (hi - lo) if hi > lo else max(1e-3, 1e-3 * abs(lo))
    inner = np.linspace(lo - margin, hi + margin, bins + 1)
    return np.concatenate([[-np.inf], inner, [np.inf]])


def cv_histogram(values: np.ndarray, edges: Sequence[np.ndarray], periodic: Sequence[bool]) -> np.ndarray:
    """Normalised histogram of CV values ``(n_frames, K)`` (K = 1 or 2) on the given edges.

    Periodic columns (radians) are wrapped into ``[-pi, pi)`` first.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] not in (1, 2) or v.shape[1] != len(edges):
        raise ValueError(f"values: expected shape (n_frames, {len(edges)}) with 1 or 2 columns, got {v.shape}")
    v = v.copy()
    for k, p in enumerate(periodic):
        if p:
            v[:, k] = (v[:, k] + np.pi) % (2 * np.pi) - np.pi
    hist, _ = np.histogramdd(v, bins=list(edges))
    total = hist.sum()
    if total == 0:
        raise ValueError("values: expected at least one frame, got 0")
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
    """JSD (nats) between the Ramachandran histograms of two coordinate sets (legacy: the
    alanine-dipeptide preset's one pair; any molecule: :func:`ramachandran_jsd_by_residue`)."""
    return jensen_shannon(ramachandran_histogram(phi_psi(xyz_a), bins), ramachandran_histogram(phi_psi(xyz_b), bins))


def ramachandran_jsd_by_residue(
    values_a: np.ndarray, values_b: np.ndarray, cvs: "CollectiveVariables", bins: int = 36
) -> list[dict[str, Any]]:
    """Per-residue Ramachandran JSD (nats) between two sets of CV values.

    Parameters
    ----------
    values_a, values_b : ndarray, shape=(F, K)
        CV values (radians / nm) in the order of ``cvs``.
    cvs : CollectiveVariables
    bins : int

    Returns
    -------
    list of dict
        ``{"residue", "cvs": [phi name, psi name], "jsd"}`` for every residue of
        :meth:`~spacetime_md.molecular.system.cvs.CollectiveVariables.ramachandran_pairs`.
    """
    out = []
    for residue, i, j in cvs.ramachandran_pairs():
        jsd = jensen_shannon(ramachandran_histogram(values_a[:, [i, j]], bins),
                             ramachandran_histogram(values_b[:, [i, j]], bins))
        out.append({"residue": int(residue), "cvs": [cvs[i].name, cvs[j].name], "jsd": jsd})
    return out


def cv_jsd(
    values_a: np.ndarray,
    values_b: np.ndarray,
    cvs: "CollectiveVariables",
    columns: Sequence[int] = (0, 1),
    bins: int = 36,
    reference: np.ndarray | None = None,
) -> float:
    """JSD (nats) between histograms of some CVs (one or two columns) of two value sets.

    Angles are binned on ``[-pi, pi)``, other CVs on the range of ``reference`` (default
    ``values_b``) with two overflow bins (see :func:`cv_histogram`).
    """
    columns = [c for c in columns if c < len(cvs)]
    if not columns:
        raise ValueError(f"columns: expected at least one CV column of {len(cvs)}, got none")
    ref = values_b if reference is None else reference
    periodic = [bool(cvs.periodic[c]) for c in columns]
    edges = [_cv_edges(ref[:, c], p, bins) for c, p in zip(columns, periodic)]
    return jensen_shannon(cv_histogram(values_a[:, columns], edges, periodic),
                          cv_histogram(values_b[:, columns], edges, periodic))


def c7ax_population(xyz: np.ndarray, phi_atoms: Sequence[int] | None = None) -> float:
    """Fraction of frames with ``phi > 0`` (C7ax side of the Ramachandran plane; legacy default:
    the alanine-dipeptide preset's phi)."""
    from spacetime_md.molecular.system.dihedrals import compute_dihedrals

    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz: expected shape (n_frames, N, 3), got {xyz.shape}")
    atoms = _preset_phi_psi_atoms()[0] if phi_atoms is None else tuple(phi_atoms)
    return float(np.mean(np.asarray(compute_dihedrals(xyz, [atoms]))[:, 0] > 0))


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


def compute_energies(
    xyz: np.ndarray, topology: Any, forcefield: str | Sequence[str] = "amber99sbildn.xml"
) -> np.ndarray:
    """Potential energies (kJ/mol) of frames ``(n_frames, N, 3)`` nm: no cutoff, no constraints.

    ``topology`` is an mdtraj or OpenMM topology; ``forcefield`` one OpenMM XML file or several
    (e.g. ``system.forcefield_files``). Uses the OpenMM ``Reference`` platform (fastest for
    small molecules on these CPUs).
    """
    import openmm
    from openmm import app, unit

    files = (forcefield,) if isinstance(forcefield, str) else tuple(forcefield)
    ff = app.ForceField(*files)
    omm_top = topology if isinstance(topology, app.Topology) else topology.to_openmm()
    system = ff.createSystem(omm_top, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    energies = np.empty(len(xyz))
    for k, frame in enumerate(np.asarray(xyz, dtype=np.float64)):
        context.setPositions(frame)
        energies[k] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energies


def _na(value: Any, reason: str | None, fmt: str = "{:.4f}") -> str:
    if value is None:
        return f"n/a ({reason})" if reason else "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return fmt.format(value)


@dataclass
class EvaluationResult:
    """Quality of model samples against held-out MD samples (see the module docstring).

    ``*_model`` describe the model's samples, ``*_md`` the held-out MD frames. A quantity that
    is undefined for the molecule is ``None`` and its ``*_na_reason`` says why.

    ``rama_jsd`` is the mean over residues of ``rama_jsd_by_residue`` (entries ``residue``,
    ``cvs``, ``jsd``, ``jsd_md``, ``phi_positive_model``, ``phi_positive_md``); ``*_md`` JSDs
    are between two disjoint MD sets with as many frames as the model sample (noise floor;
    ``nan`` when no second MD set was given). ``cv_jsd`` is the JSD over ``cv_jsd_cvs`` (the
    first two CVs) for a molecule without a backbone pair. ``c7ax_md_all`` is the C7ax
    population of all MD frames given (held-out plus the second set): C7ax is rare and visited
    in long blocks by replica exchange, so a 10 % time block can miss it almost entirely.
    ``fraction_l_*`` is the fraction of frames with every chiral centre as in the reference
    structure (L for an amino acid's C-alpha); ``chirality_by_centre`` gives each centre.
    ``populations`` maps each state (and derived keys such as ``phi>0``) to
    ``{"model": {"fraction", "error", "ess"}, "md": {...}}``.
    """

    n_samples: int
    n_reference: int
    rama_jsd: float | None
    rama_jsd_md: float | None
    energy_median_model: float
    energy_median_md: float
    energy_p90_model: float
    energy_p90_md: float
    c7ax_model: float | None
    c7ax_md: float | None
    c7ax_md_all: float | None
    bond_mean_abs_error: float | None
    bond_max_abs_error: float | None
    bond_rms_model: float | None
    bond_rms_md: float | None
    fraction_l_model: float | None
    fraction_l_md: float | None
    sampler: str = ""
    sampling_time_s: float = float("nan")
    system: str = ""
    cv_names: list[str] = field(default_factory=list)
    rama_jsd_na_reason: str | None = None
    rama_jsd_by_residue: list[dict[str, Any]] = field(default_factory=list)
    cv_jsd: float | None = None
    cv_jsd_md: float | None = None
    cv_jsd_cvs: list[str] = field(default_factory=list)
    cv_jsd_na_reason: str | None = None
    c7ax_na_reason: str | None = None
    bond_na_reason: str | None = None
    fraction_l_na_reason: str | None = None
    chirality_by_centre: list[dict[str, Any]] = field(default_factory=list)
    populations: dict[str, dict[str, dict[str, float]]] | None = None
    populations_na_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def passed(self) -> dict[str, bool | None]:
        """Which of the issue's hard targets are met (``None`` where the metric is n/a)."""
        return {
            "rama_jsd": None if self.rama_jsd is None else self.rama_jsd <= TARGETS["rama_jsd"],
            "fraction_l": None if self.fraction_l_model is None else self.fraction_l_model >= TARGETS["fraction_l"],
        }

    def to_table(self) -> str:
        """Markdown table: metric, model, MD, target; undefined metrics read "n/a (reason)"."""
        ok = self.passed()

        def target(key: str) -> str:
            if ok[key] is None:
                return "-"
            op = "<=" if key == "rama_jsd" else ">="
            return f"{op} {TARGETS[key]} ({'met' if ok[key] else 'NOT met'})"

        rows = []
        n_res = len(self.rama_jsd_by_residue)
        rama_label = "Ramachandran JSD (nats, 36x36)" if n_res <= 1 else \
            f"Ramachandran JSD, mean of {n_res} residues (nats, 36x36)"
        md = "n/a" if self.rama_jsd is None else f"{_na(self.rama_jsd_md, None)} (MD vs MD)"
        rows.append((rama_label, _na(self.rama_jsd, self.rama_jsd_na_reason), md, target("rama_jsd")))
        if n_res > 1:
            for r in self.rama_jsd_by_residue:
                rows.append((f"  residue {r['residue']} ({', '.join(r['cvs'])})", _na(r["jsd"], None),
                             f"{_na(r['jsd_md'], None)} (MD vs MD)", "-"))
        if self.rama_jsd is None:
            label = f"JSD over {', '.join(self.cv_jsd_cvs)} (nats)" if self.cv_jsd_cvs else "JSD over the first two CVs"
            md = "n/a" if self.cv_jsd is None else f"{_na(self.cv_jsd_md, None)} (MD vs MD)"
            rows.append((label, _na(self.cv_jsd, self.cv_jsd_na_reason), md, "small"))
        rows += [
            ("energy median (kJ/mol)", _na(self.energy_median_model, None, "{:.1f}"),
             _na(self.energy_median_md, None, "{:.1f}"), "close to MD"),
            ("energy 90th percentile (kJ/mol)", _na(self.energy_p90_model, None, "{:.1f}"),
             _na(self.energy_p90_md, None, "{:.1f}"), "close to MD"),
        ]
        if self.c7ax_model is None:
            rows.append(("C7ax population (phi > 0)", _na(None, self.c7ax_na_reason), "n/a", "-"))
        else:
            rows.append(("C7ax population (phi > 0)", f"{self.c7ax_model:.4f}",
                         f"{self.c7ax_md:.4f} (all MD frames {self.c7ax_md_all:.4f})", "close to MD"))
        if self.populations is None:
            rows.append(("state populations", _na(None, self.populations_na_reason), "n/a", "-"))
        else:
            for name, p in self.populations.items():
                m, r = p["model"], p["md"]
                rows.append((f"{'ratio' if '/' in name else 'population'} {name}", f"{m['fraction']:.4f} +- {m['error']:.4f}",
                             f"{r['fraction']:.4f} +- {r['error']:.4f}", "close to MD"))
        if self.bond_mean_abs_error is None:
            rows.append(("bond lengths", _na(None, self.bond_na_reason), "n/a", "-"))
        else:
            rows += [
                ("bond length, mean abs error of means (A)", f"{self.bond_mean_abs_error:.4f}", "0", "small"),
                ("bond length, max abs error of means (A)", f"{self.bond_max_abs_error:.4f}", "0", "small"),
                ("bond length RMS deviation (A)", f"{self.bond_rms_model:.4f}", f"{self.bond_rms_md:.4f}", "close to MD"),
            ]
        centres = self.chirality_by_centre
        if self.fraction_l_model is None:
            rows.append(("fraction L-chirality", _na(None, self.fraction_l_na_reason), "n/a", "-"))
        else:
            if len(centres) == 1 and centres[0]["alpha"]:
                label = "fraction L-chirality"
            elif all(c["alpha"] for c in centres):
                label = f"fraction L-chirality (all {len(centres)} centres)"
            else:
                label = f"fraction with the reference chirality (all {len(centres)} centres)"
            rows.append((label, f"{self.fraction_l_model:.4f}", f"{self.fraction_l_md:.4f}", target("fraction_l")))
            if len(centres) > 1:
                for c in centres:
                    rows.append((f"  {c['name']} ({c['expected']})", f"{c['fraction_model']:.4f}",
                                 f"{c['fraction_md']:.4f}", "-"))
        lines = [
            f"samples: model {self.n_samples} ({self.sampler}, {self.sampling_time_s:.1f} s), "
            f"held-out MD {self.n_reference}",
            "",
            "| metric | model | MD | target |",
            "|---|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        return "\n".join(lines)


def _phi_positive(values: np.ndarray, column: int) -> float:
    return float(np.mean(values[:, column] > 0))


def evaluate_samples(
    samples: np.ndarray,
    reference: np.ndarray,
    topology: "mdtraj.Topology | None" = None,
    *,
    system: "MolecularSystem | None" = None,
    cvs: "CollectiveVariables | None" = None,
    states: "Sequence[MetastableState] | None" = None,
    chiral_centres: Sequence[ChiralCentre] | None = None,
    reference_structure: np.ndarray | None = None,
    reference_b: np.ndarray | None = None,
    bins: int = 36,
    energies: bool = True,
    forcefield: str | Sequence[str] | None = None,
    sampler: str = "",
    sampling_time_s: float = float("nan"),
) -> EvaluationResult:
    """Compare model ``samples`` with MD ``reference`` frames (both ``(n, N, 3)`` nm).

    Parameters
    ----------
    samples, reference : ndarray
    topology : mdtraj.Topology, optional
        Bonds, chiral centres and default CVs; default ``system.mdtraj_topology``.
    system : MolecularSystem, optional
        Supplies the defaults of ``topology``, ``cvs``, ``states``, ``reference_structure``
        and ``forcefield``.
    cvs : CollectiveVariables, optional
        Default: ``system.cvs``, else every backbone phi/psi of ``topology``.
    states : sequence of MetastableState, optional
        States whose populations are compared (default: ``system.states``, else none).
    chiral_centres : sequence of ChiralCentre, optional
        Default: every stereocentre of ``topology``.
    reference_structure : ndarray, shape=(N, 3), optional
        Structure whose handedness is "right" at each centre (default ``system.positions_nm``;
        without one: L at a C-alpha, the MD majority elsewhere).
    reference_b : ndarray, optional
        A second, disjoint MD set (e.g. training frames) to measure the JSD noise floor with
        ``len(samples)`` frames.
    bins : int
    energies : bool
        Compute OpenMM energies (otherwise the energy fields are ``nan``).
    forcefield : str or sequence of str, optional
        OpenMM XML files for the energies (default ``system.forcefield_files``, else
        ``amber99sbildn.xml``).
    """
    if topology is None:
        if system is None:
            raise ValueError("topology: expected an mdtraj topology or a system, got neither")
        topology = system.mdtraj_topology
    samples = np.asarray(samples, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    for name, arr in (("samples", samples), ("reference", reference)):
        if arr.ndim != 3 or arr.shape[1:] != (topology.n_atoms, 3) or len(arr) == 0:
            raise ValueError(f"{name}: expected shape (n_frames >= 1, {topology.n_atoms}, 3), got {arr.shape}")
    if cvs is None:
        if system is not None:
            cvs = system.cvs
        else:
            from spacetime_md.molecular.system.cvs import CollectiveVariables, backbone_torsions

            cvs = CollectiveVariables(backbone_torsions(topology))
    states = tuple(system.states if system is not None and states is None else (states or ()))
    if reference_structure is None and system is not None:
        reference_structure = system.positions_nm
    if forcefield is None:
        forcefield = system.forcefield_files if system is not None else "amber99sbildn.xml"
    if reference_b is not None:
        reference_b = np.asarray(reference_b, dtype=np.float64)
        n = min(len(samples), len(reference_b))
        reference_b_pick = reference_b[np.linspace(0, len(reference_b) - 1, n).astype(np.int64)]
    else:
        reference_b_pick = None

    # ---- collective variables: Ramachandran per residue, or the first two CVs
    v_model = cvs.compute(samples) if len(cvs) else np.zeros((len(samples), 0))
    v_md = cvs.compute(reference) if len(cvs) else np.zeros((len(reference), 0))
    v_b = cvs.compute(reference_b_pick) if reference_b_pick is not None and len(cvs) else None
    pairs = cvs.ramachandran_pairs()
    out: dict[str, Any] = {"cv_names": list(cvs.names)}
    if pairs:
        by_res = ramachandran_jsd_by_residue(v_model, v_md, cvs, bins)
        floors = ramachandran_jsd_by_residue(v_b, v_md, cvs, bins) if v_b is not None else None
        for k, (entry, (_, i_phi, _)) in enumerate(zip(by_res, pairs)):
            entry["jsd_md"] = floors[k]["jsd"] if floors is not None else float("nan")
            entry["phi_positive_model"] = _phi_positive(v_model, i_phi)
            entry["phi_positive_md"] = _phi_positive(v_md, i_phi)
        out["rama_jsd"] = float(np.mean([r["jsd"] for r in by_res]))
        out["rama_jsd_md"] = float(np.mean([r["jsd_md"] for r in by_res]))
        out["rama_jsd_by_residue"] = by_res
        out["cv_jsd_na_reason"] = "the Ramachandran JSD is reported instead"
    else:
        out["rama_jsd"] = out["rama_jsd_md"] = None
        out["rama_jsd_na_reason"] = NO_RAMACHANDRAN
        if len(cvs):
            columns = list(range(min(2, len(cvs))))
            out["cv_jsd_cvs"] = [cvs[c].name for c in columns]
            out["cv_jsd"] = cv_jsd(v_model, v_md, cvs, columns, bins)
            out["cv_jsd_md"] = cv_jsd(v_b, v_md, cvs, columns, bins) if v_b is not None else float("nan")
        else:
            out["cv_jsd_na_reason"] = NO_CVS

    # ---- C7ax (phi > 0) where it means something: one residue and a C7ax state
    has_c7ax = any(s.matches("C7ax") for s in states)
    if len(pairs) == 1 and has_c7ax:
        i_phi = pairs[0][1]
        out["c7ax_model"] = _phi_positive(v_model, i_phi)
        out["c7ax_md"] = _phi_positive(v_md, i_phi)
        if reference_b is not None:
            all_md = cvs.compute(np.concatenate([reference_b, reference]))
            out["c7ax_md_all"] = _phi_positive(all_md, i_phi)
        else:
            out["c7ax_md_all"] = out["c7ax_md"]
    else:
        out["c7ax_model"] = out["c7ax_md"] = out["c7ax_md_all"] = None
        out["c7ax_na_reason"] = (
            "no state called C7ax for this molecule" if not has_c7ax and len(pairs) == 1
            else f"C7ax (phi > 0) needs exactly one backbone (phi, psi) pair, got {len(pairs)}"
        )

    # ---- state populations
    if not states:
        out["populations_na_reason"] = "no states defined for this molecule; pass a --states file"
    elif min(len(samples), len(reference)) < 2:
        out["populations_na_reason"] = "fewer than 2 frames"
    else:
        from spacetime_md.molecular.sampling.populations import state_populations

        pm = state_populations(v_model, states, cvs)
        pr = state_populations(v_md, states, cvs)
        out["populations"] = {k: {"model": pm[k], "md": pr[k]} for k in pm if k in pr}

    # ---- energies and bonds
    if energies:
        # The system's own OpenMM topology (the one its force field parameterised) when it has these atoms.
        omm = system.topology if system is not None and system.n_atoms == topology.n_atoms else topology
        e_model = compute_energies(samples, omm, forcefield)
        e_md = compute_energies(reference, omm, forcefield)
    else:
        e_model = e_md = np.full(1, np.nan)
    bonds = [(b[0].index, b[1].index) for b in topology.bonds]
    if bonds:
        bl = bond_length_errors(samples, reference, bonds)
        out.update(bond_mean_abs_error=bl["mean_abs_error"], bond_max_abs_error=bl["max_abs_error"],
                   bond_rms_model=bl["rms_deviation"], bond_rms_md=bl["reference_rms_deviation"])
    else:
        out.update(bond_mean_abs_error=None, bond_max_abs_error=None, bond_rms_model=None, bond_rms_md=None,
                   bond_na_reason="no bonds in the topology")

    # ---- chirality of every centre
    centres = tuple(chiral_centres_from_topology(topology) if chiral_centres is None else chiral_centres)
    if centres:
        kept_model, kept_md, per_centre = [], [], []
        for c in centres:
            s_model, s_md = compute_chirality(samples, c.atoms), compute_chirality(reference, c.atoms)
            if reference_structure is not None:
                expected = int(compute_chirality(np.asarray(reference_structure)[None], c.atoms)[0])
            elif c.alpha:
                expected = 1
            else:
                expected = 1 if np.sum(s_md) >= 0 else -1
            expected = expected or 1
            kept_model.append(s_model == expected)
            kept_md.append(s_md == expected)
            per_centre.append({**c.to_dict(), "expected": c.label(expected),
                               "fraction_model": float(np.mean(kept_model[-1])),
                               "fraction_md": float(np.mean(kept_md[-1]))})
        out["fraction_l_model"] = float(np.mean(np.all(kept_model, axis=0)))
        out["fraction_l_md"] = float(np.mean(np.all(kept_md, axis=0)))
        out["chirality_by_centre"] = per_centre
    else:
        out["fraction_l_model"] = out["fraction_l_md"] = None
        out["fraction_l_na_reason"] = NO_CHIRAL_CENTRE

    return EvaluationResult(
        n_samples=len(samples),
        n_reference=len(reference),
        energy_median_model=float(np.median(e_model)),
        energy_median_md=float(np.median(e_md)),
        energy_p90_model=float(np.percentile(e_model, 90)),
        energy_p90_md=float(np.percentile(e_md, 90)),
        sampler=sampler,
        sampling_time_s=sampling_time_s,
        system=system.name if system is not None else "",
        **out,
    )
