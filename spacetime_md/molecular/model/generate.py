"""Sampling from a trained denoiser (:func:`sample_model`).

Samplers (all in ``log_snr``, model units, noise projected onto the centred subspace):

- ``"ancestral"`` (reverse SDE, DDPM-style): from ``x_t`` at ``l_t`` to ``l_s > l_t`` draw
  ``x_s ~ q(x_s | x_t, x0 = D(x_t))``, i.e. with ``r = exp(l_t - l_s)``
  ``x_s = alpha_s (r / alpha_t) x_t + alpha_s (1 - r) D + sigma_s sqrt(1 - r) P n``;
- ``"ddim"`` (probability-flow ODE, first order): ``x_s = alpha_s D + sigma_s (x_t - alpha_t D) / sigma_t``;
- ``"heun"`` (probability-flow ODE, second order, EDM's Heun step in ``x / alpha`` and
  ``sigma / alpha = exp(-log_snr / 2)``; two denoiser calls per step, the last step is Euler);
- ``"pc"`` (predictor-corrector, Song et al., ICLR 2021): before each ancestral step,
  ``corrector_steps`` unadjusted Langevin steps at the current level on the model's marginal,
  ``x <- x + eps s + sqrt(2 eps) P n`` with the score ``s = (alpha D - x) / sigma^2`` and
  ``eps = corrector_scale * sigma^2``; ``1 + corrector_steps`` denoiser calls per corrected
  level (every level, or those from ``corrector_log_snr_min`` on).

First-order samplers lose variance at a rate proportional to the step in ``log_snr`` (for a
Gaussian with the exact denoiser and 100 steps over [-8, 10]: ancestral -8 %, DDIM -4 %,
Heun < 1 %; see ``tests/molecular/test_evaluation.py``).

All start from ``P n`` at ``log_snr_start`` and return ``D(x, log_snr_end)`` after the last
step, converted to nm with the model's :func:`~spacetime_md.molecular.model.denoiser.from_model`.

Units: nm outside, model units inside.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser, center, from_model
from spacetime_md.molecular.system.chirality import compute_chirality

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "sample_model",
]

#: ``method="pc"`` defaults: Langevin corrector steps per level and their step in units of sigma^2.
CORRECTOR_STEPS = 3
CORRECTOR_SCALE = 0.3


def sample_model(
    model: EquivariantDenoiser | Callable[[Tensor, Tensor], Tensor],
    n_samples: int,
    *,
    dim: int | None = None,
    length_scale_nm: float | None = None,
    n_steps: int = 100,
    method: Literal["ancestral", "ddim", "heun", "pc"] = "heun",
    log_snr_start: float = -8.0,
    log_snr_end: float = 10.0,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
    mirror_d: bool = False,
    corrector_steps: int = CORRECTOR_STEPS,
    corrector_scale: float = CORRECTOR_SCALE,
    corrector_log_snr_min: float = -math.inf,
    chiral_atoms: Sequence[int] | Sequence[Sequence[int]] | None = None,
    chiral_signs: Sequence[int] | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> np.ndarray:
    """Draw ``n_samples`` structures from the model.

    Parameters
    ----------
    model : EquivariantDenoiser or callable
        Any denoiser ``(x (B, 3N), log_snr (B,)) -> (B, 3N)`` in model units; for a plain
        callable give ``dim`` and ``length_scale_nm`` (it is evaluated in float64 on the CPU).
    n_samples : int
    dim, length_scale_nm : optional
        Default: the model's ``dim`` and ``length_scale_nm``.
    n_steps : int
        Noise levels, evenly spaced in ``log_snr`` (Heun uses about two evaluations each).
    method : {"heun", "ancestral", "ddim", "pc"}
        Probability-flow ODE (Heun, 2nd order; DDIM, 1st order), reverse SDE (ancestral), or
        reverse SDE with Langevin corrector steps (pc).
    log_snr_start, log_snr_end : float
        First and last noise level (model units).
    batch_size : int
        Structures integrated at once. On Linux, large batches of a sparse-graph model spend most
        of their time in the kernel unless Python was started with
        ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment
        (3.4x faster; the ``spacetime-md`` executable sets them itself; docs/scaling.md).
    generator : torch.Generator, optional
        CPU generator for the initial noise and the ancestral noise.
    mirror_d : bool
        Post-hoc chirality correction: reflect every sample in which more chiral centres have
        the wrong handedness than the right one (with one centre: whose C-alpha is D); the
        force field is achiral, so the mirror image has the same energy. Off by default; the
        model's own chirality is what :func:`evaluate_samples` measures.
    corrector_steps : int
        ``"pc"`` only: Langevin steps per noise level (>= 1).
    corrector_scale : float
        ``"pc"`` only: Langevin step in units of the level's ``sigma^2`` (in ``(0, 1]``). Larger
        steps relax further per call but are biased: even with the exact denoiser, the Langevin
        chain alone would settle at up to ``1 / (1 - scale / 2)`` times the marginal's variance
        (in the directions where the noise dominates it).
    corrector_log_snr_min : float
        ``"pc"`` only: correct only the levels ``>= corrector_log_snr_min`` (default: every
        level). On the molecular models the corrector at low ``log_snr`` empties rare states;
        from level 4 on it keeps them (see the models page).
    chiral_atoms : (X, a, b, c) or sequence of them, optional
        The chiral centres (:func:`~spacetime_md.molecular.system.chirality.chiral_centres_from_topology`,
        ``(CA, N, C, CB)`` for a C-alpha); required with ``mirror_d``.
    chiral_signs : sequence of int, optional
        The right sign of each centre's signed volume (default ``+1``: L for C-alpha quads).
    progress : bool
    callback : callable, optional
        Called with ``{"batch": k, "n_done": n, "elapsed_s": t}`` after every batch.

    Returns
    -------
    ndarray, shape=(n_samples, N, 3)
        Coordinates in nm (centred).
    """
    if n_samples < 1 or n_steps < 1 or batch_size < 1:
        raise ValueError(
            f"n_samples, n_steps, batch_size: expected integers >= 1, got {n_samples}, {n_steps}, {batch_size}"
        )
    if method not in ("ancestral", "ddim", "heun", "pc"):
        raise ValueError(f"method: expected 'heun', 'ancestral', 'ddim' or 'pc', got {method!r}")
    if method == "pc" and (int(corrector_steps) != corrector_steps or corrector_steps < 1):
        raise ValueError(f"corrector_steps: expected an integer >= 1 with method='pc', got {corrector_steps!r}")
    if method == "pc" and not 0.0 < corrector_scale <= 1.0:
        raise ValueError(f"corrector_scale: expected a value in (0, 1] with method='pc', got {corrector_scale!r}")
    if not log_snr_start < log_snr_end:
        raise ValueError(f"log_snr_end: expected a value > log_snr_start = {log_snr_start}, got {log_snr_end}")
    centres, signs = _chiral_quads(chiral_atoms, chiral_signs) if mirror_d else ([], np.zeros(0))
    dim = getattr(model, "dim", None) if dim is None else dim
    length_scale_nm = getattr(model, "length_scale_nm", None) if length_scale_nm is None else length_scale_nm
    if dim is None or length_scale_nm is None:
        raise ValueError("dim, length_scale_nm: expected values for a denoiser that is not an EquivariantDenoiser, got None")
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    dtype, device = (param.dtype, param.device) if param is not None else (torch.float64, torch.device("cpu"))
    levels = torch.linspace(log_snr_start, log_snr_end, n_steps, dtype=torch.float64)
    alpha, sigma = alpha_sigma(levels)
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_samples, desc=f"sample ({method})", dynamic_ncols=True)
    start = time.perf_counter()
    done = 0

    def evaluate(x: Tensor, level: Tensor) -> Tensor:
        lam = torch.full((x.shape[0],), float(level), dtype=dtype, device=device)
        return model(x.to(device=device, dtype=dtype), lam).to(torch.float64).cpu()

    with torch.no_grad():
        while done < n_samples:
            b = min(batch_size, n_samples - done)
            x = center(torch.randn(b, dim, generator=generator, dtype=torch.float64))
            for k in range(n_steps):
                if method == "pc" and k < n_steps - 1 and levels[k] >= corrector_log_snr_min:
                    eps = corrector_scale * float(sigma[k]) ** 2
                    for _ in range(int(corrector_steps)):
                        score = (alpha[k] * evaluate(x, levels[k]) - x) / sigma[k] ** 2
                        noise = center(torch.randn(b, dim, generator=generator, dtype=torch.float64))
                        x = x + eps * score + math.sqrt(2.0 * eps) * noise
                denoised = evaluate(x, levels[k])
                if k == n_steps - 1:
                    x = denoised
                    break
                a_t, s_t, a_s, s_s = alpha[k], sigma[k], alpha[k + 1], sigma[k + 1]
                if method == "ddim":
                    x = a_s * denoised + s_s * (x - a_t * denoised) / s_t
                elif method == "heun":
                    # EDM variables: y = x / alpha, noise level e = sigma / alpha.
                    e_t, e_s = s_t / a_t, s_s / a_s
                    y = x / a_t
                    slope = (y - denoised) / e_t
                    y_euler = y + (e_s - e_t) * slope
                    if k + 1 < n_steps - 1:
                        denoised_s = evaluate(a_s * y_euler, levels[k + 1])
                        slope = 0.5 * (slope + (y_euler - denoised_s) / e_s)
                    x = a_s * (y + (e_s - e_t) * slope)
                else:
                    r = math.exp(float(levels[k] - levels[k + 1]))
                    noise = center(torch.randn(b, dim, generator=generator, dtype=torch.float64))
                    x = a_s * (r / a_t) * x + a_s * (1.0 - r) * denoised + s_s * math.sqrt(1.0 - r) * noise
            out.append(from_model(x, length_scale_nm).numpy())
            done += b
            if bar is not None:
                bar.update(b)
            if callback is not None:
                callback({"batch": len(out), "n_done": done, "elapsed_s": time.perf_counter() - start})
    if bar is not None:
        bar.close()
    samples = np.concatenate(out, axis=0)
    if mirror_d and centres:
        right = np.stack([compute_chirality(samples, quad) == s for quad, s in zip(centres, signs)], axis=1)
        wrong = np.stack([compute_chirality(samples, quad) == -s for quad, s in zip(centres, signs)], axis=1)
        flip = wrong.sum(1) > right.sum(1)
        samples[flip, :, 2] *= -1.0
    return samples


def _chiral_quads(chiral_atoms: Any, chiral_signs: Any) -> tuple[list[tuple[int, ...]], np.ndarray]:
    if chiral_atoms is None:
        raise ValueError("chiral_atoms: expected the chiral centres to check with mirror_d=True, got None")
    items = list(chiral_atoms)
    if len(items) == 4 and all(isinstance(a, (int, np.integer)) for a in items):
        items = [items]
    quads = [tuple(int(a) for a in q) for q in items]
    if any(len(q) != 4 for q in quads):
        raise ValueError(f"chiral_atoms: expected (centre, a, b, c) quadruples, got {quads}")
    signs = np.ones(len(quads), dtype=np.int64) if chiral_signs is None else np.asarray(chiral_signs, dtype=np.int64)
    if signs.shape != (len(quads),) or not np.isin(signs, (-1, 1)).all():
        raise ValueError(f"chiral_signs: expected {len(quads)} values of +1 or -1, got {np.asarray(chiral_signs).tolist()}")
    return quads, signs
