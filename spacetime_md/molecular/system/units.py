"""Unit handling at the OpenMM boundary.

The public molecular API takes and returns :mod:`openmm.unit` quantities; inside, values are
plain floats / arrays in OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K, dalton), which is also
mdtraj's convention. :func:`to_md_float` is the one gate: a bare number where a quantity is
expected raises ``TypeError`` naming the expected unit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import openmm.unit as unit

__all__ = ["to_md_float", "to_md_array", "KJ_PER_MOL", "NM", "PS", "KELVIN", "kT_kj_per_mol"]

KJ_PER_MOL = unit.kilojoule_per_mole
NM = unit.nanometer
PS = unit.picosecond
KELVIN = unit.kelvin

#: Boltzmann constant times Avogadro's number in kJ/mol/K.
_KB_KJ_PER_MOL_K = float(
    (unit.BOLTZMANN_CONSTANT_kB * unit.AVOGADRO_CONSTANT_NA).value_in_unit(KJ_PER_MOL / KELVIN)
)


def kT_kj_per_mol(temperature_k: float) -> float:
    """Thermal energy ``k_B T`` in kJ/mol for a temperature in kelvin (a plain float)."""
    return _KB_KJ_PER_MOL_K * float(temperature_k)


def to_md_float(name: str, value: Any, target: unit.Unit) -> float:
    """Return ``value`` (an ``openmm.unit.Quantity``) as a float in ``target`` units.

    Raises
    ------
    TypeError
        ``value`` is not a quantity (the message names ``target``), or its unit is not
        compatible with ``target``.
    """
    if not unit.is_quantity(value):
        raise TypeError(
            f"{name}: expected an openmm.unit.Quantity in {target.get_name()} "
            f"(e.g. 300 * unit.kelvin), got bare {type(value).__name__} {value!r}"
        )
    if not value.unit.is_compatible(target):
        raise TypeError(f"{name}: expected a quantity compatible with {target.get_name()}, got {value.unit}")
    out = value.value_in_unit(target)
    if np.ndim(out) != 0:
        raise TypeError(f"{name}: expected a scalar quantity, got an array of shape {np.shape(out)}")
    return float(out)


def to_md_array(name: str, value: Any, target: unit.Unit) -> np.ndarray:
    """Return an array-valued quantity (or a list of scalar quantities) in ``target`` units."""
    if unit.is_quantity(value):
        if not value.unit.is_compatible(target):
            raise TypeError(f"{name}: expected quantities compatible with {target.get_name()}, got {value.unit}")
        return np.asarray(value.value_in_unit(target), dtype=np.float64)
    if isinstance(value, (list, tuple)) and value and all(unit.is_quantity(v) for v in value):
        return np.asarray([to_md_float(name, v, target) for v in value], dtype=np.float64)
    raise TypeError(
        f"{name}: expected openmm.unit quantities in {target.get_name()}, got bare {type(value).__name__}"
    )
