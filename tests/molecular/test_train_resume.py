"""``train --resume`` continues only the same run: same data (by hash) and settings, an existing state."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from spacetime_md.cli import main
from spacetime_md.molecular.model.train_config import TrainConfig
from spacetime_md.molecular.model.training import train

from ._model_helpers import _one_torch_thread, write_synthetic_h5  # noqa: F401

TINY = dict(hidden_channels=8, n_layers=1, batch_size=8, checkpoint_every=100)
TINY_ARGS = ["--hidden-channels", "8", "--n-layers", "1", "--batch-size", "8", "--checkpoint-every", "100",
             "--no-progress"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished 2-step run on 40 noisy alanine-dipeptide frames (refused resumes leave it unchanged)."""
    root = tmp_path_factory.mktemp("resume")
    data = write_synthetic_h5(root / "samples.h5", n_frames=40)
    other = write_synthetic_h5(root / "other.h5", n_frames=9, seed=1)
    out = root / "run"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(data=data, out=str(out), steps=2, **TINY), progress=False)
    finally:
        torch.set_num_threads(previous)
    return {"data": data, "other": other, "out": out, "root": root}


def _config(run, **changes):
    return TrainConfig(**{"data": run["data"], "out": str(run["out"]), "steps": 4, **TINY, **changes})


def test_the_run_records_its_fingerprint(saved_run):
    state = torch.load(saved_run["out"] / "training_state.pt", weights_only=True)
    fingerprint = state["fingerprint"]
    assert len(fingerprint["data"]["sha256"]) == 64
    assert fingerprint["data"]["train_shape"] == [36, 22, 3] and fingerprint["data"]["test_shape"] == [4, 22, 3]
    assert fingerprint["data"]["files"] == [saved_run["data"]]
    assert fingerprint["settings"]["lr"] == 2e-3 and fingerprint["settings"]["batch_size"] == 8
    assert fingerprint["world_size"] == 1
    assert not {"steps", "out", "device", "num_threads", "compile", "checkpoint_every"} & set(fingerprint["settings"])
    derived = json.loads((saved_run["out"] / "config.json").read_text())["derived"]
    assert derived["fingerprint"] == fingerprint


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": 1e-3}, "expected the same training settings as the saved run, got lr: 0.002 -> 0.001 (saved in "),
        ({"batch_size": 4}, "got batch_size: 8 -> 4 (saved in "),
        ({"ema_decay": 0.99}, "got ema_decay: 0.999 -> 0.99 (saved in "),
        ({"log_snr_max": 8.0}, "got log_snr_max: 10.0 -> 8.0 (saved in "),
        ({"stride": 2}, "got stride: 1 -> 2 (saved in "),
        ({"seed": 1}, "expected the same architecture, scaling and seed as the saved run, got seed: 0 -> 1"),
        ({"lr": 1e-3, "batch_size": 4}, "got batch_size: 8 -> 4, lr: 0.002 -> 0.001 (saved in "),
        ("other", "expected the same training data as the saved run, got data: sha256 "),
    ],
    ids=["lr", "batch_size", "ema_decay", "log_snr_max", "stride", "seed", "two", "data"],
)
def test_a_changed_setting_or_other_data_is_refused_by_name(saved_run, changes, message):
    config = _config(saved_run, data=saved_run["other"]) if changes == "other" else _config(saved_run, **changes)
    before = {p.name: p.stat().st_mtime_ns for p in saved_run["out"].iterdir()}
    with pytest.raises(ValueError, match="^resume: ") as info:
        train(config, progress=False, resume=True)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.endswith("start a new --out or pass the original " + (
        "data" if changes == "other" else "values" if len(changes) > 1 else "value"))
    if changes == "other":
        assert ", 40 frames (samples.h5) -> sha256 " in text and ", 9 frames (other.h5)" in text
    assert {p.name: p.stat().st_mtime_ns for p in saved_run["out"].iterdir()} == before  # nothing written


def test_cli_names_the_changed_setting_in_one_line(saved_run, capsys):
    args = ["train", "--data", saved_run["data"], "--out", str(saved_run["out"]), "--steps", "4", *TINY_ARGS]
    assert main([*args, "--resume", "--lr", "0.001", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "got lr: 0.002 -> 0.001 (saved in " in err
    assert main([*args, "--resume", "--data", saved_run["other"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expected the same training data as the saved run" in err


def test_extending_the_steps_continues_from_the_saved_step(saved_run, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(saved_run["out"], out)
    with caplog.at_level(logging.INFO, logger="spacetime_md.molecular.model.training"):
        result = train(_config(saved_run, out=str(out), steps=4, num_threads=1, checkpoint_every=3),
                       progress=False, resume=True)
    assert "at step 2" in caplog.text and result.step == 4
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 2, 3, 4, 4]  # 2: the saved run's loss + validation; then this run's
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == 4


def test_global_batch_decides_across_process_counts(saved_run, tmp_path):
    # A state of 2 processes x 4 resumes as 1 process x 8 (the same global batch), not as 1 x 4.
    out = tmp_path / "run"
    shutil.copytree(saved_run["out"], out)
    state = torch.load(out / "training_state.pt", weights_only=True)
    state["fingerprint"]["settings"]["batch_size"] = 4
    state["fingerprint"]["world_size"] = 2
    torch.save(state, out / "training_state.pt")
    with pytest.raises(ValueError, match=r"got batch_size: 4 x 2 processes -> 4 \(saved in "):
        train(_config(saved_run, out=str(out), batch_size=4), progress=False, resume=True)
    assert train(_config(saved_run, out=str(out), steps=3), progress=False, resume=True).step == 3


def test_resume_without_a_state_is_refused(tmp_path, capsys):
    data = write_synthetic_h5(tmp_path / "samples.h5", n_frames=40)
    out = tmp_path / "new"
    expected = f"resume: expected {out / 'training_state.pt'} to continue, found none; drop --resume to start a new run"
    with pytest.raises(ValueError) as info:
        train(TrainConfig(data=data, out=str(out), steps=2, **TINY), progress=False, resume=True)
    assert str(info.value) == expected
    for extra in ([], ["--dry-run"]):
        assert main(["train", "--data", data, "--out", str(out), "--steps", "2", *TINY_ARGS, "--resume", *extra]) == 2
        assert capsys.readouterr().err.strip().endswith(expected)
    assert not out.exists()


def test_a_state_without_fingerprint_resumes_with_a_warning(saved_run, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(saved_run["out"], out)
    state = torch.load(out / "training_state.pt", weights_only=True)
    del state["fingerprint"]
    torch.save(state, out / "training_state.pt")
    # its recorded settings are still compared
    with pytest.raises(ValueError, match="got lr: 0.002 -> 0.001"):
        train(_config(saved_run, out=str(out), lr=1e-3), progress=False, resume=True)
    with caplog.at_level(logging.WARNING, logger="spacetime_md.molecular.model.resume"):
        result = train(_config(saved_run, out=str(out), steps=3), progress=False, resume=True)
    assert result.step == 3
    assert "was written without a fingerprint of its training data" in caplog.text
    assert "cannot be checked" in caplog.text
    assert "fingerprint" in torch.load(out / "training_state.pt", weights_only=True)  # recorded from now on
