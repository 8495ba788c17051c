"""Write trajectories in the format named by the file suffix, through mdtraj.

Formats: ``.pdb`` (text, 0.001 nm precision, topology included), ``.dcd`` (CHARMM/NAMD, float32
Angstrom), ``.xtc`` (GROMACS, compressed to 0.001 nm), ``.h5``/``.hdf5`` (mdtraj HDF5, float32,
topology included), ``.nc`` (AMBER NetCDF, float32 Angstrom). Binary formats other than HDF5 carry
no topology, so ``topology.pdb`` (first frame) is written beside them (and beside HDF5 too, for
tools that want a PDB). Every file is written to a temporary name in the target directory and
then moved into place, so a reader never sees a half-written file.

Coordinates are in nm: a bare array / tensor (nm), an ``openmm.unit.Quantity`` or an
``mdtraj.Trajectory``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm.unit as unit

from spacetime_md.molecular._io import atomic_path
from spacetime_md.molecular.system.units import NM

if TYPE_CHECKING:
    import mdtraj

__all__ = ["export_trajectory", "EXPORT_FORMATS", "TOPOLOGY_FILENAME"]

#: Suffix -> (mdtraj save method, writes a topology beside it, coordinate precision in nm).
EXPORT_FORMATS: dict[str, tuple[str, bool, float]] = {
    ".pdb": ("save_pdb", False, 1e-3),
    ".dcd": ("save_dcd", True, 1e-5),
    ".xtc": ("save_xtc", True, 1e-3),
    ".h5": ("save_hdf5", True, 1e-6),
    ".hdf5": ("save_hdf5", True, 1e-6),
    ".nc": ("save_netcdf", True, 1e-5),
}
TOPOLOGY_FILENAME = "topology.pdb"


def _to_mdtraj_topology(topology: Any) -> "mdtraj.Topology":
    import mdtraj
    import openmm.app as app

    if isinstance(topology, mdtraj.Topology):
        return topology
    if isinstance(topology, app.Topology):
        return mdtraj.Topology.from_openmm(topology)
    if hasattr(topology, "mdtraj_topology"):  # MolecularSystem
        return topology.mdtraj_topology
    if isinstance(topology, mdtraj.Trajectory):
        return topology.topology
    if isinstance(topology, (str, Path)):
        path = Path(topology)
        if not path.is_file():
            raise FileNotFoundError(f"topology: expected an existing PDB file, got {str(path)!r}")
        return mdtraj.load_topology(str(path))
    raise TypeError(
        "topology: expected an mdtraj.Topology, openmm.app.Topology, MolecularSystem or PDB path, "
        f"got {type(topology).__name__}"
    )


def export_trajectory(
    coordinates: Any,
    topology: Any,
    path: str | Path,
    *,
    time_ps: Any = None,
    write_topology: bool = True,
) -> Path:
    """Write coordinates as a trajectory file; the format follows the suffix of ``path``.

    Parameters
    ----------
    coordinates : ndarray, Tensor, Quantity or mdtraj.Trajectory, shape=(F, N, 3) or (N, 3)
        Positions in nm.
    topology : mdtraj.Topology, openmm.app.Topology, MolecularSystem or path to a PDB
    path : str or Path
        Output file; suffix one of :data:`EXPORT_FORMATS`.
    time_ps : array-like, shape=(F,), optional
        Frame times (ps); default 0, 1, 2, ...
    write_topology : bool
        Write ``topology.pdb`` beside formats without (or with a non-PDB) topology.

    Returns
    -------
    Path
        ``path``.
    """
    import mdtraj

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise ValueError(f"path: expected a suffix in {sorted(EXPORT_FORMATS)}, got {path.name!r}")
    top = _to_mdtraj_topology(topology)
    if isinstance(coordinates, mdtraj.Trajectory):
        x = coordinates.xyz
    elif unit.is_quantity(coordinates):
        if not coordinates.unit.is_compatible(NM):
            raise TypeError(f"coordinates: expected a length quantity (nm), got unit {coordinates.unit}")
        x = coordinates.value_in_unit(NM)
    else:
        if hasattr(coordinates, "detach"):
            coordinates = coordinates.detach().cpu().numpy()
        x = coordinates
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (top.n_atoms, 3):
        raise ValueError(f"coordinates: expected shape (F, {top.n_atoms}, 3) for this topology, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("coordinates: expected finite values, got NaN/inf")
    t = np.arange(len(x), dtype=np.float32) if time_ps is None else np.asarray(time_ps, dtype=np.float32)
    if t.shape != (len(x),):
        raise ValueError(f"time_ps: expected shape ({len(x)},), got {t.shape}")
    traj = mdtraj.Trajectory(x, top, time=t)
    method, needs_top, _ = EXPORT_FORMATS[suffix]
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # mdtraj recommends ".h5" over ".hdf5"; both are the same format.
        warnings.filterwarnings("ignore", message="The .h5 extension is recommended")
        getattr(traj, method)(str(tmp))
    if needs_top and write_topology:
        with atomic_path(path.with_name(TOPOLOGY_FILENAME)) as tmp:
            traj[0].save_pdb(str(tmp))
    return path
