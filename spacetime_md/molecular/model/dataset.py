"""Training data: any trajectory mdtraj reads, checked and split into training and held-out
frames (:func:`load_dataset`), and the atom types the model embeds.

Units: nm (mdtraj).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

__all__ = [
    "MolecularDataset",
    "load_dataset",
    "atom_types_from_topology",
]

logger = logging.getLogger(__name__)


@dataclass
class MolecularDataset:
    """Boltzmann samples split into training and held-out parts (coordinates in nm).

    Attributes
    ----------
    train_xyz, test_xyz : ndarray, shape=(n_frames, N, 3)
    topology : mdtraj.Topology
    source : str
        Where the samples came from (file names joined by ``", "``).
    sources : tuple of str
        The trajectory files, in the order their frames were concatenated.
    """

    train_xyz: np.ndarray
    test_xyz: np.ndarray
    topology: Any
    source: str = ""
    sources: tuple[str, ...] = ()

    @property
    def n_atoms(self) -> int:
        return int(self.train_xyz.shape[1])


#: Formats that carry their own topology: mdtraj reads them without ``top``.
_OWN_TOPOLOGY = (".h5", ".hdf5", ".lh5", ".pdb", ".pdb.gz", ".pdbx", ".pdbx.gz", ".cif", ".cif.gz", ".mmcif",
                 ".mmcif.gz", ".gro", ".mol2", ".arc", ".hoomdxml", ".gsd")
#: Coordinate-only formats collected from a data directory that holds no ``*.h5`` file.
_DIRECTORY_FORMATS = (".dcd", ".xtc", ".trr", ".nc", ".ncdf", ".netcdf")
_FORMAT_NAMES = {".dcd": "DCD", ".xtc": "XTC", ".trr": "TRR", ".nc": "NetCDF", ".ncdf": "NetCDF",
                 ".netcdf": "NetCDF", ".h5": "HDF5", ".hdf5": "HDF5", ".pdb": "PDB", ".pdb.gz": "PDB"}
#: Median bond length (nm) outside which coordinates are taken to be in the wrong unit.
_BOND_NM_RANGE = (0.04, 0.6)


def _readable_extensions() -> tuple[str, ...]:
    from mdtraj.formats.registry import FormatRegistry

    return tuple(sorted(FormatRegistry.loaders, key=len, reverse=True))


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in _readable_extensions():
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _format_name(ext: str) -> str:
    return _FORMAT_NAMES.get(ext, ext.lstrip(".").upper() or "no extension")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _directory_files(path: Path) -> list[Path]:
    candidates = sorted(p for p in path.glob("*.h5"))
    if len(candidates) > 1:
        preferred = [p for p in candidates if any(k in p.name for k in ("sample", "traj"))]
        if len(preferred) == 1:
            return preferred
        names = ", ".join(p.name for p in candidates)
        raise ValueError(f"data: expected one *.h5 trajectory in {str(path)!r}, got several ({names}); pass the file")
    if candidates:
        return candidates
    coordinates = sorted(p for p in path.iterdir() if p.is_file() and _extension(p) in _DIRECTORY_FORMATS)
    if coordinates:
        return coordinates
    pdbs = sorted(p for p in path.glob("*.pdb"))
    if pdbs:
        return pdbs
    raise FileNotFoundError(
        f"data: expected an mdtraj HDF5 trajectory (*.h5), or DCD/XTC/TRR/NetCDF/PDB files, in {str(path)!r}, "
        "found none"
    )


def _trajectory_files(data: Any) -> list[Path]:
    entries = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not entries:
        raise ValueError("data: expected at least one trajectory file or directory, got none")
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            files.extend(_directory_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"data: no such file or directory {str(path)!r}")
    return files


def _load_topology(top: Any, label: str | None = None) -> tuple[Any, str]:
    """``top`` (a path or an ``mdtraj.Topology``) as an mdtraj topology, and how to name it."""
    import mdtraj

    if isinstance(top, mdtraj.Topology):
        return top, label or "the given topology"
    path = Path(top)
    if not path.is_file():
        raise FileNotFoundError(f"top: expected an existing topology file (a PDB of the data's atoms), got {str(top)!r}")
    try:
        topology = mdtraj.load_topology(str(path))
    except Exception as exc:  # mdtraj raises assorted errors for unreadable files
        raise ValueError(
            f"top: expected a topology file mdtraj reads (PDB, ...), got {path.name} ({type(exc).__name__}: "
            f"{_one_line(exc)})"
        ) from None
    if topology.n_atoms == 0:
        raise ValueError(f"top: expected a topology with atoms, got none in {path.name}")
    return topology, f"--top {path.name}"


def _count_atoms(file: Path) -> int | None:
    """Atoms per frame of a coordinate file, read without a topology (``None`` if unknown)."""
    import mdtraj

    try:
        with mdtraj.open(str(file)) as handle:
            result = handle.read(n_frames=1)
    except Exception:  # format without a plain reader, unreadable file
        return None
    xyz = np.asarray(result[0] if isinstance(result, tuple) else result)
    return int(xyz.shape[1]) if xyz.ndim == 3 else None


def _read_trajectory(file: Path, topology: Any, top_label: str, stride: int) -> "mdtraj.Trajectory":
    import mdtraj

    ext = _extension(file)
    if ext not in _readable_extensions():
        raise ValueError(
            f"data: expected a trajectory file mdtraj reads (DCD, XTC, TRR, NetCDF, HDF5, PDB, ...), "
            f"got {file.name!r}"
        )
    own = ext in _OWN_TOPOLOGY
    if not own and topology is None:
        raise ValueError(
            f"data: {file.name} ({_format_name(ext)}) holds coordinates only; pass --top with a PDB of the same "
            "atoms (top= in Python), or --system"
        )
    try:
        if own:
            traj = mdtraj.load(str(file), stride=stride)
        else:
            traj = mdtraj.load(str(file), top=topology, stride=stride)
    except Exception as exc:  # mdtraj raises OSError, ValueError, IndexError, ... for bad files
        n_file = _count_atoms(file) if not own else None
        if n_file is not None and n_file != topology.n_atoms:
            raise ValueError(
                f"data: {file.name} has {n_file} atoms, expected {topology.n_atoms} (from {top_label})"
            ) from None
        raise ValueError(
            f"data: expected a readable {_format_name(ext)} trajectory, got {file.name} "
            f"({type(exc).__name__}: {_one_line(exc)})"
        ) from None
    if traj.n_frames == 0:
        raise ValueError(f"data: expected frames in {file.name}, got none")
    return traj


def _atom_mismatch(expected: Any, got: Any) -> str | None:
    """How topology ``got`` differs from ``expected`` (count, then element/name/residue), or ``None``."""
    if expected.n_atoms != got.n_atoms:
        return f"has {got.n_atoms} atoms, expected {expected.n_atoms}"

    def describe(atom) -> str:
        element = atom.element.symbol if atom.element is not None else "?"
        return f"{atom.residue.name}{atom.residue.resSeq} {atom.name} ({element})"

    for a, b in zip(expected.atoms, got.atoms):
        ea = a.element.symbol if a.element is not None else None
        eb = b.element.symbol if b.element is not None else None
        if (ea, a.name, a.residue.name) != (eb, b.name, b.residue.name):
            return f"has atom {a.index} = {describe(b)}, expected {describe(a)}"
    return None


def _check_coordinates(xyz: np.ndarray, topology: Any, label: str) -> None:
    """Finite coordinates with bond lengths in nm (not 10x off), else a one-line ``ValueError``."""
    finite = np.isfinite(xyz).all(axis=(1, 2))
    if not finite.all():
        frame = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"data: expected finite coordinates, got NaN or inf in frame {frame} of {label}")
    n_frames, n_atoms = xyz.shape[:2]
    if n_atoms < 2:
        return
    frames = xyz[np.unique(np.linspace(0, n_frames - 1, min(n_frames, 20)).astype(int))]
    bonds = np.array([[a.index, b.index] for a, b in topology.bonds], dtype=np.int64).reshape(-1, 2)
    if len(bonds):
        lengths = np.linalg.norm(frames[:, bonds[:, 0]] - frames[:, bonds[:, 1]], axis=-1)
        what = "bond length"
    else:  # no bonds in the topology: each atom's nearest neighbour stands in for its bond
        atoms = frames[:, : min(n_atoms, 500)]
        d = np.linalg.norm(atoms[:, :, None] - frames[:, None], axis=-1)
        idx = np.arange(atoms.shape[1])
        d[:, idx, idx] = np.inf
        lengths = d.min(-1)
        what = "nearest-neighbour distance"
    median = float(np.median(lengths))
    low, high = _BOND_NM_RANGE
    if median > high:
        raise ValueError(
            f"data: median {what} {median:.3g} nm in {label}, expected about 0.1-0.16 nm: the coordinates look "
            "like Angstrom written as nm (divide them by 10)"
        )
    if median < low:
        raise ValueError(
            f"data: median {what} {median:.3g} nm in {label}, expected about 0.1-0.16 nm: the coordinates look "
            "like nm written as Angstrom (multiply them by 10)"
        )


def load_dataset(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    holdout_fraction: float = 0.1,
    top: "str | os.PathLike | mdtraj.Topology | None" = None,
    stride: int = 1,
) -> MolecularDataset:
    """Read samples with mdtraj, check them, and hold out the last ``holdout_fraction`` of the frames.

    Parameters
    ----------
    path : path-like or sequence of path-like
        Trajectory file(s) mdtraj reads (DCD, XTC, TRR, NetCDF, HDF5, multi-model PDB, ...),
        concatenated in the given order, or directories: a directory gives its ``*.h5`` file
        (the layout written by the Boltzmann sampler; with several, the one named like
        ``sample``/``traj``), else all its DCD/XTC/TRR/NetCDF files sorted by name, else its
        PDB files.
    holdout_fraction : float
    top : path-like or mdtraj.Topology, optional
        Topology for formats without one (DCD, XTC, TRR, NetCDF): a PDB (or any topology file
        mdtraj reads) of the same atoms. Files with their own topology (HDF5, PDB) use theirs.
    stride : int
        Keep every ``stride``-th frame of each file.

    Raises
    ------
    FileNotFoundError
        A missing file or directory, or a directory without trajectories.
    ValueError
        An unreadable file, a coordinate-only file without ``top``, files whose atoms differ
        from ``top`` or from each other (the message names the count or the first differing
        atom), non-finite coordinates, bond lengths 10x off (Angstrom written as nm or the
        reverse), or fewer than 2 frames.
    """
    return _load_dataset(path, holdout_fraction, top, stride)


def _load_dataset(path: Any, holdout_fraction: float, top: Any, stride: int, top_label: str | None = None) -> MolecularDataset:
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction: expected a number in (0, 1), got {holdout_fraction!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride!r}")
    files = _trajectory_files(path)
    topology, top_label = _load_topology(top, top_label) if top is not None else (None, "")
    trajs = []
    for file in files:
        traj = _read_trajectory(file, topology, top_label, stride)
        reference, reference_label = (trajs[0].topology, files[0].name) if trajs else (topology, top_label)
        if reference is not None:
            mismatch = _atom_mismatch(reference, traj.topology)
            if mismatch is not None:
                raise ValueError(f"data: {file.name} {mismatch} (from {reference_label})")
        trajs.append(traj)
    xyz = np.concatenate([t.xyz for t in trajs]).astype(np.float64)
    label = files[0].name if len(files) == 1 else f"{len(files)} files ({files[0].name}, ...)"
    n_test = max(1, int(round(holdout_fraction * xyz.shape[0])))
    if xyz.shape[0] - n_test < 1:
        raise ValueError(f"data: expected at least 2 frames, got {xyz.shape[0]} in {label} (stride {stride})")
    _check_coordinates(xyz, trajs[0].topology, label)
    sources = tuple(str(f) for f in files)
    return MolecularDataset(xyz[:-n_test], xyz[-n_test:], trajs[0].topology, ", ".join(sources), sources)


def atom_types_from_topology(
    topology: "mdtraj.Topology", forcefield: str | Sequence[str] = "amber99sbildn.xml"
) -> list[str]:
    """AMBER atom types of every atom, from OpenMM's template matching for ``forcefield``.

    ``forcefield`` is a preset name (``"amber99sbildn"``), one OpenMM XML file or a sequence
    of them (a system's :attr:`~spacetime_md.molecular.MolecularSystem.forcefield_files`).
    Atoms are matched to template atoms by bond graph (OpenMM's residue matcher), so atom
    names need not follow the force field's naming. Falls back to element symbols (with a
    warning) when the force field has no template for a residue.
    """
    from openmm import app

    from spacetime_md.molecular.system.build import _resolve_forcefield

    omm_top = topology.to_openmm()
    try:
        files = _resolve_forcefield(forcefield, "vacuum") if isinstance(forcefield, str) else tuple(forcefield)
        ff = app.ForceField(*files)
        bonded_to = ff._buildBondedToAtomList(omm_top)
        types: list[str] = []
        for residue in omm_top.residues():
            template, matches = ff._getResidueTemplateMatches(residue, bonded_to)
            if matches is None:
                raise ValueError(f"no template for residue {residue.name} {residue.index}")
            types.extend(str(template.atoms[k].type) for k in matches)
    except Exception as exc:  # unmatched residues, unknown force-field file, API change
        logger.warning("atom types from %s failed (%s); using element symbols", forcefield, exc)
        return [atom.element.symbol for atom in topology.atoms]
    return types
