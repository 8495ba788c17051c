"""export_trajectory: round trip through mdtraj for every format, topology beside binaries, errors."""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm.unit as unit
import pytest
import torch

from spacetime_md.molecular import EXPORT_FORMATS, export_trajectory, load_system


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def frames(system):
    rng = np.random.default_rng(3)
    return (system.positions_nm[None] + rng.normal(scale=0.02, size=(6, 22, 3))).astype(np.float32)


@pytest.mark.parametrize("suffix", sorted(EXPORT_FORMATS))
def test_round_trip(tmp_path, system, frames, suffix):
    path = export_trajectory(frames, system, tmp_path / f"traj{suffix}")
    assert path.exists()
    needs_top = EXPORT_FORMATS[suffix][1]
    assert (tmp_path / "topology.pdb").exists() == needs_top
    if suffix in (".pdb", ".h5", ".hdf5"):
        traj = mdtraj.load(str(path))
    else:
        traj = mdtraj.load(str(path), top=str(tmp_path / "topology.pdb"))
    precision = EXPORT_FORMATS[suffix][2]
    assert traj.n_frames == 6 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.xyz, frames, atol=precision)
    assert [a.name for a in traj.topology.atoms] == [a.name for a in system.mdtraj_topology.atoms]
    assert [r.name for r in traj.topology.residues] == ["ACE", "ALA", "NME"]
    # Nothing temporary left behind (atomic writes).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name] + (["topology.pdb"] if needs_top else []))


def test_inputs(tmp_path, system, frames):
    a = export_trajectory(frames[0] * 10 * unit.angstrom, system.topology, tmp_path / "one.h5")
    b = export_trajectory(torch.tensor(frames), system.mdtraj_topology, tmp_path / "all.dcd", time_ps=np.arange(6) * 0.5)
    assert mdtraj.load(str(a)).n_frames == 1
    t = mdtraj.load(str(b), top=str(tmp_path / "topology.pdb"))
    assert t.n_frames == 6
    c = export_trajectory(mdtraj.Trajectory(frames, system.mdtraj_topology), tmp_path / "topology.pdb", tmp_path / "x.xtc")
    assert mdtraj.load(str(c), top=str(tmp_path / "topology.pdb")).n_frames == 6


def test_errors(tmp_path, system, frames):
    with pytest.raises(ValueError, match=r"path: expected a suffix in \['.dcd', .*\], got 'traj.gro'"):
        export_trajectory(frames, system, tmp_path / "traj.gro")
    with pytest.raises(ValueError, match=r"coordinates: expected shape \(F, 22, 3\) for this topology, got \(6, 21, 3\)"):
        export_trajectory(frames[:, :21], system, tmp_path / "t.pdb")
    bad = frames.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="coordinates: expected finite values"):
        export_trajectory(bad, system, tmp_path / "t.pdb")
    with pytest.raises(TypeError, match="topology: expected an mdtraj.Topology"):
        export_trajectory(frames, 42, tmp_path / "t.pdb")
    with pytest.raises(FileNotFoundError, match="topology: expected an existing PDB file"):
        export_trajectory(frames, tmp_path / "missing.pdb", tmp_path / "t.pdb")
    with pytest.raises(TypeError, match="coordinates: expected a length quantity"):
        export_trajectory(frames * unit.second, system, tmp_path / "t.pdb")
    with pytest.raises(ValueError, match=r"time_ps: expected shape \(6,\)"):
        export_trajectory(frames, system, tmp_path / "t.pdb", time_ps=[0.0])
    assert not any(tmp_path.iterdir())
