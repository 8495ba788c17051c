"""Analytic toy models and the 2-D alanine-dipeptide landscape benchmark (paper Table 1).

- :class:`GaussianMixture`: Gaussian mixtures with exact denoisers and diffusion quantities.
- :mod:`~spacetime_md.toy.landscape`: a periodic (phi, psi) potential on a grid (B-spline) and
  its minimax barrier; :mod:`~spacetime_md.toy.langevin`: its Boltzmann and annealed-Langevin
  samplers.
- :mod:`~spacetime_md.toy.periodic_model`: a lattice-equivariant denoiser on the torus and its
  training loop.
- :mod:`~spacetime_md.toy.table1`: the Table-1 pipeline (data, training, geodesics, paths).

Imports numpy and torch only (never openmm, mdtraj or torch_geometric).
"""

from spacetime_md.toy.gaussian_mixture import GaussianMixture
from spacetime_md.toy.landscape import ALANINE_FES_FILE, MinimaxResult, PeriodicGridPotential, alanine_dipeptide_fes
from spacetime_md.toy.langevin import (
    LangevinSamples,
    sample_annealed_langevin_grid,
    sample_boltzmann,
    sample_langevin,
)
from spacetime_md.toy.periodic_model import (
    ExactPeriodicDenoiser,
    PeriodicDenoiser,
    PeriodicModelConfig,
    PeriodicTrainConfig,
    TrainResult,
    evaluate_denoiser_error,
    train_periodic_denoiser,
)
from spacetime_md.toy.table1 import (
    PUBLISHED_TABLE1,
    TABLE1_PRESETS,
    Table1Config,
    format_table1,
    crossing_diagnostics,
    path_max_energy,
    run_table1,
)

__all__ = [
    "GaussianMixture",
    "ALANINE_FES_FILE",
    "LangevinSamples",
    "MinimaxResult",
    "PeriodicGridPotential",
    "alanine_dipeptide_fes",
    "sample_annealed_langevin_grid",
    "sample_boltzmann",
    "sample_langevin",
    "ExactPeriodicDenoiser",
    "PeriodicDenoiser",
    "PeriodicModelConfig",
    "PeriodicTrainConfig",
    "TrainResult",
    "evaluate_denoiser_error",
    "train_periodic_denoiser",
    "PUBLISHED_TABLE1",
    "TABLE1_PRESETS",
    "Table1Config",
    "format_table1",
    "crossing_diagnostics",
    "path_max_energy",
    "run_table1",
]
