"""Sparse-graph EquivariantDenoiser: equivariance, chirality, permutations, dense limit,
smoothness across the cutoff, divergence, checkpoints and the training/CLI option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spacetime_md.molecular.model.denoiser import (
    EquivariantDenoiser, bond_graph_distances, smooth_cutoff, sparse_edges, to_model,
)
from spacetime_md.molecular.testing import assert_equivariant, reflection_change

from ._model_helpers import _one_torch_thread, ALA_BONDS, ALA_TYPES, alanine_trajectory, synthetic_dataset

# 0.3 nm keeps roughly a third of the non-bonded pairs of alanine dipeptide (checked below).
CUT_NM = 0.3


def make(graph="sparse", cutoff=CUT_NM, chirality=True, types=ALA_TYPES, bonds=ALA_BONDS, seed=0):
    torch.manual_seed(seed)
    model = EquivariantDenoiser(types, bonds, hidden_channels=16, n_layers=2, coord_gain=0.5, chirality=chirality,
                                graph=graph, graph_cutoff_nm=cutoff, sigma_data=1.1)
    return model.double().eval()


def ala_batch(batch=5, noise=0.3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x0 = to_model(torch.as_tensor(alanine_trajectory().xyz[0], dtype=torch.float64), 0.15).expand(batch, -1)
    return x0 + noise * torch.randn(batch, 66, dtype=torch.float64, generator=gen)


def network_input(model, x, log_snr):
    return (model.preconditioning(log_snr)[0].unsqueeze(-1) * x).reshape(x.shape[0], -1, 3)


def test_graph_is_sparse_keeps_bonded_pairs_and_weights_switch_smoothly():
    model = make()
    x, log_snr = ala_batch(4, noise=0.05), torch.full((4,), 8.0, dtype=torch.float64)
    pos = network_input(model, x, log_snr)
    edge_index, attr, weight = model.edges(pos)
    n_pairs = 4 * 22 * 21
    assert edge_index.shape[1] < 0.75 * n_pairs, "a 0.3 nm cutoff should drop pairs of alanine dipeptide"
    # every pair up to 3 bonds apart is present in every structure, with weight 1
    src, dst = edge_index[0] % 22, edge_index[1] % 22
    graph = edge_index[1] // 22
    bonded = model._bonded & ~torch.eye(22, dtype=torch.bool)
    for b in range(4):
        sel = graph == b
        present = torch.zeros(22, 22, dtype=torch.bool)
        present[dst[sel], src[sel]] = True
        assert bool(present[bonded].all())
    assert torch.all(weight[model._bonded[dst, src]] == 1)
    # non-bonded weights are the smooth cutoff of the distance, in [0, 1], and every kept pair is inside it
    dist = (pos.reshape(-1, 3)[edge_index[1]] - pos.reshape(-1, 3)[edge_index[0]]).norm(dim=-1)
    free = ~model._bonded[dst, src]
    assert bool((dist[free] < model.graph_cutoff).all())
    assert torch.allclose(weight[free, 0], smooth_cutoff(dist[free], model.graph_cutoff), atol=1e-12)
    # edge features are the one-hot hop classes of the dense model
    hop_class = torch.as_tensor(np.clip(bond_graph_distances(22, ALA_BONDS), 1, 3) - 1)
    assert torch.equal(attr.argmax(-1), hop_class[dst, src])


def test_smooth_cutoff_values_and_derivatives():
    d = torch.linspace(0.0, 2.5, 251, dtype=torch.float64, requires_grad=True)
    w = smooth_cutoff(d, 2.0)
    (g,) = torch.autograd.grad(w.sum(), d, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), d)
    g = g.detach()
    assert torch.all(w[d <= 1.5] == 1) and torch.all(w[d >= 2.0] == 0)
    assert bool(((w >= 0) & (w <= 1)).all()) and bool((g <= 1e-12).all())
    # C^2: first and second derivatives vanish at both ends of the switch
    for end in (1.5, 2.0):
        k = int(round(end * 100))
        assert abs(float(g[k])) < 1e-9 and abs(float(g2[k])) < 1e-9


def test_sparse_equals_dense_when_the_cutoff_covers_every_pair():
    dense = make("dense")
    sparse = make("sparse", cutoff=100.0)
    sparse.load_state_dict(dense.state_dict())
    x, log_snr = ala_batch(3), torch.tensor([-3.0, 1.0, 7.0], dtype=torch.float64)
    pos = network_input(sparse, x, log_snr)
    e_dense, a_dense, _ = dense.edges(pos)
    e_sparse, a_sparse, w = sparse.edges(pos)
    assert torch.equal(e_dense, e_sparse) and torch.equal(a_dense, a_sparse) and bool((w == 1).all())
    assert sparse.graph_norm == dense.graph_norm == 21.0
    xd = x.clone().requires_grad_(True)
    xs = x.clone().requires_grad_(True)
    out_d, out_s = dense(xd, log_snr), sparse(xs, log_snr)
    assert torch.allclose(out_d, out_s, atol=1e-12)
    (gd,) = torch.autograd.grad(out_d.square().sum(), xd)
    (gs,) = torch.autograd.grad(out_s.square().sum(), xs)
    assert torch.allclose(gd, gs, atol=1e-10)
    # and a real cutoff changes the output
    cut = make("sparse")
    cut.load_state_dict(dense.state_dict())
    assert float((cut(x, log_snr) - out_d).abs().max()) > 1e-4


@pytest.mark.parametrize("chirality", [True, False])
def test_sparse_rotation_translation_equivariance_float64(chirality):
    model = make(chirality=chirality)
    x = ala_batch(6)
    log_snr = torch.linspace(-4, 10, 6, dtype=torch.float64)
    report = assert_equivariant(model, x, log_snr, atol=1e-9)
    assert report.scale > 0.1


def test_sparse_reflection_changes_chiral_model_only():
    x = ala_batch(4)
    log_snr = torch.tensor([0.0, 2.0, 4.0, 6.0], dtype=torch.float64)
    assert reflection_change(make(chirality=True), x, log_snr) > 1e-4
    assert reflection_change(make(chirality=False), x, log_snr) < 1e-9


def test_sparse_model_is_permutation_equivariant():
    """Relabelling the atoms (types, bonds and coordinates together) relabels the output."""
    perm = np.random.default_rng(3).permutation(22)
    inv = np.argsort(perm)  # new index of old atom k is inv[k]
    types = [ALA_TYPES[k] for k in perm]
    bonds = [(int(inv[i]), int(inv[j])) for i, j in ALA_BONDS]
    model = make()
    permuted = make(types=types, bonds=bonds, seed=7)
    permuted.load_state_dict(model.state_dict())
    x = ala_batch(3)
    log_snr = torch.tensor([-1.0, 2.0, 6.0], dtype=torch.float64)
    out = model(x, log_snr).reshape(3, 22, 3)
    out_p = permuted(x.reshape(3, 22, 3)[:, perm].reshape(3, 66), log_snr).reshape(3, 22, 3)
    assert torch.allclose(out_p, out[:, perm], atol=1e-12)
    pos = network_input(model, x, log_snr)
    assert model.edges(pos)[0].shape == permuted.edges(pos[:, perm])[0].shape


def test_sparse_denoiser_is_smooth_where_edges_enter_and_leave():
    """Finite differences agree with autograd along a path that moves atoms across the cutoff."""
    model = make()
    x0, log_snr = ala_batch(1, noise=0.0), torch.tensor([6.0], dtype=torch.float64)
    direction = torch.zeros(1, 66, dtype=torch.float64)
    direction[0, 3 * 0: 3 * 0 + 3] = torch.tensor([1.0, 0.5, -0.3])  # move the first methyl hydrogen out
    ts = torch.linspace(0.0, 3.0, 61, dtype=torch.float64)
    counts, values = [], []
    for t in ts:
        x = x0 + t * direction
        counts.append(model.edges(network_input(model, x, log_snr))[0].shape[1])
        with torch.no_grad():
            values.append(model(x, log_snr))
    assert len(set(counts)) > 2, "the path should cross the cutoff for several pairs"
    values = torch.stack(values)[:, 0]
    steps = (values[1:] - values[:-1]).norm(dim=-1)
    assert float(steps.max()) < 5 * float(steps.median()) + 1e-12  # no jump where the edge set changes
    x = (x0 + 1.3 * direction).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: model(v, log_snr)[:, :6], (x,), eps=1e-6, atol=1e-6)


def test_sparse_divergence_exact_and_hutchinson_agree_and_double_backward():
    from spacetime_md.core import divergence

    model = make()
    x, log_snr = ala_batch(2), torch.tensor([1.0, 5.0], dtype=torch.float64)
    _, exact = divergence(model, log_snr, x, method="exact")
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0), log_snr[b: b + 1])[0], x[b],
                                                 vectorize=True)
        assert torch.allclose(exact[b], torch.trace(jac), atol=1e-9)
    gen = torch.Generator().manual_seed(0)
    _, hutch = divergence(model, log_snr, x, method="hutchinson", n_probes=400, generator=gen)
    # Rademacher probes: variance 2 * sum_{i != j} J_ij^2 per probe; 5-sigma bound over 400 probes.
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0), log_snr[b: b + 1])[0], x[b],
                                                 vectorize=True)
        off = jac - torch.diag(torch.diagonal(jac))
        sd = float(torch.sqrt(2 * ((off**2).sum() + (off * off.T).sum()) / 2 / 400))
        assert abs(float(hutch[b] - exact[b])) < 5 * sd + 1e-9
    xg = x.clone().requires_grad_(True)
    probe = torch.randint(0, 2, x.shape, generator=gen).double() * 2 - 1
    (vjp,) = torch.autograd.grad(model(xg, log_snr), xg, probe, create_graph=True)
    (grad,) = torch.autograd.grad((vjp * probe).sum(), xg)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


def test_sparse_checkpoint_round_trip_and_old_configs_load_dense(tmp_path):
    from spacetime_md.molecular.model.pretrained import load_checkpoint, read_checkpoint, save_checkpoint

    model = make()
    path = save_checkpoint(tmp_path / "sparse.pt", model)
    assert read_checkpoint(path)["model_config"]["graph"] == "sparse"
    loaded = load_checkpoint(path, dtype=torch.float64)
    assert loaded.graph == "sparse" and loaded.graph_cutoff_nm == CUT_NM and loaded.config == model.config
    x, log_snr = ala_batch(2), torch.tensor([0.0, 4.0], dtype=torch.float64)
    assert torch.equal(loaded(x, log_snr), model(x, log_snr))
    # a config from before graphs existed (no graph keys) builds the dense model
    old = {k: v for k, v in make("dense").config.items() if k not in ("graph", "graph_cutoff_nm")}
    assert EquivariantDenoiser(**old).graph == "dense"


def test_graph_option_messages():
    with pytest.raises(ValueError, match="graph: expected one of dense, sparse, got 'knn'"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, graph="knn")
    with pytest.raises(ValueError, match="graph_cutoff_nm: expected a finite number > 0, got -1"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, graph="sparse", graph_cutoff_nm=-1.0)
    with pytest.raises(ValueError, match=r"edge_weight: expected shape \(4, 1\), got \(4,\)"):
        from spacetime_md.molecular.model.egnn import EquivariantConv

        EquivariantConv(4, 1)(torch.zeros(3, 4), torch.zeros(3, 3), torch.tensor([[0, 1, 2, 0], [1, 2, 0, 2]]),
                              torch.zeros(4, 1), 2.0, edge_weight=torch.ones(4))
    from spacetime_md.molecular.model.train_config import TrainConfig

    with pytest.raises(ValueError, match="graph: expected one of dense, sparse, got 'full'"):
        TrainConfig(data="x", out="y", graph="full")


def test_sparse_edges_vectorised_over_batch():
    pos = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0]], [[0.0, 0, 0], [5, 0, 0], [5.5, 0, 0]]])
    always = torch.zeros(3, 3, dtype=torch.bool)
    edge_index, i, j, w = sparse_edges(pos, 2.0, always)
    assert edge_index.tolist() == [[1, 0, 5, 4], [0, 1, 4, 5]]
    assert i.tolist() == [0, 1, 1, 2] and j.tolist() == [1, 0, 2, 1]
    assert torch.allclose(w[:, 0], torch.tensor([1.0, 1.0, 1.0, 1.0]))
    always[0, 2] = always[2, 0] = True
    assert sparse_edges(pos, 2.0, always)[0].shape[1] == 8


def test_train_records_the_sparse_graph_and_cli_flag(tmp_path, capsys):
    from spacetime_md.cli import main
    from spacetime_md.molecular.model.pretrained import load_checkpoint
    from spacetime_md.molecular.model.train_config import TrainConfig
    from spacetime_md.molecular.model.training import train

    tiny = dict(batch_size=8, hidden_channels=8, n_layers=1, n_rbf=4, log_every=2, n_val=4, warmup_steps=1)
    result = train(TrainConfig(data="", out=str(tmp_path / "run"), steps=2, graph="sparse", graph_cutoff_nm=0.4,
                               **tiny), dataset=synthetic_dataset(40), atom_types=ALA_TYPES, progress=False)
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert model.graph == "sparse" and model.graph_cutoff_nm == 0.4 and result.model.graph == "sparse"
    # resuming with another graph is refused, naming the field
    with pytest.raises(ValueError, match="graph: 'sparse' -> 'dense'"):
        train(TrainConfig(data="", out=str(tmp_path / "run"), steps=3, **tiny), resume=True,
              dataset=synthetic_dataset(40), atom_types=ALA_TYPES, progress=False)
    assert main(["train", "--data", "d.h5", "--out", str(tmp_path / "x"), "--graph", "sparse",
                 "--graph-cutoff-nm", "0.6", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["graph"] == "sparse" and resolved["graph_cutoff_nm"] == 0.6
    # --compile with the sparse graph is refused up front (it recompiled every step), in one line
    assert main(["train", "--data", "d.h5", "--out", str(tmp_path / "c"), "--graph", "sparse", "--compile"]) == 2
    err = capsys.readouterr().err
    assert "compile: not available with graph='sparse'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_threads_can_share_a_sparse_model():
    """Two threads evaluating one sparse model at once (the geodesic's starts do) get the values of
    one thread alone: the edge weights travel through ``propagate``, not through the layer."""
    from concurrent.futures import ThreadPoolExecutor

    model = make()
    inputs = [ala_batch(batch=6, seed=s) for s in range(8)]
    with torch.no_grad():
        alone = [model(x, torch.full((x.shape[0],), 1.0, dtype=x.dtype)) for x in inputs]
        with ThreadPoolExecutor(max_workers=2) as pool:
            for _ in range(3):
                shared = list(pool.map(lambda x: model(x, torch.full((x.shape[0],), 1.0, dtype=x.dtype)), inputs))
                for a, b in zip(alone, shared):
                    torch.testing.assert_close(a, b, rtol=0, atol=0)
