"""Named systems shipped with the package (presets) and everything specific to them.

Shared code never hard-codes a molecule: atom indices, states and collective variables come
from the topology or from files. The constants below belong to the presets and are used by
code that explicitly asks for a preset (e.g. tests and scripts of alanine dipeptide).

- ``"alanine-dipeptide"``: ACE1-ALA2-NME3 (22 atoms), energy-minimised with amber99sbildn in
  vacuum; states C7eq/C5, C7ax, alpha_R in (phi 2, psi 2) (``data/alanine_dipeptide``).
- ``"alanine-tetrapeptide"``: ACE1-ALA2-ALA3-ALA4-NME5 (42 atoms), built by
  ``systems/alanine_tetrapeptide/build.py``; per-residue states all_C7eq, mid_C7ax,
  mid_alpha_R, nterm_alpha_R (``data/alanine_tetrapeptide``).
"""

from __future__ import annotations

__all__ = [
    "KNOWN_SYSTEMS",
    "SYSTEM_ALIASES",
    "preset_name",
    "DEFAULT_ENDPOINTS",
    "ALANINE_DIPEPTIDE_PHI",
    "ALANINE_DIPEPTIDE_PSI",
    "ALANINE_DIPEPTIDE_CHIRAL_ATOMS",
]

#: Named systems: name -> files under ``spacetime_md/data`` and a description.
KNOWN_SYSTEMS: dict[str, dict[str, str]] = {
    "alanine-dipeptide": {
        "pdb": "alanine_dipeptide/alanine-dipeptide.pdb",
        "states": "alanine_dipeptide/states.json",
        "description": "ACE-ALA-NME, 22 atoms; phi 2 = atoms (4, 6, 8, 14), psi 2 = (6, 8, 14, 16)",
    },
    "alanine-tetrapeptide": {
        "pdb": "alanine_tetrapeptide/alanine-tetrapeptide.pdb",
        "states": "alanine_tetrapeptide/states.json",
        "description": "ACE-ALA-ALA-ALA-NME, 42 atoms; backbone phi/psi of residues 2-4",
    },
}

#: Other accepted names (lower case, ``_`` read as ``-``).
SYSTEM_ALIASES: dict[str, str] = {
    "ala2": "alanine-dipeptide",
    "ad": "alanine-dipeptide",
    "ala4": "alanine-tetrapeptide",
}


def preset_name(name: str | None) -> str | None:
    """The preset a system name refers to (``"ala4"``, ``"Alanine_Tetrapeptide"`` ->
    ``"alanine-tetrapeptide"``), or ``None`` for anything else (a PDB path, ``None``)."""
    if name is None:
        return None
    key = str(name).lower().replace("_", "-")
    key = SYSTEM_ALIASES.get(key, key)
    return key if key in KNOWN_SYSTEMS else None


#: Default (start, end) states of ``paths`` / ``run_paths`` per preset: both ends carry Boltzmann
#: weight at 300 K in vacuum (tetrapeptide: all_C7eq 8.7 %, mid_C7ax 18.3 % of 50 000 samples).
DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "alanine-dipeptide": ("C7eq", "C7ax"),
    "alanine-tetrapeptide": ("all_C7eq", "mid_C7ax"),
}

#: Zero-based atom indices of phi (C-N-CA-C) and psi (N-CA-C-N) of alanine dipeptide.
ALANINE_DIPEPTIDE_PHI: tuple[int, int, int, int] = (4, 6, 8, 14)
ALANINE_DIPEPTIDE_PSI: tuple[int, int, int, int] = (6, 8, 14, 16)
#: ``(CA, N, C, CB)`` of alanine dipeptide's chiral centre.
ALANINE_DIPEPTIDE_CHIRAL_ATOMS: tuple[int, int, int, int] = (8, 6, 14, 10)
