"""Chunked (memory-bounded) curve energy against the core's one-batch energy."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.core import CountingDenoiser, curve_energy, rademacher_probes
from spacetime_md.image import (
    ImageDiffusionModel,
    UNetConfig,
    autocast_denoiser,
    chunked_curve_energy,
    chunked_segment_terms,
    from_edm_image,
)
from spacetime_md.image.energy import _chunk_ranges


def random_curve(n_points, dim, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.linspace(0, 1, n_points, dtype=dtype)
    log_snr = 3.0 - 2.5 * torch.sin(torch.pi * s) + 0.1 * torch.randn(n_points, generator=gen, dtype=dtype)
    x = torch.randn(n_points, dim, generator=gen, dtype=dtype).cumsum(0) * 0.3
    return log_snr, x


def test_chunk_ranges_cover_every_segment_once():
    for n_points in (2, 3, 17, 32):
        for chunk in (2, 3, 5, 16, 40):
            ranges = _chunk_ranges(n_points, chunk)
            segments = [n for a, b in ranges for n in range(a, b)]
            assert segments == list(range(n_points - 1))
            assert all(b - a + 1 <= chunk for a, b in ranges)
            assert all(r[1] == q[0] for r, q in zip(ranges, ranges[1:]))  # one shared point


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
@pytest.mark.parametrize("chunk_points", [2, 5, 64])
def test_chunked_energy_and_gradient_match_core(gaussian_images, divergence, chunk_points):
    log_snr, x = random_curve(21, 8)
    probes = rademacher_probes(3, (21, 8), dtype=torch.float64) if divergence == "hutchinson" else None
    kw = {"divergence": divergence, "probes": probes}
    ls1, x1 = log_snr.clone().requires_grad_(), x.clone().requires_grad_()
    ref = curve_energy(gaussian_images.denoiser, ls1, x1, **kw)
    ref.backward()
    ls2, x2 = log_snr.clone().requires_grad_(), x.clone().requires_grad_()
    got = chunked_curve_energy(gaussian_images.denoiser, ls2, x2, chunk_points=chunk_points, **kw)
    got.backward()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    torch.testing.assert_close(ls2.grad, ls1.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-9, atol=1e-10)
    # without grad mode: the same value, no graph
    with torch.no_grad():
        plain = chunked_curve_energy(gaussian_images.denoiser, log_snr, x, chunk_points=chunk_points, **kw)
    assert not plain.requires_grad
    assert float(plain) == pytest.approx(float(ref.detach()), rel=1e-10)


def test_chunked_energy_with_unclamped_terms_and_a_network():
    """A real conv net in float32: chunked == unchunked (value and gradient), clamp 'none'."""
    torch.manual_seed(0)
    model = ImageDiffusionModel((1, 4, 4), UNetConfig(base_channels=8, emb_dim=16), 0.5)
    for p in model.parameters():  # non-trivial weights (the zero-initialised output layers)
        p.data.add_(0.05 * torch.randn_like(p))
    den = from_edm_image(model, (1, 4, 4))
    log_snr, x = random_curve(12, 16, dtype=torch.float32)
    probes = rademacher_probes(2, (12, 16))
    kw = {"divergence": "hutchinson", "probes": probes, "clamp": "none"}
    ls1, x1 = log_snr.clone().requires_grad_(), x.clone().requires_grad_()
    ref = curve_energy(den, ls1, x1, **kw)
    ref.backward()
    ls2, x2 = log_snr.clone().requires_grad_(), x.clone().requires_grad_()
    got = chunked_curve_energy(den, ls2, x2, chunk_points=4, **kw)
    got.backward()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(ls2.grad, ls1.grad, rtol=1e-3, atol=1e-4)


def test_rows_per_denoiser_call_are_bounded_by_the_chunk(gaussian_images):
    """Peak memory proxy: no denoiser call sees more than chunk_points * probes rows."""
    rows = []

    def recording(x, log_snr):
        rows.append(x.shape[0])
        return gaussian_images.denoiser(x, log_snr)

    log_snr, x = random_curve(64, 8)
    x.requires_grad_()
    energy = chunked_curve_energy(recording, log_snr, x, chunk_points=8, n_probes=2)
    energy.backward()
    assert max(rows) == 8 * 2
    assert sum(rows) == (64 + 8) * 2  # 9 chunks share 8 boundary points


def test_chunked_segment_terms_and_autocast(gaussian_images):
    log_snr, x = random_curve(10, 8, dtype=torch.float32)
    g32 = type(gaussian_images)(gaussian_images.mean.float(), gaussian_images.std.float())
    terms = chunked_segment_terms(g32.denoiser, log_snr, x, chunk_points=3, divergence="exact")
    assert terms.shape == (9,)
    ref = float(curve_energy(g32.denoiser, log_snr, x, divergence="exact", clamp="none"))
    assert 4.5 * float(terms.sum()) == pytest.approx(ref, rel=1e-5)
    # bfloat16 autocast on CPU: only matmul/conv-like ops are cast; the result stays close
    model = ImageDiffusionModel((1, 4, 4), UNetConfig(base_channels=8, emb_dim=16), 0.5)
    den = from_edm_image(model, (1, 4, 4))
    lam, xs = random_curve(6, 16, dtype=torch.float32)
    full = chunked_curve_energy(den, lam, xs, chunk_points=3, divergence="exact")
    mixed = chunked_curve_energy(den, lam, xs, chunk_points=3, divergence="exact", amp_dtype=torch.bfloat16)
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(full), rel=0.05)
    out = autocast_denoiser(den, torch.bfloat16)(xs, lam)
    assert out.dtype == torch.float32


def test_chunked_energy_errors(gaussian_images):
    log_snr, x = random_curve(5, 8)
    with pytest.raises(ValueError, match="chunk_points: expected an integer >= 2, got 1"):
        chunked_curve_energy(gaussian_images.denoiser, log_snr, x, chunk_points=1)
    with pytest.raises(ValueError, match="divergence: expected 'exact' or 'hutchinson'"):
        chunked_curve_energy(gaussian_images.denoiser, log_snr, x, divergence="jvp")
    with pytest.raises(ValueError, match="clamp: expected 'segment', 'abs' or 'none'"):
        chunked_curve_energy(gaussian_images.denoiser, log_snr, x, clamp="relu")
    with pytest.raises(ValueError, match="log_snr: expected at least 2 curve points"):
        chunked_curve_energy(gaussian_images.denoiser, log_snr[:1], x[:1])
    with pytest.raises(ValueError, match="expected size 5 for dimension T"):
        chunked_curve_energy(gaussian_images.denoiser, log_snr[:4], x)
    with pytest.raises(ValueError, match="amp_dtype: expected torch.float16, torch.bfloat16 or None"):
        autocast_denoiser(gaussian_images.denoiser, torch.float64)
    with pytest.raises(TypeError, match="denoiser: expected a callable"):
        chunked_curve_energy(None, log_snr, x)
    counting = CountingDenoiser(gaussian_images.denoiser)
    with pytest.raises(ValueError, match=r"probes: expected shape \(\*, 5, 8\)"):
        chunked_curve_energy(counting, log_snr, x, probes=torch.ones(2, 4, 8, dtype=torch.float64))


def test_chunked_energy_counts_negative_terms_by_magnitude_with_abs():
    """``clamp="abs"`` matches the core's curve energy; with negative terms (a denoiser whose
    Jacobian trace is negative, as a learned model's can be) it exceeds the segment-clamped
    energy by their magnitude, times ``(T - 1) / 2``."""
    def den(x, log_snr):
        return -torch.sin(2 * x) * torch.sigmoid(log_snr)[:, None]

    log_snr, x = random_curve(9, 8)
    terms = chunked_segment_terms(den, log_snr, x, chunk_points=4, divergence="exact")
    assert bool((terms < 0).any()) and bool((terms > 0).any())
    kw = dict(chunk_points=4, divergence="exact")
    e_abs = float(chunked_curve_energy(den, log_snr, x, clamp="abs", **kw))
    e_seg = float(chunked_curve_energy(den, log_snr, x, clamp="segment", **kw))
    ref = float(curve_energy(den, log_snr, x, divergence="exact", clamp="abs"))
    assert e_abs == pytest.approx(ref, rel=1e-9)
    assert e_abs == pytest.approx(4.0 * float(terms.abs().sum()), rel=1e-9)
    assert e_abs - e_seg == pytest.approx(4.0 * float(-terms.clamp_max(0).sum()), rel=1e-9)
