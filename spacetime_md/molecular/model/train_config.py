"""The settings of a training run (:class:`TrainConfig`) and the file names it writes.

Units: lengths in nm (``length_scale_nm``, ``graph_cutoff_nm``); ``log_snr`` dimensionless.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spacetime_md.molecular.model.denoiser import DEFAULT_GRAPH_CUTOFF_NM, DEFAULT_LENGTH_SCALE_NM, GRAPHS

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "TrainConfig",
]

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
        uncompiled with a warning. Dense graph only: with ``graph="sparse"`` it raises
        ``ValueError`` (the edge count changes every step; docs/scaling.md has the measurement).
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
        if self.compile and self.graph == "sparse":
            # Measured on the tetrapeptide (docs/scaling.md): static shapes recompile every step until
            # torch's limit (3 min for 30 steps), dynamic shapes run slower than eager.
            raise ValueError(
                "compile: not available with graph='sparse' (its edge count changes every step, so "
                "torch.compile recompiles or runs slower than eager); train the sparse graph uncompiled"
            )
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s: expected None or a number > 0, got {self.time_limit_s!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def architecture(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*_ARCH_KEYS, *_GRAPH_KEYS)}
