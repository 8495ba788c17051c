"""Diffusion denoisers for data on a torus (periodic coordinates), torch only.

For data on a torus of periods ``P`` unwrapped periodically into ``R^D``, the exact VP
denoiser is equivariant under lattice shifts:

    D(x + alpha * P_i e_i, lambda) = D(x, lambda) + P_i e_i.

:class:`PeriodicDenoiser` holds this by construction,

    D(x, lambda) = x / alpha - sigma * F_theta(phi(x / alpha), lambda),

with ``phi`` periodic features (``sin``/``cos`` of ``k * 2 pi (u - lower) / P`` for
``k = 1..K``) and ``F_theta`` an MLP. Since ``x_t = alpha x_0 + sigma eps``, the noise
prediction is ``eps_theta = alpha * F_theta`` and training minimises the standard epsilon
loss ``|alpha F_theta - eps|^2`` on wrapped data: regressing on periodic features of
``x_t / alpha`` gives the same target as the periodic extension of the data, so the exact
minimiser is the periodic denoiser. With the ``sigma`` scaling the correction vanishes at
low SNR, where the exact periodic denoiser tends to ``x / alpha``.

:class:`ExactPeriodicDenoiser` computes ``E[x_0 | x_t]`` by quadrature for a density
``exp(-U)`` given on a periodic grid (summing periodic images): a test oracle and the
reference for measuring a trained model's error.

Shapes: B batch, D dimensions (2 for the (phi, psi) landscape), M quadrature nodes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from spacetime_md.core._validation import check_positive, check_tensor
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.errors import CheckpointError, NonFiniteError

__all__ = [
    "PeriodicModelConfig",
    "PeriodicDenoiser",
    "PeriodicTrainConfig",
    "TrainResult",
    "train_periodic_denoiser",
    "evaluate_denoiser_error",
    "ExactPeriodicDenoiser",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicModelConfig:
    """Architecture of :class:`PeriodicDenoiser`.

    Parameters
    ----------
    dim : int
        Data dimension ``D``.
    lower, period : tuple of float
        Fundamental cell ``[lower, lower + period)`` per coordinate (default ``[-pi, pi)``).
    n_frequencies : int
        Harmonics ``k = 1..K`` of the periodic features.
    hidden : int
        MLP width.
    n_layers : int
        Hidden layers.
    n_time_frequencies : int
        Fourier features of ``log_snr`` (plus ``log_snr / time_scale`` itself).
    time_scale : float
        Scale of ``log_snr`` in the time embedding.
    """

    dim: int = 2
    lower: tuple[float, ...] = (-math.pi, -math.pi)
    period: tuple[float, ...] = (2 * math.pi, 2 * math.pi)
    n_frequencies: int = 8
    hidden: int = 192
    n_layers: int = 4
    n_time_frequencies: int = 8
    time_scale: float = 8.0

    def __post_init__(self):
        object.__setattr__(self, "lower", tuple(float(v) for v in self.lower))
        object.__setattr__(self, "period", tuple(float(v) for v in self.period))
        for name in ("dim", "n_frequencies", "hidden", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if isinstance(self.n_time_frequencies, bool) or not isinstance(self.n_time_frequencies, int) or self.n_time_frequencies < 0:
            raise ValueError(f"n_time_frequencies: expected an integer >= 0, got {self.n_time_frequencies!r}")
        if len(self.lower) != self.dim or len(self.period) != self.dim:
            raise ValueError(
                f"lower and period: expected {self.dim} values each, got {len(self.lower)} and {len(self.period)}"
            )
        for p in self.period:
            check_positive("period", p)
        check_positive("time_scale", self.time_scale)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PeriodicDenoiser(nn.Module):
    """Lattice-equivariant VP denoiser ``D(x, lambda) = x/alpha - sigma F(phi(x/alpha), lambda)``.

    A core denoiser: ``forward(x (B, D), log_snr (B,)) -> (B, D)``. :meth:`eps` gives the
    noise prediction ``alpha * F``. Parameters are float32 by default; inputs of another
    dtype are cast and the output is returned in the input dtype.
    """

    def __init__(self, config: PeriodicModelConfig | None = None):
        super().__init__()
        config = PeriodicModelConfig() if config is None else config
        if not isinstance(config, PeriodicModelConfig):
            raise TypeError(f"config: expected a PeriodicModelConfig, got {type(config).__name__}")
        self.config = config
        self.register_buffer("lower", torch.tensor(config.lower))
        self.register_buffer("period", torch.tensor(config.period))
        self.register_buffer("harmonics", torch.arange(1, config.n_frequencies + 1, dtype=torch.float32))
        self.register_buffer(
            "time_freqs", torch.pi * torch.arange(1, config.n_time_frequencies + 1, dtype=torch.float32) / 2.0
        )
        n_in = 2 * config.dim * config.n_frequencies + 2 * config.n_time_frequencies + 1
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, u: Tensor, log_snr: Tensor) -> Tensor:
        """Periodic features of ``u = x / alpha`` and the ``log_snr`` embedding, ``(B, n_in)``."""
        dtype = u.dtype
        theta = 2 * torch.pi * (u - self.lower.to(dtype)) / self.period.to(dtype)  # (B, D)
        arg = theta.unsqueeze(-1) * self.harmonics.to(dtype)  # (B, D, K)
        parts = [arg.sin().flatten(1), arg.cos().flatten(1)]
        lam = (log_snr.to(dtype) / self.config.time_scale).unsqueeze(-1)
        parts.append(lam)
        if self.config.n_time_frequencies:
            targ = lam * self.time_freqs.to(dtype)
            parts += [targ.sin(), targ.cos()]
        return torch.cat(parts, dim=-1)

    def correction(self, x: Tensor, log_snr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(F, alpha, sigma)`` with ``F (B, D)`` and scales ``(B, 1)``, in the input dtype.

        Scales, ``x / alpha`` and the features are computed in the input dtype (float64 keeps
        them finite far outside the trained ``log_snr`` range, e.g. during line searches);
        only the MLP runs in the model dtype.
        """
        log_snr = log_snr.to(x.dtype)
        alpha, sigma = alpha_sigma(log_snr)
        alpha, sigma = alpha.unsqueeze(-1), sigma.unsqueeze(-1)
        feats = self.features(x / alpha, log_snr)
        out = self.head(self.body(feats.to(self.head.weight.dtype)))
        return out.to(x.dtype), alpha, sigma

    def eps(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """Noise prediction ``alpha * F``, shape ``(B, D)``."""
        out, alpha, _ = self.correction(x, log_snr)
        return alpha * out

    def forward(self, x: Tensor, log_snr: Tensor) -> Tensor:
        out, alpha, sigma = self.correction(x, log_snr)
        return x / alpha - sigma * out

    # -- checkpoints ------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write config and weights (atomically) to ``path``."""
        import os

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"kind": "PeriodicDenoiser", "config": self.config.to_dict(), "state_dict": self.state_dict(),
                    "extra": extra or {}}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "PeriodicDenoiser":
        """Load a model written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint: expected an existing file, got {str(path)!r}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # corrupt / truncated file
            raise CheckpointError(f"checkpoint {path.name}: expected a torch checkpoint, got an unreadable file ({exc})") from exc
        if not isinstance(blob, dict) or blob.get("kind") != "PeriodicDenoiser":
            kind = blob.get("kind") if isinstance(blob, dict) else type(blob).__name__
            raise CheckpointError(f"checkpoint {path.name}: expected kind 'PeriodicDenoiser', got {kind!r}")
        model = cls(PeriodicModelConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
        return model


@dataclass(frozen=True)
class PeriodicTrainConfig:
    """Training of :class:`PeriodicDenoiser` with the epsilon loss.

    ``log_snr`` is drawn uniformly from ``[min_log_snr, max_log_snr]``; AdamW with a cosine
    learning-rate decay to ``lr * final_lr_fraction``; an exponential moving average of the
    weights (``ema_decay``; 0 disables it) is what the returned model holds.
    """

    n_steps: int = 4000
    batch_size: int = 2048
    lr: float = 2e-3
    weight_decay: float = 0.0
    final_lr_fraction: float = 0.02
    min_log_snr: float = -5.0
    max_log_snr: float = 9.0
    ema_decay: float = 0.995
    seed: int = 0
    log_every: int = 200

    def __post_init__(self):
        for name in ("n_steps", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("final_lr_fraction", self.final_lr_fraction, allow_zero=True)
        if not self.min_log_snr < self.max_log_snr:
            raise ValueError(
                f"min_log_snr, max_log_snr: expected min < max, got {self.min_log_snr} and {self.max_log_snr}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a number in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """Outcome of :func:`train_periodic_denoiser`: the (EMA) model and its loss history."""

    model: PeriodicDenoiser
    history: list[dict[str, float]]
    n_steps: int
    wall_time: float
    final_loss: float


def train_periodic_denoiser(
    data: Tensor,
    model_config: PeriodicModelConfig | None = None,
    config: PeriodicTrainConfig | None = None,
    *,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fit a :class:`PeriodicDenoiser` to wrapped samples ``data (N, D)`` (epsilon loss).

    Parameters
    ----------
    data : Tensor, shape=(N, D)
        Samples in the fundamental cell (wrapped).
    model_config : PeriodicModelConfig, optional
    config : PeriodicTrainConfig, optional
    progress : bool
    callback : callable, optional
        Called every ``log_every`` steps with ``{"step", "loss", "lr"}``.
    """
    model_config = PeriodicModelConfig() if model_config is None else model_config
    config = PeriodicTrainConfig() if config is None else config
    data = check_tensor("data", data, (None, model_config.dim))
    if data.shape[0] < 2:
        raise ValueError(f"data: expected at least 2 samples, got {data.shape[0]}")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = PeriodicDenoiser(model_config)
    ema = PeriodicDenoiser(model_config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    data = data.to(torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        frac = step / max(config.n_steps - 1, 1)
        low = config.lr * config.final_lr_fraction
        return low + 0.5 * (config.lr - low) * (1 + math.cos(math.pi * frac))

    history: list[dict[str, float]] = []
    running = None
    t0 = time.perf_counter()
    iterator = range(config.n_steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="train", unit="step")
    span = config.max_log_snr - config.min_log_snr
    for step in iterator:
        idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=generator)
        x0 = data[idx]
        log_snr = config.min_log_snr + span * torch.rand(config.batch_size, generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        alpha, sigma = alpha_sigma(log_snr)
        x_t = alpha.unsqueeze(-1) * x0 + sigma.unsqueeze(-1) * noise
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = (model.eps(x_t, log_snr) - noise).square().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not math.isfinite(float(loss.detach())):
            raise NonFiniteError(f"training loss became non-finite at step {step}; lower lr ({config.lr})")
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        loss_value = float(loss.detach())
        running = loss_value if running is None else 0.98 * running + 0.02 * loss_value
        if (step + 1) % config.log_every == 0 or step + 1 == config.n_steps:
            info = {"step": step + 1, "loss": running, "lr": lr_at(step)}
            history.append(info)
            logger.info("train step %d loss %.4f", step + 1, running)
            if callback is not None:
                callback(info)
    final = ema if config.ema_decay > 0 else model
    final.eval()
    final.requires_grad_(False)
    return TrainResult(model=final, history=history, n_steps=config.n_steps, wall_time=time.perf_counter() - t0,
                       final_loss=float(running))


class ExactPeriodicDenoiser:
    """``E[x_0 | x_t]`` for ``x_0 ~ exp(-U)`` on a 2-D periodic grid, by quadrature.

    The data density is taken piecewise constant on the cells of a grid (the potential's
    own grid, refined ``refine`` times by its spline); the Gaussian likelihood
    ``N(x_t; alpha x_0, sigma^2)`` is summed over the periodic images ``x_0 + n P`` with
    ``|n_i| <= n_images``. Differentiable in ``x`` and ``log_snr`` (autograd). Accurate for
    ``sigma / alpha`` from about a quarter of the (refined) grid spacing up to about
    ``n_images * P / 3``.

    Parameters
    ----------
    potential : PeriodicGridPotential
    refine : int
        Quadrature nodes per grid spacing and coordinate.
    n_images : int
        Periodic images per side.
    chunk_size : int
        Rows per internal batch (bounds memory: ``chunk * M * (2 n_images + 1)^2``).
    """

    def __init__(self, potential, *, refine: int = 1, n_images: int = 1, chunk_size: int = 64):
        from spacetime_md.toy.landscape import PeriodicGridPotential

        if not isinstance(potential, PeriodicGridPotential):
            raise TypeError(f"potential: expected a PeriodicGridPotential, got {type(potential).__name__}")
        for name, value, low in (("refine", refine, 1), ("n_images", n_images, 0), ("chunk_size", chunk_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        n0, n1 = potential.shape[0] * refine, potential.shape[1] * refine
        h0, h1 = potential.period[0] / n0, potential.period[1] / n1
        c0 = potential.lower[0] + h0 * torch.arange(n0, dtype=torch.float64)
        c1 = potential.lower[1] + h1 * torch.arange(n1, dtype=torch.float64)
        g1, g0 = torch.meshgrid(c1, c0, indexing="ij")
        nodes = torch.stack([g0.reshape(-1), g1.reshape(-1)], -1)
        energy = potential.values.reshape(-1).double() if refine == 1 else potential.lookup(nodes, "spline").double()
        self.nodes = nodes
        self.log_weights = torch.log_softmax(-energy, 0)
        self.period = torch.tensor(potential.period, dtype=torch.float64)
        r = torch.arange(-n_images, n_images + 1, dtype=torch.float64)
        i0, i1 = torch.meshgrid(r, r, indexing="ij")
        self.images = torch.stack([i0.reshape(-1), i1.reshape(-1)], -1) * self.period  # (I, 2)
        self.chunk_size = chunk_size
        self.n_evals = 0

    def __repr__(self) -> str:
        return f"ExactPeriodicDenoiser(n_nodes={self.nodes.shape[0]}, n_images={self.images.shape[0]})"

    def posterior_moments(self, x: Tensor, log_snr: Tensor) -> tuple[Tensor, Tensor]:
        """``E[x_0 | x_t]`` ``(B, 2)`` and ``E[|x_0|^2 | x_t]`` ``(B,)`` (unwrapped ``x_0``)."""
        x = check_tensor("x", x, (None, 2))
        log_snr = check_tensor("log_snr", log_snr, (x.shape[0],))
        self.n_evals += x.shape[0]
        firsts, seconds = [], []
        for start in range(0, x.shape[0], self.chunk_size):
            xc = x[start : start + self.chunk_size].double()
            lc = log_snr[start : start + self.chunk_size].double()
            alpha, sigma = alpha_sigma(lc)
            centre = xc / alpha.unsqueeze(-1)  # (b, 2)
            prec = lc.exp()  # alpha^2 / sigma^2: precision of x_0 around the centre
            # Shift the nodes to the image of the cell nearest to each centre, then add images.
            shift = torch.round((centre - self.nodes.mean(0)) / self.period) * self.period  # (b, 2)
            pts = self.nodes.unsqueeze(0).unsqueeze(0) + self.images.unsqueeze(1).unsqueeze(0) + shift[:, None, None, :]
            # pts: (b, I, M, 2)
            sq = (pts - centre[:, None, None, :]).square().sum(-1)  # (b, I, M)
            logits = self.log_weights - 0.5 * prec[:, None, None] * sq
            w = torch.softmax(logits.flatten(1), dim=-1).view_as(logits)  # (b, I, M)
            firsts.append(torch.einsum("bim,bimd->bd", w, pts))
            seconds.append((w * pts.square().sum(-1)).sum((1, 2)))
        first, second = torch.cat(firsts), torch.cat(seconds)
        return first.to(x.dtype), second.to(x.dtype)

    def __call__(self, x: Tensor, log_snr: Tensor) -> Tensor:
        return self.posterior_moments(x, log_snr)[0]


def evaluate_denoiser_error(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    reference: Callable[[Tensor, Tensor], Tensor],
    data: Tensor,
    log_snrs: Sequence[float],
    *,
    n_points: int = 512,
    generator: torch.Generator | None = None,
) -> dict[float, float]:
    """Root-mean-square ``|D(x_t) - D_ref(x_t)|`` at noisy data points, per ``log_snr``.

    ``x_t = alpha x_0 + sigma eps`` with ``x_0`` drawn from ``data (N, D)``. Returns
    ``{log_snr: rms error}`` in data units (radians for the landscape).
    """
    data = check_tensor("data", data, (None, None))
    out = {}
    with torch.no_grad():
        for lam in log_snrs:
            idx = torch.randint(0, data.shape[0], (n_points,), generator=generator)
            x0 = data[idx].double()
            l_t = torch.full((n_points,), float(lam), dtype=torch.float64)
            alpha, sigma = alpha_sigma(l_t)
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
            x_t = alpha.unsqueeze(-1) * x0 + sigma.unsqueeze(-1) * noise
            diff = denoiser(x_t, l_t).double() - reference(x_t, l_t).double()
            out[float(lam)] = float(diff.square().sum(-1).mean().sqrt())
    return out
