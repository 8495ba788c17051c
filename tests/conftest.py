"""Shared fixtures: seeded RNGs, dtype-keyed tolerances, and a guard on torch's global state."""

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


@pytest.fixture(autouse=True)
def _torch_global_state_unchanged():
    """Fail a test that leaves torch's thread count or default dtype changed.

    The setting is restored first, so one offender does not change the tests after it.
    """
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    yield
    changed = []
    if torch.get_num_threads() != threads:
        changed.append(f"torch.get_num_threads(): expected {threads}, got {torch.get_num_threads()}")
        torch.set_num_threads(threads)
    if torch.get_default_dtype() != dtype:
        changed.append(f"torch.get_default_dtype(): expected {dtype}, got {torch.get_default_dtype()}")
        torch.set_default_dtype(dtype)
    if changed:
        pytest.fail("the test changed torch's global state without restoring it: " + "; ".join(changed))


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def tol(dtype):
    return TOLERANCES[dtype]
