"""Training loop: loss decreases, resume continues the same run, outputs, config checks, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spacetime_md.cli import main
from spacetime_md.errors import CheckpointError
from spacetime_md.molecular.model.pretrained import load_checkpoint
from spacetime_md.molecular.model.dataset import atom_types_from_topology, load_dataset
from spacetime_md.molecular.model.train_config import TrainConfig
from spacetime_md.molecular.model.training import denoising_loss, train

from ._model_helpers import _one_torch_thread, ALA_TYPES, alanine_trajectory, synthetic_dataset, write_synthetic_h5

TINY = dict(batch_size=16, hidden_channels=12, n_layers=2, n_rbf=8, log_every=5, n_val=8, warmup_steps=2)


def fixed_batch_loss(model, dataset, log_snr_range, seed=5, n=64):
    gen = torch.Generator().manual_seed(seed)
    x0 = model.to_model(dataset.train_xyz[:n]).float()
    low, high = log_snr_range
    log_snr = low + (high - low) * torch.rand(n, generator=gen)
    noise = torch.randn(n, 66, generator=gen)
    with torch.no_grad():
        return float(denoising_loss(model, x0, log_snr, noise)[0])


def test_tiny_training_run_decreases_the_loss(tmp_path):
    # Mid noise levels learn fastest (at low log_snr an equivariant model cannot beat the
    # rotation-averaged mean, so that part of the loss barely moves in a few steps).
    dataset = synthetic_dataset(200)
    common = dict(TINY, log_snr_min=0.0, log_snr_max=4.0, ema_decay=0.0)
    untrained = train(TrainConfig(data="", out=str(tmp_path / "zero"), steps=1, lr=1e-12, **common),
                      dataset=dataset, atom_types=ALA_TYPES, progress=False).model
    config = TrainConfig(data="", out=str(tmp_path / "run"), steps=30, lr=1e-2, checkpoint_every=30, **common)
    result = train(config, dataset=dataset, progress=False)
    before = fixed_batch_loss(untrained, dataset, (0.0, 4.0))
    after = fixed_batch_loss(result.model, dataset, (0.0, 4.0))
    assert after < 0.95 * before, f"loss went from {before:.4f} to {after:.4f}"
    assert result.step == 30
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [l for l in lines if "loss" in l]
    assert [l["step"] for l in train_lines] == list(range(5, 31, 5))
    assert any("val_loss_ema" in l for l in lines)
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["train_config"]["steps"] == 30 and resolved["derived"]["n_train"] == 180
    assert resolved["derived"]["atom_types"] == ALA_TYPES  # AMBER types read through OpenMM
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert model.metadata["step"] == 30


def test_resume_continues_the_same_run(tmp_path):
    dataset = synthetic_dataset(100)
    straight = train(TrainConfig(data="", out=str(tmp_path / "a"), steps=10, checkpoint_every=4, **TINY),
                     dataset=dataset, atom_types=ALA_TYPES, progress=False)
    config_b = TrainConfig(data="", out=str(tmp_path / "b"), steps=10, checkpoint_every=4, snapshot_every=5, **TINY)
    first = train(config_b, dataset=dataset, atom_types=ALA_TYPES, progress=False, max_new_steps=6)
    assert first.step == 6
    second = train(config_b, dataset=dataset, atom_types=ALA_TYPES, progress=False, resume=True)
    assert second.step == 10
    for p, q in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [5, 10]  # the lines of the interrupted run are kept, none duplicated
    state = torch.load(tmp_path / "b" / "training_state.pt", weights_only=True)
    assert state["step"] == 10
    assert load_checkpoint(tmp_path / "b" / "model_step000005.pt").metadata["step"] == 5
    assert (tmp_path / "b" / "model_step000010.pt").exists()
    # nothing left to do: resuming a finished run is a no-op at the same step
    assert train(config_b, dataset=dataset, atom_types=ALA_TYPES, progress=False, resume=True).step == 10


def test_focus_range_gets_the_training_noise_levels(tmp_path):
    dataset = synthetic_dataset(60)
    # All levels from the focus range [4, 6]: only the loss bin [3, 6.5) of the four logged
    # bins over [-4, 10] sees samples (the others report 0).
    focused = train(TrainConfig(data="", out=str(tmp_path / "f"), steps=5, focus_fraction=1.0,
                                focus_log_snr_min=4.0, focus_log_snr_max=6.0, **TINY),
                    dataset=dataset, atom_types=ALA_TYPES, progress=False)
    line = [l for l in focused.metrics if "loss_by_log_snr" in l][-1]
    assert line["log_snr_bin_edges"] == [-4.0, -0.5, 3.0, 6.5, 10.0]
    assert [v > 0 for v in line["loss_by_log_snr"]] == [False, False, True, False]
    # focus_fraction 0 is the plain recipe with the same random stream, whatever the range
    plain = train(TrainConfig(data="", out=str(tmp_path / "p"), steps=5, **TINY),
                  dataset=dataset, atom_types=ALA_TYPES, progress=False)
    off = train(TrainConfig(data="", out=str(tmp_path / "o"), steps=5, focus_log_snr_min=1.0, **TINY),
                dataset=dataset, atom_types=ALA_TYPES, progress=False)
    for p, q in zip(plain.model.parameters(), off.model.parameters()):
        assert torch.equal(p, q)


def test_compile_failure_falls_back_to_the_same_eager_run(tmp_path, monkeypatch, caplog):
    # A compiled model that cannot be built (no C++ compiler, unsupported op) must not end a
    # long run: the first step falls back to eager with a warning and the run is the eager one.
    dataset = synthetic_dataset(60)
    eager = train(TrainConfig(data="", out=str(tmp_path / "eager"), steps=6, **TINY),
                  dataset=dataset, atom_types=ALA_TYPES, progress=False)

    class BrokenCompiled:  # like torch's OptimizedModule: attributes come from the module
        def __init__(self, module):
            self.module = module

        def __getattr__(self, name):
            return getattr(self.module, name)

        def __call__(self, *args, **kwargs):
            raise RuntimeError("no working C++ compiler")

    def broken_compile(module, **kwargs):
        return BrokenCompiled(module)

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level("WARNING", logger="spacetime_md.molecular.model.training"):
        fallback = train(TrainConfig(data="", out=str(tmp_path / "fallback"), steps=6, compile=True, **TINY),
                         dataset=dataset, atom_types=ALA_TYPES, progress=False)
    assert "torch.compile failed (RuntimeError: no working C++ compiler); training uncompiled" in caplog.text
    assert fallback.step == 6
    for p, q in zip(eager.model.parameters(), fallback.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    # Real torch.compile (about a minute on the 2-core machine): same weights as eager up to
    # float reordering in the fused kernels.
    dataset = synthetic_dataset(60)
    runs = [train(TrainConfig(data="", out=str(tmp_path / str(c)), steps=5, compile=c, **TINY),
                  dataset=dataset, atom_types=ALA_TYPES, progress=False) for c in (False, True)]
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.allclose(p, q, atol=1e-4), float((p - q).abs().max())


def test_existing_run_needs_resume_and_same_architecture(tmp_path):
    dataset = synthetic_dataset(60)
    config = TrainConfig(data="", out=str(tmp_path), steps=2, **TINY)
    train(config, dataset=dataset, atom_types=ALA_TYPES, progress=False)
    with pytest.raises(ValueError, match="out: expected a directory without training_state.pt"):
        train(config, dataset=dataset, atom_types=ALA_TYPES, progress=False)
    changed = TrainConfig(data="", out=str(tmp_path), steps=4, **{**TINY, "hidden_channels": 8})
    with pytest.raises(ValueError, match="resume: expected the same architecture, scaling and seed as the saved run, got hidden_channels: 12 -> 8"):
        train(changed, dataset=dataset, atom_types=ALA_TYPES, progress=False, resume=True)
    (tmp_path / "training_state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        train(config, dataset=dataset, atom_types=ALA_TYPES, progress=False, resume=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps: expected an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size: expected an integer >= 1, got 2.5"),
        ({"lr": -1.0}, "lr: expected a finite number > 0, got -1.0"),
        ({"ema_decay": 1.0}, r"ema_decay: expected a number in \[0, 1\), got 1.0"),
        ({"log_snr_min": 3.0, "log_snr_max": 2.0}, "log_snr_max: expected a value > log_snr_min = 3.0, got 2.0"),
        ({"holdout_fraction": 0.0}, r"holdout_fraction: expected a number in \(0, 1\), got 0.0"),
        ({"device": "tpu"}, "device: expected 'cpu' or 'cuda', got 'tpu'"),
        ({"warmup_steps": -1}, "warmup_steps: expected an integer >= 0, got -1"),
        ({"final_lr_fraction": 0.0}, r"final_lr_fraction: expected a number in \(0, 1\], got 0.0"),
        ({"grad_clip": -1.0}, "grad_clip: expected a number >= 0, got -1.0"),
        ({"num_threads": 0}, "num_threads: expected None or an integer >= 1, got 0"),
        ({"time_limit_s": 0}, "time_limit_s: expected None or a number > 0, got 0"),
        ({"snapshot_every": 0}, "snapshot_every: expected None or an integer >= 1, got 0"),
        ({"compile": "yes"}, "compile: expected True or False, got 'yes'"),
        ({"compile": True, "graph": "sparse"}, "compile: not available with graph='sparse'"),
        ({"focus_fraction": 1.5}, r"focus_fraction: expected a number in \[0, 1\], got 1.5"),
        ({"focus_fraction": 0.5, "focus_log_snr_min": -6.0},
         r"expected log_snr_min <= min < max <= log_snr_max = \[-4.0, 10.0\], got \[-6.0, 5.0\]"),
    ],
)
def test_config_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data="d", out="o", **kwargs)


def test_train_argument_messages(tmp_path):
    with pytest.raises(TypeError, match="config: expected a TrainConfig, got dict"):
        train({}, progress=False)
    config = TrainConfig(data="", out=str(tmp_path), steps=2, **TINY)
    with pytest.raises(ValueError, match="atom_types: expected 22 labels, got 2"):
        train(config, dataset=synthetic_dataset(20), atom_types=["C", "H"], progress=False)
    with pytest.raises(ValueError, match="max_new_steps: expected None or an integer >= 1, got 0"):
        train(config, dataset=synthetic_dataset(20), progress=False, max_new_steps=0)
    if not torch.cuda.is_available():
        cuda = TrainConfig(data="", out=str(tmp_path / "c"), steps=2, device="cuda", **TINY)
        with pytest.raises(ValueError, match="sees no CUDA device"):
            train(cuda, dataset=synthetic_dataset(20), progress=False)


def test_load_dataset_split_and_messages(tmp_path):
    write_synthetic_h5(tmp_path / "samples.h5", n_frames=50)
    data = load_dataset(tmp_path, holdout_fraction=0.1)
    assert data.train_xyz.shape == (45, 22, 3) and data.test_xyz.shape == (5, 22, 3)
    assert data.n_atoms == 22
    with pytest.raises(FileNotFoundError, match="data: no such file or directory"):
        load_dataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"data: expected an mdtraj HDF5 trajectory \(\*.h5\)"):
        load_dataset(empty)
    write_synthetic_h5(tmp_path / "other.h5", n_frames=5)
    assert load_dataset(tmp_path).source.endswith("samples.h5")  # the one named like samples wins
    with pytest.raises(ValueError, match=r"data: expected one \*.h5 trajectory in .*, got several \(a.h5, b.h5\)"):
        load_dataset(_two_h5(tmp_path))
    with pytest.raises(ValueError, match=r"holdout_fraction: expected a number in \(0, 1\), got 1.5"):
        load_dataset(tmp_path / "samples.h5", holdout_fraction=1.5)


def _two_h5(tmp_path):
    d = tmp_path / "two"
    d.mkdir()
    write_synthetic_h5(d / "a.h5", n_frames=3)
    write_synthetic_h5(d / "b.h5", n_frames=3)
    return d


def test_atom_types(caplog):
    top = alanine_trajectory().topology
    assert atom_types_from_topology(top) == ALA_TYPES
    # a preset name or a system's force-field files (implicit solvent adds a GB file) give the same types
    assert atom_types_from_topology(top, "amber99sbildn") == ALA_TYPES
    assert atom_types_from_topology(top, ("amber99sbildn.xml", "amber99_obc.xml")) == ALA_TYPES
    fallback = atom_types_from_topology(top, forcefield="no_such_forcefield.xml")
    assert fallback[:2] == ["H", "C"]
    assert "using element symbols" in caplog.text


def test_cli_train_and_resume(tmp_path, capsys):
    data = write_synthetic_h5(tmp_path / "samples.h5", n_frames=40)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--out", str(out), "--steps", "3", "--seed", "1", "--no-progress",
            "--batch-size", "8", "--hidden-channels", "8", "--n-layers", "1", "--checkpoint-every", "2"]
    assert main(args + ["--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["hidden_channels"] == 8
    assert main(args) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert {"config.json", "metrics.jsonl", "model.pt", "training_state.pt"} <= {p.name for p in out.iterdir()}
    # the checkpoint records the system: the samples' atoms are the alanine-dipeptide preset's
    spec = load_checkpoint(out / "model.pt").metadata["system"]
    assert spec["name"] == "alanine-dipeptide" and spec["fingerprint"]["n_atoms"] == 22
    assert spec["forcefield_files"] == ["amber99sbildn.xml"] and [s["name"] for s in spec["states"]][:2] == ["C7eq", "C7ax"]
    assert main(args) == 2
    assert "expected a directory without training_state.pt" in capsys.readouterr().err
    assert main([*args[:6], "5", *args[7:], "--resume"]) == 0
    assert "trained 5 steps" in capsys.readouterr().out
    assert main(["train", "--data", data, "--out", str(out), "--lr", "-1", "--dry-run"]) == 2
    assert "lr: expected a finite number > 0, got -1.0" in capsys.readouterr().err
