"""First-order saddle points of the force field: the transition state next to a path's maximum.

A path's relaxed-energy maximum (:func:`~spacetime_md.molecular.paths.relaxed.refine_relaxed_maximum`)
is minimised with the collective-variable torsions *held*: it is the top of the path in those
torsions, not a stationary point of the force field. Where the reaction also moves coordinates
that are not held (backbone angles, side chains, the neighbouring residues), shots from it fall
mostly to one side. :func:`compute_saddle_point` relaxes *every* coordinate except one, the
force field's own unstable direction, and returns the first-order saddle point next to the
structure it starts from: the highest point of the minimum-energy path through it, where
trajectories with Maxwell-Boltzmann velocities split about evenly between the basins the saddle
joins.

The method is partitioned rational-function optimisation (P-RFO; J. Baker, J. Comput. Chem. 7,
385 (1986)) on the exact Cartesian Hessian, computed by central differences of OpenMM forces
(``6 N`` force evaluations per iteration), with the six rigid-body modes projected out. The mode
walked uphill is the one most parallel to a given direction at the start (the path's tangent)
and the one most parallel to the previous step's after that (mode following), so the search
stays on the reaction the path made instead of the softest mode (often a methyl rotation).
Bond constraints are released for the search (the system's force field is rebuilt without them;
bonds to hydrogen keep their equilibrium lengths as harmonic terms), and the result is returned
with the constraints applied again by the caller's simulation.

Cost, measured on the 2-core VM (Reference platform): alanine dipeptide (22 atoms) about 17
iterations, 0.1 s; alanine tetrapeptide (42 atoms, 252 force evaluations per Hessian) 70-100
iterations, about 1 s. The dense ``(3N, 3N)`` Hessian makes this a tool for small molecules (a
few hundred atoms at most, :data:`MAX_SADDLE_ATOMS` in the committor).

Units inside: nm, kJ/mol.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import openmm
import openmm.unit as unit

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = ["SaddlePoint", "SaddleSearch", "compute_saddle_point", "compute_saddle_from_refined", "flexible_system",
           "MAX_SADDLE_ATOMS"]

_KJ = unit.kilojoule_per_mole
_KJ_NM = unit.kilojoule_per_mole / unit.nanometer

#: Without an unstable mode, the search climbs along one of this many softest modes.
_N_SOFT = 3
#: Smallest step (largest atomic displacement, nm) the trust radius shrinks to.
_MIN_TRUST = 1e-5


@dataclass
class SaddlePoint:
    """Result of a saddle search.

    Attributes
    ----------
    positions : ndarray, shape=(N, 3)
        The saddle structure (nm), in the frame of the start structure.
    energy : float
        Force-field energy there (kJ/mol; the flexible system's, see :func:`flexible_system`).
    rms_gradient : float
        Root-mean-square of the gradient with rigid-body motion projected out (kJ/mol/nm).
    n_negative : int
        Negative Hessian eigenvalues (1 at a first-order saddle point).
    eigenvalue : float
        The followed mode's eigenvalue (kJ/mol/nm^2; negative at the saddle).
    mode : ndarray, shape=(N, 3)
        The unstable mode (unit norm), the reaction direction at the saddle.
    n_iterations : int
    converged : bool
        ``rms_gradient <= gtol`` with exactly one negative eigenvalue.
    n_searches : int
        Searches run (more than 1 where :func:`compute_saddle_point` started again along another
        unstable mode).
    """

    positions: np.ndarray
    energy: float
    rms_gradient: float
    n_negative: int
    eigenvalue: float
    mode: np.ndarray
    n_iterations: int
    converged: bool
    n_searches: int = 1


def flexible_system(system: "MolecularSystem") -> openmm.System:
    """The OpenMM system of ``system`` rebuilt from its force field without bond constraints.

    A saddle search moves every Cartesian coordinate; constrained bonds become the force
    field's harmonic bonds (equilibrium lengths equal to the constrained lengths).
    """
    if system.constraints == "none":
        return copy.deepcopy(system.openmm_system)
    import openmm.app as app

    ff = app.ForceField(*system.forcefield_files)
    return ff.createSystem(system.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)


def _rigid_basis(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3N, 6) of infinitesimal translations and rotations of ``x (N, 3)``."""
    c = x - x.mean(axis=0)
    eye = np.eye(3)
    vectors = [np.tile(e, (len(x), 1)).ravel() for e in eye] + [np.cross(e, c).ravel() for e in eye]
    q, r = np.linalg.qr(np.stack(vectors, axis=1))
    keep = np.abs(np.diag(r)) > 1e-8 * np.abs(np.diag(r)).max()  # a linear molecule has 5
    return q[:, keep]


def _largest_displacement(step: np.ndarray) -> float:
    """Largest atomic displacement (nm) of a flat ``(3N,)`` step."""
    return float(np.sqrt((step.reshape(-1, 3) ** 2).sum(axis=1)).max())


def _rfo_lambda(b: np.ndarray, f: np.ndarray) -> float:
    """The RFO shift of the minimised modes: the root of ``lam = sum f_i^2 / (lam - b_i)`` below
    ``min(b, 0)`` (``lam - sum f^2 / (lam - b)`` is increasing there; bisection)."""
    top = min(float(b.min()), 0.0)

    def h(lam: float) -> float:
        return lam - float((f**2 / (lam - b)).sum())

    hi = top - 1e-9 * max(1.0, abs(top))
    if h(hi) <= 0:  # no gradient along the lowest modes: the shift sits at the top
        return hi
    lo = top - float(np.sqrt((f**2).sum())) - 1.0  # h(lo) < top - 1 < 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if h(mid) > 0:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * max(1.0, abs(lo)):
            break
    return 0.5 * (lo + hi)


class SaddleSearch:
    """Energies, forces and numerical Hessians of an OpenMM system, and a P-RFO saddle search.

    Parameters
    ----------
    openmm_system : openmm.System
        Without constraints (see :func:`flexible_system`); copied.
    platform : str
        OpenMM platform (``"Reference"``: double precision, best for finite differences).
    fd_step : float
        Central-difference step for the Hessian (nm).
    """

    def __init__(self, openmm_system: openmm.System, *, platform: str = "Reference", fd_step: float = 1e-4):
        if openmm_system.getNumConstraints():
            raise ValueError(f"openmm_system: expected no constraints for a saddle search, got "
                             f"{openmm_system.getNumConstraints()} (use flexible_system)")
        if not fd_step > 0:
            raise ValueError(f"fd_step: expected > 0 nm, got {fd_step!r}")
        self.system = copy.deepcopy(openmm_system)
        self.n_atoms = self.system.getNumParticles()
        self.fd_step = float(fd_step)
        self.context = openmm.Context(self.system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName(platform))
        self.n_force_evaluations = 0

    def energy_gradient(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Potential energy (kJ/mol) and gradient (kJ/mol/nm, shape (N, 3)) at ``x (N, 3)`` nm."""
        self.context.setPositions(x)
        state = self.context.getState(getEnergy=True, getForces=True)
        self.n_force_evaluations += 1
        return (state.getPotentialEnergy().value_in_unit(_KJ),
                -np.asarray(state.getForces(asNumpy=True).value_in_unit(_KJ_NM), dtype=np.float64))

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Cartesian Hessian (kJ/mol/nm^2, shape (3N, 3N)) by central differences of the gradient."""
        flat = np.asarray(x, dtype=np.float64).ravel()
        h = self.fd_step
        out = np.empty((flat.size, flat.size))
        for k in range(flat.size):  # 6N force evaluations; OpenMM has no analytic Hessian
            step = flat.copy()
            step[k] += h
            gp = self.energy_gradient(step.reshape(-1, 3))[1].ravel()
            step[k] -= 2 * h
            gm = self.energy_gradient(step.reshape(-1, 3))[1].ravel()
            out[:, k] = (gp - gm) / (2 * h)
        return 0.5 * (out + out.T)

    def _modes(self, x: np.ndarray, grad: np.ndarray):
        """Rigid-body basis, projected gradient and the internal Hessian eigenpairs (ascending) at ``x``."""
        basis = _rigid_basis(x)
        proj = np.eye(basis.shape[0]) - basis @ basis.T
        values, vectors = np.linalg.eigh(proj @ self.hessian(x) @ proj)
        rigid = np.abs(basis.T @ vectors).sum(axis=0)
        internal = np.sort(np.argsort(rigid)[: vectors.shape[1] - basis.shape[1]])
        return basis, proj @ grad.ravel(), values[internal], vectors[:, internal]

    def search(self, x0: np.ndarray, direction: np.ndarray, *, gtol: float = 1.0, max_iterations: int = 400,
               trust_radius: float = 0.005, max_trust_radius: float = 0.01, max_rise: float = 100.0,
               callback: Callable[[dict[str, Any]], None] | None = None) -> SaddlePoint:
        """P-RFO search for the first-order saddle point next to ``x0``, uphill along ``direction``.

        Parameters
        ----------
        x0 : ndarray, shape=(N, 3)
            Start structure (nm), e.g. a path's refined relaxed-energy maximum.
        direction : ndarray, shape=(N, 3)
            The reaction's direction at ``x0`` (e.g. the difference of the relaxed structures just
            after and just before it). Where the Hessian has negative eigenvalues, the search
            follows the unstable mode most parallel to it (then to the previous step's mode), so
            it stays on the reaction the path made rather than the softest mode.
        gtol : float
            Convergence: root-mean-square of the projected gradient (kJ/mol/nm), with exactly one
            negative eigenvalue.
        max_iterations : int
        trust_radius, max_trust_radius : float
            Initial and largest step, as the largest displacement of any atom (nm).
        max_rise : float
            Give up (``converged=False``) once the energy is this far above the start (kJ/mol):
            the search has left the reaction for a stiff mode.
        callback : callable, optional
            Called each iteration with ``{"iteration", "energy", "rms", "n_negative",
            "eigenvalue", "overlap", "step", "trust"}``.
        """
        x = np.array(x0, dtype=np.float64)
        if x.shape != (self.n_atoms, 3) or not np.isfinite(x).all():
            raise ValueError(f"x0: expected finite positions of shape ({self.n_atoms}, 3), got shape {x.shape}")
        d = np.asarray(direction, dtype=np.float64)
        if d.shape != x.shape or not np.isfinite(d).all() or not np.linalg.norm(d) > 0:
            raise ValueError(f"direction: expected a finite, non-zero array of shape {x.shape}, got shape {d.shape}")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations: expected an integer >= 1, got {max_iterations!r}")
        follow = d.ravel()
        trust = float(trust_radius)
        energy, grad = self.energy_gradient(x)
        start_energy = energy
        it = 0
        while True:
            basis, g, values, vectors = self._modes(x, grad)
            reference = follow - basis @ (basis.T @ follow)
            overlap = np.abs(vectors.T @ reference)
            if (values < 0).any():  # stay on an unstable mode: the one most like the direction / the last mode
                overlap = np.where(values < 0, overlap, -1.0)
            else:  # climb out along one of the softest modes, never a stiff bond or angle
                overlap[_N_SOFT:] = -1.0
            k = int(np.argmax(overlap))
            follow = vectors[:, k] * (1.0 if vectors[:, k] @ reference >= 0 else -1.0)
            rms = float(np.sqrt((g**2).sum() / g.size))
            n_negative = int((values < 0).sum())
            converged = rms <= gtol and n_negative == 1 and values[k] < 0
            if converged or it >= max_iterations or energy - start_energy > max_rise:
                return SaddlePoint(x, energy, rms, n_negative, float(values[k]), follow.reshape(-1, 3), it,
                                   bool(converged))
            it += 1
            f = vectors.T @ g
            others = np.arange(len(values)) != k
            full = np.zeros_like(f)
            # P-RFO: maximise along the followed mode, minimise along the others (Baker 1986).
            lam_p = 0.5 * values[k] + 0.5 * math.sqrt(values[k] ** 2 + 4 * f[k] ** 2)
            if f[k] != 0:
                full[k] = -f[k] / (values[k] - lam_p)
            full[others] = -f[others] / (values[others] - _rfo_lambda(values[others], f[others]))
            # The uphill and the downhill parts are limited separately, so that a long climb does not
            # shrink the relaxation of the stiff coordinates with it (in Cartesian coordinates a
            # turn also stretches bonds, which the downhill part must keep taking back).
            uphill = np.where(np.arange(len(full)) == k, full, 0.0)
            downhill = full - uphill
            sizes = [_largest_displacement(vectors @ part) for part in (uphill, downhill)]
            norm = max(sizes)
            while True:  # shorten the step until the quadratic model predicts the energy change
                steps = sum(part * min(1.0, trust / size) if size > 0 else part
                            for part, size in zip((uphill, downhill), sizes))
                predicted = float(f @ steps + 0.5 * (values * steps**2).sum())
                x_new = x + (vectors @ steps).reshape(-1, 3)
                energy_new, grad_new = self.energy_gradient(x_new)
                ratio = (energy_new - energy) / predicted if abs(predicted) > 1e-8 else 1.0
                if (np.isfinite(energy_new) and 1 / 3 < ratio < 3.0) or trust <= _MIN_TRUST:
                    break
                trust = max(0.25 * trust, _MIN_TRUST)
            if callback is not None:
                callback({"iteration": it, "energy": energy, "rms": rms, "n_negative": n_negative,
                          "eigenvalue": float(values[k]),
                          "overlap": float(abs(vectors[:, k] @ reference) / np.linalg.norm(reference)),
                          "step": _largest_displacement(vectors @ steps), "trust": trust})
            if not (np.isfinite(energy_new) and np.isfinite(grad_new).all()):
                return SaddlePoint(x, energy, rms, n_negative, float(values[k]), follow.reshape(-1, 3), it, False)
            if 0.75 < ratio < 4 / 3 and norm > trust:  # the model holds at full length: allow longer steps
                trust = min(2.0 * trust, max_trust_radius)
            x, energy, grad = x_new, energy_new, grad_new


def compute_saddle_point(system: "MolecularSystem", positions: np.ndarray, direction: np.ndarray, *,
                         max_restarts: int = 3, **kwargs: Any) -> SaddlePoint:
    """The first-order saddle point of ``system``'s force field next to ``positions``.

    The search walks uphill along the unstable mode at ``positions`` most parallel to
    ``direction``. Where it does not converge (the mode it follows can turn into a stiff one),
    it starts again along each of the next unstable modes there, in order of their overlap with
    ``direction``, up to ``max_restarts`` times; the first converged search is returned, else the
    first one (``converged=False``).

    Parameters
    ----------
    system : MolecularSystem
    positions : ndarray, shape=(N, 3)
        Start structure (nm).
    direction : ndarray, shape=(N, 3)
        The reaction's direction there (picks the mode walked uphill).
    max_restarts : int
        Searches along other unstable modes after a failed one.
    **kwargs
        :meth:`SaddleSearch.search` options (``gtol``, ``max_iterations``, ``trust_radius``, ...).
    """
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts: expected an integer >= 0, got {max_restarts!r}")
    search = SaddleSearch(flexible_system(system))
    first = search.search(positions, direction, **kwargs)
    if first.converged:
        return first
    x0 = np.asarray(positions, dtype=np.float64)
    _, _, values, vectors = search._modes(x0, search.energy_gradient(x0)[1])
    unstable = np.flatnonzero(values < 0)
    order = unstable[np.argsort(-np.abs(vectors[:, unstable].T @ np.asarray(direction, dtype=np.float64).ravel()))]
    for n, mode in enumerate(order[1 : 1 + max_restarts], start=2):
        found = search.search(x0, vectors[:, mode].reshape(-1, 3), **kwargs)
        if found.converged:
            return dataclasses.replace(found, n_searches=n)
    return dataclasses.replace(first, n_searches=1 + min(max_restarts, max(len(order) - 1, 0)))


#: Largest system searched by default: the dense Hessian costs 6N force evaluations and a (3N)^3
#: eigendecomposition per iteration (about 10 ms at 42 atoms, seconds at a few hundred).
MAX_SADDLE_ATOMS = 300


def compute_saddle_from_refined(system: "MolecularSystem", quencher: Any, refined: Any, **kwargs: Any) -> SaddlePoint:
    """The saddle point next to a path's refined relaxed-energy maximum.

    The search starts at ``refined.positions`` and walks uphill along the reaction the path
    made there: the difference of the relaxed structures at the route points just after and just
    before the maximum (``quencher`` holds the same torsions as the refinement, e.g.
    :func:`~spacetime_md.molecular.paths.relaxed.cv_torsion_quencher`).

    Parameters
    ----------
    system : MolecularSystem
    quencher : TorsionQuencher
    refined : RefinedMaximum
        From :func:`~spacetime_md.molecular.paths.relaxed.refine_relaxed_maximum` with ``quencher``.
    **kwargs
        :meth:`SaddleSearch.search` options.
    """
    route = np.asarray(refined.route)
    best = int(np.argmax(refined.energies))
    before, after = route[max(best - 1, 0)], route[min(best + 1, len(route) - 1)]
    _, x_before = quencher.quench_at(refined.positions, before)
    _, x_after = quencher.quench_at(refined.positions, after)
    direction = np.asarray(x_after, dtype=np.float64) - np.asarray(x_before, dtype=np.float64)
    return compute_saddle_point(system, refined.positions, direction, **kwargs)
