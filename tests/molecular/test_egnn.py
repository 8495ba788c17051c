"""EquivariantConv: shapes, equivariance, chirality, aggregation paths, smoothness."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.molecular.model.egnn import EquivariantConv, GaussianRBF
from spacetime_md.molecular.testing import random_rotation

N_NODES = 7

from ._model_helpers import _one_torch_thread  # noqa: F401  (autouse fixture)


def complete_graph(n: int, n_graphs: int = 1) -> torch.Tensor:
    dst, src = torch.nonzero(~torch.eye(n, dtype=torch.bool), as_tuple=True)
    offsets = (torch.arange(n_graphs) * n).repeat_interleave(src.numel())
    return torch.stack([src.repeat(n_graphs), dst.repeat(n_graphs)]) + offsets


def make_inputs(dtype=torch.float64, n_graphs: int = 2, edge_channels: int = 3, hidden: int = 8):
    n = N_NODES * n_graphs
    edge_index = complete_graph(N_NODES, n_graphs)
    h = torch.randn(n, hidden, dtype=dtype)
    pos = torch.randn(n, 3, dtype=dtype)
    edge_attr = torch.randn(edge_index.shape[1], edge_channels, dtype=dtype)
    return h, pos, edge_index, edge_attr


def make_conv(chirality=True, dtype=torch.float64, hidden=8, coord_gain=0.5):
    return EquivariantConv(hidden, 3, n_rbf=6, rbf_cutoff=4.0, chirality=chirality, coord_gain=coord_gain).to(dtype)


def test_shapes_and_repr():
    conv = make_conv()
    h, pos, ei, ea = make_inputs()
    h2, pos2 = conv(h, pos, ei, ea, norm=N_NODES - 1)
    assert h2.shape == h.shape and pos2.shape == pos.shape
    assert repr(conv) == "EquivariantConv(8, edge_channels=3, n_rbf=6, chirality=True)"
    assert "GaussianRBF(n_rbf=6" in repr(conv.rbf)


def test_reset_parameters_is_reproducible_and_small_gain():
    torch.manual_seed(3)
    conv = make_conv(coord_gain=1e-3)
    h, pos, ei, ea = make_inputs()
    with torch.no_grad():
        _, pos_a = conv(h, pos, ei, ea, norm=N_NODES - 1)
    # Small-gain coordinate head: the layer starts close to the identity on coordinates.
    assert float((pos_a - pos).abs().max()) < 1e-2
    torch.manual_seed(4)
    conv.reset_parameters()
    w1 = [p.clone() for p in conv.parameters()]
    torch.manual_seed(4)
    conv.reset_parameters()
    assert all(torch.equal(a, b) for a, b in zip(w1, conv.parameters()))


@pytest.mark.parametrize("chirality", [True, False])
def test_rotation_translation_equivariance_float64(chirality):
    conv = make_conv(chirality)
    h, pos, ei, ea = make_inputs()
    rot = random_rotation()
    shift = torch.randn(3, dtype=torch.float64)
    h1, pos1 = conv(h, pos, ei, ea, norm=N_NODES - 1)
    h2, pos2 = conv(h, pos @ rot.T + shift, ei, ea, norm=N_NODES - 1)
    assert torch.allclose(h2, h1, atol=1e-9, rtol=0)
    assert torch.allclose(pos2, pos1 @ rot.T + shift, atol=1e-9, rtol=0)


def test_reflection_changes_chiral_layer_only():
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    h, pos, ei, ea = make_inputs()
    chiral, plain = make_conv(True), make_conv(False)
    h1, p1 = chiral(h, pos, ei, ea, norm=N_NODES - 1)
    h2, p2 = chiral(h, pos @ mirror, ei, ea, norm=N_NODES - 1)
    change = float((p2 - p1 @ mirror).abs().max() / (p1 - pos).abs().max())
    assert change > 1e-2, f"reflection changed the chiral layer's displacement by only {change:.2e}"
    assert float((h2 - h1).abs().max()) > 1e-6  # the pseudo-scalar reaches the node features
    h3, p3 = plain(h, pos, ei, ea, norm=N_NODES - 1)
    h4, p4 = plain(h, pos @ mirror, ei, ea, norm=N_NODES - 1)
    assert torch.allclose(p4, p3 @ mirror, atol=1e-9, rtol=0)
    assert torch.allclose(h4, h3, atol=1e-9, rtol=0)


def test_regular_fast_path_matches_scatter_and_any_edge_order():
    conv = make_conv()
    h, pos, ei, ea = make_inputs(n_graphs=3)
    fast = conv(h, pos, ei, ea, norm=N_NODES - 1, degree=N_NODES - 1)
    generic = conv(h, pos, ei, ea, norm=N_NODES - 1)
    perm = torch.randperm(ei.shape[1])
    shuffled = conv(h, pos, ei[:, perm], ea[perm], norm=N_NODES - 1)
    for a, b, c in zip(fast, generic, shuffled):
        assert torch.allclose(a, b, atol=1e-12) and torch.allclose(a, c, atol=1e-12)


def test_degree_mismatch_message():
    conv = make_conv()
    h, pos, ei, ea = make_inputs()
    with pytest.raises(ValueError, match=r"degree: expected \|E\| = degree \* \|V\| = 70, got \|E\| = 84"):
        conv(h, pos, ei, ea, norm=1.0, degree=5)


def test_twice_differentiable_in_positions():
    conv = make_conv(hidden=4)
    h, pos, ei, ea = make_inputs(n_graphs=1, hidden=4)
    pos = pos.requires_grad_(True)

    def f(p):
        return conv(h, p, ei, ea, norm=N_NODES - 1)[1]

    assert torch.autograd.gradgradcheck(f, (pos,), atol=1e-6)


def test_constructor_messages():
    with pytest.raises(ValueError, match="hidden_channels: expected an integer >= 1, got 0"):
        EquivariantConv(0, 3)
    with pytest.raises(ValueError, match="edge_channels: expected an integer >= 0, got -1"):
        EquivariantConv(4, -1)
    with pytest.raises(ValueError, match="n_rbf: expected an integer >= 1, got 0"):
        GaussianRBF(0, 1.0)
    with pytest.raises(ValueError, match="cutoff: expected a number > 0, got 0.0"):
        GaussianRBF(4, 0.0)
