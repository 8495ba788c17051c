"""Canonical pairs of images: input checks, content keys, pair seeds, the anchor noise level.

A Diffusion Edit Distance is symmetric by construction because every unordered pair is solved
once, in a canonical order -- the SHA-256 of the image values (:func:`image_key`) -- with the
Hutchinson probes seeded from the unordered pair (:func:`pair_seed`). This module holds that
bookkeeping and the argument checks shared by :mod:`~spacetime_md.image.distance` and
:mod:`~spacetime_md.image.matrix`.

Images are tensors in the denoiser's data space (model units), shape ``event_shape``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from spacetime_md.core import alpha_sigma, edm_sigma_to_log_snr
from spacetime_md.core._validation import check_positive, check_tensor

__all__ = ["image_key", "pair_seed"]


def image_key(image: Tensor) -> str:
    """SHA-256 of an image's values (as float64) and shape: the canonical order of a pair.

    The same image gives the same key whatever its dtype (float32 -> float64 is exact), device
    or memory layout.
    """
    arr = image.detach().to("cpu", torch.float64).contiguous().numpy()
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def pair_seed(seed: int, key_a: str, key_b: str) -> int:
    """Probe seed of the pair ``{a, b}``: a function of ``seed`` and the *unordered* pair of keys."""
    lo, hi = sorted((key_a, key_b))
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{lo}:{hi}".encode()).digest()[:8], "big") >> 1


@dataclass
class _Pair:
    """A pair in canonical order: flat images ``(D,)`` and the pair's probe seed."""

    first: Tensor
    second: Tensor
    seed: int


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def _check_denoiser(denoiser) -> tuple[int, ...]:
    shape = getattr(denoiser, "event_shape", None)
    if not callable(denoiser) or shape is None:
        raise TypeError(
            f"denoiser: expected an image denoiser with an event_shape (see spacetime_md.image.adapters), "
            f"got {type(denoiser).__name__}"
        )
    return tuple(shape)


def _check_image(name: str, image: object, event_shape: tuple[int, ...], data_range=None) -> Tensor:
    """Shape, finiteness and -- when the denoiser knows its ``data_range`` -- the value range.

    Images outside the model's range, 8-bit pixels (values up to 255) and ``[0, 1]`` pixels
    handed to a ``(-1, 1)`` model would otherwise give a silently wrong distance.
    """
    image = check_tensor(name, image, event_shape)
    if data_range is None:
        return image
    low, high = data_range
    lo, hi = float(image.min()), float(image.max())
    slack = 1e-3 * (high - low)
    convert = "convert pixels p in [0, 1] with model.to_model(p) = 2 p - 1" if (low, high) == (-1.0, 1.0) else \
        f"rescale it to [{low:g}, {high:g}]"
    if hi > 2.0 and hi <= 255.0 + slack and lo >= -slack:
        raise ValueError(f"{name}: expected model units in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}] "
                         f"(8-bit pixels?): divide by 255, then {convert}")
    if lo < low - slack or hi > high + slack:
        raise ValueError(f"{name}: expected model units in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}]: "
                         f"{convert}")
    if low < 0.0 and lo >= 0.0 and hi <= 1.0 + slack and (high - low) >= 1.5:
        raise ValueError(f"{name}: expected model units in [{low:g}, {high:g}], got values in [{lo:g}, {hi:g}], "
                         f"which look like [0, 1] pixels: {convert} (or pass check_range=False if this image "
                         f"really has no value below 0)")
    return image


def _anchor(t_min: float) -> tuple[float, float]:
    """``(log_snr, alpha)`` of the anchor noise level ``t_min`` (EDM sigma, > 0)."""
    check_positive("t_min", t_min)
    log_snr = float(edm_sigma_to_log_snr(float(t_min)))
    return log_snr, float(alpha_sigma(log_snr)[0])
