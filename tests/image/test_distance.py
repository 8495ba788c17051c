"""Diffusion Edit Distance and image geodesics on the analytic Gaussian image model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from spacetime_md.core import GeodesicConfig, curve_energy, diffusion_edit_distance, straight_line, SpacetimePoint
from spacetime_md.image import (
    IMAGE_PRESETS,
    distance_matrix,
    from_edm_image,
    from_v_image,
    image_edit_distance,
    image_geodesic,
    image_key,
    pair_seed,
    resolve_preset,
    write_matrix_csv,
)

from tests.image.conftest import EVENT_SHAPE

CONFIG = GeodesicConfig(n_nodes=5, n_points=(12, 24), max_steps=60)


@pytest.fixture
def denoiser(gaussian_images):
    return from_edm_image(gaussian_images.edm_network, EVENT_SHAPE)


def test_distance_is_bitwise_symmetric_and_matches_the_core(denoiser, image_pair):
    a, b = image_pair
    ab = image_geodesic(denoiser, a, b, config=CONFIG)
    ba = image_geodesic(denoiser, b, a, config=CONFIG)
    assert ab.distance > 0.5
    # one canonical solve: the same number and the same curve, reversed
    assert ab.distance == ba.distance and ab.energy == ba.energy
    assert ab.reversed != ba.reversed and ab.seed == ba.seed
    assert torch.equal(ab.x, ba.x.flip(0)) and torch.equal(ab.log_snr, ba.log_snr.flip(0))
    _, means_ab = ab.denoising_means(5)
    _, means_ba = ba.denoising_means(5)
    assert torch.equal(means_ab, means_ba.flip(0))
    # the strip starts at the caller's first image
    alpha = float(torch.sigmoid(torch.tensor(ab.anchor_log_snr, dtype=torch.float64)).sqrt())
    torch.testing.assert_close(ab.x[0], alpha * a.reshape(-1))
    torch.testing.assert_close(ba.x[0], alpha * b.reshape(-1))
    # exact divergence for the length: no estimator noise
    assert ab.length_method == "exact" and ab.distance_se == 0.0
    # the image API is the core's DiffED on flattened images (the core's own L-BFGS, straight-line
    # start, length on its final 24 points)
    core = diffusion_edit_distance(denoiser, a.reshape(-1), b.reshape(-1), 0.1, CONFIG)
    assert image_edit_distance(denoiser, a, b, config=CONFIG, length_points=24) == pytest.approx(core, rel=2e-3)


def test_canonical_order_and_pair_seed(image_pair):
    a, b = image_pair
    a32 = a.float()
    assert image_key(a32) == image_key(a32.double()) == image_key(a32.reshape(-1).reshape(a.shape))
    assert image_key(a) != image_key(b) and len(image_key(a)) == 64
    ka, kb = image_key(a), image_key(b)
    assert pair_seed(0, ka, kb) == pair_seed(0, kb, ka)
    assert pair_seed(0, ka, kb) != pair_seed(1, ka, kb)
    assert 0 <= pair_seed(7, ka, kb) < 2**63


def test_distance_near_zero_for_identical_images(denoiser, image_pair):
    a, b = image_pair
    assert image_edit_distance(denoiser, a, a.clone(), config=CONFIG) == 0.0
    d_far = image_edit_distance(denoiser, a, b, config=CONFIG)
    d_near = image_edit_distance(denoiser, a, a + 1e-3 * (b - a), config=CONFIG)
    # the anchored metric is smooth: a 1e-3 step costs about 1e-3 of the straight-line length
    assert 0 < d_near < 3e-3 * d_far
    geo = image_geodesic(denoiser, a, a.clone(), config=CONFIG)
    assert geo.result is None and geo.energy == 0.0 and geo.distance == 0.0
    log_snr, means = geo.denoising_means(3)
    assert means.shape == (3, *EVENT_SHAPE)


def test_geodesic_energy_below_straight_line(denoiser, gaussian_images, image_pair):
    a, b = image_pair
    geo = image_geodesic(denoiser, a, b, config=CONFIG)
    assert geo.energy < 0.9 * geo.straight_line_energy
    # independent check of the straight-line energy with the core
    alpha = float(torch.sigmoid(torch.tensor(geo.anchor_log_snr, dtype=torch.float64)).sqrt())
    ls, x = straight_line(SpacetimePoint(geo.anchor_log_snr, alpha * a.reshape(-1)),
                          SpacetimePoint(geo.anchor_log_snr, alpha * b.reshape(-1)), geo.length_points)
    ref = float(curve_energy(gaussian_images.denoiser, ls, x, divergence="exact"))
    assert geo.straight_line_energy == pytest.approx(ref, rel=1e-6)  # anchor computed in float32
    # the geodesic leaves the anchor's noise level (adds noise, then removes it)
    assert geo.log_snr_min < geo.anchor_log_snr - 0.1
    assert geo.result.converged
    # strip of denoising means: endpoints are the denoised anchors, shape (F, C, H, W)
    log_snr, means = geo.denoising_means(5)
    assert log_snr.shape == (5,) and means.shape == (5, *EVENT_SHAPE)
    assert float(log_snr[0]) == pytest.approx(geo.anchor_log_snr)
    summary = geo.summary()
    assert summary["distance"] == geo.distance and "geodesic_config" in summary


def test_chunked_solver_reaches_the_same_distance(denoiser, image_pair):
    a, b = image_pair
    batched = image_geodesic(denoiser, a, b, config=CONFIG)
    chunked = image_geodesic(denoiser, a, b, config=CONFIG, chunk_points=5)
    # two optimisers (torch L-BFGS from the straight line, batched L-BFGS from the warm start)
    assert chunked.distance == pytest.approx(batched.distance, rel=5e-3)
    assert chunked.result.converged and batched.result.converged


def test_distance_independent_of_the_parameterisation(gaussian_images, image_pair):
    a, b = image_pair
    d_edm = image_edit_distance(from_edm_image(gaussian_images.edm_network, EVENT_SHAPE), a, b, config=CONFIG)
    d_v = image_edit_distance(from_v_image(gaussian_images.v_network, EVENT_SHAPE), a, b, config=CONFIG)
    assert d_v == pytest.approx(d_edm, rel=1e-6)


def test_distance_matrix_equals_pairwise_and_csv(denoiser, gaussian_images, tmp_path):
    images = gaussian_images.sample(4, generator=torch.Generator().manual_seed(4))
    images[3] = images[1]  # a duplicate: distance 0 without a solve
    config = GeodesicConfig(n_nodes=4, n_points=(12,), max_steps=30)
    seen = []
    result = distance_matrix(denoiser, images, config=config, callback=seen.append, batch_pairs=2)
    d = result.distances
    assert d.shape == (4, 4) and np.array_equal(d, d.T) and np.all(np.diag(d) == 0) and d[1, 3] == 0
    assert sorted((s["i"], s["j"]) for s in seen) == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
    for i, j in ((0, 1), (0, 2), (1, 2), (2, 3)):
        assert d[i, j] > 0
        # the same problem as the pairwise call (canonical order, pair seed); batching only rounds
        assert d[i, j] == pytest.approx(image_edit_distance(denoiser, images[j], images[i], config=config), rel=1e-7)
    assert d[0, 3] == pytest.approx(d[0, 1], rel=1e-12) and d[2, 3] == pytest.approx(d[1, 2], rel=1e-12)
    one_batch = distance_matrix(denoiser, images, config=config, batch_pairs=10).distances
    np.testing.assert_allclose(one_batch, d, rtol=1e-7)
    assert np.all(result.standard_errors == 0) and np.isnan(result.straight_line_energies[0, 1])
    # triangle inequality holds for (near-)geodesic lengths
    assert d[0, 2] <= d[0, 1] + d[1, 2] + 1e-6
    path = write_matrix_csv(tmp_path / "m.csv", ["a.png", "b.png", "c.png", "d.png"], d)
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["", "a.png", "b.png", "c.png", "d.png"]
    assert float(rows[1][2]) == pytest.approx(d[0, 1], rel=1e-5)
    summary = result.summary()
    assert summary["n_pairs"] == 6 and summary["pairs_per_minute"] > 0 and summary["batch_pairs"] == 2


def test_distance_errors(denoiser, image_pair):
    a, b = image_pair
    with pytest.raises(ValueError, match=r"image_b: expected shape \(2, 2, 2\), got \(2, 2, 3\)"):
        image_edit_distance(denoiser, a, torch.zeros(2, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="denoiser: expected an image denoiser with an event_shape"):
        image_edit_distance(lambda x, t: x, a, b)
    with pytest.raises(ValueError, match="t_min: expected a number > 0, got 0"):
        image_edit_distance(denoiser, a, b, t_min=0)
    with pytest.raises(ValueError, match="amp_dtype: expected chunk_points to be set too"):
        image_edit_distance(denoiser, a, b, amp_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="images: expected at least 2 images, got 1"):
        distance_matrix(denoiser, a[None])
    with pytest.raises(ValueError, match=r"distances: expected shape \(2, 2\)"):
        write_matrix_csv("unused.csv", ["a", "b"], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="preset: expected one of"):
        resolve_preset("slow")
    with pytest.raises(ValueError, match="length_points: expected an integer >= 2, got 1"):
        image_edit_distance(denoiser, a, b, length_points=1)
    with pytest.raises(ValueError, match="length_divergence: expected 'auto', 'exact' or 'hutchinson', got 'x'"):
        image_edit_distance(denoiser, a, b, length_divergence="x")
    with pytest.raises(ValueError, match="batch_pairs: expected an integer >= 1, got 0"):
        distance_matrix(denoiser, torch.stack([a, b]), batch_pairs=0)
    with pytest.raises(ValueError, match="length_probes: expected an integer >= 2, got 1"):
        image_edit_distance(denoiser, a, b, config=CONFIG, length_divergence="hutchinson", length_probes=1)
    assert resolve_preset("fast", seed=3, max_steps=7).max_steps == 7
    assert set(IMAGE_PRESETS) == {"matrix", "fast", "accurate"}
