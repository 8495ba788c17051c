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
    resolve_preset,
    write_matrix_csv,
)

from tests.image.conftest import EVENT_SHAPE

CONFIG = GeodesicConfig(n_nodes=5, n_points=(12, 24), max_steps=60)


@pytest.fixture
def denoiser(gaussian_images):
    return from_edm_image(gaussian_images.edm_network, EVENT_SHAPE)


def test_distance_is_symmetric_and_matches_the_core(denoiser, image_pair):
    a, b = image_pair
    d_ab = image_edit_distance(denoiser, a, b, config=CONFIG)
    d_ba = image_edit_distance(denoiser, b, a, config=CONFIG)
    assert d_ab > 0.5
    assert d_ab == pytest.approx(d_ba, rel=1e-3)
    # the image API is the core's DiffED on flattened images
    assert d_ab == pytest.approx(diffusion_edit_distance(denoiser, a.reshape(-1), b.reshape(-1), 0.1, CONFIG))


def test_distance_near_zero_for_identical_images(denoiser, image_pair):
    a, b = image_pair
    assert image_edit_distance(denoiser, a, a.clone(), config=CONFIG) == 0.0
    d_far = image_edit_distance(denoiser, a, b, config=CONFIG)
    d_near = image_edit_distance(denoiser, a, a + 1e-3 * (b - a), config=CONFIG)
    # the anchored metric is smooth: a 1e-3 step costs about 1e-3 of the straight-line length
    assert 0 < d_near < 3e-3 * d_far
    geo = image_geodesic(denoiser, a, a.clone(), config=CONFIG)
    assert geo.result is None and geo.energy == 0.0
    log_snr, means = geo.denoising_means(3)
    assert means.shape == (3, *EVENT_SHAPE)


def test_geodesic_energy_below_straight_line(denoiser, gaussian_images, image_pair):
    a, b = image_pair
    geo = image_geodesic(denoiser, a, b, config=CONFIG)
    assert geo.energy < 0.9 * geo.straight_line_energy
    # independent check of the straight-line energy with the core
    alpha = float(torch.sigmoid(torch.tensor(geo.anchor_log_snr, dtype=torch.float64)).sqrt())
    ls, x = straight_line(SpacetimePoint(geo.anchor_log_snr, alpha * a.reshape(-1)),
                          SpacetimePoint(geo.anchor_log_snr, alpha * b.reshape(-1)), 24)
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


def test_chunked_solver_reproduces_the_core_solver(denoiser, image_pair):
    a, b = image_pair
    core = image_geodesic(denoiser, a, b, config=CONFIG)
    chunked = image_geodesic(denoiser, a, b, config=CONFIG, chunk_points=5)
    assert chunked.distance == pytest.approx(core.distance, rel=1e-6)
    assert chunked.energy == pytest.approx(core.energy, rel=1e-6)
    torch.testing.assert_close(chunked.x, core.x, rtol=1e-5, atol=1e-6)


def test_distance_independent_of_the_parameterisation(gaussian_images, image_pair):
    a, b = image_pair
    d_edm = image_edit_distance(from_edm_image(gaussian_images.edm_network, EVENT_SHAPE), a, b, config=CONFIG)
    d_v = image_edit_distance(from_v_image(gaussian_images.v_network, EVENT_SHAPE), a, b, config=CONFIG)
    assert d_v == pytest.approx(d_edm, rel=1e-6)


def test_distance_matrix_and_csv(denoiser, gaussian_images, tmp_path):
    images = gaussian_images.sample(3, generator=torch.Generator().manual_seed(4))
    seen = []
    result = distance_matrix(denoiser, images, config=GeodesicConfig(n_nodes=4, n_points=(12,), max_steps=30),
                             callback=seen.append)
    d = result.distances
    assert d.shape == (3, 3) and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert np.all(d[np.triu_indices(3, 1)] > 0)
    assert [(s["i"], s["j"]) for s in seen] == [(0, 1), (0, 2), (1, 2)]
    # triangle inequality holds for (near-)geodesic lengths
    assert d[0, 2] <= d[0, 1] + d[1, 2] + 1e-6
    path = write_matrix_csv(tmp_path / "m.csv", ["a.png", "b.png", "c.png"], d)
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["", "a.png", "b.png", "c.png"]
    assert float(rows[1][2]) == pytest.approx(d[0, 1], rel=1e-5)
    assert result.summary()["n_pairs"] == 3


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
    assert resolve_preset("fast", seed=3, max_steps=7).max_steps == 7
    assert set(IMAGE_PRESETS) == {"fast", "accurate"}
