"""Shared fixtures: seeded RNGs and dtype-keyed tolerances."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

TOLERANCES = {torch.float32: 1e-3, torch.float64: 1e-9}


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def tol(dtype):
    return TOLERANCES[dtype]
