"""PNG reading/writing: shapes, modes and the error for every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spacetime_md.image import load_image, load_image_folder, save_geodesic_strip, save_image
from spacetime_md.image.io import atomic_path, write_json


def write_png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return path


@pytest.fixture
def grey(tmp_path):
    arr = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    return write_png(tmp_path / "grey.png", arr), arr


def test_load_grey_png_values_and_shape(grey):
    path, arr = grey
    img = load_image(path, event_shape=(1, 8, 8))
    assert img.shape == (1, 8, 8) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), arr / 255.0, rtol=0, atol=1e-7)


def test_save_load_roundtrip(tmp_path):
    img = torch.rand(3, 5, 7)
    path = save_image(tmp_path / "sub" / "rgb.png", img)
    back = load_image(path, event_shape=(3, 5, 7))
    torch.testing.assert_close(back, img, rtol=0, atol=0.5 / 255 + 1e-6)
    assert not list((tmp_path / "sub").glob("*.tmp"))  # atomic write left no temp file


def test_16_bit_png(tmp_path):
    arr = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    img = load_image(path, event_shape=(1, 8, 8))
    np.testing.assert_allclose(img[0].numpy(), arr / 65535.0, atol=1e-6)


def test_wrong_size_error(tmp_path):
    path = write_png(tmp_path / "big.png", np.zeros((16, 12), np.uint8))
    with pytest.raises(ValueError, match=r"big.png: expected an image of 8x8 pixels \(height x width\) for this model, got 16x12"):
        load_image(path, event_shape=(1, 8, 8))


def test_wrong_channel_count_error_and_convert(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    path = write_png(tmp_path / "rgb.png", rgb)
    with pytest.raises(ValueError, match=r"rgb.png: expected 1 channel \(grey-scale\) for this model, got 3 \(RGB\)"):
        load_image(path, event_shape=(1, 8, 8))
    img = load_image(path, event_shape=(1, 8, 8), convert=True)
    expected = (0.299 * 255 + 0.587 * 128) / 255
    assert float(img[0, 0, 0]) == pytest.approx(expected, abs=1e-6)
    rgba = write_png(tmp_path / "rgba.png", np.full((8, 8, 4), 200, np.uint8))
    with pytest.raises(ValueError, match=r"expected 3 channels \(RGB\) for this model, got 4 \(RGBA\)"):
        load_image(rgba, event_shape=(3, 8, 8))
    assert load_image(rgba, event_shape=(3, 8, 8), convert=True).shape == (3, 8, 8)
    grey = write_png(tmp_path / "g.png", np.full((8, 8), 51, np.uint8))
    rgb_img = load_image(grey, event_shape=(3, 8, 8), convert=True)
    torch.testing.assert_close(rgb_img, torch.full((3, 8, 8), 0.2))


def test_palette_and_bilevel_images(tmp_path):
    pal = Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").convert("P")
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (3, 8, 8)
    Image.new("1", (8, 8), 1).save(tmp_path / "b.png")
    img = load_image(tmp_path / "b.png", event_shape=(1, 8, 8))
    assert float(img.min()) == 1.0


def test_non_image_missing_and_directory_errors(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a PNG")
    with pytest.raises(ValueError, match="notes.png: expected an image file \\(PNG\\), got a file that is not a readable image"):
        load_image(text)
    truncated = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="cut.png: expected a readable image file"):
        load_image(truncated)
    with pytest.raises(FileNotFoundError, match="missing.png: expected an existing image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="expected an image file, got a directory"):
        load_image(tmp_path)


def test_load_folder(tmp_path):
    for name in ("b.png", "a.png", "c.png"):
        write_png(tmp_path / name, np.zeros((8, 8), np.uint8))
    (tmp_path / "readme.txt").write_text("ignored")
    names, images = load_image_folder(tmp_path, event_shape=(1, 8, 8))
    assert names == ["a.png", "b.png", "c.png"] and images.shape == (3, 1, 8, 8)
    write_png(tmp_path / "d.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"images of one shape"):
        load_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: expected at least 2 images matching '\*.png', got 0"):
        load_image_folder(empty)
    with pytest.raises(FileNotFoundError, match="expected an existing directory"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="expected a directory of images, got a file"):
        load_image_folder(tmp_path / "a.png")


def test_strip_and_json(tmp_path):
    path = save_geodesic_strip(tmp_path / "strip.png", torch.rand(4, 1, 8, 8), torch.linspace(4, 1, 4), title="t")
    with Image.open(path) as im:
        assert im.size[0] > im.size[1] > 0
    with pytest.raises(ValueError, match=r"log_snr: expected shape \(4,\), got \(3,\)"):
        save_geodesic_strip(tmp_path / "x.png", torch.rand(4, 1, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match=r"images: expected a tensor of shape \(F, C, H, W\)"):
        save_geodesic_strip(tmp_path / "x.png", torch.rand(4, 8, 8), torch.zeros(4))
    with pytest.raises(ValueError, match=r"image: expected a tensor of shape \(C, H, W\)"):
        save_image(tmp_path / "x.png", torch.rand(8, 8))
    write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text().strip().startswith("{")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "never.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "never.txt").exists() and not list(tmp_path.glob(".never*"))
