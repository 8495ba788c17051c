"""Molecular systems on OpenMM: systems, Boltzmann sampling, energies, export.

The only subpackage that imports openmm, mdtraj and torch_geometric. Public molecular
functions take and return ``openmm.unit`` quantities at the edge; inside, values are plain
floats / arrays in OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K), which mdtraj uses too.

Every public name is imported lazily, on first access (PEP 562 ``__getattr__``): ``import
spacetime_md.molecular`` stays cheap and imports neither torch_geometric nor OpenMM until a
name that needs them is used (the equivariant model pulls torch_geometric in when it is
built or loaded).
"""

from __future__ import annotations

import importlib

#: public name -> submodule that defines it
_LAZY = {
    "BatchResult": "batch",
    "BatchTask": "batch",
    "derive_seed": "batch",
    "read_pairs": "batch",
    "run_batch": "batch",
    "check_structure": "checks",
    "ChiralCentre": "chirality",
    "chiral_centres_from_topology": "chirality",
    "compute_chirality": "chirality",
    "compute_signed_volume": "chirality",
    "fraction_l": "chirality",
    "CVStateChecker": "committor",
    "CommittorConfig": "committor",
    "CommittorResult": "committor",
    "compute_dihedral_drive_path": "committor",
    "estimate_committor": "committor",
    "plot_committor": "committor",
    "run_committor": "committor",
    "wilson_interval": "committor",
    "CollectiveVariable": "cvs",
    "CollectiveVariables": "cvs",
    "Distance": "cvs",
    "RMSD": "cvs",
    "Torsion": "cvs",
    "backbone_torsions": "cvs",
    "default_cvs": "cvs",
    "load_cvs": "cvs",
    "parse_cv": "cvs",
    "ProcessGroupContext": "ddp",
    "ALANINE_DIPEPTIDE_PHI": "dihedrals",
    "ALANINE_DIPEPTIDE_PSI": "dihedrals",
    "compute_dihedrals": "dihedrals",
    "compute_phi_psi": "dihedrals",
    "EquivariantConv": "egnn",
    "evaluate_energies": "energies",
    "EvaluationResult": "evaluation",
    "evaluate_samples": "evaluation",
    "sample_model": "evaluation",
    "EXPORT_FORMATS": "export",
    "export_trajectory": "export",
    "EquivariantDenoiser": "model",
    "from_model": "model",
    "to_model": "model",
    "RestrainedLangevinSampler": "openmm_langevin",
    "restraint_schedule": "openmm_langevin",
    "OPSSeed": "ops",
    "TPSResult": "ops",
    "sample_tps": "ops",
    "state_volume": "ops",
    "to_openpathsampling": "ops",
    "GeodesicProblem": "paths",
    "PathConfig": "paths",
    "TransitionPaths": "paths",
    "check_model_matches_system": "paths",
    "compute_target_hit": "paths",
    "compute_transition_paths": "paths",
    "kabsch_align": "paths",
    "kabsch_rmsd": "paths",
    "prepare_geodesic_problem": "paths",
    "block_average": "populations",
    "plot_cvs": "populations",
    "plot_ramachandran": "populations",
    "state_populations": "populations",
    "checkpoint_system": "pretrained",
    "load_checkpoint": "pretrained",
    "load_guided": "pretrained",
    "load_pretrained": "pretrained",
    "save_checkpoint": "pretrained",
    "estimate_populations_flat_bias": "reference",
    "estimate_populations_umbrella": "reference",
    "reference_populations": "reference",
    "solve_mbar": "reference",
    "DihedralQuencher": "relaxed",
    "PositionQuencher": "relaxed",
    "RefinedMaximum": "relaxed",
    "RelaxedMap": "relaxed",
    "TorsionQuencher": "relaxed",
    "compute_relaxed_map": "relaxed",
    "cv_torsion_quencher": "relaxed",
    "refine_relaxed_maximum": "relaxed",
    "relaxed_na_reason": "relaxed",
    "format_table": "run_paths",
    "run_paths": "run_paths",
    "BoltzmannSamples": "sampling",
    "SamplingConfig": "sampling",
    "load_samples": "sampling",
    "resolve_config": "sampling",
    "sample_boltzmann": "sampling",
    "resolve_run_config": "sampling",
    "DEFAULT_TARGET_ACCEPTANCE": "ladder",
    "choose_temperatures": "ladder",
    "exchange_warnings": "ladder",
    "pilot_energy_statistics": "ladder",
    "predicted_acceptance": "ladder",
    "allocate_steps": "path_budget",
    "budget_steps": "path_budget",
    "compute_budget_schedule": "path_budget",
    "MetastableState": "states",
    "Region": "states",
    "assign_states": "states",
    "endpoint_state": "states",
    "load_states": "states",
    "FORCEFIELDS": "system",
    "MolecularSystem": "system",
    "known_systems": "system",
    "load_system": "system",
    "resolve_platform": "system",
    "resolve_system": "system",
    "assert_equivariant": "testing",
    "TrainConfig": "training",
    "TrainResult": "training",
    "load_dataset": "training",
    "resolve_training_system": "training",
    "train": "training",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
