"""Comparing samples of a trained denoiser with held-out MD samples (:func:`evaluate_samples`).

Metrics (:func:`evaluate_samples`), all against held-out MD frames, through the system's
collective variables (:mod:`~spacetime_md.molecular.system.cvs`), states (:mod:`~spacetime_md.molecular.system.states`) and chiral centres
(:mod:`~spacetime_md.molecular.system.chirality`), so any molecule works:

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

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from spacetime_md.molecular.model.metrics import bond_length_errors, cv_jsd, ramachandran_jsd_by_residue
from spacetime_md.molecular.system.chirality import (
    NO_CHIRAL_CENTRE,
    ChiralCentre,
    chiral_centres_from_topology,
    compute_chirality,
)

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.system.states import MetastableState

__all__ = [
    "TARGETS",
    "compute_energies",
    "EvaluationResult",
    "evaluate_samples",
]

#: Quality targets of issue 4.
TARGETS = {"rama_jsd": 0.05, "fraction_l": 0.99}

NO_RAMACHANDRAN = "no residue with both backbone phi and psi among the collective variables"
NO_CVS = "no collective variables; pass a --cvs file"


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
