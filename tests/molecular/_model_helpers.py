"""Small shared fixtures for the equivariant-model tests (alanine dipeptide from openmmtools)."""

from __future__ import annotations

import functools
import os

import numpy as np

ALA_TYPES = ["710", "711", "710", "710", "712", "713", "0", "1", "2", "3", "4", "5", "5", "5",
             "6", "7", "706", "707", "708", "709", "709", "709"]
ALA_BONDS = [(1, 4), (4, 5), (0, 1), (1, 2), (1, 3), (4, 6), (8, 14), (14, 15), (8, 10), (8, 9),
             (6, 8), (10, 11), (10, 12), (10, 13), (6, 7), (14, 16), (18, 19), (18, 20), (18, 21),
             (16, 18), (16, 17)]


@functools.lru_cache(maxsize=1)
def alanine_pdb_path() -> str:
    import openmmtools

    return os.path.join(os.path.dirname(openmmtools.__file__), "data", "alanine-dipeptide-gbsa",
                        "alanine-dipeptide.pdb")


def alanine_trajectory():
    import mdtraj

    return mdtraj.load(alanine_pdb_path())


def synthetic_dataset(n_frames: int = 120, noise_nm: float = 0.01, seed: int = 0):
    """Frames = the PDB structure plus Gaussian noise (a stand-in for MD samples)."""
    from spacetime_md.molecular.model.dataset import MolecularDataset

    traj = alanine_trajectory()
    rng = np.random.default_rng(seed)
    xyz = traj.xyz[0].astype(np.float64) + noise_nm * rng.standard_normal((n_frames, traj.n_atoms, 3))
    n_test = max(1, n_frames // 10)
    return MolecularDataset(xyz[:-n_test], xyz[-n_test:], traj.topology, "synthetic")


def write_synthetic_h5(path, n_frames: int = 60, noise_nm: float = 0.01, seed: int = 0) -> str:
    import mdtraj

    traj = alanine_trajectory()
    rng = np.random.default_rng(seed)
    xyz = traj.xyz[0] + noise_nm * rng.standard_normal((n_frames, traj.n_atoms, 3)).astype(np.float32)
    mdtraj.Trajectory(xyz.astype(np.float32), traj.topology).save_hdf5(str(path))
    return str(path)


def tiny_model(dtype=None, chirality: bool = True, hidden: int = 16, layers: int = 2, **kwargs):
    import torch

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser

    model = EquivariantDenoiser(ALA_TYPES, ALA_BONDS, hidden_channels=hidden, n_layers=layers,
                                chirality=chirality, coord_gain=kwargs.pop("coord_gain", 0.5), **kwargs)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run the model tests single-threaded: on a shared, oversubscribed 2-core machine torch's
    intra-op threads spin against each other (measured: 45 ms vs 1600 ms per tiny training step)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
