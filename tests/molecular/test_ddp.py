"""DDP training: torchrun with 2 CPU processes (gloo) equals one process with the doubled batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from spacetime_md.molecular.model.pretrained import load_checkpoint
from spacetime_md.molecular.model.train_ddp import build_config, main
from spacetime_md.molecular.model.train_config import TrainConfig
from spacetime_md.molecular.model.training import train

from ._model_helpers import ALA_TYPES, _one_torch_thread, synthetic_dataset, write_synthetic_h5  # noqa: F401

TINY = dict(hidden_channels=12, n_layers=2, n_rbf=8, log_every=5, n_val=8, warmup_steps=2, lr=1e-2,
            checkpoint_every=10, num_threads=1)


def _losses(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], k): r[k] for r in lines for k in ("loss", "val_loss_ema") if k in r}


def _assert_same_curve(a, b, rtol=1e-4):
    la, lb = _losses(a), _losses(b)
    assert la.keys() == lb.keys() and len(la) >= 4
    for key in la:
        assert la[key] == pytest.approx(lb[key], rel=rtol), key


def _assert_same_weights(a, b, atol=1e-5):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=atol), name


@pytest.fixture
def single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_distributed_training_in_one_process_equals_plain_training(tmp_path, single_process_group):
    dataset = synthetic_dataset(100)
    plain = train(TrainConfig(data="", out=str(tmp_path / "plain"), steps=10, batch_size=8, **TINY),
                  dataset=dataset, atom_types=ALA_TYPES, progress=False)
    ddp = train(TrainConfig(data="", out=str(tmp_path / "ddp"), steps=10, batch_size=8, **TINY),
                dataset=dataset, atom_types=ALA_TYPES, progress=False, distributed=True)
    for p, q in zip(plain.model.parameters(), ddp.model.parameters()):
        assert torch.equal(p, q)
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "ddp")
    derived = json.loads((tmp_path / "ddp" / "config.json").read_text())["derived"]
    assert derived["world_size"] == 1
    # A single-process training state resumes under DDP (and continues the same run).
    longer = TrainConfig(data="", out=str(tmp_path / "plain"), steps=15, batch_size=8, **TINY)
    resumed = train(longer, dataset=dataset, atom_types=ALA_TYPES, progress=False, resume=True, distributed=True)
    assert resumed.step == 15 and load_checkpoint(tmp_path / "plain" / "model.pt").metadata["step"] == 15


def test_distributed_needs_a_process_group(tmp_path):
    with pytest.raises(ValueError, match="distributed: expected an initialised torch.distributed process group"):
        train(TrainConfig(data="", out=str(tmp_path), steps=1, **TINY), dataset=synthetic_dataset(20),
              atom_types=ALA_TYPES, progress=False, distributed=True)


def test_entry_point_options_and_errors(tmp_path, monkeypatch, capsys):
    (tmp_path / "base.json").write_text(json.dumps({"train_config": {"hidden_channels": 12, "batch_size": 4, "steps": 7}}))
    config, _ = build_config(["--data", "d", "--out", "o", "--config", str(tmp_path / "base.json"), "--batch-size", "6"])
    assert (config.hidden_channels, config.batch_size, config.steps) == (12, 6, 7)  # the command line wins
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert main(["--data", "d", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "environment: expected the torchrun variables" in err
    (tmp_path / "bad.json").write_text(json.dumps({"colour": 1}))
    assert main(["--data", "d", "--out", "o", "--config", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "--config: expected TrainConfig fields [" in err and "got unknown ['colour']" in err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert main(["--data", "d", "--out", "o", "--dry-run", "--steps", "3"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["backend"] == "gloo" and resolved["world_size"] == 2 and resolved["steps"] == 3


def _torchrun(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "spacetime_md.molecular.model.train_ddp", *args, "--config", str(tmp_path / "tiny.json"), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def h5_and_config(tmp_path):
    h5 = write_synthetic_h5(tmp_path / "data.h5", n_frames=100)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    return h5


def test_torchrun_two_processes_equal_one_process_with_doubled_batch(tmp_path, h5_and_config):
    h5 = h5_and_config
    proc = _torchrun(["--data", h5, "--out", str(tmp_path / "ddp"), "--steps", "20", "--batch-size", "8"], tmp_path)
    assert "trained 20 steps on 2 processes (gloo)" in proc.stdout
    single = train(TrainConfig(data=h5, out=str(tmp_path / "single"), steps=20, batch_size=16, **TINY), progress=False)
    _assert_same_curve(tmp_path / "ddp", tmp_path / "single")
    derived = json.loads((tmp_path / "ddp" / "config.json").read_text())["derived"]
    assert derived["world_size"] == 2 and derived["n_train"] == 90
    ddp_model = load_checkpoint(tmp_path / "ddp" / "model.pt")
    assert ddp_model.metadata["step"] == 20
    _assert_same_weights(ddp_model, single.model)
    # The DDP run's training state resumes in one process exactly like the single run's own.
    longer = dict(steps=25, batch_size=16, **TINY)
    from_ddp = train(TrainConfig(data=h5, out=str(tmp_path / "ddp"), **longer), progress=False, resume=True)
    from_single = train(TrainConfig(data=h5, out=str(tmp_path / "single"), **longer), progress=False, resume=True)
    assert from_ddp.step == from_single.step == 25
    _assert_same_weights(from_ddp.model, from_single.model)


@pytest.mark.slow
def test_torchrun_resumes_a_single_process_run(tmp_path, h5_and_config):
    h5 = h5_and_config
    train(TrainConfig(data=h5, out=str(tmp_path / "single"), steps=10, batch_size=16, **TINY), progress=False)
    shutil.copytree(tmp_path / "single", tmp_path / "ddp")
    _torchrun(["--data", h5, "--out", str(tmp_path / "ddp"), "--steps", "20", "--batch-size", "8", "--resume"], tmp_path)
    train(TrainConfig(data=h5, out=str(tmp_path / "single"), steps=20, batch_size=16, **TINY), progress=False, resume=True)
    _assert_same_curve(tmp_path / "ddp", tmp_path / "single")
    _assert_same_weights(load_checkpoint(tmp_path / "ddp" / "model.pt"), load_checkpoint(tmp_path / "single" / "model.pt"))
