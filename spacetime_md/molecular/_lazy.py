"""PEP 562 lazy re-exports for the molecular sub-packages.

Each sub-package ``__init__`` lists its public names and the module that defines each; a name
is imported on first access, so importing a sub-package (or one of its modules) does not pull
in OpenMM, mdtraj or torch_geometric through its siblings.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def attach(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` of ``package`` whose public ``names`` map to submodules."""

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        vars(sys.modules[package])[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, sorted(names)
