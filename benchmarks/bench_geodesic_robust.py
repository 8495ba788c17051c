"""The geodesic solver on a rough *learned* 2-D denoiser vs plain Adam on the same curve class.

Issue 23 asked for robustness on rough learned landscapes, with the paper's 2-D alanine
(phi, psi) reference MLP as the test case. That network is not available offline, so this
benchmark trains its own: a :class:`~spacetime_md.toy.periodic_model.PeriodicDenoiser`
(float32, ``--hidden`` x ``--layers``) on exact samples of the packaged alanine (phi, psi)
free-energy grid (``sample_grid``: grid weights ``exp(-U)`` with jitter), for only
``--train-steps`` steps, so the denoiser - and hence the curve energy - is rough. Endpoints
``(-2.55, 2.7)`` -> ``(0.95, -0.4)`` at ``log_snr`` 4, as in the paper's Table 1.

Both optimisers work on the same curve class (a :class:`~spacetime_md.core.SplineCurve` with
``--nodes`` interior knots, straight-line start) in float32 with the exact divergence (D = 2):

- ours, two configurations of :func:`~spacetime_md.core.optimize_geodesic`:
  ``default`` (the default :class:`GeodesicConfig`: L-BFGS, T = 16 -> 32 -> 64 -> 128,
  convergence test) and ``robust`` (:data:`ROBUST`: T = 32 -> 64 -> 128 with the first stage
  replaced by 400 Adam steps on a jittered 32-point discretisation, ``explore_steps``, and a
  second start on T = 64 -> 128, ``n_starts=2``; the lower final objective wins);
- Adam: the paper's recipe, lr ``--adam-lr``, T = 128, ``--adam-steps`` fixed steps.

Every curve is scored by the exact-divergence, segment-clamped energy at T = ``--eval-points``
(1024: a discretisation far finer than either optimiser's). Prints our energy and time as
ratios to Adam's best (its best curve among checkpoints every ``--eval-every`` steps), and
Adam's time to come within 2 % of its own best, with wall and CPU (process) times, since the
load of a shared machine varies. A short warm-up solve runs first (the first autograd calls
of a process are slower).

    python benchmarks/bench_geodesic_robust.py [--quick] [--seeds 0 1 2] [--configs default robust] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from spacetime_md.core import GeodesicConfig, SpacetimePoint, SplineCurve, alpha_sigma, curve_energy, optimize_geodesic
from spacetime_md.toy.landscape import alanine_dipeptide_fes
from spacetime_md.toy.periodic_model import PeriodicModelConfig, PeriodicTrainConfig, train_periodic_denoiser

START, END, LOG_SNR = (-2.55, 2.7), (0.95, -0.4), 4.0
#: The solver setting for rough learned models (docs/geodesic.md, "A rough learned 2-D denoiser").
ROBUST = dict(n_points=(32, 64, 128), explore_steps=400, n_starts=2)


def train_rough_model(hidden: int = 64, layers: int = 3, steps: int = 300, n_data: int = 20_000, seed: int = 0):
    """A deliberately under-trained float32 denoiser of the alanine (phi, psi) landscape."""
    potential = alanine_dipeptide_fes()
    data = potential.sample_grid(n_data, generator=torch.Generator().manual_seed(seed)).to(torch.float32)
    trained = train_periodic_denoiser(
        data, PeriodicModelConfig(hidden=hidden, n_layers=layers, n_frequencies=6),
        PeriodicTrainConfig(n_steps=steps, batch_size=512, log_every=max(steps, 1), seed=seed))
    return trained.model


def endpoints(dtype=torch.float32) -> tuple[SpacetimePoint, SpacetimePoint]:
    alpha = float(alpha_sigma(LOG_SNR)[0])
    return (SpacetimePoint(LOG_SNR, alpha * torch.tensor(START, dtype=dtype)),
            SpacetimePoint(LOG_SNR, alpha * torch.tensor(END, dtype=dtype)))


def score(model, curve: SplineCurve, n_points: int) -> float:
    """Exact-divergence, segment-clamped curve energy at ``n_points`` points."""
    with torch.no_grad():
        log_snr, x = curve.evaluate(n_points)
    return float(curve_energy(model, log_snr.detach(), x.detach(), divergence="exact", clamp="segment",
                              create_graph=False))


def run_adam(model, a, b, n_nodes: int, lr: float, n_steps: int, n_points: int, eval_every: int,
             eval_points: int) -> dict:
    """Plain Adam on the spline knots, exact divergence at ``n_points``; best scored checkpoint kept."""
    curve = SplineCurve(a, b, n_nodes)
    opt = torch.optim.Adam([curve.interior], lr=lr)
    s = torch.linspace(0, 1, n_points)
    cpu_eval = 0.0
    trace, eval_time, t0, c0 = [], 0.0, time.perf_counter(), time.process_time()
    for step in range(1, n_steps + 1):
        opt.zero_grad()
        log_snr, x = curve.evaluate(s)
        energy = curve_energy(model, log_snr, x, divergence="exact", clamp="segment")
        energy.backward()
        opt.step()
        if step % eval_every == 0 or step == n_steps:
            t_eval, c_eval = time.perf_counter(), time.process_time()
            trace.append((step, time.perf_counter() - t0 - eval_time, score(model, curve, eval_points)))
            eval_time += time.perf_counter() - t_eval
            cpu_eval += time.process_time() - c_eval
    best = min(e for _, _, e in trace)
    within = next(t for _, t, e in trace if e <= 1.02 * best)
    cpu = time.process_time() - c0 - cpu_eval
    return {"best_energy": best, "final_energy": trace[-1][2], "seconds": trace[-1][1], "cpu_seconds": cpu,
            "seconds_to_2pct": within, "n_steps": n_steps, "trace": trace}


def run_ours(model, a, b, config: GeodesicConfig, eval_points: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    result = optimize_geodesic(model, a, b, config)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"energy": score(model, result.curve, eval_points), "seconds": seconds, "cpu_seconds": cpu,
            "n_steps": result.n_steps, "start": result.start, "start_objectives": result.start_objectives,
            "converged": result.converged, "n_failed_searches": result.n_failed_searches,
            "solver_energy": result.energy}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2000 Adam steps instead of 10 000")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="model (training) seeds")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--adam-lr", type=float, default=0.1)
    parser.add_argument("--adam-steps", type=int, default=None)
    parser.add_argument("--adam-points", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-points", type=int, default=1024)
    parser.add_argument("--configs", nargs="+", choices=("default", "robust"), default=["default", "robust"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "geodesic_robust.json"))
    args = parser.parse_args(argv)
    adam_steps = args.adam_steps or (2000 if args.quick else 10_000)
    torch.set_num_threads(1)
    configs = {"default": GeodesicConfig(n_nodes=args.nodes), "robust": GeodesicConfig(n_nodes=args.nodes, **ROBUST)}
    configs = {name: configs[name] for name in args.configs}
    rows = []
    warmed = False
    for seed in args.seeds:
        torch.manual_seed(seed)
        model = train_rough_model(args.hidden, args.layers, args.train_steps, seed=seed)
        a, b = endpoints()
        straight = score(model, SplineCurve(a, b, args.nodes), args.eval_points)
        if not warmed:  # the first autograd calls of a process are slower: warm up outside the timings
            optimize_geodesic(model, a, b, GeodesicConfig(n_nodes=args.nodes, n_points=(32, 64), explore_steps=5,
                                                          n_starts=2, max_steps=5))
            warmed = True
        ours = {name: run_ours(model, a, b, config, args.eval_points) for name, config in configs.items()}
        adam = run_adam(model, a, b, args.nodes, args.adam_lr, adam_steps, args.adam_points, args.eval_every,
                        args.eval_points)
        row = {"seed": seed, "straight_energy": straight, "ours": ours, "adam": {k: v for k, v in adam.items()}}
        rows.append(row)
        print(f"seed {seed}: straight line E {straight:.3f}; Adam lr {args.adam_lr} x {adam_steps} steps: best E "
              f"{adam['best_energy']:.3f} (final {adam['final_energy']:.3f}) in {adam['seconds']:.1f} s "
              f"(CPU {adam['cpu_seconds']:.1f} s), within 2 % after {adam['seconds_to_2pct']:.1f} s")
        for name, res in ours.items():
            print(f"   ours {name:8s}: E {res['energy']:.3f} in {res['seconds']:.2f} s (CPU {res['cpu_seconds']:.2f} s; "
                  f"{res['n_steps']} steps, {res['n_failed_searches']} failed searches, start {res['start']} of "
                  f"{[round(o, 2) for o in res['start_objectives']] or 1}); ratios vs Adam: energy "
                  f"{res['energy'] / adam['best_energy']:.4f}, time 1/{adam['seconds'] / res['seconds']:.1f} "
                  f"(CPU 1/{adam['cpu_seconds'] / res['cpu_seconds']:.1f}), time vs Adam's 2 % time "
                  f"{res['seconds'] / adam['seconds_to_2pct']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "geodesic_robust", "args": vars(args), "rows": rows,
                               "torch_threads": 1}, indent=2, default=float))
    return 0 if all(math.isfinite(o["energy"]) for r in rows for o in r["ours"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
