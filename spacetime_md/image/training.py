"""Training the small EDM image model (:mod:`spacetime_md.image.model`) with our own loop.

EDM training (Karras et al. 2022): noise levels ``log sigma ~ N(p_mean, p_std^2)``, loss
``lambda(sigma) |D(x_0 + sigma eps, sigma) - x_0|^2`` with
``lambda = (sigma^2 + sd^2) / (sigma sd)^2``, Adam with a short warm-up, an exponential moving
average (EMA) of the weights that becomes the final model. The run directory holds
``config.json`` (resolved settings), ``metrics.jsonl`` (one JSON line per logged step),
``last.pt`` (resumable state) and ``model.pt`` + ``model.json`` (the EMA model and its card).
A run restarted on the same directory resumes from ``last.pt``.

The data are scikit-learn's 8x8 handwritten digits (``load_digits``, 1797 images with 17
grey levels), split once into train and test with a fixed permutation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from spacetime_md._atomic import torch_save_atomic, write_json_atomic
from spacetime_md.errors import CheckpointError, SpacetimeMDError
from spacetime_md.image.model import ImageDiffusionModel, UNetConfig, save_image_model

__all__ = ["ImageTrainConfig", "train_image_model", "load_digits_images", "DIGITS_SPLIT_SEED", "N_DIGITS_TEST"]

logger = logging.getLogger(__name__)

DIGITS_SPLIT_SEED = 0
N_DIGITS_TEST = 297


def load_digits_images(split: Literal["train", "test", "all"] = "train") -> tuple[Tensor, np.ndarray]:
    """scikit-learn's 8x8 digits as pixels in ``[0, 1]``, shape ``(N, 1, 8, 8)``, and labels ``(N,)``.

    The split is a fixed permutation (seed :data:`DIGITS_SPLIT_SEED`); the last
    :data:`N_DIGITS_TEST` images are the test set, the shipped model never saw them.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as exc:
        raise SpacetimeMDError(
            "the digits data need scikit-learn (expected it installed, got ModuleNotFoundError); "
            "pip install scikit-learn"
        ) from exc
    data = load_digits()
    images = torch.as_tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = np.asarray(data.target)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    if split == "train":
        order = order[:-N_DIGITS_TEST]
    elif split == "test":
        order = order[-N_DIGITS_TEST:]
    return images[torch.as_tensor(order)], labels[order]


@dataclass(frozen=True)
class ImageTrainConfig:
    """Settings of :func:`train_image_model`.

    Parameters
    ----------
    n_steps : int
        Optimiser steps.
    batch_size : int
    lr : float
        Adam learning rate (after a linear warm-up of ``warmup_steps``; cosine decay to 10%).
    warmup_steps : int
    ema_decay : float
        EMA of the weights (the saved model).
    p_mean, p_std : float
        Log-normal distribution of training noise levels ``log sigma ~ N(p_mean, p_std^2)``.
    base_channels : int
    channel_mults : tuple of int
    emb_dim : int
    log_every : int
        Steps between lines of ``metrics.jsonl``.
    checkpoint_every : int
        Steps between resumable checkpoints ``last.pt``.
    seed : int
    threads : int
        ``torch.set_num_threads`` during training (0 leaves it alone).
    """

    n_steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.998
    p_mean: float = -1.0
    p_std: float = 1.4
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2)
    emb_dim: int = 64
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        for name in ("n_steps", "batch_size", "base_channels", "emb_dim", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("warmup_steps", "threads", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: expected a number in [0, 1), got {self.ema_decay}")
        if not self.p_std > 0:
            raise ValueError(f"p_std: expected a number > 0, got {self.p_std}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _lr_at(step: int, config: ImageTrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    frac = (step - config.warmup_steps) / max(1, config.n_steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def edm_loss(model: ImageDiffusionModel, x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """Weighted denoising loss ``mean lambda(sigma) |D(x_0 + sigma eps, sigma) - x_0|^2`` (per pixel)."""
    sd = model.sigma_data
    weight = (sigma.square() + sd**2) / (sigma * sd).square()
    denoised = model(x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma)
    return (weight.reshape(-1, 1, 1, 1) * (denoised - x0).square()).mean()


def train_image_model(
    images: Tensor,
    config: ImageTrainConfig,
    out_dir: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> ImageDiffusionModel:
    """Train an :class:`ImageDiffusionModel` on ``images`` (model units, ``(N, C, H, W)``).

    Writes ``config.json``, ``metrics.jsonl``, ``last.pt`` and finally ``model.pt`` and
    ``model.json`` into ``out_dir``; resumes from ``last.pt`` if present (its config must match).

    Parameters
    ----------
    images : Tensor, shape=(N, C, H, W)
        Training images in model units (e.g. ``ImageDiffusionModel.to_model(pixels)``).
    config : ImageTrainConfig
    out_dir : path
    metadata : dict, optional
        Stored in the checkpoint and its card (e.g. the command line).
    progress : bool
        tqdm progress bar.
    callback : callable, optional
        Called with each metrics dict.

    Returns
    -------
    ImageDiffusionModel
        The EMA model, in eval mode.
    """
    if not isinstance(config, ImageTrainConfig):
        raise TypeError(f"config: expected an ImageTrainConfig, got {type(config).__name__}")
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] < 2:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (N >= 2, C, H, W), got {got}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    images = images.float()
    sigma_data = float(images.std())
    event_shape = tuple(images.shape[1:])
    unet = UNetConfig(in_channels=event_shape[0], base_channels=config.base_channels,
                      channel_mults=config.channel_mults, emb_dim=config.emb_dim)
    meta = {"n_train_images": int(images.shape[0]), "train_config": config.to_dict(), **(metadata or {})}
    torch.manual_seed(config.seed)
    model = ImageDiffusionModel(event_shape, unet, sigma_data, meta)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    resolved = {"train_config": config.to_dict(), "event_shape": list(event_shape), "sigma_data": sigma_data,
                "n_images": int(images.shape[0])}
    last_path = out / "last.pt"
    if last_path.exists():
        try:
            state = torch.load(last_path, map_location="cpu", weights_only=True)
            if state["resolved"]["train_config"] != resolved["train_config"]:
                raise CheckpointError(
                    f"{last_path}: expected a run with the same settings to resume, got different "
                    "ones; use a new output directory"
                )
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            step = int(state["step"])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{last_path}: cannot resume ({exc})") from exc
        logger.info("resuming from %s at step %d", last_path, step)
    write_json_atomic(out / "config.json", resolved, sort_keys=True)

    def save_last():
        torch_save_atomic({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "generator": generator.get_state(), "step": step, "resolved": resolved}, last_path)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.n_steps, initial=step, desc="train", unit="step")
    t0 = time.perf_counter()
    running = []
    model.train()
    try:
        with open(out / "metrics.jsonl", "a") as metrics:
            while step < config.n_steps:
                idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)
                x0 = images[idx]
                sigma = (config.p_mean + config.p_std * torch.randn(config.batch_size, generator=generator)).exp()
                noise = torch.randn(x0.shape, generator=generator)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, config)
                loss = edm_loss(model, x0, sigma, noise)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise SpacetimeMDError(f"training loss became non-finite at step {step}; lower lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), model.parameters()):
                        p_ema.lerp_(p, 1 - decay)
                step += 1
                running.append(loss_value)
                if bar is not None:
                    bar.update(1)
                if step % config.log_every == 0 or step == config.n_steps:
                    info = {"step": step, "loss": float(np.mean(running)), "lr": _lr_at(step - 1, config),
                            "elapsed_s": round(time.perf_counter() - t0, 3)}
                    running = []
                    metrics.write(json.dumps(info) + "\n")
                    metrics.flush()
                    if bar is not None:
                        bar.set_postfix(loss=f"{info['loss']:.4f}")
                    if callback is not None:
                        callback(info)
                if step % config.checkpoint_every == 0:
                    save_last()
    finally:
        if bar is not None:
            bar.close()
    save_last()
    ema.metadata["n_steps_done"] = step
    ema.eval()
    save_image_model(ema, out / "model.pt")
    card = {"event_shape": list(event_shape), "sigma_data": sigma_data,
            "n_parameters": ema.n_parameters(), **ema.metadata}
    write_json_atomic(out / "model.json", card, sort_keys=True)
    return ema
