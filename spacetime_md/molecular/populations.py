"""State populations with statistical errors, and Ramachandran plots.

Samples from MCMC / replica exchange are correlated, so the error of a population is estimated
by block averaging: the series is cut into ``n_blocks`` contiguous blocks and the standard error
is ``std(block means) / sqrt(n_blocks)``; with blocks much longer than the correlation time this
is the correct error of the mean. The effective sample size ``var / sem^2``
follows from the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spacetime_md.molecular.states import MetastableState, assign_states

__all__ = ["block_average", "state_populations", "compare_to_reference", "plot_ramachandran"]


def block_average(values: Any, n_blocks: int = 20) -> tuple[float, float]:
    """Mean and block-averaged standard error of a correlated series.

    Parameters
    ----------
    values : array-like, shape=(F,)
    n_blocks : int
        Number of contiguous blocks (at least 2; fewer blocks if ``F < n_blocks``).

    Returns
    -------
    mean, sem : float
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if n_blocks < 2:
        raise ValueError(f"n_blocks: expected >= 2, got {n_blocks}")
    if len(x) < 2:
        raise ValueError(f"values: expected at least 2 samples, got {len(x)}")
    n_blocks = min(n_blocks, len(x))
    size = len(x) // n_blocks
    blocks = x[: size * n_blocks].reshape(n_blocks, size).mean(axis=1)
    return float(x.mean()), float(blocks.std(ddof=1) / math.sqrt(n_blocks))


def state_populations(
    phi_psi: Any, states: Sequence[MetastableState], n_blocks: int = 20
) -> dict[str, dict[str, float]]:
    """Fraction of frames in each state (and in ``phi > 0``) with block-averaged errors.

    Parameters
    ----------
    phi_psi : array-like, shape=(F, 2)
        Radians, in sampling order (errors assume time order).
    states : sequence of MetastableState

    Returns
    -------
    dict
        ``{state name: {"fraction", "error", "ess"}}`` plus ``"phi>0"`` and, when both
        ``C7ax`` and ``C7eq`` are defined, ``"C7ax/C7eq"`` (ratio of populations, error from
        the block ratios).
    """
    phi_psi = np.asarray(phi_psi, dtype=np.float64)
    labels = assign_states(phi_psi, states)
    out: dict[str, dict[str, float]] = {}
    series = {s.name: (labels == k).astype(np.float64) for k, s in enumerate(states)}
    series["phi>0"] = (phi_psi[:, 0] > 0).astype(np.float64)
    for name, ind in series.items():
        mean, sem = block_average(ind, n_blocks)
        var = mean * (1 - mean)
        ess = float(var / sem**2) if sem > 0 else float(len(ind))
        out[name] = {"fraction": mean, "error": sem, "ess": min(ess, float(len(ind)))}
    if "C7ax" in series and "C7eq" in series:
        a, b = series["C7ax"], series["C7eq"]
        n_b = min(n_blocks, len(a))
        size = len(a) // n_b
        ra = a[: size * n_b].reshape(n_b, size).mean(1)
        rb = b[: size * n_b].reshape(n_b, size).mean(1)
        ratio = float(a.mean() / b.mean()) if b.mean() > 0 else float("nan")
        # Delta method on block means: var(A/B) ~ (var A / B^2 + A^2 var B / B^4 - 2 A cov / B^3) / n.
        if b.mean() > 0:
            cov = np.cov(ra, rb, ddof=1)
            A, B = a.mean(), b.mean()
            var = (cov[0, 0] / B**2 + A**2 * cov[1, 1] / B**4 - 2 * A * cov[0, 1] / B**3) / n_b
            err = float(math.sqrt(max(var, 0.0)))
        else:
            err = float("nan")
        out["C7ax/C7eq"] = {"fraction": ratio, "error": err, "ess": float("nan")}
    return out


def compare_to_reference(
    populations: dict[str, dict[str, float]], reference: dict[str, dict[str, float]], keys: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """z-scores ``(ours - reference) / sqrt(err^2 + err_ref^2)`` for the shared keys."""
    out = {}
    for key in keys or [k for k in populations if k in reference]:
        if key not in populations or key not in reference:
            continue
        a, b = populations[key], reference[key]
        err = math.sqrt(a["error"] ** 2 + b["error"] ** 2)
        z = (a["fraction"] - b["fraction"]) / err if err > 0 else float("inf")
        out[key] = {"ours": a["fraction"], "ours_error": a["error"], "reference": b["fraction"],
                    "reference_error": b["error"], "z": z}
    return out


def plot_ramachandran(
    phi_psi: Any,
    path: str | Path,
    states: Sequence[MetastableState] = (),
    title: str = "",
    weights: Any = None,
    bins: int = 72,
) -> Path:
    """Write a Ramachandran free-energy plot (-ln p, in kT) with state discs as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spacetime_md.molecular._io import atomic_path

    x = np.degrees(np.asarray(phi_psi, dtype=np.float64))
    h, xe, ye = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[[-180, 180], [-180, 180]], weights=weights)
    with np.errstate(divide="ignore"):
        f = -np.log(h / h.sum())
    f -= np.nanmin(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=110)
    mesh = ax.pcolormesh(xe, ye, np.where(np.isfinite(f), f, np.nan).T, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="free energy / kT")
    ax.set_facecolor("0.92")
    for s in states:
        for dx in (-360, 0, 360):
            for dy in (-360, 0, 360):
                ax.add_patch(plt.Circle((s.phi_deg + dx, s.psi_deg + dy), s.radius_deg, fill=False, color="tab:red", lw=1))
        ax.annotate(s.label or s.name, (s.phi_deg, s.psi_deg), color="k", ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xlabel("phi / deg")
    ax.set_ylabel("psi / deg")
    ax.set_title(title or f"{len(x)} samples", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
