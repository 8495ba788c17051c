"""Reading and writing images, strips and small result files (atomic writes).

Images are ``(C, H, W)`` float tensors with values in ``[0, 1]`` (pixel units). PNGs are read
with Pillow (a dependency of matplotlib); 8-bit images are divided by 255, 16-bit ones by 65535.
Pillow modes map to channels as ``L``/``1``/``I``/``F`` -> 1, ``LA`` -> 2, ``RGB`` -> 3,
``RGBA`` -> 4 (palette images become ``RGB`` or ``RGBA``). A model's ``event_shape``
``(C, H, W)`` is enforced with a clear error; ``convert=True`` converts the channel count
(alpha dropped or set to 1, RGB -> grey by ITU-R 601 luma, grey -> RGB by repetition), never
the size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from spacetime_md._atomic import atomic_path

__all__ = [
    "load_image",
    "load_image_folder",
    "save_image",
    "save_geodesic_strip",
    "write_json",
    "atomic_path",
]

_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "F": 1, "LA": 2, "RGB": 3, "RGBA": 4}

_LUMA = np.array([0.299, 0.587, 0.114])


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def _read_pixels(path: Path) -> np.ndarray:
    """``(H, W, C)`` float64 array in [0, 1] (C from the file's mode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "PA":
                im = im.convert("RGBA")
            elif mode.startswith("I;16"):
                arr = np.asarray(im, dtype=np.float64) / 65535.0
                return arr[:, :, None]
            elif mode not in _MODE_CHANNELS:
                im = im.convert("RGB")
            mode = im.mode
            arr = np.asarray(im, dtype=np.float64)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: expected an image file (PNG), got a file that is not a readable image") from None
    except PermissionError as exc:
        raise ValueError(f"{path}: expected a readable image file, got {exc.strerror or exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: expected a readable image file (PNG), got a damaged or truncated one ({exc})") from None
    if mode == "1":
        arr = arr.astype(np.float64)
    elif mode == "I":
        arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    elif mode != "F":
        arr = arr / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _convert_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    have = arr.shape[2]
    if have in (2, 4):  # drop alpha
        arr, have = arr[:, :, :-1], have - 1
    if channels in (1, 2) and have == 3:
        arr = (arr * _LUMA).sum(-1, keepdims=True)
    elif channels in (3, 4) and have == 1:
        arr = np.repeat(arr, 3, axis=2)
    if channels in (2, 4):
        arr = np.concatenate([arr, np.ones_like(arr[:, :, :1])], axis=2)
    return arr


def load_image(
    path: str | os.PathLike,
    *,
    event_shape: Sequence[int] | None = None,
    convert: bool = False,
) -> Tensor:
    """Read an image file as a ``(C, H, W)`` float32 tensor with values in ``[0, 1]``.

    Parameters
    ----------
    path : path
        A PNG (any format Pillow reads works).
    event_shape : tuple of int, optional
        Required ``(C, H, W)``; a mismatch raises ``ValueError``.
    convert : bool
        Convert the channel count to ``event_shape[0]`` instead of raising.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an image, unreadable, a directory, pixel values outside ``[0, 1]`` (float images are
        not rescaled), wrong size or wrong channel count.
    """
    path = Path(path)
    try:
        os.fsencode(str(path))
    except UnicodeEncodeError:
        raise ValueError(f"{str(path)!r}: expected a path the file system can encode") from None
    if path.is_dir():
        raise ValueError(f"{path}: expected an image file, got a directory")
    if not path.exists():
        raise FileNotFoundError(f"{path}: expected an existing image file, got no such file")
    arr = _read_pixels(path)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: expected finite pixel values, got NaN or infinity")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        # Integer images are scaled by their bit depth; a float image must already be in [0, 1].
        raise ValueError(f"{path}: expected pixel values in [0, 1] (a float image is not rescaled), got "
                         f"[{arr.min():.4g}, {arr.max():.4g}]")
    if event_shape is not None:
        shape = tuple(int(s) for s in event_shape)
        if len(shape) != 3:
            raise ValueError(f"event_shape: expected (C, H, W), got {shape}")
        channels, height, width = shape
        if arr.shape[:2] != (height, width):
            raise ValueError(
                f"{path}: expected an image of {height}x{width} pixels (height x width) for this "
                f"model, got {arr.shape[0]}x{arr.shape[1]}; resize it first"
            )
        if arr.shape[2] != channels:
            if not convert:
                names = {1: "grey-scale", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}
                raise ValueError(
                    f"{path}: expected {channels} channel{'s' if channels > 1 else ''} "
                    f"({names.get(channels, '?')}) for this model, got {arr.shape[2]} "
                    f"({names.get(arr.shape[2], '?')}); convert it first (or pass convert=True / --convert)"
                )
            arr = _convert_channels(arr, channels)
    return torch.as_tensor(np.ascontiguousarray(arr.transpose(2, 0, 1)), dtype=torch.float32)


def load_image_folder(
    directory: str | os.PathLike,
    *,
    event_shape: Sequence[int] | None = None,
    pattern: str = "*.png",
    convert: bool = False,
    min_images: int = 2,
) -> tuple[list[str], Tensor]:
    """All images matching ``pattern`` in ``directory`` (sorted by name), ``(N, C, H, W)``.

    Returns the file names and the stacked images; raises ``ValueError`` if fewer than
    ``min_images`` match or the images differ in shape (without ``event_shape``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        if directory.exists():
            raise ValueError(f"{directory}: expected a directory of images, got a file")
        raise FileNotFoundError(f"{directory}: expected an existing directory, got no such directory")
    files = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(files) < min_images:
        raise ValueError(
            f"{directory}: expected at least {min_images} images matching {pattern!r}, got {len(files)}"
        )
    images = [load_image(p, event_shape=event_shape, convert=convert) for p in files]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{directory}: expected images of one shape, got {sorted(shapes)}")
    return [p.name for p in files], torch.stack(images)


def save_image(path: str | os.PathLike, image: Tensor) -> Path:
    """Write a ``(C, H, W)`` image with values in ``[0, 1]`` (clipped) as an 8-bit PNG, atomically."""
    from PIL import Image

    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] not in (1, 2, 3, 4):
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image: expected a tensor of shape (C, H, W) with C in 1..4, got {got}")
    arr = (image.detach().cpu().clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    with atomic_path(path) as tmp:
        Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode).save(tmp, format="PNG")
    return Path(path)


def save_geodesic_strip(
    path: str | os.PathLike,
    images: Tensor,
    log_snr: Tensor,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write a strip of images ``(F, C, H, W)`` (pixels in [0, 1]) labelled with their noise level.

    Each panel is titled with its EDM noise level ``sigma = exp(-log_snr / 2)`` and its
    ``log_snr``. Written with matplotlib's Agg backend, atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (F, C, H, W) with C in (1, 3, 4), got {got}")
    if log_snr.shape != (images.shape[0],):
        raise ValueError(f"log_snr: expected shape ({images.shape[0]},), got {tuple(log_snr.shape)}")
    n_frames = images.shape[0]
    arr = images.detach().cpu().clamp(0, 1).numpy().transpose(0, 2, 3, 1)
    fig, axes = plt.subplots(1, n_frames, figsize=(1.25 * n_frames, 1.9 if title else 1.6), squeeze=False)
    for ax, img, lam in zip(axes[0], arr, log_snr.detach().cpu().tolist()):
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        sigma = float(np.exp(-lam / 2))
        ax.set_title(f"σ={sigma:.3g}\nλ={lam:.2f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)
