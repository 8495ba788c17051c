"""A small EDM image diffusion model in plain torch, and its checkpoint format.

The network is a tiny U-Net (two resolutions, FiLM noise conditioning, GroupNorm) wrapped in
the EDM preconditioning of Karras et al. (2022):

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

with ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = log(sigma) / 4`` and ``sd`` the data standard
deviation. Every layer treats batch rows independently (no BatchNorm), as the divergence code
of :mod:`spacetime_md.core` requires.

Pixel convention: images are ``(C, H, W)`` tensors with values in ``[0, 1]``; the model works
on ``x = 2 * pixel - 1`` (:meth:`ImageDiffusionModel.to_model` / ``to_pixels``).

Shapes: B batch, C channels, H height, W width, D = C * H * W.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spacetime_md._atomic import torch_save_atomic
from spacetime_md.errors import CheckpointError

__all__ = [
    "UNetConfig",
    "TinyUNet",
    "ImageDiffusionModel",
    "save_image_model",
    "load_image_model",
    "load_digits_model",
    "DIGITS_CHECKPOINT",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "spacetime_md.image/1"
#: The shipped 8x8 digits model (see ``digits_8x8.json`` beside it for the command that made it).
DIGITS_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "models" / "digits_8x8.pt"


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`TinyUNet`.

    Parameters
    ----------
    in_channels : int
        Image channels ``C``.
    base_channels : int
        Feature channels at full resolution.
    channel_mults : tuple of int
        Channel multiplier per resolution level; each level after the first halves H and W.
    emb_dim : int
        Width of the noise embedding.
    n_groups : int
        GroupNorm groups (must divide every channel count).
    """

    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    emb_dim: int = 64
    n_groups: int = 8

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        for name in ("in_channels", "base_channels", "emb_dim", "n_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults: expected positive integers, got {self.channel_mults}")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.n_groups:
                raise ValueError(
                    f"n_groups: expected a divisor of every channel count "
                    f"({[self.base_channels * m for m in self.channel_mults]}), got {self.n_groups}"
                )
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim: expected an even integer, got {self.emb_dim}")


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, FiLM noise conditioning after the first conv, 1x1 skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, n_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(n_groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(n_groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        out = self.conv1(nn.functional.silu(self.norm1(h)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        out = self.norm2(out) * (1 + scale) + shift
        out = self.conv2(nn.functional.silu(out))
        return self.skip(h) + out


class TinyUNet(nn.Module):
    """A small U-Net ``F(x (B, C, H, W), c_noise (B,)) -> (B, C, H, W)``.

    One residual block per level on the way down, one in the middle, one per level on the way
    up (with the skip connection concatenated). H and W must be divisible by
    ``2 ** (len(channel_mults) - 1)``.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c = [config.base_channels * m for m in config.channel_mults]
        e, g = config.emb_dim, config.n_groups
        self.emb = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.register_buffer(
            "freqs", torch.exp(-math.log(1000.0) * torch.arange(e // 2) / (e // 2)), persistent=False
        )
        self.stem = nn.Conv2d(config.in_channels, c[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, ch in enumerate(c):
            self.down_blocks.append(_ResBlock(c[i - 1] if i else c[0], ch, e, g))
            if i < len(c) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = _ResBlock(c[-1], c[-1], e, g)
        self.up_blocks = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(c))):
            c_from = c[-1] if i == len(c) - 1 else c[i + 1]
            self.upsample.append(nn.Identity() if i == len(c) - 1 else nn.Conv2d(c_from, c[i], 3, padding=1))
            c_from = c_from if i == len(c) - 1 else c[i]
            self.up_blocks.append(_ResBlock(c_from + c[i], c[i], e, g))
        self.head_norm = nn.GroupNorm(g, c[0])
        self.head = nn.Conv2d(c[0], config.in_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        angles = c_noise.reshape(-1, 1) * 1000.0 * self.freqs.to(c_noise.dtype)
        emb = self.emb(torch.cat([angles.cos(), angles.sin()], dim=-1).to(x.dtype))
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for up, block in zip(self.upsample, self.up_blocks):
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = up(nn.functional.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.head(nn.functional.silu(self.head_norm(h)))


class ImageDiffusionModel(nn.Module):
    """EDM-preconditioned image denoiser ``D(x, sigma) ~ E[x_0 | x_0 + sigma * eps = x]``.

    Parameters
    ----------
    event_shape : tuple of int
        ``(C, H, W)``.
    unet : UNetConfig
    sigma_data : float
        Standard deviation of the training data in model units.
    metadata : dict
        Free-form facts stored with the checkpoint (data set, training command, ...).
    """

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        unet: UNetConfig | None = None,
        sigma_data: float = 0.5,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__()
        event_shape = tuple(int(s) for s in event_shape)
        if len(event_shape) != 3 or min(event_shape) < 1:
            raise ValueError(f"event_shape: expected (C, H, W) with positive sizes, got {event_shape}")
        unet = UNetConfig(in_channels=event_shape[0]) if unet is None else unet
        if unet.in_channels != event_shape[0]:
            raise ValueError(
                f"unet.in_channels: expected {event_shape[0]} (the channels of event_shape), "
                f"got {unet.in_channels}"
            )
        factor = 2 ** (len(unet.channel_mults) - 1)
        if event_shape[1] % factor or event_shape[2] % factor:
            raise ValueError(
                f"event_shape: expected H and W divisible by {factor} for {len(unet.channel_mults)} "
                f"resolution levels, got {event_shape}"
            )
        if not sigma_data > 0:
            raise ValueError(f"sigma_data: expected a number > 0, got {sigma_data}")
        self.event_shape = event_shape
        self.unet_config = unet
        self.sigma_data = float(sigma_data)
        self.metadata = dict(metadata or {})
        self.net = TinyUNet(unet)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """EDM denoiser: ``x (B, C, H, W)`` at noise level ``sigma (B,)`` -> ``(B, C, H, W)``."""
        sigma = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        total = sigma.square() + sd2
        c_skip = sd2 / total
        c_out = sigma * self.sigma_data / total.sqrt()
        c_in = total.rsqrt()
        c_noise = sigma.reshape(-1).log() / 4
        return c_skip * x + c_out * self.net(c_in * x, c_noise)

    @staticmethod
    def to_model(pixels: Tensor) -> Tensor:
        """Pixels in ``[0, 1]`` -> model units ``2 p - 1``."""
        return 2.0 * pixels - 1.0

    @staticmethod
    def to_pixels(x: Tensor) -> Tensor:
        """Model units -> pixels ``(x + 1) / 2`` clipped to ``[0, 1]``."""
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def denoiser(self, *, dtype: torch.dtype | None = None):
        """The core denoiser ``(B, D), (B,) -> (B, D)`` of this model (an ``ImageDenoiser``)."""
        from spacetime_md.image.adapters import from_edm_image

        return from_edm_image(self, self.event_shape, dtype=dtype, data_range=(-1.0, 1.0))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, sigma_data={self.sigma_data:.4g}"


def save_image_model(model: ImageDiffusionModel, path: str | os.PathLike) -> Path:
    """Write the model's weights and settings (atomically) to ``path``; returns the path."""
    if not isinstance(model, ImageDiffusionModel):
        raise TypeError(f"model: expected an ImageDiffusionModel, got {type(model).__name__}")
    path = Path(path)
    state = {
        "format": CHECKPOINT_FORMAT,
        "event_shape": list(model.event_shape),
        "unet": asdict(model.unet_config),
        "sigma_data": model.sigma_data,
        "metadata": model.metadata,
        "state_dict": {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()},
    }
    torch_save_atomic(state, path)
    return path


def load_image_model(path: str | os.PathLike | None = None, *, map_location: str | torch.device = "cpu") -> ImageDiffusionModel:
    """Load a model written by :func:`save_image_model` (default: the shipped digits model).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        The file is not a spacetime_md image checkpoint or its weights do not fit.
    """
    path = DIGITS_CHECKPOINT if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: expected an existing file, got {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"checkpoint {str(path)!r}: not a readable torch file ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r}: expected format {CHECKPOINT_FORMAT!r}, got {got!r}"
        )
    try:
        unet = UNetConfig(**state["unet"])
        model = ImageDiffusionModel(
            tuple(state["event_shape"]), unet, float(state["sigma_data"]), state.get("metadata") or {}
        )
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: incomplete or mismatched ({exc})") from exc
    return model.eval().requires_grad_(False)


def load_digits_model() -> ImageDiffusionModel:
    """The shipped 8x8 handwritten-digits model (1 x 8 x 8, pixels in [0, 1])."""
    return load_image_model(DIGITS_CHECKPOINT)
