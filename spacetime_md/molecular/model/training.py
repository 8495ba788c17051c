"""Training the equivariant denoiser on Boltzmann samples (VP diffusion in ``log_snr``).

Recipe
------
For a batch of clean centred samples ``x0`` (model units, see :mod:`.model`):

    log_snr ~ Uniform(log_snr_min, log_snr_max)            (default [-4, 10])
              or, with ``focus_fraction = f > 0``, a mixture: with probability f
              Uniform(focus_log_snr_min, focus_log_snr_max), else the full range
    eps     = P n,  n ~ N(0, I)                              (noise in the centred subspace)
    x_t     = alpha x0 + sigma eps
    loss    = mean_coords ((D(x_t, log_snr) - x0) / c_out)^2

i.e. x0-prediction with EDM's weighting ``1 / c_out^2``, under which the network's own target
has unit variance at every noise level. Adam with linear warm-up and cosine decay, gradient
clipping, and an exponential moving average (EMA) of the weights; the EMA weights are what
gets evaluated and shipped.

Data
----
Any trajectory mdtraj reads (:func:`load_dataset`): DCD, XTC, TRR, NetCDF, HDF5, multi-model
PDB, ...; several files, concatenated in order; or a directory (its ``*.h5`` file, as written
by ``spacetime-md sample``, else every DCD/XTC/TRR/NetCDF file in it by name, else its PDB
files). Formats without a topology need ``top`` (``--top``, a PDB of the same atoms); ``stride``
keeps every n-th frame. Frames are checked on reading: the same atoms in every file and in
``top``, finite coordinates, and bond lengths of about 0.1-0.16 nm (a trajectory 10x off says
it looks like Angstrom written as nm, or the reverse).

System
------
The checkpoint records the :class:`~spacetime_md.molecular.MolecularSystem` it was trained for
(``metadata["system"]`` = :meth:`~spacetime_md.molecular.MolecularSystem.spec`, read back by
:func:`~spacetime_md.molecular.model.pretrained.checkpoint_system`), so the paths commands need
nothing else. :func:`resolve_training_system` takes, in this order: ``config.system`` (a preset
name or a PDB, with ``forcefield``/``solvent``/``cvs``/``states``); the saved run's system when
resuming; ``system.json`` beside the data (written by the sampler); the ``top`` PDB; the data's
own topology (HDF5/PDB); data whose atoms are a shipped preset's (alanine dipeptide, in its atom
order) record that preset, states included. These last ones assume amber99sbildn in vacuum
unless ``forcefield`` / ``solvent`` are given, and say so in a warning. The system must parameterise and its atoms must
be the data's (count, then element, name and residue of each atom).

Outputs in ``out``: ``config.json`` (resolved config and data summary), ``metrics.jsonl``
(one JSON line every ``log_every`` steps, plus validation lines), ``training_state.pt``
(everything needed to resume at the same step with the same random stream, and the run's
fingerprint: sha256 of the training data, the data files, and the settings a resumed run must
keep; also in ``config.json`` under ``derived``) and ``model.pt``
(EMA weights, loadable with :func:`~spacetime_md.molecular.load_checkpoint`). ``out`` is created
only once the data and the system have passed their checks, so a failed start leaves nothing
behind. All writes are atomic. Units: input trajectories in nm (mdtraj), everything else in
model units.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from spacetime_md._atomic import torch_save_atomic, write_json_atomic, write_text_atomic
from spacetime_md.core._validation import resolve_device
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.model.denoiser import (
    DEFAULT_GRAPH_CUTOFF_NM, DEFAULT_LENGTH_SCALE_NM, GRAPHS, EquivariantDenoiser, center, to_model,
)
from spacetime_md.molecular.model.pretrained import (
    CHECKPOINT_VERSION,
    TRAINING_STATE_FORMAT,
    read_checkpoint,
    save_checkpoint,
)
from spacetime_md import __version__

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "TrainConfig",
    "TrainResult",
    "MolecularDataset",
    "load_dataset",
    "atom_types_from_topology",
    "resolve_training_system",
    "train",
    "denoising_loss",
]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
#: Written by the sampler beside its samples: the ``MolecularSystem.spec()`` of the data.
SYSTEM_FILE = "system.json"

#: Keys of TrainConfig that fix the architecture (must match when resuming).
_ARCH_KEYS = ("hidden_channels", "n_layers", "n_rbf", "rbf_cutoff", "chirality", "coord_gain", "max_hops")
#: The model's graph: part of the architecture; states saved before it existed were dense.
_GRAPH_KEYS = ("graph", "graph_cutoff_nm")
#: Architecture, scaling and seed: checked on resume even against the oldest training states.
_MODEL_KEYS = _ARCH_KEYS + ("length_scale_nm", "seed")
#: Every TrainConfig setting that changes what a run computes: a resumed run must keep them all.
#: Not here: ``steps`` (a run may be extended), the data paths (the data are compared by hash),
#: the system options (compared by :func:`_check_resumed_system`) and the settings that change
#: only how a run is executed or logged: out, device, num_threads, compile, log_every,
#: checkpoint_every, time_limit_s, snapshot_every.
_RESUME_KEYS = (
    "batch_size", "lr", "warmup_steps", "final_lr_fraction", "ema_decay", "grad_clip",
    "log_snr_min", "log_snr_max", "focus_fraction", "focus_log_snr_min", "focus_log_snr_max",
    *_MODEL_KEYS, "holdout_fraction", "stride", "n_val", *_GRAPH_KEYS,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Validated on construction.

    Attributes
    ----------
    data : str or list of str
        Trajectory file(s) or a directory with the Boltzmann samples, see :func:`load_dataset`
        (a tuple or path-like values are stored as a list of str / a str).
    out : str
        Output directory (created only when training starts).
    top : str or None
        Topology file (a PDB of the same atoms) for data formats without one (DCD, XTC, TRR,
        NetCDF); default: the system's topology when ``system`` or ``system.json`` gives one.
    stride : int
        Keep every ``stride``-th frame of each file.
    system : str or None
        A preset name (``"alanine-dipeptide"``) or a PDB file: the system recorded in the
        checkpoint. Default: see :func:`resolve_training_system`.
    forcefield : str or None
        Force-field preset (``amber99sbildn``, ``amber96``, ``amber14``) or comma-separated
        OpenMM XML files for a system built from a PDB or the data's topology (default
        amber99sbildn). Its templates give the AMBER atom types of the node features.
    solvent : str or None
        ``"vacuum"`` or ``"implicit"`` for a system built from a PDB (default vacuum).
    cvs, states : str or None
        Collective-variable and state files (JSON/YAML) recorded with the system.
    steps : int
        Total optimisation steps (a resumed run continues up to this number).
    batch_size : int
    lr : float
        Peak Adam learning rate; linear warm-up over ``warmup_steps``, then cosine decay to
        ``lr * final_lr_fraction``.
    ema_decay : float
        EMA decay (with the usual ``(1 + step) / (10 + step)`` warm-up).
    grad_clip : float
        Maximum global gradient norm (``0`` disables clipping).
    log_snr_min, log_snr_max : float
        Training noise levels, model units, drawn uniformly. Outside about [-4, 10] the
        preconditioned loss is nearly irreducible for this data (below: the posterior mean is
        the rotation-averaged mean; above: the noise is far below the thermal bond-length
        spread), so those levels would only add gradient noise.
    focus_fraction, focus_log_snr_min, focus_log_snr_max : float
        Draw this fraction of the training noise levels from the narrower uniform range
        ``[focus_log_snr_min, focus_log_snr_max]`` (inside the full range) instead (the loss
        is not reweighted: this changes which levels get trained, as EDM's ``p_train`` does).
        ``0`` (default) is the plain uniform recipe with an unchanged random stream. For
        alanine dipeptide the Ramachandran distribution is decided at log_snr 0-4: swapping
        the 24k-step model in for the 12k one only there moves the JSD 0.117 -> 0.091 of the
        0.117 -> 0.081 that swapping everywhere gives, below 0 it moves nothing (README).
        The validation loss stays uniform over the full range, so runs stay comparable.
    hidden_channels, n_layers, n_rbf, rbf_cutoff, chirality, coord_gain, max_hops, graph, graph_cutoff_nm
        Architecture of :class:`~spacetime_md.molecular.EquivariantDenoiser` (``graph``:
        ``"dense"`` all pairs, ``"sparse"`` bonded hops plus a smooth ``graph_cutoff_nm`` cutoff).
    length_scale_nm : float
        ``x_model = x_nm / length_scale_nm`` (after centring).
    holdout_fraction : float
        The last fraction of the samples is held out (validation loss, evaluation).
    seed : int
    device : str
        ``"cpu"`` or ``"cuda"``.
    num_threads : int or None
        ``torch.set_num_threads`` for the run (``None`` leaves it).
    log_every, checkpoint_every : int
    n_val : int
        Held-out samples in the fixed-noise validation loss.
    time_limit_s : float or None
        Stop (and checkpoint) after this many seconds of this invocation.
    snapshot_every : int or None
        Also keep the EMA weights every this many steps as ``model_step<N>.pt``.
    compile : bool
        Train through ``torch.compile`` (fused kernels; the same weights, checkpoints and
        random stream). Costs about 45-90 s of compilation at the start of each invocation;
        on the 2-core CPU machine a step is 1.45x faster on one thread and barely faster on
        two (README). If compilation fails (e.g. no C++ compiler), training goes on
        uncompiled with a warning.
    """

    data: str | list[str]
    out: str
    steps: int = 20000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    log_snr_min: float = -4.0
    log_snr_max: float = 10.0
    focus_fraction: float = 0.0
    focus_log_snr_min: float = 0.0
    focus_log_snr_max: float = 5.0
    hidden_channels: int = 32
    n_layers: int = 4
    n_rbf: int = 16
    rbf_cutoff: float = 6.0
    chirality: bool = True
    coord_gain: float = 1e-2
    max_hops: int = 3
    graph: str = "dense"
    graph_cutoff_nm: float = DEFAULT_GRAPH_CUTOFF_NM
    length_scale_nm: float = DEFAULT_LENGTH_SCALE_NM
    holdout_fraction: float = 0.1
    forcefield: str | None = None
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    log_every: int = 25
    checkpoint_every: int = 500
    n_val: int = 1024
    time_limit_s: float | None = None
    snapshot_every: int | None = None
    compile: bool = False
    top: str | None = None
    stride: int = 1
    system: str | None = None
    solvent: str | None = None
    cvs: str | None = None
    states: str | None = None

    def __post_init__(self) -> None:
        data = self.data
        if isinstance(data, os.PathLike):
            data = os.fspath(data)
        if isinstance(data, (list, tuple)):
            items = [os.fspath(d) if isinstance(d, os.PathLike) else d for d in data]
            if not items or not all(isinstance(d, str) and d for d in items):
                raise ValueError(f"data: expected a path or a non-empty list of paths, got {self.data!r}")
            data = items
        elif not isinstance(data, str):
            raise ValueError(f"data: expected a path or a list of paths, got {type(self.data).__name__}")
        object.__setattr__(self, "data", data)
        for name in ("top", "system", "forcefield", "cvs", "states"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}: expected None or a non-empty string, got {value!r}")
        if self.solvent is not None and self.solvent not in ("vacuum", "implicit"):
            raise ValueError(f"solvent: expected None, 'vacuum' or 'implicit', got {self.solvent!r}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride: expected an integer >= 1, got {self.stride!r}")
        for name in ("steps", "batch_size", "hidden_channels", "n_layers", "n_rbf", "max_hops",
                     "log_every", "checkpoint_every", "n_val"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")
        if self.graph not in GRAPHS:
            raise ValueError(f"graph: expected one of {', '.join(GRAPHS)}, got {self.graph!r}")
        for name in ("lr", "length_scale_nm", "rbf_cutoff", "coord_gain", "graph_cutoff_nm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a number in [0, 1), got {self.ema_decay!r}")
        if not 0.0 < self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction: expected a number in (0, 1], got {self.final_lr_fraction!r}")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip: expected a number >= 0, got {self.grad_clip!r}")
        if not self.log_snr_min < self.log_snr_max:
            raise ValueError(
                f"log_snr_max: expected a value > log_snr_min = {self.log_snr_min}, got {self.log_snr_max}"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction: expected a number in (0, 1), got {self.holdout_fraction!r}")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads: expected None or an integer >= 1, got {self.num_threads!r}")
        if self.snapshot_every is not None and (isinstance(self.snapshot_every, bool) or not isinstance(self.snapshot_every, int) or self.snapshot_every < 1):
            raise ValueError(f"snapshot_every: expected None or an integer >= 1, got {self.snapshot_every!r}")
        if not (isinstance(self.focus_fraction, (int, float)) and 0.0 <= self.focus_fraction <= 1.0):
            raise ValueError(f"focus_fraction: expected a number in [0, 1], got {self.focus_fraction!r}")
        if self.focus_fraction > 0 and not (
            self.log_snr_min <= self.focus_log_snr_min < self.focus_log_snr_max <= self.log_snr_max
        ):
            raise ValueError(
                f"focus_log_snr_min, focus_log_snr_max: expected log_snr_min <= min < max <= log_snr_max "
                f"= [{self.log_snr_min}, {self.log_snr_max}], got [{self.focus_log_snr_min}, {self.focus_log_snr_max}]"
            )
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile: expected True or False, got {self.compile!r}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s: expected None or a number > 0, got {self.time_limit_s!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def architecture(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*_ARCH_KEYS, *_GRAPH_KEYS)}


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


def _forcefield_choice(value: str | None) -> str | list[str]:
    """``None`` -> amber99sbildn; ``"amber14"`` stays a preset; ``"a.xml,b.xml"`` -> a list of files."""
    if value is None:
        return "amber99sbildn"
    parts = [v.strip() for v in str(value).split(",") if v.strip()]
    if not parts:
        raise ValueError(f"forcefield: expected a preset name or OpenMM XML files, got {value!r}")
    return parts[0] if len(parts) == 1 else parts


def _data_system_file(data: Any) -> Path | None:
    """The ``system.json`` beside the data (in a data directory, or beside a data file), if any."""
    entries = [data] if isinstance(data, str) else list(data)
    found: list[Path] = []
    for entry in entries:
        if not entry:
            continue
        path = Path(entry)
        candidate = (path if path.is_dir() else path.parent) / SYSTEM_FILE
        if candidate.is_file() and candidate.resolve() not in found:
            found.append(candidate.resolve())
    if len({f.read_text() for f in found}) > 1:
        names = ", ".join(str(f) for f in found)
        raise ValueError(f"data: expected one recorded system, got different {SYSTEM_FILE} files ({names}); pass --system")
    return found[0] if found else None


def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with numpy scalars and arrays as plain Python (JSON and ``weights_only`` loadable)."""

    def convert(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"system spec: expected JSON-serialisable values, got {type(value).__name__}")

    return json.loads(json.dumps(spec, default=convert))


def _apply_cv_files(system: "MolecularSystem", config: TrainConfig) -> "MolecularSystem":
    from spacetime_md.molecular.system.build import resolve_system

    if config.cvs is None and config.states is None:
        return system
    return resolve_system(system, cvs=config.cvs, states=config.states)


def _check_recorded(system: "MolecularSystem", config: TrainConfig, where: str) -> None:
    """A ``forcefield``/``solvent`` given with a recorded system must be the recorded one."""
    from spacetime_md.molecular.system.build import _resolve_forcefield

    if config.solvent is not None and config.solvent != system.solvent:
        raise ValueError(
            f"solvent: {where} records {system.solvent!r}, got {config.solvent!r}; pass --system too to change it"
        )
    if config.forcefield is not None:
        files = _resolve_forcefield(_forcefield_choice(config.forcefield), system.solvent)
        if tuple(files) != tuple(system.forcefield_files):
            raise ValueError(
                f"forcefield: {where} records {list(system.forcefield_files)}, got {list(files)}; pass --system "
                "too to change it"
            )


def _declared_system(config: TrainConfig, saved_spec: dict[str, Any] | None) -> tuple["MolecularSystem | None", str]:
    """The system named by the config, the resumed run or ``system.json``; ``(None, "")`` if none."""
    from spacetime_md.molecular.system.build import MolecularSystem, resolve_system

    for name in ("cvs", "states"):
        value = getattr(config, name)
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{name}: expected an existing file, got {value!r}")
    if config.system is not None:
        if config.system.lower().endswith(".pdb") and not Path(config.system).is_file():
            raise FileNotFoundError(f"system: expected a preset name or an existing PDB file, got {config.system!r}")
        system = resolve_system(
            config.system, solvent=config.solvent or "vacuum", forcefield=_forcefield_choice(config.forcefield),
            cvs=config.cvs, states=config.states,
        )
        return system, f"--system {config.system}"
    if saved_spec is not None:
        system = MolecularSystem.from_spec(saved_spec)
        _check_recorded(system, config, "the resumed run")
        return _apply_cv_files(system, config), "the resumed run"
    spec_file = _data_system_file(config.data)
    if spec_file is None:
        return None, ""
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"data: expected {SYSTEM_FILE} to be JSON, got a parse error in {spec_file}: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"data: expected {spec_file} to hold a system spec object, got {type(spec).__name__}")
    system = MolecularSystem.from_spec(spec)
    _check_recorded(system, config, str(spec_file))
    return _apply_cv_files(system, config), str(spec_file)


def _pdb_text(topology: "mdtraj.Topology", xyz_nm: np.ndarray) -> str:
    import io

    from openmm import app, unit

    buf = io.StringIO()
    app.PDBFile.writeFile(topology.to_openmm(), np.asarray(xyz_nm) * 10.0 * unit.angstrom, buf, keepIds=True)
    return buf.getvalue()


def _matching_preset(topology: "mdtraj.Topology") -> str | None:
    """The shipped preset (e.g. ``"alanine-dipeptide"``, with its states) whose atoms are ``topology``'s."""
    import mdtraj

    from spacetime_md.molecular.system.build import KNOWN_SYSTEMS, system_data_path

    for name, entry in sorted(KNOWN_SYSTEMS.items()):
        try:
            preset = mdtraj.load_topology(str(system_data_path(entry["pdb"])))
        except Exception:  # a preset file missing from an installation must not stop training
            continue
        if _atom_mismatch(preset, topology) is None:
            return name
    return None


def _system_from_data(config: TrainConfig, dataset: MolecularDataset) -> tuple["MolecularSystem", str]:
    """The system of the ``top`` PDB or of the data's own topology, with the configured force field.

    Atoms identical to a shipped preset's (alanine dipeptide) give that preset, states included.
    """
    import tempfile

    from spacetime_md.molecular.system.build import MolecularSystem, resolve_system

    forcefield = _forcefield_choice(config.forcefield)
    solvent = config.solvent or "vacuum"
    options = dict(forcefield=forcefield, solvent=solvent, cvs=config.cvs, states=config.states or ())
    first = Path(dataset.sources[0]) if dataset.sources else Path(dataset.source or "data")
    top = Path(config.top) if config.top is not None else None
    preset = _matching_preset(dataset.topology)
    try:
        if preset is not None:
            how = f"the preset {preset} (the data's atoms are its atoms)"
            system = resolve_system(preset, solvent=solvent, forcefield=forcefield, cvs=config.cvs,
                                    states=config.states)
        elif top is not None and _extension(top) == ".pdb":
            how = f"--top {top.name}"
            system = MolecularSystem.from_pdb(top, **options)
        else:
            how = f"the topology of {top.name if top is not None else first.name}"
            name = (top or first).name.split(".")[0] or "data"
            with tempfile.TemporaryDirectory() as tmp:
                pdb = Path(tmp) / f"{name}.pdb"
                pdb.write_text(_pdb_text(dataset.topology, dataset.train_xyz[0]))
                system = MolecularSystem.from_pdb(pdb, name=name, **options)
            system.source_pdb = None
    except ValueError as exc:
        raise ValueError(f"system from {how}: {exc}; pass --system your.pdb (and --forcefield)") from None
    if config.forcefield is None or config.solvent is None:
        logger.warning(
            "system: built from %s with %s in %s, assumed (pass --system, --forcefield, --solvent to choose)",
            how, list(system.forcefield_files), system.solvent,
        )
    return system, how


def _check_system_atoms(system: "MolecularSystem", how: str, dataset: MolecularDataset) -> None:
    mismatch = _atom_mismatch(system.mdtraj_topology, dataset.topology)
    if mismatch is not None:
        label = ", ".join(Path(s).name for s in dataset.sources) or dataset.source or "the dataset"
        raise ValueError(f"data: {label} {mismatch} (from the system {system.name}, {how})")


def _load_data(config: TrainConfig, system: "MolecularSystem | None", how: str) -> MolecularDataset:
    """``config.data`` with ``config.top``, else the system's topology for formats without one."""
    if config.top is not None or system is None:
        return _load_dataset(config.data, config.holdout_fraction, config.top, config.stride)
    return _load_dataset(config.data, config.holdout_fraction, system.mdtraj_topology, config.stride,
                         top_label=f"the system {system.name}, {how}")


def _resolve(
    config: TrainConfig, dataset: MolecularDataset | None, saved_spec: dict[str, Any] | None = None
) -> tuple["MolecularSystem", str, MolecularDataset]:
    system, how = _declared_system(config, saved_spec)
    if dataset is None:
        dataset = _load_data(config, system, how)
    if system is None:
        system, how = _system_from_data(config, dataset)
    _check_system_atoms(system, how, dataset)
    return system, how, dataset


def resolve_training_system(config: TrainConfig, dataset: MolecularDataset | None = None) -> "MolecularSystem":
    """The :class:`~spacetime_md.molecular.MolecularSystem` a training run records in its checkpoint.

    In this order: ``config.system`` (a preset name or a PDB, with ``forcefield``, ``solvent``,
    ``cvs``, ``states``); ``system.json`` beside the data (``MolecularSystem.spec()``, written
    by the sampler; ``cvs``/``states`` still apply, a different ``forcefield``/``solvent`` is an
    error); the shipped preset whose atoms are the data's (alanine dipeptide, with its states);
    the ``top`` PDB; the data's own topology (HDF5, PDB) written out as a PDB. The last three
    use ``forcefield`` (default amber99sbildn) and ``solvent`` (default vacuum) and warn when
    they were assumed.

    Parameters
    ----------
    config : TrainConfig
    dataset : MolecularDataset, optional
        The samples (default: read ``config.data`` with ``top`` and ``stride``); the system's
        atoms must be theirs.

    Raises
    ------
    ValueError
        A system the force field cannot parameterise, or atoms that differ from the data's
        (the message names the count or the first differing atom).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    return _resolve(config, dataset)[0]


def denoising_loss(
    model: EquivariantDenoiser,
    x0: Tensor,
    log_snr: Tensor,
    noise: Tensor,
) -> tuple[Tensor, Tensor]:
    """Per-sample x0-prediction loss ``mean_coords ((D(x_t) - x0) / c_out)^2``.

    Parameters
    ----------
    model : EquivariantDenoiser
    x0 : Tensor, shape=(B, 3N)
        Centred clean samples (model units).
    log_snr : Tensor, shape=(B,)
    noise : Tensor, shape=(B, 3N)
        Standard normal noise; it is projected onto the centred subspace here.

    Returns
    -------
    loss : Tensor, shape=()
    per_sample : Tensor, shape=(B,)
    """
    alpha, sigma = alpha_sigma(log_snr)
    x_t = alpha.unsqueeze(-1) * x0 + sigma.unsqueeze(-1) * center(noise)
    _, _, c_out = model.preconditioning(log_snr)
    denoised = model(x_t, log_snr)
    per_sample = ((denoised - x0) / c_out.unsqueeze(-1)).pow(2).mean(-1)
    return per_sample.mean(), per_sample


@dataclass
class TrainResult:
    """Returned by :func:`train`.

    Attributes
    ----------
    model : EquivariantDenoiser
        EMA weights, eval mode.
    step : int
        Steps done in total (including resumed ones).
    out : Path
    final_loss : float
        Mean training loss over the last logging window.
    wall_time : float
        Seconds of training in total (over all resumed invocations).
    metrics : list of dict
        The lines written to ``metrics.jsonl`` by this invocation.
    system : MolecularSystem or None
        The system recorded in the checkpoints (``metadata["system"]``).
    """

    model: EquivariantDenoiser
    step: int
    out: Path
    final_loss: float
    wall_time: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
    system: Any = None


def _check_resumed_system(saved_spec: dict[str, Any], system: "MolecularSystem") -> None:
    """Resuming must keep the saved run's atoms, force field and solvent (CVs and states may change)."""
    saved = saved_spec.get("fingerprint") or {}
    now = system.fingerprint()
    changed = [k for k in ("n_atoms", "forcefield_files", "solvent", "constraints") if k in saved and saved[k] != now[k]]
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"resume: expected the system of the saved run ({saved_spec.get('name')}), got {detail}")


def _data_fingerprint(dataset: MolecularDataset) -> dict[str, Any]:
    """sha256 of the frames a run trains and validates on: float32 nm after stride and hold-out.

    The shapes are hashed too, so the same frames split differently give another hash.
    """
    digest = hashlib.sha256()
    for name, xyz in (("train", dataset.train_xyz), ("test", dataset.test_xyz)):
        digest.update(f"{name} {[int(n) for n in xyz.shape]}\n".encode())
        for start in range(0, xyz.shape[0], 4096):
            digest.update(np.ascontiguousarray(xyz[start:start + 4096], dtype="<f4").tobytes())
    return {
        "sha256": digest.hexdigest(),
        "train_shape": [int(n) for n in dataset.train_xyz.shape],
        "test_shape": [int(n) for n in dataset.test_xyz.shape],
        "files": list(dataset.sources),
    }


def _describe_data(fingerprint: dict[str, Any]) -> str:
    n_frames = int(fingerprint["train_shape"][0]) + int(fingerprint["test_shape"][0])
    text = f"sha256 {fingerprint['sha256'][:12]}..., {n_frames} frames"
    names = [Path(f).name for f in fingerprint.get("files") or ()]
    if names:
        text += f" ({', '.join(names)})" if len(names) <= 3 else f" ({', '.join(names[:2])}, ... {len(names)} files)"
    return text


def _legacy_world_size(out: Path) -> int:
    """Processes of a run whose training state has no fingerprint (from its ``config.json``; else 1)."""
    try:
        return int(json.loads((out / CONFIG_FILE).read_text())["derived"]["world_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _read_resume_state(config: TrainConfig, world_size: int = 1) -> dict[str, Any]:
    """The training state in ``config.out``, its settings checked against ``config``'s.

    Raises ``ValueError`` when there is no state to continue or when a setting that changes
    what the run computes (:data:`_RESUME_KEYS`; ``batch_size`` as the global batch over
    ``world_size`` processes) differs from the saved run's; the message names each field with
    its saved and its new value. A state written before fingerprints existed is checked
    against the settings it recorded (its ``train_config``).
    """
    state_path = Path(config.out) / STATE_FILE
    if not state_path.exists():
        raise ValueError(f"resume: expected {state_path} to continue, found none; drop --resume to start a new run")
    payload = read_checkpoint(state_path)
    if payload["format"] != TRAINING_STATE_FORMAT:
        raise ValueError(f"out: expected {STATE_FILE} to be a training state, got format {payload['format']!r}")
    fingerprint = payload.get("fingerprint")
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("settings"), dict):
        saved, saved_world = fingerprint["settings"], int(fingerprint.get("world_size", 1))
    else:  # before fingerprints: the recorded config (older ones lack the newer keys)
        recorded = payload.get("train_config") or {}
        saved = {k: recorded[k] for k in _RESUME_KEYS if k in recorded}
        saved.update({k: recorded.get(k) for k in _MODEL_KEYS})
        saved_world = _legacy_world_size(state_path.parent)
    saved = {"graph": "dense", **saved}  # states from before the sparse graph were dense
    unused = ("focus_log_snr_min", "focus_log_snr_max") if not saved.get("focus_fraction") and not config.focus_fraction else ()
    if saved["graph"] == "dense" and config.graph == "dense":
        unused += ("graph_cutoff_nm",)
    changed = []
    for key in _RESUME_KEYS:
        if key not in saved or key in unused:
            continue
        old, new = saved[key], getattr(config, key)
        if key == "batch_size":  # the global batch: DDP runs and single-process runs resume each other
            if old is None or old * saved_world != new * world_size:
                changed.append((key, _batch_text(old, saved_world), _batch_text(new, world_size)))
        elif old != new:
            changed.append((key, repr(old), repr(new)))
    if changed:
        what = "architecture, scaling and seed" if all(k in _MODEL_KEYS for k, _, _ in changed) else "training settings"
        detail = ", ".join(f"{k}: {old} -> {new}" for k, old, new in changed)
        values = "value" if len(changed) == 1 else "values"
        raise ValueError(
            f"resume: expected the same {what} as the saved run, got {detail} (saved in {state_path}); "
            f"start a new --out or pass the original {values}"
        )
    return payload


def _batch_text(batch_size: Any, world_size: int) -> str:
    return repr(batch_size) if world_size == 1 else f"{batch_size!r} x {world_size} processes"


def _check_resumed_data(payload: dict[str, Any], data: dict[str, Any], state_path: Path) -> None:
    """Resuming must train on the saved run's frames (by hash); a state without a hash gets a warning."""
    saved = (payload.get("fingerprint") or {}).get("data")
    if not isinstance(saved, dict) or "sha256" not in saved:
        logger.warning(
            "resume: %s was written without a fingerprint of its training data (spacetime_md %s); whether "
            "the data are the saved run's cannot be checked", state_path, payload.get("spacetime_md_version", "unknown"),
        )
        return
    if saved["sha256"] != data["sha256"]:
        raise ValueError(
            f"resume: expected the same training data as the saved run, got data: {_describe_data(saved)} -> "
            f"{_describe_data(data)} (saved in {state_path}); start a new --out or pass the original data"
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric lines of steps <= ``step`` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _lr_at(config: TrainConfig, step: int) -> float:
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    low = config.lr * config.final_lr_fraction
    return low + 0.5 * (config.lr - low) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def _validation_loss(model: EquivariantDenoiser, x0: Tensor, log_snr: Tensor, noise: Tensor, chunk: int = 256) -> float:
    total = 0.0
    for start in range(0, x0.shape[0], chunk):
        sl = slice(start, start + chunk)
        _, per_sample = denoising_loss(model, x0[sl], log_snr[sl], noise[sl])
        total += float(per_sample.sum())
    return total / x0.shape[0]


def train(
    config: TrainConfig,
    *,
    dataset: MolecularDataset | None = None,
    system: "MolecularSystem | None" = None,
    atom_types: Sequence[str] | None = None,
    resume: bool = False,
    max_new_steps: int | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Train (or resume training) an :class:`EquivariantDenoiser`.

    Parameters
    ----------
    config : TrainConfig
    dataset : MolecularDataset, optional
        Samples to use instead of reading ``config.data`` (with ``config.top`` and ``stride``).
    system : MolecularSystem, optional
        The system to record in the checkpoints (``metadata["system"]``); its atoms must be
        the data's. Default: :func:`resolve_training_system` (the saved one when resuming).
    atom_types : sequence of str, optional
        Node labels; default AMBER atom types of the dataset's topology from the system's
        force-field files.
    resume : bool
        Continue from ``out/training_state.pt`` (same step count and random stream). The saved
        run's fingerprint must match: the training data (sha256 of the frames after stride and
        hold-out) and every setting that changes what the run computes (optimiser, schedule,
        noise levels, architecture, scaling, split, seed; ``steps`` may grow), else
        ``ValueError`` naming each differing field; a state written before fingerprints existed
        resumes with a warning that its data cannot be checked. ``resume`` without a state file
        is a ``ValueError``, and so is an existing state file without ``resume``.
    max_new_steps : int, optional
        Stop this invocation after this many steps (the state is saved; resume later).
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        Called with every metrics dictionary written to ``metrics.jsonl``.
    distributed : bool
        Data-parallel training over the initialised default ``torch.distributed`` process
        group (launched by ``torchrun``, see :mod:`.train_ddp`): ``batch_size`` is per
        process, every process draws the same global batch and trains on its slice, DDP
        averages the gradients, and only rank 0 writes files.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if max_new_steps is not None and (isinstance(max_new_steps, bool) or not isinstance(max_new_steps, int) or max_new_steps < 1):
        raise ValueError(f"max_new_steps: expected None or an integer >= 1, got {max_new_steps!r}")
    out = Path(config.out)
    state_path = out / STATE_FILE
    if state_path.exists() and not resume:
        raise ValueError(
            f"out: expected a directory without {STATE_FILE} (or resume=True / --resume), "
            f"got {str(out)!r} which already holds one"
        )
    device = resolve_device(config.device)
    from spacetime_md.molecular.model.ddp import ProcessGroupContext

    procs = ProcessGroupContext.from_default_group() if distributed else ProcessGroupContext.single()
    # Settings are checked before the data are read, the data (by hash) before anything is written.
    payload = _read_resume_state(config, procs.world_size) if resume else None
    saved_spec = (payload.get("metadata") or {}).get("system") if payload is not None else None

    # Data and system are checked before anything is written: a failed start leaves no folder.
    if system is None:
        system, how, dataset = _resolve(config, dataset, saved_spec)
    else:
        how = "the system argument"
        if dataset is None:
            dataset = _load_data(config, system, how)
        _check_system_atoms(system, how, dataset)
    if saved_spec is not None:
        _check_resumed_system(saved_spec, system)
    fingerprint = {
        "data": _data_fingerprint(dataset),
        "settings": {k: getattr(config, k) for k in _RESUME_KEYS},
        "world_size": procs.world_size,
    }
    if payload is not None:
        _check_resumed_data(payload, fingerprint["data"], state_path)
    system_spec = _plain(system.spec())
    if atom_types is None:
        atom_types = atom_types_from_topology(dataset.topology, system.forcefield_files)
    if len(atom_types) != dataset.n_atoms:
        raise ValueError(f"atom_types: expected {dataset.n_atoms} labels, got {len(atom_types)}")

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    train_x = to_model(dataset.train_xyz, config.length_scale_nm).to(torch.float32)
    test_x = to_model(dataset.test_xyz, config.length_scale_nm).to(torch.float32)
    sigma_data = float(train_x.pow(2).mean().sqrt())
    bonds = [(b[0].index, b[1].index) for b in dataset.topology.bonds]
    atom_names = [a.name for a in dataset.topology.atoms]

    # Same seed -> same initial weights, batches and noise, independent of global RNG use.
    torch.manual_seed(config.seed)
    model = EquivariantDenoiser(
        atom_types,
        bonds,
        sigma_data=sigma_data,
        length_scale_nm=config.length_scale_nm,
        atom_names=atom_names,
        **config.architecture(),
    )
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    wall_before = 0.0
    cpu_before = 0.0

    out.mkdir(parents=True, exist_ok=True)
    if payload is not None:
        model.load_state_dict(payload["state_dict"])
        ema.load_state_dict(payload["ema_state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator_state"])
        step = int(payload["step"])
        wall_before = float(payload.get("wall_time", 0.0))
        cpu_before = float(payload.get("cpu_time", 0.0))
        if procs.is_main:
            _truncate_metrics(out / METRICS_FILE, step)
        logger.info("resumed from %s at step %d", state_path, step)
    elif procs.is_main:
        (out / METRICS_FILE).unlink(missing_ok=True)

    resolved = {
        "train_config": config.to_dict(),
        "derived": {
            "sigma_data": sigma_data,
            "n_train": int(train_x.shape[0]),
            "n_test": int(test_x.shape[0]),
            "data_source": dataset.source,
            "data_files": list(dataset.sources),
            "system": {
                "name": system.name,
                "from": how,
                "n_atoms": system.n_atoms,
                "forcefield_files": list(system.forcefield_files),
                "solvent": system.solvent,
                "cvs": list(system.cvs.names),
                "states": [st.name for st in system.states],
            },
            "atom_types": list(atom_types),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "spacetime_md_version": __version__,
            "torch_version": torch.__version__,
            "world_size": procs.world_size,
            "fingerprint": fingerprint,
        },
    }
    if procs.is_main:
        write_json_atomic(out / CONFIG_FILE, resolved, sort_keys=True)

    val_gen = torch.Generator().manual_seed(config.seed + 1)
    n_val = min(config.n_val, test_x.shape[0])
    val_idx = torch.randperm(test_x.shape[0], generator=val_gen)[:n_val]
    val_x0 = test_x[val_idx].to(device)
    val_log_snr = (config.log_snr_min + (config.log_snr_max - config.log_snr_min)
                   * torch.rand(n_val, generator=val_gen)).to(device)
    val_noise = torch.randn(n_val, train_x.shape[1], generator=val_gen).to(device)
    train_x = train_x.to(device)

    def save_state() -> None:
        if not procs.is_main:
            return
        payload = {
            "format": TRAINING_STATE_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "spacetime_md_version": __version__,
            "model_config": model.config,
            "state_dict": model.state_dict(),
            "ema_state_dict": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator_state": generator.get_state(),
            "step": step,
            "wall_time": wall_before + (time.perf_counter() - start_time),
            "cpu_time": cpu_before + (time.process_time() - cpu_start),
            "train_config": config.to_dict(),
            "fingerprint": fingerprint,
            "metadata": {"step": step, "system": system_spec},
        }
        torch_save_atomic(payload, state_path)
        save_checkpoint(out / MODEL_FILE, ema, metadata=checkpoint_metadata(payload["wall_time"], payload["cpu_time"]))

    def checkpoint_metadata(wall_time: float, cpu_time: float) -> dict[str, Any]:
        return {"step": step, "train_config": config.to_dict(), "sigma_data": sigma_data,
                "wall_time_s": wall_time, "cpu_time_s": cpu_time, "system": system_spec}

    written: list[dict[str, Any]] = []

    def emit(record: dict[str, Any]) -> None:
        if not procs.is_main:
            return
        with open(out / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        written.append(record)
        if callback is not None:
            callback(record)

    bar = None
    if progress and procs.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc="train", dynamic_ncols=True)

    n_bins = 4
    edges = torch.linspace(config.log_snr_min, config.log_snr_max, n_bins + 1)
    window_loss, window_n = 0.0, 0
    bin_sum = torch.zeros(n_bins, dtype=torch.float64)
    bin_n = torch.zeros(n_bins, dtype=torch.float64)
    last_loss = float("nan")
    start_time = time.perf_counter()
    cpu_start = time.process_time()
    window_start = start_time
    first_step = step
    saved_step = -1
    model.train()
    train_model = procs.wrap(model, device)
    eager_model = train_model
    if config.compile:
        train_model = torch.compile(train_model, dynamic=False)
    n_draw = config.batch_size * procs.world_size  # the global batch; this process uses its slice
    try:
        while step < config.steps:
            if config.time_limit_s is not None and procs.any(time.perf_counter() - start_time > config.time_limit_s):
                logger.info("time limit of %.0f s reached at step %d", config.time_limit_s, step)
                break
            if max_new_steps is not None and step - first_step >= max_new_steps:
                break
            idx = torch.randint(train_x.shape[0], (n_draw,), generator=generator)
            log_snr = config.log_snr_min + (config.log_snr_max - config.log_snr_min) * torch.rand(
                n_draw, generator=generator
            )
            if config.focus_fraction > 0:
                focused = torch.rand(n_draw, generator=generator) < config.focus_fraction
                narrow = config.focus_log_snr_min + (config.focus_log_snr_max - config.focus_log_snr_min) * torch.rand(
                    n_draw, generator=generator
                )
                log_snr = torch.where(focused, narrow, log_snr)
            noise = torch.randn(n_draw, train_x.shape[1], generator=generator)
            if procs.distributed:
                mine = procs.local_slice(config.batch_size)
                idx, log_snr, noise = idx[mine], log_snr[mine], noise[mine]
            lr = _lr_at(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = (train_x[idx.to(device)], log_snr.to(device), noise.to(device))
            try:
                loss, per_sample = denoising_loss(train_model, *batch)
            except Exception as exc:  # no compiler, unsupported op: an optimisation must not end the run
                if train_model is eager_model or step != first_step:
                    raise
                logger.warning("torch.compile failed (%s: %s); training uncompiled", type(exc).__name__, exc)
                train_model = eager_model
                loss, per_sample = denoising_loss(train_model, *batch)
            if not procs.all_finite(loss):
                from spacetime_md.errors import NonFiniteError

                raise NonFiniteError(f"training loss became {float(loss)} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            else:
                grad_norm = float(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None)))
            optimizer.step()
            step += 1
            decay = min(config.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1.0 - decay)

            window_loss += float(loss.detach())
            window_n += 1
            which = torch.bucketize(log_snr, edges[1:-1])
            bin_sum.index_add_(0, which, per_sample.detach().cpu().double())
            bin_n.index_add_(0, which, torch.ones_like(bin_sum[which]))
            if bar is not None:
                bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                last_loss = procs.mean(window_loss / window_n)
                procs.sum_(bin_sum)
                procs.sum_(bin_n)
                record = {
                    "step": step,
                    "loss": last_loss,
                    "loss_by_log_snr": (bin_sum / bin_n.clamp_min(1)).tolist(),
                    "log_snr_bin_edges": edges.tolist(),
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "samples_per_s": window_n * n_draw / max(now - window_start, 1e-9),
                    "wall_time_s": wall_before + now - start_time,
                    "cpu_time_s": cpu_before + time.process_time() - cpu_start,
                }
                emit(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                window_loss, window_n, window_start = 0.0, 0, now
                bin_sum.zero_()
                bin_n.zero_()
            if (step % config.checkpoint_every == 0 or step == config.steps) and procs.is_main:
                ema.eval()
                val = _validation_loss(ema, val_x0, val_log_snr, val_noise)
                emit({"step": step, "val_loss_ema": val, "wall_time_s": wall_before + time.perf_counter() - start_time})
                save_state()
                saved_step = step
            if config.snapshot_every is not None and step % config.snapshot_every == 0 and procs.is_main:
                save_checkpoint(
                    out / f"model_step{step:06d}.pt",
                    ema,
                    metadata=checkpoint_metadata(wall_before + time.perf_counter() - start_time,
                                                 cpu_before + time.process_time() - cpu_start),
                )
    finally:
        if bar is not None:
            bar.close()
    if window_n:
        last_loss = procs.mean(window_loss / window_n)
    if saved_step != step:
        save_state()
    procs.barrier()
    wall = wall_before + time.perf_counter() - start_time
    ema.eval()
    return TrainResult(ema, step, out, last_loss, wall, written, system)
