"""Molecular systems on OpenMM, laid out along the pipeline.

========================================  =====================================================
sub-package                               what it holds
========================================  =====================================================
:mod:`spacetime_md.molecular.system`      systems, presets, CVs, states, chirality, energies, export
:mod:`spacetime_md.molecular.sampling`    Boltzmann samples (replica exchange), reference populations
:mod:`spacetime_md.molecular.model`       equivariant denoiser, training, checkpoints, evaluation
:mod:`spacetime_md.molecular.paths`       geodesic problems, OpenMM transition paths, the paths job
:mod:`spacetime_md.molecular.workflows`   committor, OpenPathSampling, batches on Dask
========================================  =====================================================

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

#: public name -> sub-package (or module) that re-exports it
_LAZY = {
    "ALANINE_DIPEPTIDE_PHI": "system",
    "ALANINE_DIPEPTIDE_PSI": "system",
    "assign_states": "system",
    "backbone_torsions": "system",
    "check_structure": "system",
    "chiral_centres_from_topology": "system",
    "ChiralCentre": "system",
    "CollectiveVariable": "system",
    "CollectiveVariables": "system",
    "compute_chirality": "system",
    "compute_dihedrals": "system",
    "compute_phi_psi": "system",
    "compute_signed_volume": "system",
    "default_cvs": "system",
    "Distance": "system",
    "endpoint_state": "system",
    "evaluate_energies": "system",
    "EXPORT_FORMATS": "system",
    "export_trajectory": "system",
    "FORCEFIELDS": "system",
    "fraction_l": "system",
    "known_systems": "system",
    "load_cvs": "system",
    "load_states": "system",
    "load_system": "system",
    "MetastableState": "system",
    "MolecularSystem": "system",
    "parse_cv": "system",
    "Region": "system",
    "resolve_platform": "system",
    "resolve_system": "system",
    "RMSD": "system",
    "Torsion": "system",
    "block_average": "sampling",
    "BoltzmannSamples": "sampling",
    "choose_temperatures": "sampling",
    "DEFAULT_TARGET_ACCEPTANCE": "sampling",
    "estimate_populations_flat_bias": "sampling",
    "estimate_populations_umbrella": "sampling",
    "exchange_warnings": "sampling",
    "load_samples": "sampling",
    "pilot_energy_statistics": "sampling",
    "plot_cvs": "sampling",
    "plot_ramachandran": "sampling",
    "predicted_acceptance": "sampling",
    "reference_populations": "sampling",
    "resolve_config": "sampling",
    "resolve_run_config": "sampling",
    "sample_boltzmann": "sampling",
    "SamplingConfig": "sampling",
    "solve_mbar": "sampling",
    "state_populations": "sampling",
    "checkpoint_system": "model",
    "EquivariantConv": "model",
    "EquivariantDenoiser": "model",
    "evaluate_samples": "model",
    "EvaluationResult": "model",
    "from_model": "model",
    "load_checkpoint": "model",
    "load_dataset": "model",
    "load_guided": "model",
    "load_pretrained": "model",
    "ProcessGroupContext": "model",
    "resolve_training_system": "model",
    "sample_model": "model",
    "save_checkpoint": "model",
    "save_guided_checkpoint": "model",
    "to_model": "model",
    "train": "model",
    "TrainConfig": "model",
    "TrainResult": "model",
    "allocate_steps": "paths",
    "budget_steps": "paths",
    "check_model_matches_system": "paths",
    "compute_budget_schedule": "paths",
    "compute_relaxed_map": "paths",
    "compute_target_hit": "paths",
    "compute_transition_paths": "paths",
    "cv_torsion_quencher": "paths",
    "DihedralQuencher": "paths",
    "format_table": "paths",
    "GeodesicProblem": "paths",
    "kabsch_align": "paths",
    "kabsch_rmsd": "paths",
    "PathConfig": "paths",
    "PositionQuencher": "paths",
    "prepare_geodesic_problem": "paths",
    "refine_relaxed_maximum": "paths",
    "RefinedMaximum": "paths",
    "relaxed_na_reason": "paths",
    "RelaxedMap": "paths",
    "RestrainedLangevinSampler": "paths",
    "SaddlePoint": "paths",
    "SaddleSearch": "paths",
    "compute_saddle_from_refined": "paths",
    "compute_saddle_point": "paths",
    "restraint_schedule": "paths",
    "run_paths": "paths",
    "TorsionQuencher": "paths",
    "TransitionPaths": "paths",
    "BatchResult": "workflows",
    "BatchTask": "workflows",
    "CommittorConfig": "workflows",
    "CommittorResult": "workflows",
    "compute_dihedral_drive_path": "workflows",
    "CVStateChecker": "workflows",
    "derive_seed": "workflows",
    "estimate_committor": "workflows",
    "OPSSeed": "workflows",
    "plot_committor": "workflows",
    "read_pairs": "workflows",
    "run_batch": "workflows",
    "run_committor": "workflows",
    "sample_tps": "workflows",
    "state_volume": "workflows",
    "to_openpathsampling": "workflows",
    "TPSResult": "workflows",
    "wilson_interval": "workflows",
    "assert_equivariant": "testing",
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
