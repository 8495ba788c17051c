"""Image denoiser adapters: image-shaped networks -> the core's flat denoiser.

The core sees flat VP points ``x (B, D)`` and ``log_snr (B,)`` (DESIGN.md section 2). Image
networks see ``(B, *event_shape)`` tensors and their own noise variable. An
:class:`ImageDenoiser` owns the ``event_shape``: it reshapes at the boundary, converts the
noise level, calls the network and turns its prediction into ``E[x_0 | x_t]`` through the
core adapters :func:`~spacetime_md.core.from_edm`, :func:`~spacetime_md.core.from_epsilon` and
:func:`~spacetime_md.core.from_v`.

Supported parameterisations (``prediction``):

==========  ====================================================  =============================
name        network call                                          output
==========  ====================================================  =============================
``edm``     ``net(x / alpha, sigma_edm)`` (variance exploding)    ``x_0``
``epsilon`` ``net(x, cond(log_snr))`` (variance preserving)       ``eps``
``v``       ``net(x, cond(log_snr))``                             ``v = alpha eps - sigma x_0``
``sample``  ``net(x, cond(log_snr))``                             ``x_0``
==========  ====================================================  =============================

A diffusers ``UNet2DModel`` (called as ``model(sample, timestep).sample`` with discrete DDPM
timesteps) is handled by :func:`from_unet2d` without importing diffusers: any callable with
that convention works. Its timestep is obtained from ``log_snr`` by interpolating the
schedule's ``alphas_cumprod`` table (:class:`DiscreteTimesteps`).

Shapes: B batch, D = prod(event_shape).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor

from spacetime_md.core._validation import check_tensor
from spacetime_md.core.denoisers import from_edm, from_epsilon, from_v

__all__ = [
    "ImageDenoiser",
    "from_edm_image",
    "from_epsilon_image",
    "from_v_image",
    "from_unet2d",
    "DiscreteTimesteps",
    "ddpm_alphas_cumprod",
]

logger = logging.getLogger(__name__)

Prediction = Literal["edm", "epsilon", "v", "sample"]
_PREDICTIONS = ("edm", "epsilon", "v", "sample")


def _as_event_shape(event_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(event_shape, int) or not isinstance(event_shape, (tuple, list, torch.Size)):
        raise TypeError(f"event_shape: expected a tuple of ints like (C, H, W), got {event_shape!r}")
    shape = tuple(event_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"event_shape: expected positive integers like (C, H, W), got {shape}")
    return shape


def _unwrap_output(out: Any) -> Any:
    """The prediction tensor of a network output: a tensor, ``.sample``, ``["sample"]`` or ``[0]``."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, dict) and "sample" in out:
        return out["sample"]
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    return out


class ImageDenoiser:
    """A core denoiser ``(x (B, D), log_snr (B,)) -> (B, D)`` made from an image network.

    Parameters
    ----------
    network : callable
        ``network(images (B, *event_shape), cond (B,))`` returning a tensor of the same shape
        as ``images`` (or an object with a ``.sample`` tensor, a dict with ``"sample"`` or a
        tuple whose first entry is the tensor, as diffusers models return).
    event_shape : tuple of int
        Shape of one image, e.g. ``(C, H, W)``.
    prediction : {"edm", "epsilon", "v", "sample"}
        What the network predicts; see the module docstring.
    noise_conditioning : callable, optional
        Maps the parameterisation's native noise variable (EDM: ``sigma_edm (B,)``; the others:
        ``log_snr (B,)``) to what the network receives as ``cond``. Default: identity.
    dtype : torch.dtype, optional
        Cast network inputs to this dtype (outputs are cast back to the input's dtype).
    data_range : (float, float), optional
        The range of the data the network was trained on, in its own units (e.g. ``(-1, 1)``
        for pixels mapped by ``2 p - 1``). When given, :func:`~spacetime_md.image.image_geodesic`
        refuses images outside it, and images that look like ``[0, 1]`` pixels for a
        ``(-1, 1)`` model, instead of returning a silently wrong distance.

    Attributes
    ----------
    event_shape : tuple of int
    dim : int
        ``D = prod(event_shape)``.
    data_range : (float, float) or None
    """

    def __init__(
        self,
        network: Callable[..., Any],
        event_shape: Sequence[int],
        prediction: Prediction = "edm",
        *,
        noise_conditioning: Callable[[Tensor], Tensor] | None = None,
        dtype: torch.dtype | None = None,
        data_range: tuple[float, float] | None = None,
    ):
        if not callable(network):
            raise TypeError(f"network: expected a callable, got {type(network).__name__}")
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction: expected one of {_PREDICTIONS}, got {prediction!r}")
        if noise_conditioning is not None and not callable(noise_conditioning):
            raise TypeError(
                f"noise_conditioning: expected a callable or None, got {type(noise_conditioning).__name__}"
            )
        self.network = network
        self.event_shape = _as_event_shape(event_shape)
        self.dim = math.prod(self.event_shape)
        self.prediction = prediction
        self.noise_conditioning = noise_conditioning
        self.dtype = dtype
        if data_range is not None:
            low, high = (float(v) for v in data_range)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"data_range: expected (low, high) with low < high, got {data_range!r}")
            data_range = (low, high)
        self.data_range = data_range
        flat = self._flat_network
        if prediction == "edm":
            self._denoiser = from_edm(flat)
        elif prediction == "epsilon":
            self._denoiser = from_epsilon(flat)
        elif prediction == "v":
            self._denoiser = from_v(flat)
        else:
            self._denoiser = flat

    def _flat_network(self, x: Tensor, noise: Tensor) -> Tensor:
        n_batch = x.shape[0]
        images = x.reshape(n_batch, *self.event_shape)
        cond = noise if self.noise_conditioning is None else self.noise_conditioning(noise)
        if self.dtype is not None:
            images = images.to(self.dtype)
            if isinstance(cond, Tensor) and cond.is_floating_point():
                cond = cond.to(self.dtype)
        out = _unwrap_output(self.network(images, cond))
        if not isinstance(out, Tensor) or tuple(out.shape) != (n_batch, *self.event_shape):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"network output: expected shape {(n_batch, *self.event_shape)} (same as its input "
                f"images), got {got}"
            )
        return out.reshape(n_batch, self.dim).to(x.dtype)

    def __call__(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """``E[x_0 | x_t]`` for flat VP points ``x (B, D)`` at ``log_snr (B,)``; returns ``(B, D)``."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"x: expected shape (B, {self.dim}) (flattened {self.event_shape} images), "
                f"got {tuple(x.shape)}"
            )
        return self._denoiser(x, log_snr)

    def flatten(self, images: Tensor) -> Tensor:
        """``(B, *event_shape)`` or ``event_shape`` images -> ``(B, D)`` or ``(D,)``."""
        images = check_tensor("images", images)
        n_event = len(self.event_shape)
        if tuple(images.shape[-n_event:]) != self.event_shape or images.ndim not in (n_event, n_event + 1):
            raise ValueError(
                f"images: expected shape {self.event_shape} or (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(images.shape)}"
            )
        return images.reshape(-1, self.dim) if images.ndim > n_event else images.reshape(self.dim)

    def unflatten(self, x: Tensor) -> Tensor:
        """``(B, D)`` or ``(D,)`` -> ``(B, *event_shape)`` or ``event_shape``."""
        if x.shape[-1] != self.dim or x.ndim not in (1, 2):
            raise ValueError(f"x: expected shape (B, {self.dim}) or ({self.dim},), got {tuple(x.shape)}")
        return x.reshape(*x.shape[:-1], *self.event_shape)

    def __repr__(self) -> str:
        name = getattr(self.network, "__name__", type(self.network).__name__)
        return f"ImageDenoiser({name}, event_shape={self.event_shape}, prediction={self.prediction!r})"


def from_edm_image(
    network: Callable[..., Any],
    event_shape: Sequence[int],
    *,
    noise_conditioning: Callable[[Tensor], Tensor] | None = None,
    dtype: torch.dtype | None = None,
    data_range: tuple[float, float] | None = None,
) -> ImageDenoiser:
    """Adapter for an EDM denoiser ``network(x_edm (B, *event_shape), sigma (B,)) -> x_0``.

    The VP point ``x`` is rescaled to ``x / alpha`` and ``sigma = exp(-log_snr / 2)``.
    """
    return ImageDenoiser(network, event_shape, "edm", noise_conditioning=noise_conditioning, dtype=dtype,
                         data_range=data_range)


def from_epsilon_image(
    network: Callable[..., Any],
    event_shape: Sequence[int],
    *,
    noise_conditioning: Callable[[Tensor], Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> ImageDenoiser:
    """Adapter for a VP noise predictor ``network(x (B, *event_shape), cond) -> eps``.

    ``cond = noise_conditioning(log_snr)`` (default ``log_snr``); ``x_0 = (x - sigma eps) / alpha``.
    """
    return ImageDenoiser(network, event_shape, "epsilon", noise_conditioning=noise_conditioning, dtype=dtype)


def from_v_image(
    network: Callable[..., Any],
    event_shape: Sequence[int],
    *,
    noise_conditioning: Callable[[Tensor], Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> ImageDenoiser:
    """Adapter for a VP velocity predictor ``network(x, cond) -> v = alpha eps - sigma x_0``.

    ``x_0 = alpha x - sigma v``.
    """
    return ImageDenoiser(network, event_shape, "v", noise_conditioning=noise_conditioning, dtype=dtype)


def ddpm_alphas_cumprod(
    n_timesteps: int = 1000,
    schedule: Literal["linear", "scaled_linear", "cosine"] = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``alphas_cumprod (n_timesteps,)`` of the usual discrete DDPM schedules.

    ``"linear"``: betas linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020);
    ``"scaled_linear"``: square roots linear (Stable Diffusion, typically 0.00085 to 0.012);
    ``"cosine"``: ``alpha_bar(t) = cos^2((t / n + 0.008) / 1.008 * pi / 2)`` with betas capped
    at 0.999 (Nichol & Dhariwal 2021; diffusers' ``squaredcos_cap_v2``).
    """
    if isinstance(n_timesteps, bool) or not isinstance(n_timesteps, int) or n_timesteps < 2:
        raise ValueError(f"n_timesteps: expected an integer >= 2, got {n_timesteps!r}")
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n_timesteps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n_timesteps, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        t = torch.arange(n_timesteps + 1, dtype=torch.float64) / n_timesteps
        alpha_bar = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"schedule: expected 'linear', 'scaled_linear' or 'cosine', got {schedule!r}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"beta_start, beta_end: expected betas in (0, 1), got {beta_start}, {beta_end}")
    return torch.cumprod(1 - betas, 0).to(dtype)


class DiscreteTimesteps:
    """Map ``log_snr`` to a (fractional) DDPM timestep and back, from ``alphas_cumprod``.

    ``log_snr_k = log(abar_k / (1 - abar_k))`` decreases with ``k``; between table entries the
    map is linear in both directions (so :meth:`timestep` and :meth:`log_snr` are exact
    inverses inside the table's range). Outside ``[log_snr_min, log_snr_max]`` the timestep
    is clamped to ``[0, n - 1]`` (the network was never trained there) and a warning is logged
    once.

    Parameters
    ----------
    alphas_cumprod : Tensor, shape=(n,)
        Decreasing cumulative products of ``1 - beta``, in ``(0, 1)``.
    round_timesteps : bool
        Round to the nearest integer timestep (for networks that only accept integers).
    """

    def __init__(self, alphas_cumprod: Tensor, *, round_timesteps: bool = False):
        abar = check_tensor("alphas_cumprod", torch.as_tensor(alphas_cumprod), (None,)).double()
        if abar.shape[0] < 2:
            raise ValueError(f"alphas_cumprod: expected at least 2 entries, got {abar.shape[0]}")
        if not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError("alphas_cumprod: expected values strictly between 0 and 1")
        if not bool((abar.diff() < 0).all()):
            raise ValueError("alphas_cumprod: expected strictly decreasing values")
        self.table = (abar / (1 - abar)).log()  # decreasing log_snr per timestep
        self.round_timesteps = bool(round_timesteps)
        self._warned = False

    @property
    def n_timesteps(self) -> int:
        return self.table.shape[0]

    @property
    def log_snr_range(self) -> tuple[float, float]:
        return float(self.table[-1]), float(self.table[0])

    def timestep(self, log_snr: Tensor) -> Tensor:
        """Fractional timestep in ``[0, n - 1]`` for ``log_snr`` (any shape)."""
        lo, hi = self.log_snr_range
        lam = log_snr.detach().double()
        if not self._warned and bool(((lam < lo) | (lam > hi)).any()):
            self._warned = True
            logger.warning(
                "log_snr outside the schedule's range [%.3g, %.3g] (got [%.3g, %.3g]); "
                "timesteps are clamped", lo, hi, float(lam.min()), float(lam.max()),
            )
        ascending = self.table.flip(0).to(lam.device)
        lam_c = lam.clamp(lo, hi)
        idx = torch.searchsorted(ascending, lam_c.contiguous(), right=True).clamp(1, self.n_timesteps - 1)
        left, right = ascending[idx - 1], ascending[idx]
        frac = (lam_c - left) / (right - left)
        rev = (idx - 1).double() + frac  # position in the ascending table
        t = (self.n_timesteps - 1) - rev
        if self.round_timesteps:
            t = t.round()
        return t.to(log_snr.dtype if log_snr.is_floating_point() else torch.float64)

    def log_snr(self, timestep: Tensor) -> Tensor:
        """``log_snr`` at a (fractional) timestep, linear between table entries."""
        t = torch.as_tensor(timestep).double().clamp(0, self.n_timesteps - 1)
        table = self.table.to(t.device)
        lo = t.floor().long().clamp(max=self.n_timesteps - 2)
        frac = t - lo
        out = table[lo] * (1 - frac) + table[lo + 1] * frac
        return out.to(timestep.dtype if isinstance(timestep, Tensor) and timestep.is_floating_point() else torch.float64)

    def __repr__(self) -> str:
        lo, hi = self.log_snr_range
        return f"DiscreteTimesteps(n={self.n_timesteps}, log_snr in [{lo:.3g}, {hi:.3g}])"


_UNET_PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "sample"}


def from_unet2d(
    model: Callable[..., Any],
    event_shape: Sequence[int],
    alphas_cumprod: Tensor,
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon",
    *,
    round_timesteps: bool = False,
    dtype: torch.dtype | None = None,
) -> ImageDenoiser:
    """Adapter for a diffusers-style ``UNet2DModel``: ``model(sample, timestep).sample``.

    diffusers is not imported: any callable with this convention works (the output may be a
    tensor, an object with ``.sample``, a dict or a tuple). The model's DDPM noise schedule is
    given by ``alphas_cumprod`` (e.g. ``scheduler.alphas_cumprod`` or
    :func:`ddpm_alphas_cumprod`); the discrete schedule is VP, so ``x_t`` is passed unchanged
    and ``timestep`` is the fractional timestep whose ``log_snr`` matches.

    Parameters
    ----------
    model : callable ``(sample (B, C, H, W), timestep (B,)) -> output``
    event_shape : tuple of int
    alphas_cumprod : Tensor, shape=(n,)
    prediction_type : {"epsilon", "v_prediction", "sample"}
        As in diffusers' scheduler configs.
    round_timesteps : bool
        Pass integer-valued timesteps.
    dtype : torch.dtype, optional
        Cast inputs to this dtype.
    """
    if prediction_type not in _UNET_PREDICTIONS:
        raise ValueError(
            f"prediction_type: expected one of {tuple(_UNET_PREDICTIONS)}, got {prediction_type!r}"
        )
    timesteps = DiscreteTimesteps(alphas_cumprod, round_timesteps=round_timesteps)
    return ImageDenoiser(
        model, event_shape, _UNET_PREDICTIONS[prediction_type], noise_conditioning=timesteps.timestep, dtype=dtype
    )

