"""Checkpoint integrity: corrupted weights never load silently (issue 20)."""

from __future__ import annotations

import shutil

import pytest
import torch

from spacetime_md.errors import CheckpointError
from spacetime_md.molecular.model.pretrained import (
    _model_file,
    load_checkpoint,
    pretrained_path,
    read_checkpoint,
    save_checkpoint,
    weights_digest,
)


def _flip_weight(path):
    """Change one float inside the weights, keeping the file a valid torch archive."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel())
    payload["state_dict"][key].view(-1)[0] += 1e-3
    torch.save(payload, path)


def test_own_checkpoint_roundtrip_and_corruption(tmp_path):
    model = load_checkpoint("alanine-dipeptide").denoiser  # the shipped guided checkpoint's model
    path = save_checkpoint(tmp_path / "m.pt", model, {"note": "x"})
    payload = read_checkpoint(path)
    assert payload["weights_sha256"] == weights_digest(payload["state_dict"])
    reloaded = load_checkpoint(path)
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()):
        assert torch.equal(a, b)
    _flip_weight(path)
    with pytest.raises(CheckpointError, match="corrupted checkpoint: weights sha256"):
        load_checkpoint(path)
    # The explicit opt-out loads the user's own (modified) file.
    changed = load_checkpoint(path, verify=False)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), changed.state_dict().values()))


def test_copied_shipped_model_with_flipped_weight_is_refused(tmp_path):
    # A copy outside the package is checked by the digest embedded in the shipped file.
    copy = tmp_path / "copy.pt"
    shutil.copy(pretrained_path("alanine-dipeptide"), copy)
    load_checkpoint(copy)
    _flip_weight(copy)
    with pytest.raises(CheckpointError, match="corrupted checkpoint"):
        load_checkpoint(copy)


@pytest.mark.parametrize("fraction", [0.2, 0.35, 0.5, 0.65, 0.8])
def test_flipped_bytes_never_load_other_weights(tmp_path, fraction):
    # 8 flipped bytes anywhere: either refused, or (padding / unread bytes) the very same weights.
    src = pretrained_path("alanine-dipeptide")
    reference = load_checkpoint(src).state_dict()
    copy = tmp_path / "copy.pt"
    data = bytearray(src.read_bytes())
    at = int(len(data) * fraction)
    for k in range(8):
        data[at + k] ^= 0xFF
    copy.write_bytes(bytes(data))
    try:
        loaded = load_checkpoint(copy).state_dict()
    except CheckpointError:
        return
    assert all(torch.equal(reference[k], loaded[k]) for k in reference)


def test_shipped_file_is_checked_against_its_card(tmp_path, monkeypatch):
    # Simulate a corrupted installed model: a models folder whose .pt differs from its card.
    import spacetime_md.molecular.model.pretrained as pretrained

    models = tmp_path / "models"
    models.mkdir()
    src = pretrained_path("alanine-dipeptide")
    shutil.copy(src, models / src.name)
    shutil.copy(src.with_suffix(".json"), models / src.with_suffix(".json").name)
    monkeypatch.setattr(pretrained, "_model_file", lambda name: models / name)
    load_checkpoint(models / src.name)
    _flip_weight(models / src.name)
    with pytest.raises(CheckpointError, match="corrupted shipped model"):
        load_checkpoint(models / src.name, verify=False)  # shipped models are always verified
    assert _model_file is not pretrained._model_file
