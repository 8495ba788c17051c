"""Transition paths: geodesic problems between two structures, the restrained OpenMM Langevin
sampler, relaxed maps, saddle points, the time budget and the ``spacetime-md paths`` job (pipeline step 4).

Units: OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K).

Public names are re-exported lazily (see :mod:`spacetime_md.molecular`).
"""

from __future__ import annotations

from spacetime_md.molecular._lazy import attach as _attach

#: public name -> module of this package that defines it
_LAZY = {
    "allocate_steps": "budget",
    "budget_steps": "budget",
    "compute_budget_schedule": "budget",
    "PathConfig": "config",
    "compute_target_hit": "hit",
    "RestrainedLangevinSampler": "openmm_langevin",
    "restraint_schedule": "openmm_langevin",
    "DihedralQuencher": "relaxed",
    "PositionQuencher": "relaxed",
    "RefinedMaximum": "relaxed",
    "RelaxedMap": "relaxed",
    "TorsionQuencher": "relaxed",
    "compute_relaxed_map": "relaxed",
    "cv_torsion_quencher": "relaxed",
    "refine_relaxed_maximum": "relaxed",
    "relaxed_na_reason": "relaxed",
    "SaddlePoint": "saddle",
    "SaddleSearch": "saddle",
    "compute_saddle_from_refined": "saddle",
    "compute_saddle_point": "saddle",
    "format_table": "run",
    "run_paths": "run",
    "check_model_matches_system": "structures",
    "kabsch_align": "structures",
    "kabsch_rmsd": "structures",
    "GeodesicProblem": "transition",
    "TransitionPaths": "transition",
    "compute_transition_paths": "transition",
    "prepare_geodesic_problem": "transition",
}

__getattr__, __dir__, __all__ = _attach(__name__, _LAZY)
