"""Molecular systems on OpenMM: systems, Boltzmann sampling, energies, export.

The only subpackage that imports openmm, mdtraj and torch_geometric. Public molecular
functions take and return ``openmm.unit`` quantities at the edge; inside, values are plain
floats / arrays in OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K), which mdtraj uses too.
"""

# --- OpenMM layer: systems, states, sampling, energies, export (issue 3) ---
from spacetime_md.molecular.dihedrals import (
    ALANINE_DIPEPTIDE_PHI,
    ALANINE_DIPEPTIDE_PSI,
    compute_dihedrals,
    compute_phi_psi,
)
from spacetime_md.molecular.energies import evaluate_energies
from spacetime_md.molecular.export import EXPORT_FORMATS, export_trajectory
from spacetime_md.molecular.populations import block_average, plot_ramachandran, state_populations
from spacetime_md.molecular.reference import (
    estimate_populations_flat_bias,
    estimate_populations_umbrella,
    reference_populations,
    solve_mbar,
)
from spacetime_md.molecular.sampling import (
    BoltzmannSamples,
    SamplingConfig,
    load_samples,
    resolve_config,
    sample_boltzmann,
)
from spacetime_md.molecular.states import MetastableState, assign_states, load_states
from spacetime_md.molecular.system import (
    FORCEFIELDS,
    MolecularSystem,
    known_systems,
    load_system,
    resolve_platform,
)

__all__ = [
    "ALANINE_DIPEPTIDE_PHI",
    "ALANINE_DIPEPTIDE_PSI",
    "BoltzmannSamples",
    "EXPORT_FORMATS",
    "FORCEFIELDS",
    "MetastableState",
    "MolecularSystem",
    "SamplingConfig",
    "assign_states",
    "block_average",
    "compute_dihedrals",
    "compute_phi_psi",
    "estimate_populations_flat_bias",
    "estimate_populations_umbrella",
    "evaluate_energies",
    "export_trajectory",
    "known_systems",
    "load_samples",
    "load_states",
    "load_system",
    "plot_ramachandran",
    "reference_populations",
    "resolve_config",
    "resolve_platform",
    "sample_boltzmann",
    "solve_mbar",
    "state_populations",
]
# --- end OpenMM layer ---

# --- Equivariant model: layer, denoiser, training, checkpoints, evaluation (issue 4) ---
from spacetime_md.molecular.chirality import compute_chirality, compute_signed_volume, fraction_l
from spacetime_md.molecular.egnn import EquivariantConv
from spacetime_md.molecular.evaluation import EvaluationResult, evaluate_samples, sample_model
from spacetime_md.molecular.model import EquivariantDenoiser, from_model, to_model
from spacetime_md.molecular.pretrained import load_checkpoint, load_guided, load_pretrained, save_checkpoint
from spacetime_md.molecular.testing import assert_equivariant
from spacetime_md.molecular.training import TrainConfig, TrainResult, load_dataset, train

__all__ += [
    "EquivariantConv",
    "EquivariantDenoiser",
    "EvaluationResult",
    "TrainConfig",
    "TrainResult",
    "assert_equivariant",
    "compute_chirality",
    "compute_signed_volume",
    "evaluate_samples",
    "fraction_l",
    "from_model",
    "load_checkpoint",
    "load_dataset",
    "load_pretrained",
    "load_guided",
    "sample_model",
    "save_checkpoint",
    "to_model",
    "train",
]
# --- end equivariant model ---

# --- Transition paths: geodesic -> OpenMM annealed Langevin -> validation -> export (issue 5) ---
from spacetime_md.molecular.openmm_langevin import RestrainedLangevinSampler
from spacetime_md.molecular.paths import (
    GeodesicProblem,
    PathConfig,
    TransitionPaths,
    check_model_matches_system,
    compute_transition_paths,
    kabsch_align,
    kabsch_rmsd,
    prepare_geodesic_problem,
)
from spacetime_md.molecular.relaxed import (
    DihedralQuencher,
    PositionQuencher,
    RefinedMaximum,
    RelaxedMap,
    TorsionQuencher,
    compute_relaxed_map,
    refine_relaxed_maximum,
)
from spacetime_md.molecular.run_paths import format_table, run_paths

__all__ += [
    "DihedralQuencher",
    "GeodesicProblem",
    "PathConfig",
    "PositionQuencher",
    "RefinedMaximum",
    "RelaxedMap",
    "RestrainedLangevinSampler",
    "TorsionQuencher",
    "TransitionPaths",
    "check_model_matches_system",
    "compute_relaxed_map",
    "compute_transition_paths",
    "format_table",
    "kabsch_align",
    "kabsch_rmsd",
    "prepare_geodesic_problem",
    "refine_relaxed_maximum",
    "run_paths",
]
# --- end transition paths ---

# --- scale-out (issue 8) ---
from spacetime_md.molecular.batch import BatchResult, BatchTask, derive_seed, read_pairs, run_batch
from spacetime_md.molecular.ddp import ProcessGroupContext

__all__ += [
    "BatchResult",
    "BatchTask",
    "ProcessGroupContext",
    "derive_seed",
    "read_pairs",
    "run_batch",
]
# --- end scale-out ---

# --- committor / OPS (issue 9) ---
from spacetime_md.molecular.committor import (
    CommittorConfig,
    CommittorResult,
    compute_dihedral_drive_path,
    estimate_committor,
    plot_committor,
    run_committor,
    wilson_interval,
)
from spacetime_md.molecular.ops import OPSSeed, TPSResult, sample_tps, state_volume, to_openpathsampling

__all__ += [
    "CommittorConfig",
    "CommittorResult",
    "OPSSeed",
    "TPSResult",
    "compute_dihedral_drive_path",
    "estimate_committor",
    "plot_committor",
    "run_committor",
    "sample_tps",
    "state_volume",
    "to_openpathsampling",
    "wilson_interval",
]
# --- end committor / OPS ---

# --- your own molecule: collective variables, states in CV space, checks (issues 19, 20) ---
from spacetime_md.molecular.checks import check_structure
from spacetime_md.molecular.chirality import ChiralCentre, chiral_centres_from_topology
from spacetime_md.molecular.committor import CVStateChecker
from spacetime_md.molecular.cvs import (
    RMSD,
    CollectiveVariable,
    CollectiveVariables,
    Distance,
    Torsion,
    backbone_torsions,
    default_cvs,
    load_cvs,
    parse_cv,
)
from spacetime_md.molecular.openmm_langevin import restraint_schedule
from spacetime_md.molecular.paths import compute_target_hit
from spacetime_md.molecular.populations import plot_cvs
from spacetime_md.molecular.pretrained import checkpoint_system
from spacetime_md.molecular.relaxed import cv_torsion_quencher, relaxed_na_reason
from spacetime_md.molecular.states import Region, endpoint_state
from spacetime_md.molecular.system import resolve_system
from spacetime_md.molecular.training import resolve_training_system

__all__ += [
    "CVStateChecker",
    "ChiralCentre",
    "CollectiveVariable",
    "CollectiveVariables",
    "Distance",
    "RMSD",
    "Region",
    "Torsion",
    "backbone_torsions",
    "check_structure",
    "checkpoint_system",
    "chiral_centres_from_topology",
    "compute_target_hit",
    "cv_torsion_quencher",
    "default_cvs",
    "endpoint_state",
    "load_cvs",
    "parse_cv",
    "plot_cvs",
    "relaxed_na_reason",
    "resolve_system",
    "resolve_training_system",
    "restraint_schedule",
]
# --- end your own molecule ---
