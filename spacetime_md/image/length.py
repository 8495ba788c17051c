"""Length of a solved image geodesic, evaluated independently of the optimiser's probes.

The optimiser's energy uses one Hutchinson probe vector per curve, so its curve length is
noisy. The reported Diffusion Edit Distance is the length of the solved curve re-evaluated on
``length_points`` equally spaced points, ``sum_n sqrt(max(t_n, 0))`` over the segment terms
``t_n = <eta_{n+1} - eta_n, mu_{n+1} - mu_n>`` (Eq. 14). A negative exact term is a negative
posterior variance of a *learned* denoiser (never of a true posterior, where ``t_n`` is twice a
symmetrised KL); it is counted as the solver's objective counted it: 0 with the segment clamp
(``matrix``, ``accurate``), ``sqrt(|t_n|)`` with ``clamp="abs"`` (``fast``), and every result
reports how many there are (``docs/diffed.md``). The divergence is

- ``"exact"`` (``"auto"`` for ``D <= EXACT_LENGTH_MAX_DIM``): the Jacobian trace from ``D``
  denoiser rows per point (forward and one backward pass, no graph kept), no estimator noise;
- ``"hutchinson"``: independent draws of one Rademacher vector shared along the curve, the
  length of the mean segment terms and a jackknife standard error over the draws.

:func:`_exact_terms` evaluates the exact segment terms of many curves at once (one batched
call, chunked by rows) and takes the expectation parameters of the fixed endpoints from a
cache when given: a distance matrix computes them once per image instead of once per pair.

Shapes: K curves, T curve points, D data dimension.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spacetime_md.core.estimates import draw_probes
from spacetime_md.core.geometry import clamp_terms, expectation_params, natural_params
from spacetime_md.image.canonical import _check_count
from spacetime_md.image.energy import chunked_segment_terms
from spacetime_md.image.presets import EXACT_LENGTH_MAX_DIM

__all__ = ["evaluate_curve_length"]

#: Denoiser rows per call of the batched exact length.
_EXACT_CHUNK_ROWS = 8192


def _length_method(method: str, dim: int) -> str:
    if method not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"length_divergence: expected 'auto', 'exact' or 'hutchinson', got {method!r}")
    if method == "auto":
        return "exact" if dim <= EXACT_LENGTH_MAX_DIM else "hutchinson"
    return method


def _exact_mu(denoiser, log_snr: Tensor, x: Tensor, chunk_rows: int = _EXACT_CHUNK_ROWS) -> tuple[Tensor, Tensor]:
    """Exact expectation parameters of points ``(log_snr (B,), x (B, D))``, no graph."""
    return expectation_params(denoiser, log_snr.detach(), x.detach(), divergence="exact", create_graph=False,
                              chunk_size=max(chunk_rows, x.shape[0]))


def _exact_terms(denoiser, log_snr: Tensor, x: Tensor, end_mu: tuple[Tensor, Tensor] | None = None,
                 chunk_rows: int = _EXACT_CHUNK_ROWS) -> Tensor:
    """Unclamped exact segment terms of ``K`` curves, shape ``(K, T - 1)``, float64.

    Parameters
    ----------
    log_snr : Tensor, shape=(K, T)
    x : Tensor, shape=(K, T, D)
    end_mu : (Tensor (K, 2, D), Tensor (K, 2)), optional
        Expectation parameters of each curve's first and last point (cached); the denoiser
        then runs on the ``T - 2`` interior points only.
    """
    n_curves, n_points, dim = x.shape
    with torch.no_grad():
        eta_x, eta_s = natural_params(log_snr.reshape(-1), x.reshape(-1, dim))
        eta_x, eta_s = eta_x.reshape(n_curves, n_points, dim), eta_s.reshape(n_curves, n_points)
        if end_mu is None:
            mu_x, mu_s = _exact_mu(denoiser, log_snr.reshape(-1), x.reshape(-1, dim), chunk_rows)
            mu_x, mu_s = mu_x.reshape(n_curves, n_points, dim), mu_s.reshape(n_curves, n_points)
        else:
            inner_x, inner_s = _exact_mu(denoiser, log_snr[:, 1:-1].reshape(-1), x[:, 1:-1].reshape(-1, dim),
                                         chunk_rows)
            inner_x, inner_s = inner_x.reshape(n_curves, n_points - 2, dim), inner_s.reshape(n_curves, n_points - 2)
            mu_x = torch.cat([end_mu[0][:, :1], inner_x, end_mu[0][:, 1:]], dim=1)
            mu_s = torch.cat([end_mu[1][:, :1], inner_s, end_mu[1][:, 1:]], dim=1)
        terms = (eta_x.diff(dim=1) * mu_x.diff(dim=1)).sum(-1) + eta_s.diff(dim=1) * mu_s.diff(dim=1)
    return terms.double()


def _summarise(per_draw: Tensor, clamp: str = "segment") -> tuple[float, float, float, int]:
    """Length, jackknife standard error, energy and negative segments of terms ``(draws, T - 1)``.

    Negative (mean) terms add 0 to the length and the energy (the segment clamp of the solver),
    or their magnitude with ``clamp="abs"`` (the solver's ``clamp="abs"`` objective).
    """
    per_draw = per_draw.double()
    n_points = per_draw.shape[1] + 1
    mean = per_draw.mean(0)
    length = float(clamp_terms(mean, clamp).sqrt().sum())
    energy = 0.5 * (n_points - 1) * float(clamp_terms(mean, clamp).sum())
    se = 0.0
    if per_draw.shape[0] > 1:
        n = per_draw.shape[0]
        loo = (per_draw.sum(0, keepdim=True) - per_draw) / (n - 1)  # leave-one-out means
        loo_len = clamp_terms(loo, clamp).sqrt().sum(-1)
        se = float(((n - 1) / n * (loo_len - loo_len.mean()).square().sum()).sqrt())
    return length, se, energy, int((mean < 0).sum())


def evaluate_curve_length(
    denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    divergence: str = "auto",
    n_probes: int = 16,
    seed: int = 0,
    chunk_points: int | None = None,
    chunk_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    clamp: str = "segment",
) -> tuple[float, float, float, int, str]:
    """Length of a discretised curve with its standard error, independent of the optimiser.

    ``"exact"`` (``"auto"`` for ``D <= EXACT_LENGTH_MAX_DIM``): ``D`` denoiser rows per point,
    no estimator noise (standard error 0). ``"hutchinson"``: ``n_probes`` independent draws of
    one Rademacher vector shared along the curve (the noise cancels in neighbouring
    differences); the length of the mean segment terms, with a jackknife standard error over
    the draws. Negative terms add 0 to the length and the energy (``clamp="segment"``) or
    their magnitude (``clamp="abs"``).

    Parameters
    ----------
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)

    Returns
    -------
    length, standard_error, energy, n_negative_segments, method
    """
    if clamp not in ("segment", "abs"):
        raise ValueError(f"clamp: expected 'segment' or 'abs', got {clamp!r}")
    method = _length_method(divergence, x.shape[1])
    n_points = x.shape[0]
    kwargs = dict(chunk_points=chunk_points or n_points, chunk_size=chunk_size, amp_dtype=amp_dtype)
    if method == "exact":
        per_draw = chunked_segment_terms(denoiser, log_snr, x, divergence="exact", **kwargs)[None]
    else:
        _check_count("length_probes", n_probes, 2)
        gen = torch.Generator(device=x.device).manual_seed(int(seed))
        probes = draw_probes(n_probes, n_points, x.shape[1], "curve", dtype=x.dtype, device=x.device, generator=gen)
        per_draw = torch.stack([
            chunked_segment_terms(denoiser, log_snr, x, divergence="hutchinson", probes=probes[p:p + 1], **kwargs)
            for p in range(n_probes)
        ])
    return (*_summarise(per_draw, clamp), method)
