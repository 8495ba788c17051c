"""Shared ``--system/--pdb/--forcefield/--solvent/--cvs/--states`` options of the molecular commands.

One mapping from these flags to a :class:`~spacetime_md.molecular.MolecularSystem`, used by
``sample``, ``train``, ``evaluate``, ``paths``, ``committor`` and ``batch``:

- ``--system`` is a preset name (``alanine-dipeptide``) or any PDB file the force field can
  parameterise; with ``--checkpoint``, the system recorded in the checkpoint is the default.
- ``--cvs FILE`` replaces the collective variables (default: every backbone phi/psi) and
  ``--states FILE`` the metastable states (see :mod:`spacetime_md.molecular.system.states`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_system_arguments", "system_from_args", "forcefield_from_arg"]


def add_system_arguments(p: argparse.ArgumentParser, *, default_system: str | None = None,
                         solvent: bool = True) -> None:
    """Add the system flags to ``p`` (``--system``, ``--forcefield``, ``--solvent``, ``--cvs``, ``--states``)."""
    default_text = f"default {default_system}" if default_system else "default: the checkpoint's system"
    p.add_argument("--system", default=default_system,
                   help=f"preset name (alanine-dipeptide) or a PDB file of your molecule ({default_text})")
    p.add_argument("--forcefield", default=None,
                   help="force-field preset (amber99sbildn, amber96, amber14) or comma-separated OpenMM XML files "
                        "(default amber99sbildn, or the checkpoint's)")
    if solvent:
        p.add_argument("--solvent", choices=("vacuum", "implicit"), default=None,
                       help="vacuum or implicit (OBC GB) solvent (default vacuum, or the checkpoint's)")
    p.add_argument("--cvs", default=None,
                   help="collective-variable file (JSON/YAML; default: every backbone phi/psi, or the checkpoint's)")
    p.add_argument("--states", default=None,
                   help="state file (JSON/YAML, structure paths relative to it; default: the system's states)")


def forcefield_from_arg(value: str | None) -> Any:
    """``"amber14"`` stays a preset name; ``"a.xml,b.xml"`` becomes a list of files."""
    if value is None:
        return "amber99sbildn"
    parts = [v.strip() for v in str(value).split(",") if v.strip()]
    if len(parts) == 1 and not parts[0].endswith(".xml"):
        return parts[0]
    return parts


def system_from_args(args: argparse.Namespace, *, model: Any = None, platform: str | None = None):
    """The :class:`MolecularSystem` the flags describe.

    With ``model`` (a loaded checkpoint) and no ``--system``, the checkpoint's recorded system
    is used (``--cvs``/``--states`` still apply); a ``--system`` that disagrees with the model's
    atoms is an error raised later by the caller's topology check.
    """
    from spacetime_md.molecular.system.build import resolve_system

    system = getattr(args, "system", None)
    solvent = getattr(args, "solvent", None)
    forcefield = getattr(args, "forcefield", None)
    cvs = getattr(args, "cvs", None)
    states = getattr(args, "states", None)
    platform = platform if platform is not None else getattr(args, "platform", None)
    for flag, value in (("--cvs", cvs), ("--states", states)):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{flag}: expected an existing file, got {value!r}")
    if system is None and model is not None:
        from spacetime_md.molecular.paths.run import resolve_paths_system

        return resolve_paths_system(None, model=model, solvent=solvent, forcefield=forcefield, platform=platform,
                                    cvs=cvs, states=states)
    if system is None:
        raise ValueError("--system: expected a preset name or a PDB file, got none")
    return resolve_system(system, solvent=solvent or "vacuum", forcefield=forcefield_from_arg(forcefield),
                          platform=platform, cvs=cvs, states=states)
