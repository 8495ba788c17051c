"""The remaining error messages of the image module, one assertion each."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from spacetime_md.cli import main
from spacetime_md.core import GeodesicConfig, SpacetimePoint
from spacetime_md.errors import SpacetimeMDError
from spacetime_md.image import (
    DiscreteTimesteps,
    ImageDenoiser,
    ImageDiffusionModel,
    ImageTrainConfig,
    UNetConfig,
    ddpm_alphas_cumprod,
    from_edm_image,
    image_geodesic,
    load_digits_images,
    load_image,
    optimize_geodesic_chunked,
    save_image_model,
)

from tests.image.conftest import EVENT_SHAPE


def test_adapter_and_schedule_errors(gaussian_images):
    with pytest.raises(TypeError, match="noise_conditioning: expected a callable or None, got int"):
        ImageDenoiser(gaussian_images.edm_network, EVENT_SHAPE, noise_conditioning=3)
    den = from_edm_image(gaussian_images.edm_network, EVENT_SHAPE)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 8\) or \(8,\), got \(2, 7\)"):
        den.unflatten(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="alphas_cumprod: expected at least 2 entries, got 1"):
        DiscreteTimesteps(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="alphas_cumprod: expected values strictly between 0 and 1"):
        DiscreteTimesteps(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="n_timesteps: expected an integer >= 2, got 1"):
        ddpm_alphas_cumprod(1)
    with pytest.raises(ValueError, match=r"beta_start, beta_end: expected betas in \(0, 1\)"):
        ddpm_alphas_cumprod(10, beta_start=0.5, beta_end=1.5)


def test_model_and_training_config_errors(tmp_path):
    with pytest.raises(ValueError, match="channel_mults: expected positive integers"):
        UNetConfig(channel_mults=(1, 0))
    with pytest.raises(ValueError, match="emb_dim: expected an even integer, got 15"):
        UNetConfig(emb_dim=15)
    with pytest.raises(ValueError, match="base_channels: expected an integer >= 1"):
        UNetConfig(base_channels=0)
    with pytest.raises(TypeError, match="model: expected an ImageDiffusionModel, got Linear"):
        save_image_model(torch.nn.Linear(2, 2), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="lr: expected a finite number > 0, got 0.0"):
        ImageTrainConfig(lr=0.0)
    with pytest.raises(ValueError, match=r"ema_decay: expected a number in \[0, 1\), got 1.0"):
        ImageTrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="p_std: expected a number > 0, got 0.0"):
        ImageTrainConfig(p_std=0.0)
    with pytest.raises(ValueError, match="warmup_steps: expected an integer >= 0, got -1"):
        ImageTrainConfig(warmup_steps=-1)
    with pytest.raises(TypeError, match="config: expected an ImageTrainConfig"):
        from spacetime_md.image import train_image_model

        train_image_model(torch.zeros(4, 1, 4, 4), {"n_steps": 1}, tmp_path)
    with pytest.raises(ValueError, match="split: expected 'train', 'test' or 'all', got 'val'"):
        load_digits_images("val")


def test_missing_scikit_learn_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(SpacetimeMDError, match="the digits data need scikit-learn"):
        load_digits_images("test")


def test_io_shape_and_value_errors(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"event_shape: expected \(C, H, W\), got \(8, 8\)"):
        load_image(path, event_shape=(8, 8))
    tiff = tmp_path / "nan.tiff"
    arr = np.zeros((8, 8), np.float32)
    arr[0, 0] = np.nan
    Image.fromarray(arr, mode="F").save(tiff)
    with pytest.raises(ValueError, match="nan.tiff: expected finite pixel values, got NaN or infinity"):
        load_image(tiff)


def test_geodesic_argument_errors(gaussian_images, image_pair):
    a, b = image_pair
    den = from_edm_image(gaussian_images.edm_network, EVENT_SHAPE)
    with pytest.raises(TypeError, match="config: expected a GeodesicConfig, got dict"):
        image_geodesic(den, a, b, config={"n_nodes": 3})
    geo = image_geodesic(den, a, b, config=GeodesicConfig(n_nodes=3, n_points=(8,), max_steps=2))
    with pytest.raises(ValueError, match="n_frames: expected an integer >= 2, got 1"):
        geo.denoising_means(1)
    p = SpacetimePoint(3.0, a.reshape(-1))
    with pytest.raises(ValueError, match="start and end: expected two different spacetime points"):
        optimize_geodesic_chunked(den, p, p)
    with pytest.raises(TypeError, match="config: expected a GeodesicConfig"):
        optimize_geodesic_chunked(den, p, SpacetimePoint(2.0, b.reshape(-1)), config=1)
    with pytest.raises(TypeError, match="denoiser: expected a callable"):
        optimize_geodesic_chunked(None, p, SpacetimePoint(2.0, b.reshape(-1)))


def test_cli_threads_error(capsys):
    assert main(["image", "distance", "a.png", "b.png", "--threads", "-1"]) == 2
    assert "--threads: expected an integer in [0, 256], got -1" in capsys.readouterr().err


def test_images_outside_the_models_range_are_refused_before_any_work():
    """8-bit pixels, [0, 1] pixels and out-of-range values given to a (-1, 1) model: a ValueError
    that says how to convert, raised before the geodesic (the shipped model's adapter knows its range)."""
    from spacetime_md.image import distance_matrix, load_digits_model

    model = load_digits_model()
    den = model.denoiser()
    assert den.data_range == (-1.0, 1.0)
    digits = load_digits_images("test")[0][:2]  # pixels in [0, 1]
    pixels_a, pixels_b = digits[0], digits[1]
    model_a, model_b = model.to_model(pixels_a), model.to_model(pixels_b)
    with pytest.raises(ValueError, match=r"image_a: expected model units in \[-1, 1\].*8-bit pixels\?.*divide by 255"):
        image_geodesic(den, (pixels_a * 255).round(), model_b)
    with pytest.raises(ValueError, match=r"image_b: .*look like \[0, 1\] pixels: convert pixels p in \[0, 1\] "
                                         r"with model.to_model\(p\) = 2 p - 1"):
        image_geodesic(den, model_a, pixels_b)
    with pytest.raises(ValueError, match=r"image_a: expected model units in \[-1, 1\], got values in \[-3"):
        image_geodesic(den, 3 * model_a, model_b)
    with pytest.raises(ValueError, match=r"images\[1\]: .*look like \[0, 1\] pixels"):
        distance_matrix(den, torch.stack([model_a, pixels_b, model_b]))
    with pytest.raises(ValueError, match=r"data_range: expected \(low, high\) with low < high"):
        from_edm_image(model, model.event_shape, data_range=(1.0, -1.0))
    # the opt-out: a [0, 1] image is accepted as model units when asked (the check only, no solve here)
    from spacetime_md.image.canonical import _check_image

    assert _check_image("image_b", pixels_b, model.event_shape, None) is not None
