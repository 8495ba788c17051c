"""Boltzmann samples: replica exchange on OpenMM, its temperature ladder, reference
populations (MBAR / umbrella) and state populations (pipeline step 2).

Units: OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K).

Public names are re-exported lazily (see :mod:`spacetime_md.molecular`).
"""

from __future__ import annotations

from spacetime_md.molecular._lazy import attach as _attach

#: public name -> module of this package that defines it
_LAZY = {
    "sample_boltzmann": "boltzmann",
    "DEFAULT_TARGET_ACCEPTANCE": "ladder",
    "choose_temperatures": "ladder",
    "exchange_warnings": "ladder",
    "pilot_energy_statistics": "ladder",
    "predicted_acceptance": "ladder",
    "block_average": "populations",
    "plot_cvs": "populations",
    "plot_ramachandran": "populations",
    "state_populations": "populations",
    "estimate_populations_flat_bias": "reference",
    "estimate_populations_umbrella": "reference",
    "reference_populations": "reference",
    "solve_mbar": "reference",
    "BoltzmannSamples": "samples",
    "load_samples": "samples",
    "SamplingConfig": "sampling_config",
    "resolve_config": "sampling_config",
    "resolve_run_config": "sampling_config",
}

__getattr__, __dir__, __all__ = _attach(__name__, _LAZY)
