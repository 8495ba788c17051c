"""Fixtures shared by the committor, OpenPathSampling, batch and kill/resume tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def system():
    from spacetime_md.molecular import load_system

    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def drive_path(system):
    """C7eq (-150, 160) -> C7ax (60, -40) through phi = 0 by restrained minimisations (24 frames);
    its relaxed barrier is near phi = -5 deg."""
    from spacetime_md.molecular.workflows.committor_run import compute_dihedral_drive_path

    return compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=24)


@pytest.fixture(scope="module")
def tiny_checkpoint(system, tmp_path_factory):
    """A small random (untrained) denoiser for the system, saved as a checkpoint file."""
    import torch

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.model.pretrained import save_checkpoint

    torch.manual_seed(0)
    model = EquivariantDenoiser(["X"] * system.n_atoms, system.bonds.tolist(), atom_names=list(system.atom_names),
                                hidden_channels=8, n_layers=1, n_rbf=4)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


@pytest.fixture(scope="module")
def paths_dir(system, drive_path, tmp_path_factory):
    """A directory laid out like `spacetime-md paths` output, holding the drive path as 'geodesic'."""
    import dataclasses
    import json

    out = tmp_path_factory.mktemp("paths")
    dataclasses.replace(drive_path, kind="geodesic").save(out, system)
    (out / "config.json").write_text(json.dumps({"command": "paths", "system": "alanine-dipeptide",
                                                 "solvent": "vacuum"}))
    return out
