"""The paper's 1-D toy situation (Fig. 1 and Fig. 3-left) with exact denoisers.

Data: a 1-D mixture with means (-2.5, 0.5, 2.5), std 0.75 and weights (0.275, 0.45, 0.275).
Probability-flow (DDIM) trajectories run on a linear log-SNR schedule from -10 to +10
(generation). For each trajectory, seen as a spacetime curve, its curve energy is compared
with the energy of the spacetime geodesic between the same endpoints (Fig. 3-left), and one
geodesic between two data points at log_snr 4 is drawn over the marginal density (Fig. 1).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from spacetime_md._atomic import write_json_atomic
from spacetime_md.core import (
    GeodesicConfig,
    SpacetimePoint,
    alpha_sigma,
    curve_energy,
    optimize_geodesic,
    sample_ddim,
)
from spacetime_md.toy.gaussian_mixture import GaussianMixture

__all__ = ["paper_mixture", "run_toy_demo"]

logger = logging.getLogger(__name__)


def paper_mixture() -> GaussianMixture:
    """The 1-D mixture of the paper's Fig. 1."""
    return GaussianMixture([-2.5, 0.5, 2.5], 0.75, [0.275, 0.45, 0.275])


def run_toy_demo(
    out_dir: str | os.PathLike,
    *,
    n_trajectories: int = 8,
    n_schedule: int = 128,
    seed: int = 0,
    config: GeodesicConfig | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the Fig. 1 / Fig. 3-left comparison and write ``report.json``, ``config.json`` and PNGs.

    Parameters
    ----------
    out_dir : path
        Output directory (created).
    n_trajectories : int
        PF-ODE trajectories compared with geodesics.
    n_schedule : int
        Points of the linear log-SNR schedule from -10 to +10 (also the curve discretisation).
    seed : int
    config : GeodesicConfig, optional
        Geodesic solver settings; the default refines up to ``n_schedule`` points.
    plots : bool
        Write ``fig1_geodesic.png`` and ``fig3_energies.png``.

    Returns
    -------
    dict
        The report (also written to ``report.json``).
    """
    if isinstance(n_trajectories, bool) or not isinstance(n_trajectories, int) or n_trajectories < 1:
        raise ValueError(f"n_trajectories: expected an integer >= 1, got {n_trajectories!r}")
    if isinstance(n_schedule, bool) or not isinstance(n_schedule, int) or n_schedule < 8:
        raise ValueError(f"n_schedule: expected an integer >= 8, got {n_schedule!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    gm = paper_mixture()
    config = config or GeodesicConfig(n_nodes=10, n_points=(16, 32, 64, n_schedule))
    write_json_atomic(out / "config.json", {
        "seed": seed, "n_trajectories": n_trajectories, "n_schedule": n_schedule,
        "mixture": {"means": gm.means[:, 0].tolist(), "stds": gm.stds.tolist(), "weights": gm.weights.tolist()},
        "geodesic": config.to_dict(),
    })
    t0 = time.perf_counter()
    schedule = torch.linspace(-10.0, 10.0, n_schedule, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_trajectories, 1, dtype=torch.float64, generator=gen)
    traj = sample_ddim(gm.denoiser, noise, schedule, return_trajectory=True)  # (S, B, 1)
    rows = []
    for i in range(n_trajectories):
        x = traj[:, i]
        e_ode = float(curve_energy(gm.denoiser, schedule, x))
        geo = optimize_geodesic(
            gm.denoiser, SpacetimePoint(-10.0, x[0].clone()), SpacetimePoint(10.0, x[-1].clone()), config
        )
        rows.append({"trajectory": i, "x_noise": float(x[0, 0]), "x_data": float(x[-1, 0]),
                     "pf_ode_energy": e_ode, "geodesic_energy": geo.energy,
                     "ratio": geo.energy / e_ode, "geodesic_steps": geo.n_steps})
    # Fig. 1: geodesic between two data points (the outer modes) at log_snr 4.
    lam = 4.0
    alpha = float(alpha_sigma(lam)[0])
    a = SpacetimePoint(lam, torch.tensor([-2.5 * alpha], dtype=torch.float64))
    b = SpacetimePoint(lam, torch.tensor([2.5 * alpha], dtype=torch.float64))
    fig1 = optimize_geodesic(gm.denoiser, a, b, config)
    report = {
        "pf_ode_vs_geodesic": rows,
        "mean_energy_ratio": sum(r["ratio"] for r in rows) / len(rows),
        "data_geodesic": {**fig1.summary(), "config": None},
        "wall_time": time.perf_counter() - t0,
    }
    if plots:
        _plot(out, gm, schedule, traj, fig1, rows)
    write_json_atomic(out / "report.json", report)
    return report


def _plot(out: Path, gm: GaussianMixture, schedule, traj, fig1, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam_grid = torch.linspace(-10, 10, 200, dtype=torch.float64)
    x_grid = torch.linspace(-4.5, 4.5, 200, dtype=torch.float64)
    L, X = torch.meshgrid(lam_grid, x_grid, indexing="ij")
    dens = gm.marginal_log_prob(X.reshape(-1, 1), L.reshape(-1)).exp().reshape(200, 200)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.pcolormesh(lam_grid, x_grid, dens.T, shading="auto", cmap="Greys")
    for i in range(traj.shape[1]):
        ax.plot(schedule, traj[:, i, 0], color="tab:blue", lw=0.8, alpha=0.7, label="PF-ODE" if i == 0 else None)
    ax.plot(fig1.log_snr, fig1.x[:, 0], color="tab:red", lw=2, label="spacetime geodesic")
    ax.set_xlabel("log SNR (noise  ->  data)")
    ax.set_ylabel("x")
    ax.legend(loc="upper left")
    ax.set_title("1-D mixture: PF-ODE trajectories and a geodesic between two data points")
    fig.tight_layout()
    fig.savefig(out / "fig1_geodesic.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    e_ode = [r["pf_ode_energy"] for r in rows]
    e_geo = [r["geodesic_energy"] for r in rows]
    ax.scatter(e_ode, e_geo)
    lim = [min(e_geo + e_ode) * 0.9, max(e_geo + e_ode) * 1.1]
    ax.plot(lim, lim, "k--", lw=0.8, label="equal energy")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("PF-ODE trajectory energy")
    ax.set_ylabel("geodesic energy (same endpoints)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fig3_energies.png", dpi=120)
    plt.close(fig)
