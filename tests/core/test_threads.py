"""The geodesic solve sets torch threads only for its own duration."""

import torch

from spacetime_md.core import GeodesicConfig, SpacetimePoint, optimize_geodesic
from spacetime_md.core.geodesic import torch_threads


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_solve_uses_and_restores_threads():
    seen = []

    def denoiser(x, log_snr):
        seen.append(torch.get_num_threads())
        return 0.5 * x

    before = torch.get_num_threads()
    config = GeodesicConfig(n_nodes=2, n_points=(8,), max_steps=3, num_threads=1, divergence="exact")
    optimize_geodesic(denoiser, SpacetimePoint(2.0, torch.zeros(2, dtype=torch.float64)),
                      SpacetimePoint(2.0, torch.ones(2, dtype=torch.float64)), config)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
