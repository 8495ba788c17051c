"""Did a path arrive? The CVs of a run, its endpoint states and the target-hit test.

A path *hits* when its final frame lies in the target state, in every one of its regions
(see :mod:`spacetime_md.molecular.paths.transition`).

Units: nm, radians.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spacetime_md.molecular.paths.structures import kabsch_rmsd

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.system.cvs import CollectiveVariables

__all__ = [
    "HIT_LENGTH_FRACTION",
    "path_cvs",
    "default_hit_length_nm",
    "compute_target_hit",
]

# --------------------------------------------------------------------------- pipeline: CVs, endpoint states, hit test

#: Default ``hit_length_nm``: this fraction of the heavy-atom RMSD between start and end.
HIT_LENGTH_FRACTION = 0.3
#: Why the relaxed barrier is undefined for CVs without a torsion.
NO_TORSION_REASON = "no torsion collective variable to hold"


def _fit_atoms(system: "MolecularSystem") -> np.ndarray:
    """Heavy atoms, or all atoms when there are fewer than 3 heavy atoms."""
    heavy = np.asarray(system.heavy_atom_indices, dtype=np.int64)
    return heavy if len(heavy) >= 3 else np.arange(system.n_atoms)


def path_cvs(system: "MolecularSystem", start_nm: np.ndarray, end_nm: np.ndarray) -> "CollectiveVariables":
    """The CVs of a transition-path run: ``system.cvs``, or if the system has none, the RMSDs to
    the two endpoints (``"rmsd start"``, ``"rmsd end"``; heavy atoms, all atoms if fewer than 3).

    The system itself is not changed (a new set is returned).

    Parameters
    ----------
    system : MolecularSystem
    start_nm, end_nm : ndarray, shape=(N, 3)
        The endpoint structures (nm).
    """
    from spacetime_md.molecular.system.cvs import RMSD, CollectiveVariables

    if len(system.cvs):
        return system.cvs
    atoms = tuple(int(i) for i in _fit_atoms(system))
    return CollectiveVariables([RMSD("rmsd start", np.asarray(start_nm, dtype=np.float64), atoms),
                                RMSD("rmsd end", np.asarray(end_nm, dtype=np.float64), atoms)])


def default_hit_length_nm(system: "MolecularSystem", start_nm: np.ndarray, end_nm: np.ndarray) -> float:
    """``HIT_LENGTH_FRACTION`` x the heavy-atom (all-atom if fewer than 3) RMSD of end to start, nm."""
    return HIT_LENGTH_FRACTION * float(kabsch_rmsd(end_nm, start_nm, _fit_atoms(system)))


def _group_label(region: Any) -> str:
    return "/".join(region.cvs)


def compute_target_hit(
    cvs: "CollectiveVariables",
    values: np.ndarray,
    target_values: np.ndarray,
    hit_radius: float = 0.75,
    hit_length_nm: float = 0.05,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The target-hit test of the path validation, on CV values.

    A frame hits when it lies in ``endpoint_state(cvs, target_values, "target", hit_radius,
    hit_length_nm)``: for each residue its (phi, psi) within ``hit_radius`` rad (periodic) of the
    target's, every other angle CV likewise, and every length CV within ``hit_length_nm`` nm.

    Parameters
    ----------
    cvs : CollectiveVariables
    values : ndarray, shape=(F, K)
        CV values (radians / nm) of the frames to test (e.g. the final frame of every path).
    target_values : ndarray, shape=(K,)
        The target structure's CV values.
    hit_radius, hit_length_nm : float

    Returns
    -------
    hit : ndarray of bool, shape=(F,)
    by_group : dict
        ``"phi 2/psi 2"`` (the region's CV names joined by ``/``) -> bool array, shape=(F,),
        one entry per region of the target state (per residue for peptides).
    """
    from spacetime_md.molecular.system.states import endpoint_state

    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    state = endpoint_state(cvs, target_values, "target", angle_radius=hit_radius, length_tolerance=hit_length_nm)
    by_group = {_group_label(r): r.contains(values, cvs) for r in state.regions}
    hit = np.ones(len(values), dtype=bool)
    for mask in by_group.values():
        hit &= mask
    return hit, by_group


def _endpoint_states(system, cvs, start_nm, end_nm, config):
    """(hit_length_nm, start state, target state) of a pair (see the module docstring)."""
    from spacetime_md.molecular.system.states import endpoint_state

    hit_length = config.hit_length_nm
    if hit_length is None:
        hit_length = default_hit_length_nm(system, start_nm, end_nm)
        if not hit_length > 0 and not cvs.periodic.all():
            raise ValueError(
                "start and end: expected structures whose heavy atoms differ (the default hit_length_nm is "
                f"{HIT_LENGTH_FRACTION} x their RMSD), got an RMSD of 0; pass hit_length_nm"
            )
    start_values = np.asarray(cvs.compute(start_nm[None]))[0]
    target_values = np.asarray(cvs.compute(end_nm[None]))[0]
    tol = hit_length if hit_length > 0 else 1.0  # unused when every CV is an angle
    start_state = endpoint_state(cvs, start_values, "start", angle_radius=config.hit_radius, length_tolerance=tol)
    target_state = endpoint_state(cvs, target_values, "target", angle_radius=config.hit_radius, length_tolerance=tol)
    return float(hit_length), start_state, target_state
