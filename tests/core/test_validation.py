"""Argument checks shared by the core entry points: accepted values and exact messages."""

from __future__ import annotations

import math

import pytest
import torch

from spacetime_md.core._validation import check_positive, check_same_dtype_device, check_tensor


def test_check_positive_bounds():
    assert check_positive("n", 0.5) == 0.5
    assert check_positive("n", 0, allow_zero=True) == 0
    assert check_positive("n", 0.0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"n: expected a number > 0, got 0"):
        check_positive("n", 0)
    with pytest.raises(ValueError, match=r"n: expected a number >= 0, got -0.5"):
        check_positive("n", -0.5, allow_zero=True)
    with pytest.raises(ValueError, match=r"n: expected a finite number, got inf"):
        check_positive("n", math.inf)
    with pytest.raises(TypeError, match=r"n: expected a number, got bool"):
        check_positive("n", True)


def test_check_tensor_shapes_and_named_dims():
    dims: dict[str, int] = {}
    x = torch.zeros(4, 3)
    assert check_tensor("x", x, ("B", None), dims=dims) is x
    assert dims == {"B": 4}
    with pytest.raises(ValueError, match=r"y: expected size 4 for dimension B \(axis 0\), got 5"):
        check_tensor("y", torch.zeros(5), ("B",), dims=dims)
    with pytest.raises(ValueError, match=r"y: expected shape \(3,\), got \(2,\)"):
        check_tensor("y", torch.zeros(2), (3,))
    with pytest.raises(ValueError, match=r"y: expected shape \(2, \*\), got \(2,\)"):
        check_tensor("y", torch.zeros(2), (2, None))
    check_tensor("z", torch.tensor([1, 2]), (2,), floating=False)


def test_check_same_dtype_device_names_the_odd_one():
    a, b = torch.zeros(2), torch.zeros(2)
    check_same_dtype_device(a=a, b=b)
    with pytest.raises(TypeError, match=r"c: expected dtype torch.float32 \(same as a\), got torch.float64"):
        check_same_dtype_device(a=a, b=b, c=torch.zeros(2, dtype=torch.float64))
