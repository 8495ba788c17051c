"""The small EDM model, its checkpoint format, training loop, and the shipped digits model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spacetime_md.errors import CheckpointError
from spacetime_md.image import (
    DIGITS_CHECKPOINT,
    ImageDiffusionModel,
    ImageTrainConfig,
    UNetConfig,
    load_digits_model,
    load_image,
    load_image_model,
    save_image_model,
    train_image_model,
)

SAMPLES = Path(DIGITS_CHECKPOINT).parent.parent / "images" / "digits"


def test_shipped_checkpoint_is_small_and_documented():
    assert DIGITS_CHECKPOINT.stat().st_size < 2_000_000
    card = json.loads(DIGITS_CHECKPOINT.with_suffix(".json").read_text())
    assert card["command"].startswith("spacetime-md image train ")
    model = load_digits_model()
    assert model.event_shape == (1, 8, 8)
    assert model.n_parameters() == card["n_parameters"]
    assert not any(p.requires_grad for p in model.parameters())


def test_shipped_model_denoises_held_out_digits():
    """On the shipped held-out digits, D(x0 + sigma eps, sigma) beats the noisy input by a wide margin."""
    model = load_digits_model()
    x0 = model.to_model(torch.stack([load_image(p, event_shape=(1, 8, 8)) for p in sorted(SAMPLES.glob("*.png"))]))
    gen = torch.Generator().manual_seed(0)
    for sigma, max_ratio in ((0.1, 0.7), (0.5, 0.3), (2.0, 0.1)):
        noise = torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            denoised = model(x0 + sigma * noise, torch.full((x0.shape[0],), sigma))
        mse = float((denoised - x0).square().mean())
        assert mse < max_ratio * sigma**2, (sigma, mse)


def test_edm_preconditioning_limits():
    model = ImageDiffusionModel((1, 4, 4), UNetConfig(base_channels=8, emb_dim=16), sigma_data=0.5)
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        # sigma -> 0: c_skip -> 1, c_out -> 0, the denoiser is the identity
        torch.testing.assert_close(model(x, torch.full((3,), 1e-6)), x, rtol=1e-4, atol=1e-4)
        # batch rows are independent (required by the exact divergence)
        one = model(x[:1], torch.tensor([0.7]))
        torch.testing.assert_close(model(x, torch.tensor([0.7, 0.1, 3.0]))[:1], one)
    p = torch.rand(1, 4, 4)
    torch.testing.assert_close(model.to_pixels(model.to_model(p)), p)


def test_model_validation_errors():
    with pytest.raises(ValueError, match=r"event_shape: expected \(C, H, W\)"):
        ImageDiffusionModel((8, 8))
    with pytest.raises(ValueError, match="event_shape: expected H and W divisible by 2"):
        ImageDiffusionModel((1, 7, 8))
    with pytest.raises(ValueError, match="unet.in_channels: expected 3"):
        ImageDiffusionModel((3, 8, 8), UNetConfig(in_channels=1))
    with pytest.raises(ValueError, match="n_groups: expected a divisor"):
        UNetConfig(base_channels=12, n_groups=8)
    with pytest.raises(ValueError, match="sigma_data: expected a number > 0"):
        ImageDiffusionModel((1, 8, 8), sigma_data=0.0)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    model = ImageDiffusionModel((1, 4, 4), UNetConfig(base_channels=8, emb_dim=16), 0.6, {"note": "x"})
    path = save_image_model(model, tmp_path / "m.pt")
    back = load_image_model(path)
    assert back.metadata == {"note": "x"} and back.sigma_data == 0.6
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(FileNotFoundError, match="checkpoint: expected an existing file"):
        load_image_model(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not torch")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_image_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something/1"}, other)
    with pytest.raises(CheckpointError, match="expected format 'spacetime_md.image/1', got 'something/1'"):
        load_image_model(other)
    broken = torch.load(path, weights_only=True)
    broken["state_dict"].pop("net.head.weight")
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="incomplete or mismatched"):
        load_image_model(tmp_path / "broken.pt")


def test_training_writes_files_and_resumes(tmp_path):
    images = torch.rand(32, 1, 4, 4) * 2 - 1
    config = ImageTrainConfig(n_steps=6, batch_size=8, base_channels=8, emb_dim=16, log_every=2,
                              checkpoint_every=3, threads=0)
    seen = []
    model = train_image_model(images, config, tmp_path, metadata={"command": "test"}, callback=seen.append)
    assert [s["step"] for s in seen] == [2, 4, 6]
    for name in ("config.json", "metrics.jsonl", "last.pt", "model.pt", "model.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "model.json").read_text())["command"] == "test"
    assert load_image_model(tmp_path / "model.pt").event_shape == (1, 4, 4)
    # a longer run on the same directory resumes at step 6 ... but with other settings it refuses
    with pytest.raises(CheckpointError, match="expected a run with the same settings to resume"):
        train_image_model(images, ImageTrainConfig(n_steps=8, batch_size=8, base_channels=8, emb_dim=16), tmp_path)
    again = train_image_model(images, config, tmp_path)  # finished run: nothing to do, same weights
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="n_steps: expected an integer >= 1, got 0"):
        ImageTrainConfig(n_steps=0)
    with pytest.raises(ValueError, match=r"images: expected a tensor of shape \(N >= 2, C, H, W\)"):
        train_image_model(torch.zeros(4, 4), config, tmp_path)
