"""The batched exact length of image geodesics (endpoint cache) on the analytic Gaussian image model."""

from __future__ import annotations

import pytest
import torch

from spacetime_md.core import SpacetimePoint, straight_line
from spacetime_md.image import evaluate_curve_length, from_edm_image, image_edit_distance
from spacetime_md.image.length import _exact_mu, _exact_terms, _summarise

from tests.image.conftest import EVENT_SHAPE


@pytest.fixture
def denoiser(gaussian_images):
    return from_edm_image(gaussian_images.edm_network, EVENT_SHAPE)


def _curves(image_pair, n_points=9):
    a, b = (img.reshape(-1) for img in image_pair)
    mid = 0.5 * (a + b)
    curves = [straight_line(SpacetimePoint(4.0, a), SpacetimePoint(4.0, b), n_points),
              straight_line(SpacetimePoint(4.0, mid), SpacetimePoint(1.0, b), n_points)]
    return torch.stack([c[0] for c in curves]), torch.stack([c[1] for c in curves])


def test_batched_exact_terms_match_the_one_curve_length(denoiser, image_pair):
    log_snr, x = _curves(image_pair)
    terms = _exact_terms(denoiser, log_snr, x)
    assert terms.shape == (2, 8) and terms.dtype == torch.float64
    for k in range(2):
        length, se, energy, n_neg, method = evaluate_curve_length(denoiser, log_snr[k], x[k], divergence="exact")
        assert method == "exact" and se == 0.0
        assert _summarise(terms[k:k + 1]) == pytest.approx((length, 0.0, energy, n_neg), rel=1e-9)


def test_cached_endpoints_give_the_same_terms(denoiser, image_pair):
    log_snr, x = _curves(image_pair)
    ends_l, ends_x = log_snr[:, [0, -1]], x[:, [0, -1]]
    mu_x, mu_s = _exact_mu(denoiser, ends_l.reshape(-1), ends_x.reshape(-1, x.shape[-1]))
    end_mu = (mu_x.reshape(2, 2, -1), mu_s.reshape(2, 2))
    torch.testing.assert_close(_exact_terms(denoiser, log_snr, x, end_mu), _exact_terms(denoiser, log_snr, x),
                               rtol=1e-9, atol=1e-12)
    # chunked by rows: the same numbers
    torch.testing.assert_close(_exact_terms(denoiser, log_snr, x, end_mu, chunk_rows=5),
                               _exact_terms(denoiser, log_snr, x), rtol=1e-9, atol=1e-12)


def test_image_edit_distance_refuses_geodesic_only_options(denoiser, image_pair):
    a, b = image_pair
    with pytest.raises(TypeError, match="image_edit_distance: unexpected keyword argument 'callback'"):
        image_edit_distance(denoiser, a, b, callback=print)
    with pytest.raises(TypeError, match="image_edit_distance: unexpected keyword argument 'straight_line_energy'"):
        image_edit_distance(denoiser, a, b, straight_line_energy=True)


def test_negative_terms_add_nothing_to_the_length_and_the_energy():
    terms = torch.tensor([[4.0, -1.0, 9.0]], dtype=torch.float64)
    length, se, energy, n_neg = _summarise(terms)
    assert length == pytest.approx(2.0 + 3.0) and se == 0.0 and n_neg == 1
    assert energy == pytest.approx(0.5 * 3 * (4.0 + 9.0))
    # Hutchinson draws: the mean term decides; the jackknife sees the draws' spread
    draws = torch.tensor([[4.0, -2.0], [4.0, 1.0]], dtype=torch.float64)
    length, se, _, n_neg = _summarise(draws)
    assert length == pytest.approx(2.0) and n_neg == 1 and se > 0


def test_length_counts_negative_terms_as_zero_or_by_magnitude():
    """``clamp="segment"`` (``matrix``, ``accurate``) adds 0 for a negative term, ``clamp="abs"``
    (``fast``) its magnitude: the length and energy the solver's objective minimised."""
    terms = torch.tensor([[4.0, -1.0, 9.0]], dtype=torch.float64)
    assert _summarise(terms, "segment") == (5.0, 0.0, 19.5, 1)
    assert _summarise(terms, "abs") == (6.0, 0.0, 21.0, 1)
    # two draws (mean [4, -1, 9]): the jackknife's leave-one-out lengths count the same way
    draws = torch.tensor([[4.0, -3.0, 9.0], [4.0, 1.0, 9.0]], dtype=torch.float64)
    length, se, _, n_neg = _summarise(draws, "abs")
    assert length == pytest.approx(6.0) and n_neg == 1 and se == pytest.approx((3 ** 0.5 - 1) / 2)
    assert _summarise(draws, "segment")[1] == pytest.approx(0.5)
