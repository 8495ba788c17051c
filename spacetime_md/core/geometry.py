"""Exponential-family geometry of the denoising distributions (DESIGN.md section 3).

The denoising posterior ``p(x_0 | x_t)`` at spacetime point ``z = (lambda, x)`` with
``lambda = log_snr`` is an exponential family with

=====================  ==============================================================
sufficient statistic   ``T(x_0) = (x_0, |x_0|^2)``
natural parameters     ``eta(z) = (alpha / sigma^2 * x, -SNR / 2)``               (Eq. 44)
expectation params     ``mu(z) = (D(x, lambda), sigma^2 / alpha * div_x D + |D|^2)`` (Eq. 56)
=====================  ==============================================================

``D`` is the denoiser ``E[x_0 | x_t]``; the second expectation parameter is ``E[|x_0|^2 | x_t]``
by second-order Tweedie, ``Cov[x_0 | x_t] = sigma^2 / alpha * dD/dx``.

Parameters are returned as pairs ``(vector part (B, D), scalar part (B,))``. Inner products
of parameter differences are ``<d eta, d mu> = <d eta_x, d mu_x> + d eta_s * d mu_s``.

Shapes: B batch, T curve points, D data dimension, P probes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from spacetime_md.core._validation import check_positive, check_same_dtype_device, check_tensor
from spacetime_md.core.denoisers import Denoiser
from spacetime_md.core.schedule import alpha_sigma

__all__ = [
    "natural_params",
    "expectation_params",
    "divergence",
    "segment_terms",
    "clamp_terms",
    "curve_energy",
    "curve_length",
    "kl_along_curve",
    "rademacher_probes",
]

DivergenceMethod = Literal["exact", "hutchinson"]
ClampMode = Literal["segment", "abs", "none"]


def _check_points(log_snr: object, x: object, lead: str = "B") -> tuple[Tensor, Tensor]:
    dims: dict[str, int] = {}
    x = check_tensor("x", x, (lead, None), dims=dims)
    log_snr = check_tensor("log_snr", log_snr, (lead,), dims=dims)
    check_same_dtype_device(x=x, log_snr=log_snr)
    return log_snr, x


def natural_params(log_snr: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Natural parameters ``eta(z) = (alpha / sigma^2 * x, -SNR / 2)`` (Eq. 44).

    Parameters
    ----------
    log_snr : Tensor, shape=(B,)
    x : Tensor, shape=(B, D)
        Noisy points in VP scaling.

    Returns
    -------
    eta_x : Tensor, shape=(B, D)
    eta_s : Tensor, shape=(B,)
    """
    log_snr, x = _check_points(log_snr, x)
    alpha, sigma = alpha_sigma(log_snr)
    # alpha / sigma^2 = sqrt(sigmoid(l)) / sigmoid(-l)
    scale = alpha / sigma.square()
    return scale.unsqueeze(-1) * x, -0.5 * log_snr.exp()


def rademacher_probes(
    n_probes: int,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Rademacher (+-1) probe vectors, shape ``(n_probes, *shape)``."""
    check_positive("n_probes", n_probes)
    bits = torch.randint(0, 2, (n_probes, *shape), generator=generator, device=device or "cpu")
    return (2 * bits - 1).to(dtype=dtype, device=device)


def _grad(outputs: Tensor, inputs: Tensor, create_graph: bool) -> Tensor:
    (g,) = torch.autograd.grad(outputs, inputs, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(inputs) if g is None else g


def _leaf_or_graph(x: Tensor, create_graph: bool) -> Tensor:
    if create_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


def divergence(
    denoiser: Denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    method: DivergenceMethod = "exact",
    n_probes: int = 1,
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
    create_graph: bool | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Denoiser output and its divergence ``div_x D(x, lambda)``.

    ``"exact"`` evaluates the denoiser once on a batch replicated ``D`` times and takes one
    backward pass: row ``(i, b)`` contributes ``dD_i/dx_i`` at ``x_b`` (denoisers must treat
    batch rows independently, as all of ours do). ``chunk_size`` bounds the rows per chunk.
    ``"hutchinson"`` uses ``E[v^T J v]`` with Rademacher probes ``v`` (one vector-Jacobian
    product per probe, batched), unbiased and differentiable.

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
    log_snr : Tensor, shape=(B,)
    x : Tensor, shape=(B, D)
    method : {"exact", "hutchinson"}
    n_probes : int
        Number of Rademacher probes (``"hutchinson"`` only; ignored when ``probes`` is given).
    probes : Tensor, shape=(P, B, D), optional
        Fixed probe vectors (common random numbers across calls).
    generator : torch.Generator, optional
        Source of the probes when ``probes`` is not given.
    create_graph : bool, optional
        Keep the graph so the result is differentiable w.r.t. ``x`` and ``log_snr``. Default:
        whenever grad mode is on and ``x`` or ``log_snr`` requires grad.
    chunk_size : int, optional
        Maximum number of replicated rows per denoiser call (``"exact"`` only).

    Returns
    -------
    denoised : Tensor, shape=(B, D)
    div : Tensor, shape=(B,)
    """
    log_snr, x = _check_points(log_snr, x)
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable, got {type(denoiser).__name__}")
    if create_graph is None:
        create_graph = torch.is_grad_enabled() and (x.requires_grad or log_snr.requires_grad)
    n_batch, n_dim = x.shape
    if method not in ("exact", "hutchinson"):
        raise ValueError(f"method: expected 'exact' or 'hutchinson', got {method!r}")
    with torch.enable_grad():
        if method == "exact":
            denoised, div = _divergence_exact(denoiser, log_snr, x, create_graph, chunk_size)
        else:
            if probes is None:
                probes = rademacher_probes(
                    n_probes, (n_batch, n_dim), dtype=x.dtype, device=x.device, generator=generator
                )
            probes = check_tensor("probes", probes, (None, n_batch, n_dim))
            denoised, div = _divergence_hutchinson(denoiser, log_snr, x, probes, create_graph)
    if not create_graph:
        denoised, div = denoised.detach(), div.detach()
    return denoised, div


_divergence_fn = divergence  # expectation_params has an argument named "divergence"


def _check_output(out: Tensor, rows: int, n_dim: int) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != (rows, n_dim):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"denoiser output: expected shape ({rows}, {n_dim}) (same as its input x), got {got}"
        )
    return out


def _divergence_exact(denoiser, log_snr, x, create_graph, chunk_size):
    n_batch, n_dim = x.shape
    if chunk_size is None:
        per_chunk = n_dim
    else:
        check_positive("chunk_size", chunk_size)
        per_chunk = max(1, min(n_dim, chunk_size // max(n_batch, 1)))
    x_in = _leaf_or_graph(x, create_graph)
    denoised = None
    div = x.new_zeros(n_batch)
    for first in range(0, n_dim, per_chunk):
        dims = torch.arange(first, min(first + per_chunk, n_dim), device=x.device)
        n_rep = dims.numel()
        x_rep = x_in.unsqueeze(0).expand(n_rep, n_batch, n_dim).reshape(n_rep * n_batch, n_dim)
        if not x_rep.requires_grad:
            x_rep.requires_grad_(True)
        out = _check_output(
            denoiser(x_rep, log_snr.repeat(n_rep)), n_rep * n_batch, n_dim
        ).reshape(n_rep, n_batch, n_dim)
        if denoised is None:
            denoised = out[0]
        # picked[r, b] = out[r, b, dims[r]]
        picked = out.gather(2, dims.view(n_rep, 1, 1).expand(n_rep, n_batch, 1)).squeeze(-1)
        grad = _grad(picked.sum(), x_rep, create_graph).reshape(n_rep, n_batch, n_dim)
        diag = grad.gather(2, dims.view(n_rep, 1, 1).expand(n_rep, n_batch, 1)).squeeze(-1)
        div = div + diag.sum(0)
    return denoised, div


def _divergence_hutchinson(denoiser, log_snr, x, probes, create_graph):
    n_probes, n_batch, n_dim = probes.shape
    x_in = _leaf_or_graph(x, create_graph)
    x_rep = x_in.repeat(n_probes, 1)
    out = _check_output(denoiser(x_rep, log_snr.repeat(n_probes)), n_probes * n_batch, n_dim)
    flat_probes = probes.reshape(n_probes * n_batch, n_dim)
    vjp = _grad((out * flat_probes).sum(), x_rep, create_graph)
    est = (vjp * flat_probes).sum(-1).reshape(n_probes, n_batch).mean(0)
    denoised = out.reshape(n_probes, n_batch, n_dim).mean(0)
    return denoised, est


def expectation_params(
    denoiser: Denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    divergence: DivergenceMethod = "exact",
    n_probes: int = 1,
    probes: Tensor | None = None,
    generator: torch.Generator | None = None,
    create_graph: bool | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Expectation parameters ``mu(z) = (D, sigma^2/alpha * div D + |D|^2)`` (Eq. 56).

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
    log_snr : Tensor, shape=(B,)
    x : Tensor, shape=(B, D)
    divergence : {"exact", "hutchinson"}
        How ``div_x D`` is computed; see :func:`divergence` for the other arguments.

    Returns
    -------
    mu_x : Tensor, shape=(B, D)
        ``E[x_0 | x_t]``.
    mu_s : Tensor, shape=(B,)
        ``E[|x_0|^2 | x_t]``.
    """
    denoised, div = _divergence_fn(
        denoiser,
        log_snr,
        x,
        method=divergence,
        n_probes=n_probes,
        probes=probes,
        generator=generator,
        create_graph=create_graph,
        chunk_size=chunk_size,
    )
    alpha, sigma = alpha_sigma(log_snr)
    # sigma^2 / alpha = sigmoid(-l) / sqrt(sigmoid(l))
    return denoised, sigma.square() / alpha * div + denoised.square().sum(-1)


def segment_terms(
    eta: tuple[Tensor, Tensor], mu: tuple[Tensor, Tensor]
) -> Tensor:
    """``<eta_{n+1} - eta_n, mu_{n+1} - mu_n>`` for consecutive curve points, shape ``(T-1,)``.

    Each exact term is twice the symmetrised KL between neighbouring posteriors, so it is
    ``>= 0``; negative values are estimator noise.
    """
    d_eta_x, d_eta_s = eta[0].diff(dim=0), eta[1].diff(dim=0)
    d_mu_x, d_mu_s = mu[0].diff(dim=0), mu[1].diff(dim=0)
    return (d_eta_x * d_mu_x).sum(-1) + d_eta_s * d_mu_s


def clamp_terms(terms: Tensor, clamp: ClampMode) -> Tensor:
    """Segment terms as the energy counts them: ``"segment"`` ``max(t, 0)``, ``"abs"`` ``|t|``
    (a negative term costs as much as a positive one instead of nothing), ``"none"`` ``t``."""
    if clamp == "segment":
        return terms.clamp_min(0.0)
    if clamp == "abs":
        return terms.abs()
    if clamp == "none":
        return terms
    raise ValueError(f"clamp: expected 'segment', 'abs' or 'none', got {clamp!r}")


def _curve_params(denoiser, log_snr, x, kwargs):
    log_snr, x = _check_points(log_snr, x, lead="T")
    if log_snr.shape[0] < 2:
        raise ValueError(f"log_snr: expected at least 2 curve points, got {log_snr.shape[0]}")
    eta = natural_params(log_snr, x)
    mu = expectation_params(denoiser, log_snr, x, **kwargs)
    return eta, mu


def curve_energy(
    denoiser: Denoiser,
    log_snr: Tensor,
    x: Tensor,
    *,
    clamp: ClampMode = "segment",
    **divergence_kwargs,
) -> Tensor:
    """Discrete curve energy (Prop. 5.1, Eq. 14).

    ``E ~= (T-1)/2 * sum_n <eta(z_{n+1}) - eta(z_n), mu(z_{n+1}) - mu(z_n)>`` for a curve
    sampled at ``T`` equally spaced parameter values ``s in [0, 1]``.

    Parameters
    ----------
    denoiser : callable ``(x (B, D), log_snr (B,)) -> (B, D)``
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
    clamp : {"segment", "abs", "none"}
        ``"segment"`` (default) clamps each segment term at 0, since exact terms are
        non-negative and negative values are divergence-estimator noise; ``"abs"`` counts
        ``|t|`` (a learned model's negative exact terms then cost instead of being free);
        ``"none"`` keeps the raw (unbiased) sum.
    **divergence_kwargs
        ``divergence``, ``n_probes``, ``probes`` (shape ``(P, T, D)``), ``generator``,
        ``create_graph``, ``chunk_size``; see :func:`expectation_params`.

    Returns
    -------
    energy : Tensor, shape=()
    """
    eta, mu = _curve_params(denoiser, log_snr, x, divergence_kwargs)
    terms = clamp_terms(segment_terms(eta, mu), clamp)
    return 0.5 * (log_snr.shape[0] - 1) * terms.sum()


def curve_length(
    denoiser: Denoiser, log_snr: Tensor, x: Tensor, **divergence_kwargs
) -> Tensor:
    """Discrete curve length ``sum_n sqrt(<d eta_n, d mu_n>)`` (negative terms count as 0).

    Shapes as in :func:`curve_energy`; returns a scalar tensor.
    """
    eta, mu = _curve_params(denoiser, log_snr, x, divergence_kwargs)
    return _length_from_terms(segment_terms(eta, mu))


def _length_from_terms(terms: Tensor) -> Tensor:
    tiny = torch.finfo(terms.dtype).tiny
    return terms.clamp_min(tiny).sqrt().where(terms > 0, terms.new_zeros(())).sum()


def kl_increments(
    eta: tuple[Tensor, Tensor], mu: tuple[Tensor, Tensor], mu_ref: tuple[Tensor, Tensor]
) -> Tensor:
    """Trapezoid increments of ``int <d eta, mu - mu_ref>`` along a discretised path, ``(T-1,)``."""
    d_eta_x, d_eta_s = eta[0].diff(dim=0), eta[1].diff(dim=0)
    mid_x = 0.5 * (mu[0][1:] + mu[0][:-1]) - mu_ref[0]
    mid_s = 0.5 * (mu[1][1:] + mu[1][:-1]) - mu_ref[1]
    return (d_eta_x * mid_x).sum(-1) + d_eta_s * mid_s


def bridge_points(
    ref_log_snr: Tensor, ref_x: Tensor, log_snr0: Tensor, x0: Tensor, n_bridge: int
) -> tuple[Tensor, Tensor]:
    """Straight spacetime segment from the reference point to ``(log_snr0, x0)``, inclusive."""
    w = torch.linspace(0.0, 1.0, n_bridge, dtype=ref_x.dtype, device=ref_x.device)
    log_snr = (1 - w) * ref_log_snr + w * log_snr0
    x = (1 - w).unsqueeze(-1) * ref_x + w.unsqueeze(-1) * x0
    return log_snr, x


def kl_along_curve(
    denoiser: Denoiser,
    log_snr: Tensor,
    x: Tensor,
    ref_log_snr: float | Tensor,
    ref_x: Tensor,
    *,
    n_bridge: int = 33,
    **divergence_kwargs,
) -> Tensor:
    """Absolute ``KL(p(. | z*) || p(. | gamma_s))`` at every curve point (Eq. 62).

    ``d A = <mu, d eta>`` for the log-partition ``A``, so along any path from ``z*``
    ``KL(z* || z) = int <d eta(u), mu(u) - mu(z*)>`` starts at exactly 0. The path used is the
    straight spacetime segment from ``z*`` to the curve's first point (``n_bridge`` points)
    followed by the curve itself; integrals use the trapezoid rule, so accuracy improves with
    the number of points.

    Parameters
    ----------
    denoiser : callable
    log_snr : Tensor, shape=(T,)
    x : Tensor, shape=(T, D)
    ref_log_snr : float or Tensor, shape=()
        Time coordinate of the reference point ``z*``.
    ref_x : Tensor, shape=(D,)
        Space coordinate of ``z*``.
    n_bridge : int
        Points on the connecting segment (including both ends, >= 2).

    Returns
    -------
    kl : Tensor, shape=(T,)
    """
    log_snr, x = _check_points(log_snr, x, lead="T")
    ref_x = check_tensor("ref_x", ref_x, (x.shape[1],))
    ref_log_snr = torch.as_tensor(ref_log_snr, dtype=x.dtype, device=x.device)
    check_tensor("ref_log_snr", ref_log_snr, ())
    if isinstance(n_bridge, bool) or not isinstance(n_bridge, int) or n_bridge < 2:
        raise ValueError(f"n_bridge: expected an integer >= 2, got {n_bridge!r}")
    b_log_snr, b_x = bridge_points(ref_log_snr, ref_x, log_snr[0], x[0], n_bridge)
    all_log_snr = torch.cat([b_log_snr, log_snr[1:]])
    all_x = torch.cat([b_x, x[1:]])
    eta = natural_params(all_log_snr, all_x)
    mu = expectation_params(denoiser, all_log_snr, all_x, **divergence_kwargs)
    mu_ref = (mu[0][0], mu[1][0])
    kl = torch.cat([x.new_zeros(1), kl_increments(eta, mu, mu_ref).cumsum(0)])
    return kl[n_bridge - 1 :]
