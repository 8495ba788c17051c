"""Gaussian "images" with exact diffusion quantities (test oracle for the image module).

Data ``x_0 ~ N(m, diag(s^2))`` with ``m, s`` of shape ``event_shape``. For the VP kernel
``x_t = alpha x_0 + sigma eps`` the posterior is Gaussian per pixel, with variance
``v = 1 / (1 / s^2 + SNR)`` and mean ``v (m / s^2 + alpha / sigma^2 x_t)``, so

- ``E[x_0 | x_t]`` (the denoiser), ``E[eps | x_t] = (x_t - alpha E[x_0|x_t]) / sigma`` and
  ``E[v | x_t] = alpha E[eps | x_t] - sigma E[x_0 | x_t]`` are closed form;
- the EDM denoiser is ``m + s^2 / (s^2 + sigma_edm^2) (x_edm - m)``;
- the expectation parameters are ``mu = (mean, |mean|^2 + sum v)``.

The networks below take image-shaped tensors, like real image models, so the adapters of
:mod:`spacetime_md.image.adapters` can be checked against each other and against the closed
form. Shapes: B batch, D = prod(event_shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from spacetime_md.core._validation import check_tensor
from spacetime_md.core.schedule import alpha_sigma

__all__ = ["GaussianImages"]


@dataclass
class _UNetOutput:
    sample: Tensor


class GaussianImages:
    """Diagonal Gaussian image distribution ``N(mean, diag(std^2))`` with exact predictors.

    Parameters
    ----------
    mean, std : Tensor, shape=event_shape
        Per-pixel mean and standard deviation (> 0).
    """

    def __init__(self, mean: Tensor, std: Tensor):
        mean = check_tensor("mean", mean)
        std = check_tensor("std", std, tuple(mean.shape))
        if bool((std <= 0).any()):
            raise ValueError(f"std: expected values > 0, got minimum {float(std.min())}")
        self.mean, self.std = mean, std
        self.event_shape = tuple(mean.shape)
        self.dim = math.prod(self.event_shape)

    # --- flat (B, D) closed forms -------------------------------------------------------
    def posterior(self, x: Tensor, log_snr: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean ``(B, D)`` and variance ``(B, D)`` of ``x_0`` given VP ``x_t``."""
        alpha, sigma = alpha_sigma(log_snr)
        m = self.mean.reshape(1, -1).to(x.dtype)
        s2 = self.std.reshape(1, -1).to(x.dtype).square()
        v = 1.0 / (1.0 / s2 + log_snr.exp().unsqueeze(-1))
        mean = v * (m / s2 + (alpha / sigma.square()).unsqueeze(-1) * x)
        return mean, v

    def denoiser(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """Exact ``E[x_0 | x_t]`` for flat VP points ``(B, D)``."""
        return self.posterior(x, log_snr)[0]

    def expectation_params(self, log_snr: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Exact ``mu = (E[x_0 | x_t], E[|x_0|^2 | x_t])``, shapes ``(B, D)`` and ``(B,)``."""
        mean, v = self.posterior(x, log_snr)
        return mean, mean.square().sum(-1) + v.sum(-1)

    # --- image-shaped networks --------------------------------------------------------
    def _flat(self, images: Tensor) -> Tensor:
        return images.reshape(images.shape[0], self.dim)

    def edm_network(self, images: Tensor, sigma: Tensor) -> Tensor:
        """EDM denoiser ``D(x_edm (B, *event_shape), sigma_edm (B,)) -> x_0``."""
        shape = (-1,) + (1,) * len(self.event_shape)
        s2 = self.std.to(images.dtype).square()
        m = self.mean.to(images.dtype)
        return m + s2 / (s2 + sigma.reshape(shape).square()) * (images - m)

    def epsilon_network(self, images: Tensor, log_snr: Tensor) -> Tensor:
        """``E[eps | x_t]`` for VP images ``(B, *event_shape)`` at ``log_snr (B,)``."""
        alpha, sigma = alpha_sigma(log_snr)
        x = self._flat(images)
        eps = (x - alpha.unsqueeze(-1) * self.denoiser(x, log_snr)) / sigma.unsqueeze(-1)
        return eps.reshape(images.shape)

    def v_network(self, images: Tensor, log_snr: Tensor) -> Tensor:
        """``E[v | x_t]`` with ``v = alpha eps - sigma x_0``."""
        alpha, sigma = alpha_sigma(log_snr)
        x = self._flat(images)
        x0 = self.denoiser(x, log_snr)
        eps = (x - alpha.unsqueeze(-1) * x0) / sigma.unsqueeze(-1)
        return (alpha.unsqueeze(-1) * eps - sigma.unsqueeze(-1) * x0).reshape(images.shape)

    def unet2d(self, timesteps, prediction_type: str = "epsilon"):
        """A diffusers-``UNet2DModel``-like callable ``model(sample, timestep).sample``.

        ``timesteps`` is a :class:`~spacetime_md.image.adapters.DiscreteTimesteps` giving the
        model's log_snr at a (fractional) timestep.
        """
        networks = {"epsilon": self.epsilon_network, "v_prediction": self.v_network,
                    "sample": lambda img, lam: self.denoiser(self._flat(img), lam).reshape(img.shape)}
        if prediction_type not in networks:
            raise ValueError(f"prediction_type: expected one of {tuple(networks)}, got {prediction_type!r}")
        net = networks[prediction_type]

        def model(sample: Tensor, timestep: Tensor) -> _UNetOutput:
            return _UNetOutput(net(sample, timesteps.log_snr(timestep).to(sample.dtype)))

        return model

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, *event_shape)``."""
        noise = torch.randn((n, *self.event_shape), dtype=self.mean.dtype, generator=generator)
        return self.mean + self.std * noise
