"""Relaxed energies: restrained minimisation of frames and of a dihedral grid.

The raw potential energy along a 300 K path carries about (3N - 6)/2 kT of thermal energy, so
barriers are compared after *quenching*: minimise with some coordinates restrained, then
evaluate the force field without the restraint.

- :class:`TorsionQuencher`: restrain any set of dihedrals to the frame's values; everything
  else relaxes (the adiabatic energy in those coordinates). :func:`cv_torsion_quencher` holds
  every torsion collective variable of a system (for a peptide with the default CVs, every
  backbone phi and psi); a system whose CVs have no torsion has no relaxed energy
  (:func:`relaxed_na_reason` says why). :class:`DihedralQuencher` is the two-torsion (phi, psi)
  case; on a periodic (phi, psi) grid it gives the relaxed map of the force field
  (:func:`compute_relaxed_map`), whose minimax (bottleneck) path is the lowest possible relaxed
  barrier between two states.
- :class:`PositionQuencher`: restrain chosen atoms (by default the heavy atoms) harmonically to
  their positions in the frame; hydrogens and bond/angle vibrations relax, the conformation in
  every soft coordinate is kept (a local quench).

Units inside: nm, kJ/mol, radians.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm
import openmm.unit as unit

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = ["DihedralQuencher", "TorsionQuencher", "PositionQuencher", "RelaxedMap", "compute_relaxed_map",
           "RefinedMaximum", "refine_relaxed_maximum", "cv_torsion_quencher", "relaxed_na_reason",
           "HEAVY_ATOM_QUENCH_K", "heavy_atom_quencher"]

logger = logging.getLogger(__name__)

_RESTRAINT_GROUP = 30


def _dihedrals(x: np.ndarray, atoms) -> np.ndarray:
    """Dihedral angles (radians) of ``x (F, N, 3)`` for one quadruple of atom indices."""
    p0, p1, p2, p3 = (x[..., i, :] for i in atoms)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1n).sum(-1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdims=True) * b1n
    return np.arctan2((np.cross(b1n, v) * w).sum(-1), (v * w).sum(-1))


class _RestrainedMinimiser:
    """A copy of a system plus one restraint force (its own group) in a Reference-style Context;
    minimises and reports the physical (unrestrained) energy."""

    def _setup(self, system: openmm.System, force: openmm.Force, *, tolerance: float, platform: str,
               max_iterations: int) -> None:
        self.system = copy.deepcopy(system)
        force.setForceGroup(_RESTRAINT_GROUP)
        self.system.addForce(force)
        self.force = force
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        integrator = openmm.VerletIntegrator(0.001)
        self.context = openmm.Context(self.system, integrator, openmm.Platform.getPlatformByName(platform))
        self.n_minimisations = 0
        self._physical_groups = sum(1 << g for g in range(32) if g != _RESTRAINT_GROUP)

    def _minimise(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        self.force.updateParametersInContext(self.context)
        self.context.setPositions(positions)
        self.context.applyConstraints(1e-6)
        openmm.LocalEnergyMinimizer.minimize(self.context, self.tolerance, self.max_iterations)
        self.n_minimisations += 1
        state = self.context.getState(getEnergy=True, getPositions=True, groups=self._physical_groups)
        return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


class TorsionQuencher(_RestrainedMinimiser):
    """Minimise structures with any set of dihedrals restrained to target values.

    Parameters
    ----------
    system : openmm.System
        Physical system (copied; the copy gets a ``CustomTorsionForce`` restraint).
    torsions : sequence of (4 int)
        Atom indices of the restrained dihedrals (at least one).
    k_restraint : float
        Restraint force constant in kJ/mol/rad^2.
    tolerance : float
        Minimiser tolerance in kJ/mol/nm.
    platform : str
    """

    def __init__(self, system: openmm.System, torsions, *, k_restraint: float = 4000.0,
                 tolerance: float = 1.0, platform: str = "Reference", max_iterations: int = 0):
        self.torsions = [tuple(int(a) for a in t) for t in torsions]
        if not self.torsions or any(len(t) != 4 for t in self.torsions):
            raise ValueError(f"torsions: expected one or more quadruples of atom indices, got {torsions!r}")
        force = openmm.CustomTorsionForce(
            "0.5*k_dihedral*d^2; d = min(ad, 6.283185307179586 - ad); ad = abs(theta - theta0)"
        )
        force.addGlobalParameter("k_dihedral", float(k_restraint))
        force.addPerTorsionParameter("theta0")
        for t in self.torsions:
            force.addTorsion(*t, [0.0])
        self._setup(system, force, tolerance=tolerance, platform=platform, max_iterations=max_iterations)

    def quench_at(self, positions: np.ndarray, targets) -> tuple[float, np.ndarray]:
        """Restrained minimisation from ``positions (N, 3)`` nm with the torsions at ``targets``
        (radians, one per torsion); returns (unrestrained energy kJ/mol, positions nm)."""
        for k, (t, value) in enumerate(zip(self.torsions, targets, strict=True)):
            self.force.setTorsionParameters(k, *t, [float(value)])
        return self._minimise(positions)

    def quench_frames(self, frames: np.ndarray) -> np.ndarray:
        """Relaxed energies (kJ/mol) of ``frames (F, N, 3)``, each at its own restrained dihedrals."""
        frames = np.asarray(frames, dtype=float)
        targets = np.stack([_dihedrals(frames, t) for t in self.torsions], axis=-1)
        return np.array([self.quench_at(f, a)[0] for f, a in zip(frames, targets)])


class DihedralQuencher(TorsionQuencher):
    """:class:`TorsionQuencher` for the two backbone dihedrals (phi, psi).

    Parameters
    ----------
    system : openmm.System
    phi_atoms, psi_atoms : tuple of 4 int
        Atom indices of the two dihedrals.
    **kwargs
        ``k_restraint``, ``tolerance``, ``platform``, ``max_iterations`` of :class:`TorsionQuencher`.
    """

    def __init__(self, system: openmm.System, phi_atoms, psi_atoms, **kwargs):
        super().__init__(system, [phi_atoms, psi_atoms], **kwargs)
        self.phi_atoms, self.psi_atoms = self.torsions

    def quench(self, positions: np.ndarray, phi: float, psi: float) -> tuple[float, np.ndarray]:
        """Restrained minimisation from ``positions (N, 3)`` nm; returns (energy kJ/mol, positions)."""
        return self.quench_at(positions, (phi, psi))


def relaxed_na_reason(system: "MolecularSystem") -> str | None:
    """Why a system has no relaxed energy (its CVs hold no torsion), or ``None`` if it has one."""
    if system.cvs.torsions:
        return None
    names = ", ".join(system.cvs.names) or "none"
    return f"n/a: the collective variables of {system.name} ({names}) have no torsion to hold"


def cv_torsion_quencher(system: "MolecularSystem", **kwargs: Any) -> TorsionQuencher:
    """A :class:`TorsionQuencher` holding every torsion collective variable of ``system``.

    For a peptide with the default CVs these are all backbone phi and psi (for alanine
    dipeptide exactly the :class:`DihedralQuencher` of (phi, psi)). The torsions are in the
    order of ``system.cvs.torsions``; ``kwargs`` go to :class:`TorsionQuencher` (default
    platform: the system's).

    Raises
    ------
    ValueError
        If the system's CVs have no torsion (see :func:`relaxed_na_reason`).
    """
    reason = relaxed_na_reason(system)
    if reason is not None:
        raise ValueError(f"relaxed energy: {reason}")
    kwargs.setdefault("platform", system.platform_name)
    return TorsionQuencher(system.openmm_system, [t.atoms for t in system.cvs.torsions], **kwargs)


#: Restraint (kJ/mol/nm^2) on the heavy atoms of :func:`heavy_atom_quencher`: the committor's
#: ``"quenched"`` energy and the endpoint quench of the path sampler. At 300 K the held atoms stay
#: within about ``sqrt(kT / k) = 0.016`` nm.
HEAVY_ATOM_QUENCH_K = 10_000.0


def heavy_atom_quencher(system: Any, k_restraint: float = HEAVY_ATOM_QUENCH_K) -> "PositionQuencher":
    """A :class:`PositionQuencher` of a :class:`~spacetime_md.molecular.system.build.MolecularSystem`
    holding its heavy atoms (every atom if it has none) on the system's platform."""
    heavy = np.asarray(system.heavy_atom_indices)
    atoms = heavy if heavy.size else np.arange(system.n_atoms)
    return PositionQuencher(system.openmm_system, atoms, k_restraint=k_restraint, platform=system.platform_name)


class PositionQuencher(_RestrainedMinimiser):
    """Minimise structures with chosen atoms harmonically restrained to their own positions.

    The energy returned is the force field's at the restrained minimum, without the restraint:
    thermal noise in hydrogens and stiff bonds and angles is removed while the frame's
    conformation (all dihedrals, including those no reaction coordinate names) is kept. With the
    default ``k_restraint`` the restrained atoms stay within about ``sqrt(kT / k) = 0.016`` nm of
    the frame at 300 K.

    Parameters
    ----------
    system : openmm.System
        Physical system (copied; the copy gets a ``CustomExternalForce`` restraint).
    atoms : sequence of int
        Restrained atoms (at least one), e.g. ``MolecularSystem.heavy_atom_indices``.
    k_restraint : float
        Force constant in kJ/mol/nm^2.
    tolerance : float
        Minimiser tolerance in kJ/mol/nm.
    platform : str
    max_iterations : int
        0: until converged.
    """

    def __init__(self, system: openmm.System, atoms, *, k_restraint: float = 10_000.0,
                 tolerance: float = 1.0, platform: str = "Reference", max_iterations: int = 0):
        self.atoms = np.asarray(atoms, dtype=np.int64).reshape(-1)
        n = system.getNumParticles()
        if self.atoms.size == 0 or self.atoms.min() < 0 or self.atoms.max() >= n:
            raise ValueError(f"atoms: expected one or more indices in [0, {n}), got {list(atoms)!r}")
        if isinstance(k_restraint, bool) or not (
                isinstance(k_restraint, (int, float)) and math.isfinite(k_restraint) and k_restraint > 0):
            raise ValueError(f"k_restraint: expected a finite number > 0 (kJ/mol/nm^2), got {k_restraint!r}")
        force = openmm.CustomExternalForce("0.5*k_position*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        force.addGlobalParameter("k_position", float(k_restraint))
        for name in ("x0", "y0", "z0"):
            force.addPerParticleParameter(name)
        for i in self.atoms:
            force.addParticle(int(i), [0.0, 0.0, 0.0])
        self._setup(system, force, tolerance=tolerance, platform=platform, max_iterations=max_iterations)

    def quench(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        """Restrained minimisation from ``positions (N, 3)`` nm; returns (unrestrained energy kJ/mol, positions nm)."""
        x = np.asarray(positions, dtype=float)
        for k, i in enumerate(self.atoms):
            self.force.setParticleParameters(k, int(i), [float(v) for v in x[i]])
        return self._minimise(x)

    def quench_frames(self, frames: np.ndarray) -> np.ndarray:
        """Quenched energies (kJ/mol) of ``frames (F, N, 3)``."""
        return np.array([self.quench(f)[0] for f in np.asarray(frames, dtype=float)])


@dataclass
class RelaxedMap:
    """Relaxed energy on a periodic (phi, psi) grid.

    Attributes
    ----------
    phi, psi : ndarray, shape=(n,)
        Grid angles in radians, ``-pi`` to ``pi - 2 pi / n``.
    energy : ndarray, shape=(n, n)
        ``energy[i, j]`` at ``(phi[i], psi[j])``, kJ/mol.
    wall_time : float
    """

    phi: np.ndarray
    psi: np.ndarray
    energy: np.ndarray
    wall_time: float

    def save(self, path) -> None:
        np.savez(path, phi=self.phi, psi=self.psi, energy=self.energy, wall_time=self.wall_time)

    @classmethod
    def load(cls, path) -> "RelaxedMap":
        with np.load(path) as data:
            return cls(data["phi"], data["psi"], data["energy"], float(data["wall_time"]))

    def nearest_index(self, phi: float, psi: float) -> tuple[int, int]:
        n = self.phi.shape[0]
        step = 2 * math.pi / n
        return (int(round((phi + math.pi) / step)) % n, int(round((psi + math.pi) / step)) % n)


def compute_relaxed_map(system: openmm.System, positions: np.ndarray, phi_atoms, psi_atoms, *,
                        n_grid: int = 36, progress: bool = False, **quencher_kwargs) -> RelaxedMap:
    """Relaxed (phi, psi) map by restrained minimisation on an ``n_grid x n_grid`` periodic grid.

    Grid points are visited row by row in a serpentine order, each minimisation starting from
    the previous minimum (continuation), which keeps neighbouring structures consistent.
    """
    if n_grid < 4:
        raise ValueError(f"n_grid: expected an integer >= 4, got {n_grid}")
    quencher = DihedralQuencher(system, phi_atoms, psi_atoms, **quencher_kwargs)
    angles = -math.pi + 2 * math.pi * np.arange(n_grid) / n_grid
    energy = np.empty((n_grid, n_grid))
    x = np.asarray(positions, dtype=float)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_grid * n_grid, desc="relaxed map", unit="point")
    row_start = x
    for i in range(n_grid):
        order = range(n_grid) if i % 2 == 0 else range(n_grid - 1, -1, -1)
        x = row_start
        for k, j in enumerate(order):
            e, x = quencher.quench(x, angles[i], angles[j])
            energy[i, j] = e
            if k == 0:
                row_start = x
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return RelaxedMap(angles, angles.copy(), energy, time.perf_counter() - t0)


@dataclass
class RefinedMaximum:
    """The relaxed-energy maximum of a path located between its frames.

    Attributes
    ----------
    positions : ndarray, shape=(N, 3)
        The relaxed structure at the maximum (nm).
    angles : ndarray, shape=(K,)
        Its restrained torsions (one per quencher torsion, in the quencher's order), radians in
        [-pi, pi).
    energy : float
        Its relaxed energy (kJ/mol).
    frame_position : float
        Fractional path-frame index of the maximum (``lo + j / substeps``).
    window : (int, int)
        First and last path frame of the refined stretch.
    route : ndarray, shape=(M, K)
        The torsion points minimised (radians, unwrapped along the stretch).
    energies : ndarray, shape=(M,)
        Relaxed energy at each route point (kJ/mol).
    """

    positions: np.ndarray
    angles: np.ndarray
    energy: float
    frame_position: float
    window: tuple[int, int]
    route: np.ndarray
    energies: np.ndarray

    @property
    def phi_psi(self) -> np.ndarray:
        """``angles`` of a two-torsion refinement (a :class:`DihedralQuencher`'s (phi, psi))."""
        if len(self.angles) != 2:
            raise ValueError(f"phi_psi: expected a refinement over 2 torsions (phi, psi), got {len(self.angles)}; "
                             "use angles")
        return self.angles


def refine_relaxed_maximum(quencher: TorsionQuencher, frames: np.ndarray, around: int, *, window: int = 2,
                           substeps: int = 10) -> RefinedMaximum:
    """Locate a path's relaxed-energy maximum between frames (a local dihedral drive).

    Consecutive 20-fs frames of a path can be 20-30 degrees apart in phi at the barrier, while
    the committor of relaxed structures goes from 0 to 1 within a few degrees there; the
    highest-energy *frame* then often lies past the transition state. This takes the frames
    ``around - window ... around + window``, joins their values of the quencher's torsions (any
    number: for a system, :func:`cv_torsion_quencher` holds every torsion CV) by straight
    segments (angles unwrapped along the frames, so a segment never goes the long way round),
    cuts every segment into ``substeps`` steps, and minimises with the torsions held at each
    point in order, each minimisation starting from the previous minimum (the first from frame
    ``around - window``): the relaxed structures follow the path's own CV route continuously
    from its start side, as in
    :func:`~spacetime_md.molecular.workflows.committor_run.compute_dihedral_drive_path`. The highest of them is
    returned. Cost: ``2 * window * substeps + 1`` minimisations (about 4 ms each for alanine
    dipeptide).

    Parameters
    ----------
    quencher : TorsionQuencher
        Holds the torsions of the route (e.g. :class:`DihedralQuencher` for (phi, psi)).
    frames : ndarray, shape=(T, N, 3)
        One path's frames (nm).
    around : int
        The frame to refine around (usually the highest-relaxed-energy frame).
    window : int
        Frames on each side of ``around`` (clipped at the path's ends).
    substeps : int
        Route points per frame interval.
    """
    if not isinstance(quencher, TorsionQuencher):
        raise TypeError(f"quencher: expected a TorsionQuencher, got {type(quencher).__name__}")
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[-1] != 3 or len(frames) < 2:
        raise ValueError(f"frames: expected a path of shape (T >= 2, N, 3), got {frames.shape}")
    for name, value in (("window", window), ("substeps", substeps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if not 0 <= around < len(frames):
        raise ValueError(f"around: expected a frame index in [0, {len(frames)}), got {around}")
    lo, hi = max(around - window, 0), min(around + window, len(frames) - 1)
    stretch = frames[lo : hi + 1]
    n_torsions = len(quencher.torsions)
    angles = np.unwrap(np.stack([_dihedrals(stretch, t) for t in quencher.torsions], axis=-1), axis=0)
    steps = np.arange(substeps) / substeps
    route = (angles[:-1, None, :] + steps[None, :, None] * np.diff(angles, axis=0)[:, None, :]).reshape(-1, n_torsions)
    route = np.concatenate([route, angles[-1:]])
    energies = np.empty(len(route))
    x, best = stretch[0], None
    for i, point in enumerate(route):  # sequential by design: each minimisation starts from the last
        energies[i], x = quencher.quench_at(x, point)
        x = np.asarray(x, dtype=np.float64)
        if best is None or energies[i] > energies[best]:
            best, best_x = i, x
    held = (route[best] + math.pi) % (2 * math.pi) - math.pi
    return RefinedMaximum(best_x, held, float(energies[best]), lo + best / substeps, (lo, hi), route, energies)
