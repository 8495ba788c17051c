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
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from spacetime_md import __version__
from spacetime_md._atomic import torch_save_atomic, write_json_atomic
from spacetime_md.core._validation import resolve_device
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.model.dataset import MolecularDataset, atom_types_from_topology
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser, center, to_model
from spacetime_md.molecular.model.pretrained import CHECKPOINT_VERSION, TRAINING_STATE_FORMAT, save_checkpoint
from spacetime_md.molecular.model.resume import (
    _check_resumed_data,
    _check_resumed_system,
    _data_fingerprint,
    _read_resume_state,
    _truncate_metrics,
)
from spacetime_md.molecular.model.train_config import (
    _RESUME_KEYS,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    TrainConfig,
)
from spacetime_md.molecular.model.train_system import _check_system_atoms, _load_data, _plain, _resolve

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "TrainResult",
    "train",
    "denoising_loss",
]

logger = logging.getLogger(__name__)


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
