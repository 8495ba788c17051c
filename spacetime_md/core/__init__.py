"""Model-agnostic spacetime geometry of diffusion models (torch only).

Glossary of shape letters used in docstrings: B batch, T curve points, D data dimension
(D = 3N for N atoms), P probes or paths, K mixture components.

Conventions (DESIGN.md section 2): time is ``log_snr``; VP schedule
``alpha^2 = sigmoid(log_snr)``, ``sigma^2 = sigmoid(-log_snr)``; a denoiser is any callable
``denoiser(x (B, D), log_snr (B,)) -> E[x_0 | x_t] (B, D)``; a discretised spacetime curve is
``log_snr (T,)`` and ``x (T, D)``.
"""

from spacetime_md.core.batched import optimize_geodesics
from spacetime_md.core.curves import SpacetimePoint, SplineCurve, spline_basis, straight_line
from spacetime_md.core.denoisers import AutoGuidedDenoiser, CountingDenoiser, Denoiser, from_edm, from_epsilon, from_v
from spacetime_md.core.distance import diffusion_edit_distance
from spacetime_md.core.estimates import EnergyEstimate, estimate_curve_energy
from spacetime_md.core.threads import choose_num_threads
from spacetime_md.core.geodesic import (
    AvoidRegion,
    Constraint,
    CurveState,
    GeodesicConfig,
    GeodesicResult,
    LowVariance,
    Penalty,
    optimize_geodesic,
)
from spacetime_md.core.geometry import (
    curve_energy,
    curve_length,
    divergence,
    expectation_params,
    kl_along_curve,
    natural_params,
    rademacher_probes,
    segment_terms,
)
from spacetime_md.core.samplers import AnnealedLangevinResult, sample_annealed_langevin, sample_ddim
from spacetime_md.core.schedule import (
    alpha_sigma,
    edm_sigma_to_log_snr,
    edm_to_vp,
    log_snr_to_edm_sigma,
    snr,
    vp_to_edm,
)

__all__ = [
    "alpha_sigma",
    "snr",
    "log_snr_to_edm_sigma",
    "edm_sigma_to_log_snr",
    "vp_to_edm",
    "edm_to_vp",
    "Denoiser",
    "CountingDenoiser",
    "AutoGuidedDenoiser",
    "from_epsilon",
    "from_v",
    "from_edm",
    "natural_params",
    "expectation_params",
    "divergence",
    "rademacher_probes",
    "segment_terms",
    "curve_energy",
    "curve_length",
    "kl_along_curve",
    "SpacetimePoint",
    "SplineCurve",
    "spline_basis",
    "straight_line",
    "GeodesicConfig",
    "GeodesicResult",
    "CurveState",
    "Constraint",
    "LowVariance",
    "AvoidRegion",
    "Penalty",
    "optimize_geodesic",
    "optimize_geodesics",
    "EnergyEstimate",
    "estimate_curve_energy",
    "choose_num_threads",
    "AnnealedLangevinResult",
    "sample_annealed_langevin",
    "sample_ddim",
    "diffusion_edit_distance",
]
