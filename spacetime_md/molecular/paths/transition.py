"""Transition paths end to end: geodesic -> OpenMM annealed Langevin -> validation -> export.

Method (DESIGN.md sections 4-5):

1. **Endpoints.** Clean structures (nm) are centred, the end is Kabsch-aligned onto the start,
   converted to model units with the model's single ``to_model`` and placed at
   ``endpoint_log_snr`` as the VP spacetime points ``(log_snr, alpha * x)``.
2. **Geodesic.** :func:`spacetime_md.core.optimize_geodesic` in Cartesian spacetime
   (``D = 3N``, Hutchinson divergence with fixed probes), optionally with ``LowVariance`` and
   ``AvoidRegion`` (the forbidden point is a state's representative structure or a user
   structure at ``avoid_log_snr``, thresholded on the absolute KL).
3. **Paths.** For each of ``n_points`` points of the geodesic, OpenMM runs ``n_steps`` steps of
   ``LangevinMiddleIntegrator`` on the force field plus a harmonic restraint with constant
   ``kT * SNR_n / s^2`` toward ``s * x_n / alpha_n`` (``s`` the model's length scale in nm);
   see :mod:`spacetime_md.molecular.paths.openmm_langevin`. A frame is recorded every
   ``record_every`` steps (default 20 fs), so the barrier crossing is resolved in time.
4. **Baseline.** The straight spacetime line between the same endpoints, sampled the same way.
5. **Validation.** OpenMM potential energy of every frame, ETS (maximum), barrier (maximum
   minus the start structure's energy), the final frame's collective variables (CVs, see
   :mod:`spacetime_md.molecular.system.cvs`), target hit, heavy-atom Kabsch RMSD of the final frame
   to the target (Angstrom), chirality of every frame (the start structure's handedness kept
   at every stereocentre of
   :func:`~spacetime_md.molecular.system.chirality.chiral_centres_from_topology`; n/a without one),
   evaluation counts, wall time per stage; optionally the *relaxed* barrier (frames quenched
   with every torsion CV held at its own value).

CVs and endpoint states. The CVs are the system's (default: every backbone (phi, psi) of a
peptide); a molecule without any gets, for the run only, the heavy-atom RMSDs to the two
endpoints (``"rmsd start"``, ``"rmsd end"``; all atoms if it has fewer than 3 heavy atoms),
see :func:`path_cvs`. The *target state* is
:func:`~spacetime_md.molecular.system.states.endpoint_state` around the end structure's CV values:
one disc of ``hit_radius`` rad per residue's (phi, psi) (and per other angle CV), and
``value +- hit_length_nm`` for length CVs (``[0, hit_length_nm]`` for an RMSD to the end
itself). A path *hits* when its final frame lies in the target state, i.e. in every one of
these regions (all residues at once); :func:`compute_target_hit` is that test. For alanine
dipeptide this is the single (phi 2, psi 2) disc of 0.75 rad. The *start state* is built the
same way around the start structure; frames in neither are the transition region of the
relaxed barrier.

Units inside: nm, ps, kJ/mol, K; ``log_snr`` values refer to model units.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import openmm.unit as unit
import torch

from spacetime_md.core import (
    AvoidRegion,
    GeodesicResult,
    LowVariance,
    SpacetimePoint,
    alpha_sigma,
    optimize_geodesic,
    straight_line,
)
from spacetime_md.core._validation import resolve_device
from spacetime_md.core.curves import _as_vector
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.paths.hit import NO_TORSION_REASON, _endpoint_states, compute_target_hit, path_cvs
from spacetime_md.molecular.paths.structures import (
    ENDPOINT_QUENCH_K,
    _is_state_name,
    check_model_matches_system,
    kabsch_align,
    kabsch_rmsd,
    quench_endpoints,
    resolve_structure,
)

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.system.cvs import CollectiveVariables

__all__ = [
    "TransitionPaths",
    "compute_transition_paths",
    "prepare_geodesic_problem",
    "GeodesicProblem",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- results


@dataclass
class TransitionPaths:
    """A set of transition paths with their curve and validation.

    Attributes
    ----------
    frames : ndarray, shape=(P, T, N, 3)
        Positions in nm.
    log_snr : ndarray, shape=(T,)
        The curve's ``log_snr`` at each frame (model units).
    energies : ndarray, shape=(P, T)
        OpenMM potential energies, kJ/mol.
    kind : str
        ``"geodesic"`` or ``"straight"``.
    metrics : dict
        Per-path and aggregated validation numbers.
    """

    frames: np.ndarray
    log_snr: np.ndarray
    energies: np.ndarray
    kind: str
    metrics: dict[str, Any] = field(default_factory=dict)
    topology_pdb: str | None = None

    @property
    def n_paths(self) -> int:
        return self.frames.shape[0]

    def to_mdtraj(self, path: int | None = None, topology: "mdtraj.Topology | None" = None) -> "mdtraj.Trajectory":
        """One path (``path=p``) or all paths concatenated as an ``mdtraj.Trajectory``."""
        import mdtraj

        if topology is None:
            if self.topology_pdb is None:
                raise ValueError("topology: expected a topology (these paths were not loaded from a directory)")
            topology = mdtraj.load_topology(self.topology_pdb)
        x = self.frames.reshape(-1, *self.frames.shape[2:]) if path is None else self.frames[path]
        return mdtraj.Trajectory(x, topology)

    def simulation_at(self, system: "MolecularSystem", path: int, frame: int, integrator=None):
        """An ``openmm.app.Simulation`` of ``system`` positioned at one frame."""
        import openmm
        import openmm.app as app

        integrator = integrator or openmm.LangevinMiddleIntegrator(
            system.temperature, 1.0 / unit.picosecond, 2.0 * unit.femtosecond
        )
        sim = app.Simulation(system.topology, system.openmm_system, integrator, system.platform)
        sim.context.setPositions(self.frames[path, frame])
        return sim

    def save(self, directory: str | os.PathLike, system: "MolecularSystem") -> dict[str, str]:
        """Write one DCD per path, ``topology.pdb``, all paths in one HDF5, and ``paths_<kind>.npz``."""
        from spacetime_md.molecular._io import save_npz_atomic
        from spacetime_md.molecular.system.export import export_trajectory

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for p in range(self.n_paths):
            name = f"{self.kind}_path{p:03d}.dcd"
            export_trajectory(self.frames[p], system, out / name)
            files[f"path{p}"] = name
        h5 = out / f"{self.kind}_all_paths.h5"
        export_trajectory(self.frames.reshape(-1, *self.frames.shape[2:]), system, h5)
        files["all_paths_h5"] = h5.name
        npz = out / f"paths_{self.kind}.npz"
        save_npz_atomic(npz, frames=self.frames, log_snr=self.log_snr, energies=self.energies)
        files["npz"] = npz.name
        return files

    @classmethod
    def load(cls, directory: str | os.PathLike, kind: str = "geodesic") -> "TransitionPaths":
        """Load paths saved by :meth:`save` (or by ``spacetime-md paths``)."""
        directory = Path(directory)
        npz = directory / f"paths_{kind}.npz"
        if not npz.is_file():
            raise FileNotFoundError(f"paths: expected {npz.name} in {directory}, not found")
        with np.load(npz) as data:
            frames, log_snr, energies = data["frames"], data["log_snr"], data["energies"]
        metrics = {}
        report = directory / "report.json"
        if report.is_file():
            metrics = json.loads(report.read_text()).get(kind, {})
        top = directory / "topology.pdb"
        return cls(frames, log_snr, energies, kind, metrics, str(top) if top.is_file() else None)


def _display_value(cv: Any, value: float) -> str:
    return f"{math.degrees(value):.0f} deg" if cv.periodic else f"{value:.3f} nm"


def _cv_summary(cvs: "CollectiveVariables") -> list[dict[str, Any]]:
    """``cvs.to_list()`` for reports: an RMSD's reference by name, never inlined coordinates."""
    out = []
    for c in cvs:
        d = c.to_dict()
        if "reference_nm" in d:
            d.pop("reference_nm")
            d["reference"] = c.name.removeprefix("rmsd ") + " structure" if c.name in ("rmsd start", "rmsd end") \
                else "inline coordinates"
        d["unit"] = c.unit
        out.append(d)
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "median": float(np.median(arr))}


def _validate(system, cvs, frames, start_nm, start_energy, target_nm, target_values, endpoint_states, config,
              hit_length_nm, relaxed=None):
    from spacetime_md.molecular.system.chirality import (
        NO_CHIRAL_CENTRE,
        chiral_centres_from_topology,
        compute_signed_volume,
    )
    from spacetime_md.molecular.system.energies import evaluate_energies

    n_paths, n_frames = frames.shape[:2]
    flat = frames.reshape(-1, *frames.shape[2:])
    energies = evaluate_energies(system, flat).value_in_unit(unit.kilojoule_per_mole).reshape(n_paths, n_frames)
    values = np.asarray(cvs.compute(flat)).reshape(n_paths, n_frames, len(cvs))
    final = values[:, -1]
    hit, hit_by_group = compute_target_hit(cvs, final, target_values, config.hit_radius, hit_length_nm)
    rama = cvs.ramachandran_pairs()
    heavy = system.heavy_atom_indices
    rmsd_a = 10.0 * kabsch_rmsd(frames[:, -1], target_nm, heavy)
    centres = chiral_centres_from_topology(system.mdtraj_topology)
    kept = None
    if centres:
        signs = np.stack([np.sign(compute_signed_volume(flat, c.atoms)) for c in centres], axis=-1)
        ref = np.stack([np.sign(compute_signed_volume(start_nm[None], c.atoms)) for c in centres], axis=-1)
        kept = (signs == ref).all(-1).reshape(n_paths, n_frames)
    ets = energies.max(axis=1)
    per_path = []
    for p in range(n_paths):
        entry = {
            "path": p,
            "max_energy_kj_mol": float(ets[p]),
            "barrier_kj_mol": float(ets[p] - start_energy),
            "final_cvs": {name: float(final[p, k]) for k, name in enumerate(cvs.names)},
        }
        if len(rama) == 1:
            _, i_phi, i_psi = rama[0]
            entry["final_phi_psi_rad"] = [float(final[p, i_phi]), float(final[p, i_psi])]
        entry["target_hit"] = bool(hit[p])
        if len(hit_by_group) > 1:
            entry["target_hit_by_group"] = {k: bool(v[p]) for k, v in hit_by_group.items()}
        entry["final_heavy_rmsd_angstrom"] = float(rmsd_a[p])
        entry["chirality_kept_fraction"] = None if kept is None else float(kept[p].mean())
        per_path.append(entry)
    metrics = {
        "per_path": per_path,
        "max_energy_kj_mol": _summary(ets),
        "barrier_kj_mol": _summary(ets - start_energy),
        "final_heavy_rmsd_angstrom": _summary(rmsd_a),
        "target_hit_rate": float(hit.mean()),
        "chirality_kept_fraction": None if kept is None else float(kept.mean()),
        "start_energy_kj_mol": float(start_energy),
    }
    if len(hit_by_group) > 1:
        metrics["target_hit_by_group"] = {k: float(v.mean()) for k, v in hit_by_group.items()}
    if kept is None:
        metrics["chirality_na_reason"] = NO_CHIRAL_CENTRE
    else:
        metrics["chiral_centres"] = [c.name for c in centres]
    if relaxed is not None:
        quencher, start_relaxed = relaxed
        start_state, target_state = endpoint_states
        flat_values = values.reshape(-1, len(cvs))
        away = ~(start_state.contains(flat_values, cvs) | target_state.contains(flat_values, cvs))
        away = away.reshape(n_paths, n_frames)
        stride = np.zeros(n_frames, dtype=bool)
        stride[::config.relaxed_stride] = True
        stride[-1] = True
        rel_barrier = np.empty(n_paths)
        n_quenched = 0
        for p in range(n_paths):
            idx = np.flatnonzero(away[p] | stride)
            rel_barrier[p] = quencher.quench_frames(frames[p, idx]).max() - start_relaxed
            n_quenched += len(idx)
        for p in range(n_paths):
            per_path[p]["relaxed_barrier_kj_mol"] = float(rel_barrier[p])
        metrics["relaxed_barrier_kj_mol"] = _summary(rel_barrier)
        metrics["relaxed_frames_per_path"] = n_quenched / n_paths
        metrics["relaxed_torsions"] = [c.name for c in cvs.torsions]
    elif config.relaxed:
        for p in range(n_paths):
            per_path[p]["relaxed_barrier_kj_mol"] = None
        metrics["relaxed_barrier_kj_mol"] = None
        metrics["relaxed_barrier_na_reason"] = NO_TORSION_REASON
    return energies, values, metrics


@dataclass
class GeodesicProblem:
    """One pair's geodesic problem as :func:`compute_transition_paths` sets it up.

    ``start``/``end`` are the spacetime endpoints (model units, at ``config.endpoint_log_snr``),
    ``constraints`` the core constraint objects of ``config.constraint``; ``start_nm`` (centred)
    and ``end_nm`` (Kabsch-aligned onto it) the structures in nm as given (paths start at
    ``start_nm``; hits, RMSDs and energies are measured against these); ``start_solve_nm`` /
    ``end_solve_nm`` the structures the geodesic joins, in the same frame (the quenched ones with
    ``config.quench_endpoints``, else the given ones), and ``quench`` what quenching did
    (:func:`~spacetime_md.molecular.paths.structures.quench_endpoints`: energies before and
    after, heavy-atom shift; ``None`` without it); ``model`` is the denoiser on
    ``config.device`` with gradients switched off. ``cvs`` are the run's collective variables
    (:func:`path_cvs`), ``start_state``/``target_state`` the endpoint states around the two
    structures and ``hit_length_nm`` the resolved length tolerance of the hit test.
    """

    start: SpacetimePoint
    end: SpacetimePoint
    constraints: list[Any]
    start_nm: np.ndarray
    end_nm: np.ndarray
    start_label: str
    end_label: str
    avoid_label: str | None
    model: "EquivariantDenoiser"
    cvs: "CollectiveVariables | None" = None
    start_state: Any = None
    target_state: Any = None
    hit_length_nm: float | None = None
    start_solve_nm: np.ndarray | None = None
    end_solve_nm: np.ndarray | None = None
    quench: dict[str, Any] | None = None


def prepare_geodesic_problem(
    system: "MolecularSystem",
    model: "EquivariantDenoiser",
    start: Any,
    end: Any,
    config: PathConfig | None = None,
) -> GeodesicProblem:
    """Resolve, centre and align the endpoints and build the constraints of one pair.

    The first half of :func:`compute_transition_paths`, exposed so that several pairs can be
    solved together (:func:`~spacetime_md.core.optimize_geodesics`, ``spacetime-md batch
    --group-size``) and their geodesics handed back through ``compute_transition_paths(...,
    geodesic=...)``.
    """
    config = PathConfig() if config is None else config
    if not isinstance(config, PathConfig):
        raise TypeError(f"config: expected a PathConfig, got {type(config).__name__}")
    check_model_matches_system(model, system)
    start_nm, start_label = resolve_structure(system, start, "start", allow_mirror=config.allow_mirror)
    end_nm, end_label = resolve_structure(system, end, "end", allow_mirror=config.allow_mirror)
    start_nm = start_nm - start_nm.mean(axis=0)
    end_nm = kabsch_align(end_nm, start_nm)
    if np.allclose(start_nm, end_nm, atol=1e-4):
        raise ValueError(f"start and end: expected two different structures, got equal ones ({start_label}, {end_label})")
    quench = None
    start_solve_nm, end_solve_nm = start_nm, end_nm
    if config.quench_endpoints:
        (start_q, end_q), info = quench_endpoints(system, (start_nm, end_nm))
        quench = {"k_restraint_kj_mol_nm2": ENDPOINT_QUENCH_K, "start": info[0], "end": info[1]}
        if info[0]["used"] or info[1]["used"]:
            # The solve's frame is the quenched start's; the given structures are superposed on it.
            start_solve_nm = start_q - start_q.mean(axis=0)
            end_solve_nm = kabsch_align(end_q, start_solve_nm)
            start_nm = kabsch_align(start_nm, start_solve_nm)
            end_nm = kabsch_align(end_nm, end_solve_nm)
    cvs = path_cvs(system, start_nm, end_nm)
    hit_length, start_state, target_state = _endpoint_states(system, cvs, start_nm, end_nm, config)

    dtype = next(model.parameters()).dtype
    device = resolve_device(config.device)
    model = model.to(device)
    lam = float(config.endpoint_log_snr)
    alpha_e = float(alpha_sigma(lam)[0])
    x_start = model.to_model(torch.as_tensor(start_solve_nm, dtype=dtype)).to(device)
    x_end = model.to_model(torch.as_tensor(end_solve_nm, dtype=dtype)).to(device)
    a = SpacetimePoint(lam, alpha_e * x_start)
    b = SpacetimePoint(lam, alpha_e * x_end)

    constraints: list[Any] = []
    avoid_label = None
    if config.constraint in ("low-variance", "avoid"):
        constraints.append(LowVariance(config.min_log_snr, weight=config.constraint_weight))
    if config.constraint == "avoid":
        avoid_nm, avoid_label = resolve_structure(system, config.avoid_state, "avoid_state",
                                                  allow_mirror=config.allow_mirror)
        if _is_state_name(config.avoid_state):
            state = system.get_state(config.avoid_state)
            for which, xyz in (("start", start_nm), ("end", end_nm)):
                values = np.atleast_2d(system.compute_cvs(xyz[None]))
                if state.contains(values, system.cvs)[0]:
                    shown = ", ".join(
                        f"{system.cvs[n].name} = {_display_value(system.cvs[n], values[0, system.cvs.index(n)])}"
                        for n in state.cv_names
                    )
                    raise ValueError(
                        f"avoid_state: expected a state that contains neither endpoint, got {state.name}, "
                        f"which contains the {which} structure ({shown})"
                    )
        avoid_nm = kabsch_align(avoid_nm - avoid_nm.mean(axis=0), start_nm)
        alpha_a = float(alpha_sigma(config.avoid_log_snr)[0])
        x_avoid = alpha_a * model.to_model(torch.as_tensor(avoid_nm, dtype=dtype)).to(device)
        constraints.append(AvoidRegion(config.avoid_log_snr, x_avoid, config.min_kl, weight=config.constraint_weight))

    for p in model.parameters():
        p.requires_grad_(False)
    return GeodesicProblem(a, b, constraints, start_nm, end_nm, start_label, end_label, avoid_label, model,
                           cvs, start_state, target_state, hit_length, start_solve_nm, end_solve_nm, quench)


def compute_transition_paths(
    system: "MolecularSystem",
    model: "EquivariantDenoiser",
    start: Any,
    end: Any,
    config: PathConfig | None = None,
    *,
    progress: bool = False,
    on_result: Callable[[str, Any], None] | None = None,
    geodesic: GeodesicResult | None = None,
) -> dict[str, Any]:
    """Geodesic, OpenMM transition paths, baseline and validation between two structures.

    Parameters
    ----------
    system : MolecularSystem
    model : EquivariantDenoiser
        A denoiser trained for ``system``'s topology (e.g. ``load_pretrained(...)``).
    start, end : str, path or coordinates
        A state name (``"C7eq"``), a PDB file, or coordinates (nm, ``(N, 3)``).
    config : PathConfig, optional
    on_result : callable, optional
        Called as soon as each stage is done, with ``("solve", {"geodesic": GeodesicResult,
        "start_nm": ..., "end_nm": ..., "cvs": CollectiveVariables})`` and then
        ``(kind, TransitionPaths)`` per curve kind (``"geodesic"``, ``"straight"``; the baseline
        may come first: its paths run during the solve), so a caller can keep partial results if
        a later stage fails (a failure of the baseline is raised after the geodesic's results
        were handed over, e.g. NaN in the baseline).
    geodesic : GeodesicResult, optional
        A geodesic already solved for exactly this pair (e.g. by
        :func:`~spacetime_md.core.optimize_geodesics` on :func:`prepare_geodesic_problem`'s
        endpoints); the solve is skipped. Its endpoints must match, else ``ValueError``.

    Returns
    -------
    dict
        ``geodesic`` (:class:`~spacetime_md.core.GeodesicResult`), ``paths`` and (if enabled)
        ``baseline`` (:class:`TransitionPaths`), ``report`` (JSON-serialisable), the aligned
        endpoint structures and ``cvs``, the run's collective variables (:func:`path_cvs`).

        ``report[kind]`` (``"geodesic"``, ``"straight"``) holds per path ``final_cvs`` (name ->
        radians / nm), ``target_hit`` (see :func:`compute_target_hit`), ``final_phi_psi_rad``
        (only for a single backbone (phi, psi) pair, e.g. alanine dipeptide), the energies, the
        final heavy-atom RMSD and the chirality kept, and aggregates: ``target_hit_rate``,
        ``target_hit_by_group`` (per residue / CV group, when there are several),
        ``chirality_kept_fraction`` (``None`` plus ``chirality_na_reason`` without chiral centre),
        ``relaxed_barrier_kj_mol`` (with ``relaxed``; ``None`` plus ``relaxed_barrier_na_reason``
        when no CV is a torsion), ``cvs`` (CV values of every frame, ``(P, T, K)``, columns
        ``report["cv_names"]``) and ``phi_psi`` (single-pair systems only).
        ``report["endpoints"]`` holds the labels, ``start_cvs``/``target_cvs``, the endpoint
        states (``start_state``/``target_state``, ``MetastableState.to_dict()``), the hit
        tolerances, the CV definitions (RMSD references by name) and ``quench``
        (:class:`GeodesicProblem`'s, or an ``na_reason`` when ``config.quench_endpoints`` is off).
    """
    from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler

    config = PathConfig() if config is None else config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    problem = prepare_geodesic_problem(system, model, start, end, config)
    model = problem.model
    s = model.length_scale_nm

    def schedule(log_snr: torch.Tensor, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from spacetime_md.molecular.paths.openmm_langevin import restraint_schedule

        return restraint_schedule(log_snr, x, s, system.temperature_k)

    workers = _path_workers(config)
    sampler = RestrainedLangevinSampler(
        system.openmm_system,
        temperature=system.temperature,
        timestep=config.timestep_fs * unit.femtosecond,
        friction=config.friction_per_ps / unit.picosecond,
        platform=system.platform_name,
        workers=workers,
    )
    try:
        return _solve_and_sample(system, model, config, problem, sampler, schedule, geodesic, progress, on_result,
                                 timings, t0)
    finally:
        sampler.close()


def _path_workers(config: PathConfig) -> int:
    """Processes for the paths of one curve: ``config.workers`` (``"auto"``: the usable cores,
    :func:`~spacetime_md.molecular.paths.openmm_langevin.resolve_path_workers`), at most
    ``n_paths``; 1 inside a daemonic process (which may not start children)."""
    import multiprocessing

    from spacetime_md.molecular.paths.openmm_langevin import resolve_path_workers

    if multiprocessing.current_process().daemon:
        return 1
    return resolve_path_workers(config.workers, config.n_paths)


def _solve_and_sample(system, model, config, problem, sampler, schedule, geodesic, progress, on_result, timings, t0):
    """The rest of :func:`compute_transition_paths`: solve, sample every curve, validate.

    The straight-line baseline's paths do not depend on the solve: they start before it, in the
    worker processes or (one worker) in a background thread, and run while this thread solves
    the geodesic."""
    from spacetime_md.molecular.system.energies import evaluate_energies

    a, b = problem.start, problem.end
    start_nm, end_nm = problem.start_nm, problem.end_nm
    start_label, end_label, avoid_label = problem.start_label, problem.end_label, problem.avoid_label
    uniform_steps = np.full(config.n_points, config.n_steps)

    def start_uniform(curve):
        """The uniform schedule's paths of ``curve``, handed to the background (workers or thread)."""
        centres, k = schedule(*curve)
        return sampler.start_schedule(centres, k, uniform_steps, start_nm, n_paths=config.n_paths, seed=config.seed,
                                      record_every=config.record_every, background=True)

    background = {}
    sampler.start_workers()
    if config.baseline and config.path_time_ps is None and geodesic is None:
        background["straight"] = start_uniform(straight_line(a, b, config.n_points))
    if geodesic is None:
        geo = optimize_geodesic(model, a, b, config.geodesic, problem.constraints)
    else:
        geo = geodesic
        curve = getattr(geo, "curve", None)
        z0, z1 = _as_vector("start", a), _as_vector("end", b)
        if curve is None or curve.start.shape != z0.shape or not (
            torch.allclose(curve.start, z0) and torch.allclose(curve.end, z1)
        ):
            raise ValueError(
                "geodesic: expected a GeodesicResult whose curve joins this pair's endpoints "
                f"({start_label} -> {end_label} at log_snr {config.endpoint_log_snr}), got one that does not"
            )
    timings["geodesic_s"] = time.perf_counter() - t0 if geodesic is None else geo.wall_time
    logger.info("geodesic: energy %.4g (straight line %.4g), %d steps, %.1f s",
                geo.energy, geo.initial_energy, geo.n_steps, timings["geodesic_s"])

    with torch.no_grad():
        geo_l, geo_x = geo.curve.evaluate(config.n_points)
    curves = {"geodesic": (geo_l, geo_x)}
    if config.baseline:
        curves["straight"] = straight_line(a, b, config.n_points)
    t1 = time.perf_counter()
    for pending in background.values():
        pending.wait()  # before another OpenMM integration starts (one noise generator per process)
    if sampler.workers == 1 and config.path_time_ps is None:
        # One worker: the geodesic's paths run in a background thread while this thread writes
        # the solve's outputs and validates the (finished) baseline.
        background["geodesic"] = start_uniform((geo_l, geo_x))
    timings["paths_s"] = time.perf_counter() - t1
    if on_result is not None:
        on_result("solve", {"geodesic": geo, "start_nm": start_nm, "end_nm": end_nm, "cvs": problem.cvs})

    start_energy = float(evaluate_energies(system, start_nm[None]).value_in_unit(unit.kilojoule_per_mole)[0])
    cvs = problem.cvs
    start_values = np.asarray(cvs.compute(start_nm[None]))[0]
    target_values = np.asarray(cvs.compute(end_nm[None]))[0]
    rama = cvs.ramachandran_pairs()
    if problem.target_state.contains(start_values[None], cvs)[0]:
        logger.warning("the start structure already lies in the target state (its CVs %s are within the hit "
                       "tolerance of the end's): every path counts as a hit; choose CVs that separate the endpoints",
                       list(cvs.names))
    relaxed = None
    if config.relaxed and cvs.torsions:
        from spacetime_md.molecular.paths.relaxed import TorsionQuencher

        quencher = TorsionQuencher(system.openmm_system, [t.atoms for t in cvs.torsions],
                                   platform=system.platform_name)
        relaxed = (quencher, float(quencher.quench_frames(start_nm[None])[0]))

    def sample_and_validate(kind: str) -> tuple[TransitionPaths, dict[str, Any]]:
        """One curve: its paths (from the background or sampled now) and their validation."""
        c_l, c_x = curves[kind]
        t1 = time.perf_counter()
        if kind in background:
            steps = uniform_steps
            sampled = background[kind].result(progress=progress)
        elif config.path_time_ps is None:
            steps = uniform_steps
            centres, k = schedule(c_l, c_x)
            sampled = sampler.sample(centres, k, start_nm, n_paths=config.n_paths, n_steps=config.n_steps,
                                     seed=config.seed, record_every=config.record_every, progress=progress)
        else:
            from spacetime_md.molecular.paths.budget import sample_budget

            centres, k = schedule(c_l, c_x)
            sampled, steps = sample_budget(sampler, centres, k, start_nm, config, system.heavy_atom_indices,
                                           progress=progress)
        timings["paths_s"] += time.perf_counter() - t1
        t2 = time.perf_counter()
        energies, values, metrics = _validate(system, cvs, sampled.frames, start_nm, start_energy, end_nm,
                                              target_values, (problem.start_state, problem.target_state), config,
                                              problem.hit_length_nm, relaxed)
        timings["validation_s"] += time.perf_counter() - t2
        metrics["force_evaluations"] = sampled.n_force_evals
        metrics["force_evaluations_per_path"] = sampled.n_force_evals // config.n_paths
        metrics["cvs"] = values.tolist()
        if len(rama) == 1:
            metrics["phi_psi"] = values[..., [rama[0][1], rama[0][2]]].tolist()
        if config.path_time_ps is not None:
            metrics["steps_per_point"] = steps.tolist()
        point_of_step = np.repeat(np.arange(config.n_points), steps)
        frame_log_snr = c_l.detach().cpu().double().numpy()[point_of_step[config.record_every - 1::config.record_every]]
        return TransitionPaths(sampled.frames, frame_log_snr, energies, kind, metrics), metrics

    results: dict[str, TransitionPaths] = {}
    report: dict[str, Any] = {}
    timings["validation_s"] = 0.0
    # Curves whose paths are already done are validated (and handed to ``on_result``) first, while
    # the geodesic's may still run in the background; a failure of the baseline is raised only
    # after the geodesic's results were handed over.
    order = sorted(curves, key=lambda kind: kind == "geodesic" and kind in background)
    failure = None
    for kind in order:
        try:
            results[kind], report[kind] = sample_and_validate(kind)
        except Exception as exc:
            if kind == "geodesic" or failure is not None:
                raise
            failure = exc
            continue
        if on_result is not None:
            on_result(kind, results[kind])
    if failure is not None:
        raise failure
    report = {kind: report[kind] for kind in curves}  # geodesic first, whatever the order of sampling
    report["geodesic_curve"] = {
        **{k: v for k, v in geo.summary().items() if k != "config"},
        "clamp": config.geodesic.clamp,
        "init_dips": list(config.geodesic.init_dips),
        "log_snr": geo_l.detach().cpu().double().numpy().tolist(),
    }
    report["cv_names"] = list(cvs.names)
    report["endpoints"] = {
        "start": start_label, "end": end_label, "avoid": avoid_label,
        "start_cvs": dict(zip(cvs.names, map(float, start_values))),
        "target_cvs": dict(zip(cvs.names, map(float, target_values))),
        "start_state": problem.start_state.to_dict(),
        "target_state": problem.target_state.to_dict(),
        "start_in_target_state": bool(problem.target_state.contains(start_values[None], cvs)[0]),
        "hit_radius_rad": float(config.hit_radius),
        **({"hit_length_nm": problem.hit_length_nm} if not cvs.periodic.all() else
           {"hit_length_nm": None, "hit_length_na_reason": "no length collective variable"}),
        "cvs": _cv_summary(cvs),
        "quench": problem.quench if problem.quench is not None else {
            "na_reason": "n/a: quench_endpoints is off (the given structures were used throughout)"},
    }
    report["energy_evaluations"] = {
        "denoiser_rows_geodesic": geo.n_denoiser_evals,
        "openmm_force_evaluations": sampler.n_force_evals,
        "openmm_energy_evaluations": system.n_energy_evaluations,
    }
    timings["total_s"] = time.perf_counter() - t0
    report["timings"] = timings
    report["path_workers"] = sampler.workers
    report["platform"] = system.platform_name
    import openmm

    report["openmm_version"] = openmm.__version__
    return {"geodesic": geo, "paths": results["geodesic"], "baseline": results.get("straight"),
            "report": report, "start_nm": start_nm, "end_nm": end_nm, "cvs": cvs}
