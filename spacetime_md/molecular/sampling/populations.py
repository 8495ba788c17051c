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
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from spacetime_md.molecular.system.states import MetastableState, assign_states

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.cvs import CollectiveVariables

__all__ = ["block_average", "state_populations", "compare_to_reference", "plot_ramachandran", "plot_cvs"]


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
    values: Any,
    states: Sequence[MetastableState],
    cvs: "CollectiveVariables | None" = None,
    n_blocks: int = 20,
) -> dict[str, dict[str, float]]:
    """Fraction of frames in each state with block-averaged errors.

    Parameters
    ----------
    values : array-like, shape=(F, K)
        CV values (radians / nm) in the order of ``cvs``, in sampling order (errors assume
        time order); without ``cvs``, (phi, psi) pairs (legacy).
    states : sequence of MetastableState
    cvs : CollectiveVariables, optional
    n_blocks : int

    Returns
    -------
    dict
        ``{state name: {"fraction", "error", "ess"}}``, plus ``"phi>0"`` when the CVs have
        exactly one backbone (phi, psi) pair (or for legacy (phi, psi) input) and, when both
        ``C7ax`` and ``C7eq`` are defined, ``"C7ax/C7eq"`` (ratio of populations, error from
        the block ratios).
    """
    if isinstance(cvs, (int, np.integer)) and not isinstance(cvs, bool):  # legacy positional n_blocks
        cvs, n_blocks = None, int(cvs)
    values = np.asarray(values, dtype=np.float64)
    labels = assign_states(values, states, cvs)
    out: dict[str, dict[str, float]] = {}
    series = {s.name: (labels == k).astype(np.float64) for k, s in enumerate(states)}
    phi_column = _single_phi_column(cvs)
    if phi_column is not None:
        series["phi>0"] = (values[:, phi_column] > 0).astype(np.float64)
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


def _single_phi_column(cvs: "CollectiveVariables | None") -> int | None:
    """Column of phi when there is exactly one (phi, psi) pair (legacy input: column 0)."""
    if cvs is None:
        return 0
    pairs = cvs.ramachandran_pairs()
    return pairs[0][1] if len(pairs) == 1 else None


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


def _panels(cvs: "CollectiveVariables") -> list[tuple[int, ...]]:
    """CV columns of each panel: one Ramachandran panel per residue, else the first two CVs."""
    pairs = cvs.ramachandran_pairs()
    if pairs:
        return [(i, j) for _, i, j in pairs]
    return [tuple(range(min(2, len(cvs))))] if len(cvs) else []


def _axis_label(cv: Any) -> str:
    return f"{cv.name} / {'deg' if cv.periodic else 'nm'}"


def _display(values: np.ndarray, cv: Any) -> np.ndarray:
    return np.degrees(values) if cv.periodic else values


def _axis_range(x: np.ndarray, cv: Any) -> tuple[float, float]:
    if cv.periodic:
        return (-180.0, 180.0)
    lo, hi = float(np.min(x)), float(np.max(x))
    pad = 0.05 * (hi - lo) if hi > lo else 0.05
    return (lo - pad, hi + pad)


def _draw_regions(ax: Any, states: Sequence[MetastableState], cvs: "CollectiveVariables", columns: Sequence[int],
                  limits: Sequence[tuple[float, float]]) -> None:
    """Draw every state region that lies in this panel's CVs (display units: deg / nm): discs
    as circles, boxes as rectangles (periodic images included); a region on one of the two CVs
    is a band across the other axis."""
    import matplotlib.pyplot as plt

    periodic = [bool(cvs.periodic[c]) for c in columns]
    style = {"fill": False, "color": "tab:red", "lw": 1}
    shifts_x = (-360.0, 0.0, 360.0) if periodic[0] else (0.0,)
    shifts_y = (-360.0, 0.0, 360.0) if len(columns) == 2 and periodic[1] else (0.0,)
    for state in states:
        anchor = None
        for region in state.regions:
            try:
                idx = [cvs.index(n) for n in region.cvs]
            except KeyError:
                continue
            if not set(idx) <= set(columns):
                continue
            axes = [list(columns).index(i) for i in idx]
            lo = [lim[0] for lim in limits]
            hi = [lim[1] for lim in limits]
            circle = region.kind == "disc" and len(axes) == 2
            if circle:
                centre = [0.0, 0.0]
                for a, v in zip(axes, region.centre):
                    centre[a] = v
                here = tuple(centre)
            else:
                if region.kind == "disc":
                    (a,) = axes
                    lo[a], hi[a] = region.centre[0] - region.radius, region.centre[0] + region.radius
                else:
                    for a, (b_lo, b_hi) in zip(axes, region.bounds):
                        span = b_hi - b_lo
                        if periodic[a]:
                            span = 360.0 if span >= 360.0 else span % 360.0
                        lo[a], hi[a] = b_lo, b_lo + span
                here = tuple(0.5 * (a + b) for a, b in zip(lo, hi))
            for dx in shifts_x:
                for dy in shifts_y:
                    if circle:
                        ax.add_patch(plt.Circle((centre[0] + dx, centre[1] + dy), region.radius, **style))
                    elif len(columns) == 1:
                        ax.axvspan(lo[0] + dx, hi[0] + dx, **style)
                    else:
                        ax.add_patch(plt.Rectangle((lo[0] + dx, lo[1] + dy), hi[0] - lo[0], hi[1] - lo[1], **style))
            anchor = anchor or tuple(min(max(v, lim[0]), lim[1]) for v, lim in zip(here, limits))
        if anchor is not None:
            where = (anchor, "data") if len(columns) == 2 else ((anchor[0], 0.9), ("data", "axes fraction"))
            ax.annotate(state.label or state.name, where[0], xycoords=where[1], color="k", ha="center", va="center",
                        fontsize=8, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})


def _draw_panel(fig: Any, ax: Any, values: np.ndarray, cvs: "CollectiveVariables", columns: Sequence[int],
                states: Sequence[MetastableState], weights: Any, bins: int, title: str) -> None:
    data = [_display(values[:, c], cvs[c]) for c in columns]
    limits = [_axis_range(d, cvs[c]) for d, c in zip(data, columns)]
    if len(columns) == 2:
        h, xe, ye = np.histogram2d(data[0], data[1], bins=bins, range=limits, weights=weights)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = -np.log(h / h.sum())
        f -= np.nanmin(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
        mesh = ax.pcolormesh(xe, ye, np.where(np.isfinite(f), f, np.nan).T, cmap="viridis", shading="flat")
        fig.colorbar(mesh, ax=ax, label="free energy / kT")
        ax.set_facecolor("0.92")
        ax.set_ylim(*limits[1])
        ax.set_ylabel(_axis_label(cvs[columns[1]]))
    else:
        h, xe = np.histogram(data[0], bins=bins, range=limits[0], weights=weights)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = -np.log(h / h.sum())
        f -= np.nanmin(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
        ax.step(0.5 * (xe[1:] + xe[:-1]), np.where(np.isfinite(f), f, np.nan), where="mid")
        ax.set_ylabel("free energy / kT")
    _draw_regions(ax, states, cvs, columns, limits)
    ax.set_xlim(*limits[0])
    ax.set_xlabel(_axis_label(cvs[columns[0]]))
    ax.set_title(title, fontsize=9)


def plot_cvs(
    values: Any,
    cvs: "CollectiveVariables",
    path: str | Path,
    states: Sequence[MetastableState] = (),
    title: str = "",
    weights: Any = None,
    bins: int = 72,
) -> Path | None:
    """Free-energy plots (-ln p, in kT) of CV values with the state regions, as a PNG (atomic).

    One Ramachandran panel per residue for a peptide (degrees), otherwise one panel of the
    first two CVs (or a 1-D profile of a single CV); axis labels carry units (deg / nm). State
    regions (discs and boxes) are drawn on the panels whose CVs they use.

    Parameters
    ----------
    values : array-like, shape=(F, K)
        CV values (radians / nm) in the order of ``cvs``.
    cvs : CollectiveVariables
    path : str or Path
    states : sequence of MetastableState
    title : str
        Figure title (default: the number of samples).
    weights : array-like, shape=(F,), optional
    bins : int

    Returns
    -------
    Path or None
        ``None`` (nothing written) when there is no CV to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spacetime_md.molecular._io import atomic_path

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(cvs):
        raise ValueError(f"values: expected shape (F, {len(cvs)}) for CVs {list(cvs.names)}, got {values.shape}")
    panels = _panels(cvs)
    if not panels or len(values) == 0:
        return None
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 4.4 * n_rows), dpi=110, squeeze=False)
    pairs = {(i, j): res for res, i, j in cvs.ramachandran_pairs()}
    for k, columns in enumerate(panels):
        ax = axes[k // n_cols][k % n_cols]
        sub = f"residue {pairs[columns]}" if columns in pairs and len(panels) > 1 else ""
        _draw_panel(fig, ax, values, cvs, columns, states, weights, bins, sub)
    for k in range(len(panels), n_rows * n_cols):
        axes[k // n_cols][k % n_cols].set_visible(False)
    fig.suptitle(title or f"{len(values)} samples", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def plot_ramachandran(
    phi_psi: Any,
    path: str | Path,
    states: Sequence[MetastableState] = (),
    title: str = "",
    weights: Any = None,
    bins: int = 72,
) -> Path:
    """Write a Ramachandran free-energy plot (-ln p, in kT) of one (phi, psi) pair (radians,
    shape=(F, 2)) with the states' regions as a PNG (atomic). Several residues or other CVs:
    :func:`plot_cvs`."""
    from spacetime_md.molecular.system.states import _phi_psi_cvs

    phi_psi = np.asarray(phi_psi, dtype=np.float64)
    if phi_psi.ndim != 2 or phi_psi.shape[1] != 2:
        raise ValueError(f"phi_psi: expected shape (F, 2), got {phi_psi.shape}")
    cvs = _phi_psi_cvs()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spacetime_md.molecular._io import atomic_path

    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=110)
    _draw_panel(fig, ax, phi_psi, cvs, (0, 1), states, weights, bins, title or f"{len(phi_psi)} samples")
    ax.set_xlabel("phi / deg")
    ax.set_ylabel("psi / deg")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
