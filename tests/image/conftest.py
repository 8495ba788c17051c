"""Fixtures for the image tests: an anisotropic Gaussian "image" distribution with exact predictors."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.image import GaussianImages

EVENT_SHAPE = (2, 2, 2)  # D = 8 <= 16: the core's "auto" divergence is exact


@pytest.fixture
def gaussian_images():
    gen = torch.Generator().manual_seed(1)
    mean = 0.5 * torch.randn(EVENT_SHAPE, generator=gen, dtype=torch.float64)
    std = 0.3 + 0.8 * torch.rand(EVENT_SHAPE, generator=gen, dtype=torch.float64)
    return GaussianImages(mean, std)


@pytest.fixture
def image_pair(gaussian_images):
    gen = torch.Generator().manual_seed(2)
    a, b = gaussian_images.sample(2, generator=gen)
    return a, b


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: these tests are tiny, and on a shared 2-core machine OpenMP
    threads contending with other processes make small autograd graphs 10-50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
