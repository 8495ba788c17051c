"""Argument checks shared by the public entry points.

Every message names the argument and says "expected ..., got ...".
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["check_tensor", "check_finite", "check_positive", "check_same_dtype_device"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape_str(shape: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[int | str | None] | None = None,
    *,
    floating: bool = True,
    finite: bool = True,
    dims: dict[str, int] | None = None,
) -> Tensor:
    """Check that ``value`` is a tensor of the expected shape and return it.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : object
        The value to check. Must already be a ``torch.Tensor``.
    shape : sequence of int, str or None, optional
        Expected shape. ``None`` matches any size; a string is a named dimension whose size
        must agree with other uses of the same name (recorded in ``dims``).
    floating : bool
        Require a floating-point dtype.
    finite : bool
        Reject NaN and infinity.
    dims : dict, optional
        Named-dimension sizes shared between several calls (updated in place).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if floating and value.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    if shape is not None:
        if value.ndim != len(shape):
            raise ValueError(
                f"{name}: expected shape {_shape_str(shape)}, got {tuple(value.shape)}"
            )
        dims = {} if dims is None else dims
        for axis, (want, got) in enumerate(zip(shape, value.shape)):
            if want is None:
                continue
            if isinstance(want, str):
                if want in dims and dims[want] != got:
                    raise ValueError(
                        f"{name}: expected size {dims[want]} for dimension {want} "
                        f"(axis {axis}), got {got}"
                    )
                dims[want] = got
            elif want != got:
                raise ValueError(
                    f"{name}: expected shape {_shape_str(shape)}, got {tuple(value.shape)}"
                )
    if finite:
        check_finite(name, value)
    return value


def check_finite(name: str, value: Tensor) -> Tensor:
    """Raise ``ValueError`` if ``value`` contains NaN or infinity."""
    if value.is_floating_point() and not bool(torch.isfinite(value.detach()).all()):
        n_bad = int((~torch.isfinite(value.detach())).sum())
        raise ValueError(
            f"{name}: expected finite values, got {n_bad} NaN/inf entries of {value.numel()}"
        )
    return value


def check_positive(name: str, value: float | int, *, allow_zero: bool = False) -> float | int:
    """Raise ``ValueError`` unless ``value`` is a positive (or non-negative) number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a number {bound}, got {value}")
    return value


def check_same_dtype_device(**tensors: Tensor) -> None:
    """Raise ``TypeError`` unless all tensors share dtype and device."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name}: expected dtype {first.dtype} (same as {first_name}), got {t.dtype}"
            )
        if t.device != first.device:
            raise TypeError(
                f"{name}: expected device {first.device} (same as {first_name}), got {t.device}"
            )


def resolve_device(name: Any, what: str = "device") -> torch.device:
    """``torch.device(name)``, refusing unknown names and CUDA where torch has none."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what}: expected 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}: expected 'cpu' or an available CUDA device, got {name!r} "
                         f"(torch {torch.__version__} sees no CUDA device; see README 'GPU users')")
    return device
