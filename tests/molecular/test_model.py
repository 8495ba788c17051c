"""EquivariantDenoiser: equivariance (float64), chirality, subspace/divergence, scaling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spacetime_md.molecular.model.denoiser import (
    EquivariantDenoiser,
    bond_graph_distances,
    center,
    from_model,
    to_model,
)
from spacetime_md.molecular.testing import assert_equivariant, equivariance_errors, reflection_change

from ._model_helpers import _one_torch_thread, ALA_BONDS, ALA_TYPES, alanine_trajectory, tiny_model


def ala_batch(batch=5, dtype=torch.float64, noise=0.3):
    xyz = torch.as_tensor(alanine_trajectory().xyz[0], dtype=dtype)
    x0 = to_model(xyz, 0.15).expand(batch, -1)
    return x0 + noise * torch.randn(batch, 66, dtype=dtype)


def test_rotations_and_translations_commute_float64():
    model = tiny_model(torch.float64)
    x = ala_batch(6)
    log_snr = torch.linspace(-4, 10, 6, dtype=torch.float64)
    report = assert_equivariant(model, x, log_snr, atol=1e-9)
    assert report.scale > 0.1  # outputs are not trivially zero


def test_assert_equivariant_catches_a_broken_model():
    model = tiny_model(torch.float64)

    def broken(x, log_snr):
        return model(x, log_snr) + 1e-3 * x[:, :1]  # breaks rotation equivariance and centring

    with pytest.raises(AssertionError, match="denoiser is not equivariant: expected errors <= 1.0e-09"):
        assert_equivariant(broken, ala_batch(3), torch.zeros(3, dtype=torch.float64))


def test_reflection_changes_chiral_model_and_not_plain_model():
    x = ala_batch(4)
    log_snr = torch.tensor([0.0, 2.0, 4.0, 6.0], dtype=torch.float64)
    chiral = reflection_change(tiny_model(torch.float64, chirality=True), x, log_snr)
    plain = reflection_change(tiny_model(torch.float64, chirality=False), x, log_snr)
    assert chiral > 1e-4, f"reflection changed the chirality-aware output by only {chiral:.2e}"
    assert plain < 1e-9


def test_batch_order_and_composition_irrelevant():
    model = tiny_model(torch.float64)
    x = ala_batch(5)
    log_snr = torch.linspace(-2, 8, 5, dtype=torch.float64)
    full = model(x, log_snr)
    singles = torch.cat([model(x[i : i + 1], log_snr[i : i + 1]) for i in range(5)])
    assert torch.allclose(full, singles, atol=1e-12)
    assert equivariance_errors(model, x, log_snr).batch_permutation < 1e-12


def test_output_centred_and_jacobian_lives_in_subspace():
    """D(x) = f(P x) with f into the subspace: J = P J P, so tr J = trace on the subspace."""
    model = tiny_model(torch.float64)
    x = ala_batch(1)
    log_snr = torch.tensor([3.0], dtype=torch.float64)
    with torch.no_grad():
        out = model(x, log_snr)
    assert float(out.reshape(-1, 3).sum(0).abs().max()) < 1e-12
    jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0), log_snr)[0], x[0], vectorize=True)
    proj = torch.eye(22, dtype=torch.float64) - 1.0 / 22
    P = torch.kron(proj, torch.eye(3, dtype=torch.float64))
    assert torch.allclose(P @ jac, jac, atol=1e-10)
    assert torch.allclose(jac @ P, jac, atol=1e-10)
    # orthonormal basis of the 63-dimensional subspace
    eigval, eigvec = torch.linalg.eigh(P)
    Q = eigvec[:, eigval > 0.5]
    assert Q.shape == (66, 63)
    assert torch.allclose(torch.trace(jac), torch.trace(Q.T @ jac @ Q), atol=1e-10)


def test_core_divergence_matches_jacobian_trace():
    from spacetime_md.core import divergence

    model = tiny_model(torch.float64)
    x = ala_batch(2)
    log_snr = torch.tensor([1.0, 5.0], dtype=torch.float64)
    _, div = divergence(model, log_snr, x, method="exact")
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0), log_snr[b : b + 1])[0], x[b], vectorize=True)
        assert torch.allclose(div[b], torch.trace(jac), atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_double_backward_through_hutchinson(dtype):
    """The geodesic solver differentiates v^T J v with respect to x (create_graph)."""
    model = tiny_model(dtype)
    x = ala_batch(3, dtype).requires_grad_(True)
    log_snr = torch.tensor([0.0, 3.0, 6.0], dtype=dtype)
    out = model(x, log_snr)
    probe = torch.randint(0, 2, x.shape).to(dtype) * 2 - 1
    (vjp,) = torch.autograd.grad(out, x, probe, create_graph=True)
    estimate = (vjp * probe).sum()
    (grad,) = torch.autograd.grad(estimate, x)
    assert grad.shape == x.shape and bool(torch.isfinite(grad).all())
    assert float(grad.abs().max()) > 0


def test_high_snr_is_nearly_identity():
    model = tiny_model(torch.float64)
    x = center(ala_batch(2))
    with torch.no_grad():
        hi = model(x, torch.full((2,), 30.0, dtype=torch.float64))
    assert torch.allclose(hi, x, atol=1e-5)


def test_preconditioning_identities():
    model = tiny_model(torch.float64, sigma_data=1.3)
    log_snr = torch.linspace(-8, 12, 9, dtype=torch.float64)
    c_in, c_skip, c_out = model.preconditioning(log_snr)
    alpha = torch.sigmoid(log_snr).sqrt()
    sigma = torch.sigmoid(-log_snr).sqrt()
    # Var[(x0 - c_skip x_t) / c_out] = 1 for x0 with variance sigma_data^2
    var = ((1 - c_skip * alpha) ** 2 * 1.3**2 + (c_skip * sigma) ** 2) / c_out**2
    assert torch.allclose(var, torch.ones_like(var), atol=1e-10)
    assert torch.allclose(c_in**-2, alpha**2 * 1.3**2 + sigma**2)


def test_float32_forward_and_dtype_mismatch_message():
    model = tiny_model(torch.float32)
    x = ala_batch(2, torch.float32)
    assert model(x, torch.zeros(2)).dtype == torch.float32
    with pytest.raises(TypeError, match=r"x, log_snr: expected dtype torch.float32 \(the model's dtype"):
        model(x.double(), torch.zeros(2, dtype=torch.float64))


def test_shape_messages():
    model = tiny_model(torch.float32)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 66\), got \(2, 60\)"):
        model(torch.zeros(2, 60), torch.zeros(2))
    with pytest.raises(ValueError, match="log_snr: expected size 2 for dimension B"):
        model(torch.zeros(2, 66), torch.zeros(3))


def test_to_model_from_model_round_trip_and_centring():
    xyz = alanine_trajectory().xyz.astype(np.float64)  # (1, 22, 3) nm
    x = to_model(xyz, 0.15)
    assert x.shape == (1, 66) and x.dtype == torch.float64
    assert float(x.reshape(22, 3).sum(0).abs().max()) < 1e-12
    back = from_model(x, 0.15).numpy()
    assert np.allclose(back, xyz - xyz.mean(1, keepdims=True), atol=1e-12)
    model = tiny_model()
    assert torch.allclose(model.to_model(xyz), x.float().to(x.dtype), atol=1e-6)


def test_scaling_messages():
    with pytest.raises(ValueError, match="length_scale_nm: expected a number > 0, got 0"):
        to_model(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match=r"x_nm: expected shape \(..., N, 3\), got \(4,\)"):
        to_model(np.zeros(4), 0.1)
    with pytest.raises(TypeError, match="x_nm: expected floating-point coordinates, got dtype torch.int64"):
        to_model(np.zeros((2, 3), dtype=np.int64), 0.1)
    with pytest.raises(ValueError, match=r"x_model: expected shape \(..., 3N\), got \(4,\)"):
        from_model(torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="length_scale_nm: expected a number > 0, got -1"):
        from_model(torch.zeros(3), -1)


def test_constructor_messages():
    with pytest.raises(ValueError, match="atom_types: expected at least 2 atoms, got 1"):
        EquivariantDenoiser(["C"], [])
    with pytest.raises(ValueError, match="n_layers: expected an integer >= 1, got 0"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, n_layers=0)
    with pytest.raises(ValueError, match="sigma_data: expected a number > 0, got 0"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, sigma_data=0)
    with pytest.raises(ValueError, match="length_scale_nm: expected a number > 0, got -0.1"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, length_scale_nm=-0.1)
    with pytest.raises(ValueError, match="max_hops: expected an integer >= 1, got 0"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, max_hops=0)
    with pytest.raises(ValueError, match="atom_names: expected 22 names, got 2"):
        EquivariantDenoiser(ALA_TYPES, ALA_BONDS, atom_names=["A", "B"])
    with pytest.raises(ValueError, match=r"bonds: expected pairs of distinct atom indices in \[0, 22\), got \(3, 3\)"):
        EquivariantDenoiser(ALA_TYPES, [(3, 3)])


def test_bond_graph_distances():
    d = bond_graph_distances(4, [(0, 1), (1, 2)])
    assert d[0, 2] == 2 and d[0, 0] == 0 and d[2, 1] == 1
    assert d[0, 3] == 4  # unreachable -> N
    ala = bond_graph_distances(22, ALA_BONDS)
    assert ala[4, 16] == 4 and ala[8, 9] == 1  # C(ACE)-N-CA-C-N(NME); CA-HA bonded


def test_config_rebuilds_same_architecture():
    model = tiny_model()
    clone = EquivariantDenoiser(**model.config)
    clone.load_state_dict(model.state_dict())
    x = ala_batch(2, torch.float32)
    assert torch.equal(clone.eval()(x, torch.zeros(2)), model(x, torch.zeros(2)))
    assert "n_atoms=22" in repr(model)
