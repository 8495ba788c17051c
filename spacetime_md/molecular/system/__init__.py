"""Molecular systems: building them, presets, collective variables, metastable states, chirality,
structure checks, energies, units and trajectory export (pipeline step 1).

Units: OpenMM's ``md_unit_system`` inside (nm, ps, kJ/mol, K); ``openmm.unit`` quantities at
the public edge.

Public names are re-exported lazily (see :mod:`spacetime_md.molecular`).
"""

from __future__ import annotations

from spacetime_md.molecular._lazy import attach as _attach

#: public name -> module of this package that defines it
_LAZY = {
    "FORCEFIELDS": "build",
    "MolecularSystem": "build",
    "known_systems": "build",
    "load_system": "build",
    "resolve_platform": "build",
    "resolve_system": "build",
    "check_structure": "checks",
    "ChiralCentre": "chirality",
    "chiral_centres_from_topology": "chirality",
    "compute_chirality": "chirality",
    "compute_signed_volume": "chirality",
    "fraction_l": "chirality",
    "CollectiveVariable": "cvs",
    "CollectiveVariables": "cvs",
    "Distance": "cvs",
    "RMSD": "cvs",
    "Torsion": "cvs",
    "backbone_torsions": "cvs",
    "default_cvs": "cvs",
    "load_cvs": "cvs",
    "parse_cv": "cvs",
    "compute_dihedrals": "dihedrals",
    "compute_phi_psi": "dihedrals",
    "evaluate_energies": "energies",
    "EXPORT_FORMATS": "export",
    "export_trajectory": "export",
    "ALANINE_DIPEPTIDE_PHI": "presets",
    "ALANINE_DIPEPTIDE_PSI": "presets",
    "MetastableState": "states",
    "Region": "states",
    "assign_states": "states",
    "endpoint_state": "states",
    "load_states": "states",
}

__getattr__, __dir__, __all__ = _attach(__name__, _LAZY)
