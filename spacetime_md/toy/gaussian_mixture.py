"""Isotropic Gaussian mixtures with exact diffusion quantities (test oracles).

For data ``x_0 ~ sum_k w_k N(m_k, s_k^2 I)`` and the VP kernel ``x_t = alpha x_0 + sigma eps``,
everything the geometry needs is closed form:

- marginal: ``p(x_t) = sum_k w_k N(x_t; alpha m_k, (alpha^2 s_k^2 + sigma^2) I)``;
- posterior given component k: ``N(m'_k, v_k I)`` with precision
  ``1/v_k = 1/s_k^2 + alpha^2/sigma^2`` and mean ``m'_k = v_k (m_k/s_k^2 + alpha x_t/sigma^2)``;
- posterior responsibilities ``r_k(x_t)`` from the marginal components;
- ``E[x_0 | x_t] = sum_k r_k m'_k`` and ``E[|x_0|^2 | x_t] = sum_k r_k (|m'_k|^2 + D v_k)``.

Shapes: K components, D dimensions, B batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spacetime_md.core._validation import check_tensor
from spacetime_md.core.schedule import alpha_sigma

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """Isotropic Gaussian mixture ``sum_k w_k N(m_k, s_k^2 I)`` in any dimension.

    Parameters
    ----------
    means : Tensor or array-like, shape=(K, D) or (K,)
        Component means; a 1-D input means D = 1.
    stds : Tensor, float or array-like, shape=(K,)
        Isotropic standard deviations (> 0); a scalar applies to every component.
    weights : Tensor or array-like, shape=(K,), optional
        Mixture weights (>= 0, normalised internally); uniform by default.
    dtype : torch.dtype
        Floating dtype of all computations (default float64).

    Examples
    --------
    >>> gm = GaussianMixture([-2.5, 0.5, 2.5], 0.75, [0.275, 0.45, 0.275])
    >>> x0 = gm.sample(1000)
    >>> x0_hat = gm.denoiser(x0, torch.zeros(1000, dtype=torch.float64))
    """

    def __init__(self, means, stds, weights=None, *, dtype: torch.dtype = torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim == 1:
            means = means.unsqueeze(-1)
        check_tensor("means", means, (None, None))
        n_comp = means.shape[0]
        stds = torch.as_tensor(stds, dtype=dtype)
        if stds.ndim == 0:
            stds = stds.expand(n_comp).clone()
        check_tensor("stds", stds, (n_comp,))
        if bool((stds <= 0).any()):
            raise ValueError(f"stds: expected values > 0, got {stds.tolist()}")
        if weights is None:
            weights = torch.full((n_comp,), 1.0 / n_comp, dtype=dtype)
        weights = check_tensor("weights", torch.as_tensor(weights, dtype=dtype), (n_comp,))
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights: expected non-negative values with positive sum, got {weights.tolist()}")
        self.means = means
        self.stds = stds
        self.weights = weights / weights.sum()
        self.dtype = dtype

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim})"

    # -- data distribution -------------------------------------------------------------

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``(n, D)`` from the data distribution."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, dtype=self.dtype, generator=generator)
        return self.means[comp] + self.stds[comp].unsqueeze(-1) * noise

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact data log-density ``log p(x_0)``, ``(B, D) -> (B,)``."""
        x = self._check_x(x)
        one = torch.ones((), dtype=x.dtype)
        return self._marginal_log_terms(x, one, torch.zeros_like(one)).logsumexp(-1)

    # -- diffused quantities ------------------------------------------------------------

    def _check_x(self, x: Tensor, log_snr: Tensor | None = None) -> Tensor:
        x = check_tensor("x", x, (None, self.dim))
        if log_snr is not None:
            check_tensor("log_snr", log_snr, (x.shape[0],))
        return x

    def _params(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        return self.means.to(dtype), self.stds.to(dtype), self.weights.to(dtype)

    def _marginal_log_terms(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``log w_k + log N(x; alpha m_k, (alpha^2 s_k^2 + sigma^2) I)``, shape (B, K)."""
        means, stds, weights = self._params(x.dtype)
        var = alpha.unsqueeze(-1).square() * stds.square() + sigma.unsqueeze(-1).square()
        diff = x.unsqueeze(-2) - alpha.unsqueeze(-1).unsqueeze(-1) * means
        sq = diff.square().sum(-1)
        return weights.log() - 0.5 * sq / var - 0.5 * self.dim * (2 * math.pi * var).log()

    def marginal_log_prob(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """``log p(x_t)`` at noise level ``log_snr``: ``(B, D), (B,) -> (B,)``."""
        x = self._check_x(x, log_snr)
        alpha, sigma = alpha_sigma(log_snr.to(x.dtype))
        return self._marginal_log_terms(x, alpha, sigma).logsumexp(-1)

    def score(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """``grad_x log p(x_t)``, ``(B, D)``; equals ``(alpha E[x_0|x_t] - x_t) / sigma^2``."""
        x0 = self.denoiser(x, log_snr)
        alpha, sigma = alpha_sigma(log_snr.to(x0.dtype))
        return (alpha.unsqueeze(-1) * x0 - x) / sigma.square().unsqueeze(-1)

    def posterior_moments(self, x: Tensor, log_snr: Tensor) -> tuple[Tensor, Tensor]:
        """Exact ``E[x_0 | x_t]`` ``(B, D)`` and ``E[|x_0|^2 | x_t]`` ``(B,)``.

        These are exactly the expectation parameters ``mu(z)`` of Eq. 56.
        """
        x = self._check_x(x, log_snr)
        means, stds, _ = self._params(x.dtype)
        lam = log_snr.to(x.dtype)
        alpha, sigma = alpha_sigma(lam)
        resp = self._marginal_log_terms(x, alpha, sigma).softmax(-1)  # (B, K)
        # Posterior precision 1/v_k = 1/s_k^2 + SNR, written to stay finite for large SNR.
        prec = 1.0 / stds.square() + lam.exp().unsqueeze(-1)  # (B, K)
        var = 1.0 / prec
        ratio = (alpha / sigma.square()).unsqueeze(-1)  # alpha / sigma^2, (B, 1)
        mean = var.unsqueeze(-1) * (
            means / stds.square().unsqueeze(-1) + (ratio * x).unsqueeze(-2)
        )  # (B, K, D)
        first = (resp.unsqueeze(-1) * mean).sum(-2)
        second = (resp * (mean.square().sum(-1) + self.dim * var)).sum(-1)
        return first, second

    def denoiser(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """Exact ``E[x_0 | x_t]``; a core denoiser ``(B, D), (B,) -> (B, D)``."""
        return self.posterior_moments(x, log_snr)[0]

    __call__ = denoiser
