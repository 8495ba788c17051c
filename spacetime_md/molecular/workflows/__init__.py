"""Workflows on transition paths: committor estimates, OpenPathSampling seeds and batches of
endpoint pairs on Dask (pipeline step 5).

Units: OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K).

Public names are re-exported lazily (see :mod:`spacetime_md.molecular`).
"""

from __future__ import annotations

from spacetime_md.molecular._lazy import attach as _attach

#: public name -> module of this package that defines it
_LAZY = {
    "BatchResult": "batch",
    "BatchTask": "batch",
    "derive_seed": "batch",
    "read_pairs": "batch",
    "run_batch": "batch",
    "CVStateChecker": "committor",
    "CommittorConfig": "committor",
    "CommittorResult": "committor",
    "compute_dihedral_drive_path": "committor",
    "estimate_committor": "committor",
    "plot_committor": "committor",
    "run_committor": "committor",
    "wilson_interval": "committor",
    "OPSSeed": "ops",
    "TPSResult": "ops",
    "sample_tps": "ops",
    "state_volume": "ops",
    "to_openpathsampling": "ops",
}

__getattr__, __dir__, __all__ = _attach(__name__, _LAZY)
