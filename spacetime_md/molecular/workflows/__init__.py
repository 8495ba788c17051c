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
    "run_batch": "batch",
    "BatchTask": "batch_tasks",
    "derive_seed": "batch_tasks",
    "read_pairs": "batch_tasks",
    "estimate_committor": "committor",
    "CommittorConfig": "committor_config",
    "CommittorResult": "committor_result",
    "plot_committor": "committor_result",
    "compute_dihedral_drive_path": "committor_run",
    "run_committor": "committor_run",
    "OPSSeed": "ops",
    "TPSResult": "ops",
    "sample_tps": "ops",
    "state_volume": "ops",
    "to_openpathsampling": "ops",
    "CVStateChecker": "shots",
    "wilson_interval": "shots",
}

__getattr__, __dir__, __all__ = _attach(__name__, _LAZY)
