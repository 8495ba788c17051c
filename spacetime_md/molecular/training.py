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

Outputs in ``out``: ``config.json`` (resolved config and data summary), ``metrics.jsonl``
(one JSON line every ``log_every`` steps, plus validation lines), ``training_state.pt``
(everything needed to resume at the same step with the same random stream) and ``model.pt``
(EMA weights, loadable with :func:`~spacetime_md.molecular.load_checkpoint`). All writes are
atomic. Units: input trajectories in nm (mdtraj), everything else in model units.
"""

from __future__ import annotations

import copy
import dataclasses
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
from spacetime_md.molecular.model import DEFAULT_LENGTH_SCALE_NM, EquivariantDenoiser, center, to_model
from spacetime_md.molecular.pretrained import (
    CHECKPOINT_VERSION,
    TRAINING_STATE_FORMAT,
    read_checkpoint,
    save_checkpoint,
)
from spacetime_md import __version__

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

__all__ = [
    "TrainConfig",
    "TrainResult",
    "MolecularDataset",
    "load_dataset",
    "atom_types_from_topology",
    "train",
    "denoising_loss",
]

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"

#: Keys of TrainConfig that fix the architecture (must match when resuming).
_ARCH_KEYS = ("hidden_channels", "n_layers", "n_rbf", "rbf_cutoff", "chirality", "coord_gain", "max_hops")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Validated on construction.

    Attributes
    ----------
    data : str
        Directory (or file) with the Boltzmann samples, see :func:`load_dataset`.
    out : str
        Output directory.
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
    hidden_channels, n_layers, n_rbf, rbf_cutoff, chirality, coord_gain, max_hops
        Architecture of :class:`~spacetime_md.molecular.EquivariantDenoiser`.
    length_scale_nm : float
        ``x_model = x_nm / length_scale_nm`` (after centring).
    holdout_fraction : float
        The last fraction of the samples is held out (validation loss, evaluation).
    forcefield : str
        OpenMM force-field file used only to read AMBER atom types for node features.
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

    data: str
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
    length_scale_nm: float = DEFAULT_LENGTH_SCALE_NM
    holdout_fraction: float = 0.1
    forcefield: str = "amber99sbildn.xml"
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    log_every: int = 25
    checkpoint_every: int = 500
    n_val: int = 1024
    time_limit_s: float | None = None
    snapshot_every: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "hidden_channels", "n_layers", "n_rbf", "max_hops",
                     "log_every", "checkpoint_every", "n_val"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")
        for name in ("lr", "length_scale_nm", "rbf_cutoff", "coord_gain"):
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
        return {k: getattr(self, k) for k in _ARCH_KEYS}


@dataclass
class MolecularDataset:
    """Boltzmann samples split into training and held-out parts (coordinates in nm).

    Attributes
    ----------
    train_xyz, test_xyz : ndarray, shape=(n_frames, N, 3)
    topology : mdtraj.Topology
    source : str
        Where the samples came from.
    """

    train_xyz: np.ndarray
    test_xyz: np.ndarray
    topology: Any
    source: str = ""

    @property
    def n_atoms(self) -> int:
        return int(self.train_xyz.shape[1])


def _find_trajectory(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"data: no such file or directory {str(path)!r}")
    candidates = sorted(p for p in path.glob("*.h5"))
    if not candidates:
        raise FileNotFoundError(f"data: expected an mdtraj HDF5 trajectory (*.h5) in {str(path)!r}, found none")
    if len(candidates) > 1:
        preferred = [p for p in candidates if any(k in p.name for k in ("sample", "traj"))]
        if len(preferred) == 1:
            return preferred[0]
        names = ", ".join(p.name for p in candidates)
        raise ValueError(f"data: expected one *.h5 trajectory in {str(path)!r}, got several ({names}); pass the file")
    return candidates[0]


def load_dataset(path: str | os.PathLike, holdout_fraction: float = 0.1) -> MolecularDataset:
    """Read samples with mdtraj and hold out the last ``holdout_fraction`` of the frames.

    Parameters
    ----------
    path : path-like
        An mdtraj-readable trajectory with topology (HDF5), or a directory holding one
        ``*.h5`` file (the layout written by the Boltzmann sampler).
    holdout_fraction : float
    """
    import mdtraj

    file = _find_trajectory(Path(path))
    traj = mdtraj.load(str(file))
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction: expected a number in (0, 1), got {holdout_fraction!r}")
    n_test = max(1, int(round(holdout_fraction * traj.n_frames)))
    if traj.n_frames - n_test < 1:
        raise ValueError(f"data: expected at least 2 frames, got {traj.n_frames}")
    xyz = traj.xyz.astype(np.float64)
    return MolecularDataset(xyz[:-n_test], xyz[-n_test:], traj.topology, str(file))


def atom_types_from_topology(topology: "mdtraj.Topology", forcefield: str = "amber99sbildn.xml") -> list[str]:
    """AMBER atom types of every atom, from OpenMM's template matching for ``forcefield``.

    Atoms are matched to template atoms by bond graph (OpenMM's residue matcher), so atom
    names need not follow the force field's naming. Falls back to element symbols (with a
    warning) when the force field has no template for a residue.
    """
    from openmm import app

    omm_top = topology.to_openmm()
    try:
        ff = app.ForceField(forcefield)
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
    """

    model: EquivariantDenoiser
    step: int
    out: Path
    final_loss: float
    wall_time: float
    metrics: list[dict[str, Any]] = field(default_factory=list)


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
        Samples to use instead of reading ``config.data``.
    atom_types : sequence of str, optional
        Node labels; default AMBER atom types of the dataset's topology.
    resume : bool
        Continue from ``out/training_state.pt`` (same step count and random stream) if it
        exists. Without ``resume`` an existing state file is an error.
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
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    if state_path.exists() and not resume:
        raise ValueError(
            f"out: expected a directory without {STATE_FILE} (or resume=True / --resume), "
            f"got {str(out)!r} which already holds one"
        )
    device = resolve_device(config.device)
    from spacetime_md.molecular.ddp import ProcessGroupContext

    procs = ProcessGroupContext.from_default_group() if distributed else ProcessGroupContext.single()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)

    if dataset is None:
        dataset = load_dataset(config.data, config.holdout_fraction)
    if atom_types is None:
        atom_types = atom_types_from_topology(dataset.topology, config.forcefield)
    if len(atom_types) != dataset.n_atoms:
        raise ValueError(f"atom_types: expected {dataset.n_atoms} labels, got {len(atom_types)}")
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
    if max_new_steps is not None and (isinstance(max_new_steps, bool) or not isinstance(max_new_steps, int) or max_new_steps < 1):
        raise ValueError(f"max_new_steps: expected None or an integer >= 1, got {max_new_steps!r}")

    if resume and state_path.exists():
        payload = read_checkpoint(state_path)
        if payload["format"] != TRAINING_STATE_FORMAT:
            raise ValueError(f"out: expected {STATE_FILE} to be a training state, got format {payload['format']!r}")
        saved = payload.get("train_config", {})
        changed = [k for k in _ARCH_KEYS + ("length_scale_nm", "seed") if saved.get(k) != getattr(config, k)]
        if changed:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
            raise ValueError(f"resume: expected the same architecture, scaling and seed as the saved run, got {detail}")
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
    elif not resume and procs.is_main:
        (out / METRICS_FILE).unlink(missing_ok=True)

    resolved = {
        "train_config": config.to_dict(),
        "derived": {
            "sigma_data": sigma_data,
            "n_train": int(train_x.shape[0]),
            "n_test": int(test_x.shape[0]),
            "data_source": dataset.source,
            "atom_types": list(atom_types),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "spacetime_md_version": __version__,
            "torch_version": torch.__version__,
            "world_size": procs.world_size,
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
        }
        torch_save_atomic(payload, state_path)
        save_checkpoint(
            out / MODEL_FILE,
            ema,
            metadata={"step": step, "train_config": config.to_dict(), "sigma_data": sigma_data,
                      "wall_time_s": payload["wall_time"], "cpu_time_s": payload["cpu_time"]},
        )

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
                    metadata={"step": step, "train_config": config.to_dict(), "sigma_data": sigma_data,
                              "wall_time_s": wall_before + time.perf_counter() - start_time,
                              "cpu_time_s": cpu_before + time.process_time() - cpu_start},
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
    return TrainResult(ema, step, out, last_loss, wall, written)
