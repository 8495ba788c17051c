"""DiffED with the shipped 8x8 digits model: symmetry, seed stability, matrix = pairwise.

Small solver settings (the ``matrix`` preset with fewer steps) keep these tests to seconds;
``benchmarks/bench_diffed.py`` measures the same properties with the shipped presets.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from spacetime_md.image import (
    IMAGE_PRESETS,
    distance_matrix,
    evaluate_curve_length,
    image_edit_distance,
    image_geodesic,
    load_digits_images,
    load_digits_model,
)

SMALL = dataclasses.replace(IMAGE_PRESETS["matrix"], max_steps=8)
LENGTH_POINTS = 16


@pytest.fixture(scope="module")
def digits():
    model = load_digits_model()
    pixels, labels = load_digits_images("test")
    return model, model.denoiser(), model.to_model(pixels[:6]), labels[:6]


def test_swapped_arguments_give_the_bitwise_same_distance(digits):
    model, den, images, _ = digits
    a, b = images[0], images[1]
    ab = image_geodesic(den, a, b, config=SMALL, length_points=LENGTH_POINTS, straight_line_energy=False)
    ba = image_geodesic(den, b, a, config=SMALL, length_points=LENGTH_POINTS, straight_line_energy=False)
    assert ab.distance > 1.0 and ab.distance == ba.distance
    assert torch.equal(ab.x, ba.x.flip(0))
    assert ab.length_method == "exact" and ab.distance_se == 0.0
    assert image_edit_distance(den, a, a.clone(), config=SMALL) == 0.0


def test_seed_changes_the_distance_only_a_little(digits):
    _, den, images, _ = digits
    for a, b in ((images[0], images[1]), (images[2], images[3])):
        d = [image_edit_distance(den, a, b, config=dataclasses.replace(SMALL, seed=seed),
                                 length_points=LENGTH_POINTS) for seed in (0, 1)]
        assert d[0] != d[1]  # other probes, another curve
        assert abs(d[0] - d[1]) <= 0.05 * d[0]


def test_exact_length_beats_the_hutchinson_length_at_equal_points(digits):
    """The exact length has no estimator noise; 16 Hutchinson draws agree within 4 standard errors."""
    _, den, images, _ = digits
    geo = image_geodesic(den, images[0], images[4], config=SMALL, length_points=LENGTH_POINTS,
                         straight_line_energy=False)
    length, se, _, _, method = evaluate_curve_length(den, geo.log_snr, geo.x, divergence="hutchinson",
                                                     n_probes=16, seed=11)
    assert method == "hutchinson" and se > 0.001 * geo.distance
    assert abs(length - geo.distance) <= 4 * se


def test_batched_matrix_equals_pairwise(digits):
    """In float64: a batch of 3 pairs and a batch of 1 solve the same problems.

    (In float32 the rounding of a larger denoiser batch grows along the optimisation: 0.6 % on
    one of these pairs, up to 3.6 % on 28 pairs; see docs/diffed.md.)
    """
    _, _, images, _ = digits
    den = load_digits_model().double().denoiser(dtype=torch.float64)
    sub = images[:3].double()
    result = distance_matrix(den, sub, config=SMALL, batch_pairs=3, length_points=LENGTH_POINTS)
    d = result.distances
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert d[i, j] > 1.0
        assert d[i, j] == pytest.approx(image_edit_distance(den, sub[j], sub[i], config=SMALL,
                                                            length_points=LENGTH_POINTS), rel=1e-6)


def test_fast_preset_is_seed_free_and_counts_negative_terms_by_magnitude(digits):
    """The ``fast`` preset solves with the exact divergence and ``clamp="abs"``: no probes, so
    another seed gives the bitwise same curve and distance, and the reported length counts every
    exact segment term by its magnitude (the quantity the solver minimised)."""
    _, den, images, _ = digits
    fast = dataclasses.replace(IMAGE_PRESETS["fast"], max_steps=2, n_points=(8,))
    assert fast.divergence_for(64) == "exact" and fast.clamp == "abs"
    geos = [image_geodesic(den, images[0], images[5], config=dataclasses.replace(fast, seed=seed),
                           length_points=LENGTH_POINTS, straight_line_energy=False) for seed in (0, 1)]
    assert geos[0].distance == geos[1].distance and torch.equal(geos[0].x, geos[1].x)
    terms = geos[0].segment_terms
    assert terms.shape == (LENGTH_POINTS - 1,) and terms.dtype == torch.float64
    assert geos[0].distance == pytest.approx(float(terms.abs().sqrt().sum()), rel=1e-12)
    assert geos[0].n_negative_segments == int((terms < 0).sum())
    # the same curve measured with negative terms as 0 (the segment clamp) is never longer
    length_segment = evaluate_curve_length(den, geos[0].log_snr, geos[0].x, divergence="exact")[0]
    length_abs = evaluate_curve_length(den, geos[0].log_snr, geos[0].x, divergence="exact", clamp="abs")[0]
    assert length_abs == pytest.approx(geos[0].distance, rel=1e-5)
    assert length_segment == pytest.approx(float(terms.clamp_min(0).sqrt().sum()), rel=1e-5)
    assert length_segment <= length_abs
    with pytest.raises(ValueError, match="clamp: expected 'segment' or 'abs', got 'none'"):
        evaluate_curve_length(den, geos[0].log_snr, geos[0].x, divergence="exact", clamp="none")
