"""Cost of one geodesic-solver evaluation of the shipped alanine model: baseline EGNN vs current.

Extracts ``spacetime_md/molecular/model/{egnn,denoiser}.py`` of ``--baseline`` (a git commit)
into a temporary directory, imports them by path as the baseline model class, loads the
shipped alanine dipeptide weights into both models (the state_dict must load unchanged), checks
that their outputs agree in float64, and then times, in one process and interleaved (baseline,
current, current, baseline, ...), the solver's two kinds of call at the geodesic's batch sizes
(T = 16 and 32 curve points, one Rademacher probe per point, float32, one torch thread):

- ``value+grad``: forward + Hutchinson divergence (one vector-Jacobian product with
  ``create_graph``) + backward of the curve energy to the curve points (a double backward);
- ``value``: forward + one vector-Jacobian product (the line search's call).

CPU time (``time.process_time``) per call is the minimum over ``--repeats`` calls of each
round, the best over rounds; absolute times move with the machine's load, compare the ratio.

    python benchmarks/bench_egnn_speed.py [--baseline COMMIT] [--rounds 3] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from spacetime_md.core.geometry import curve_energy

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before the EGNN evaluation was streamlined.
DEFAULT_BASELINE = "ee8b3a7"
MODEL_DIR = "spacetime_md/molecular/model"


def load_baseline_model_class(commit: str, into: Path):
    """``EquivariantDenoiser`` of ``commit``, its ``egnn``/``denoiser`` modules imported by path."""
    tar = subprocess.run(["git", "archive", commit, f"{MODEL_DIR}/egnn.py", f"{MODEL_DIR}/denoiser.py"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    folder = into / MODEL_DIR
    denoiser = folder / "denoiser.py"
    denoiser.write_text(denoiser.read_text().replace("from spacetime_md.molecular.model.egnn import",
                                                     "from _baseline_egnn import"))
    modules = {}
    for name, path in (("_baseline_egnn", folder / "egnn.py"), ("_baseline_denoiser", denoiser)):
        spec = importlib.util.spec_from_file_location(name, path)
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[name] = modules[name]
        spec.loader.exec_module(modules[name])
    return modules["_baseline_denoiser"].EquivariantDenoiser


def curve_batch(model, n_points: int, seed: int = 0):
    """A curve of ``n_points`` in model units between two Boltzmann-like structures (noisy
    copies of the shipped model's training scale), its log-SNR and one probe per point."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(model.dim, generator=g) * model.sigma_data
    end = start + 0.3 * torch.randn(model.dim, generator=g)
    s = torch.linspace(0, 1, n_points)[:, None]
    x = (1 - s) * start + s * end + 0.5 * torch.sin(torch.pi * s) * torch.randn(model.dim, generator=g)
    log_snr = 4.0 - 8.0 * torch.sin(torch.pi * s[:, 0])
    probes = torch.randint(0, 2, (1, n_points, model.dim), generator=g).float() * 2 - 1
    return log_snr, x, probes


def value_and_grad(model, log_snr, x, probes):
    xs = x.clone().requires_grad_(True)
    ls = log_snr.clone().requires_grad_(True)
    energy = curve_energy(model, ls, xs, divergence="hutchinson", probes=probes, create_graph=True)
    energy.backward()
    return energy.detach(), xs.grad, ls.grad


def value_only(model, log_snr, x, probes):
    xs = x.clone().requires_grad_(True)
    with torch.enable_grad():
        energy = curve_energy(model, log_snr, xs, divergence="hutchinson", probes=probes, create_graph=False)
    return energy.detach()


def cpu_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def check_agreement(old, new) -> float:
    """Largest relative difference of outputs, energy and gradients in float64."""
    old64, new64 = copy.deepcopy(old).double(), copy.deepcopy(new).double()
    worst = 0.0
    for n_points in (16, 32):
        log_snr, x, probes = curve_batch(new, n_points)
        log_snr, x, probes = log_snr.double(), x.double(), probes.double()
        with torch.no_grad():
            a, b = old64(x, log_snr), new64(x, log_snr)
        worst = max(worst, float((a - b).abs().max() / a.abs().max()))
        for u, v in zip(value_and_grad(old64, log_snr, x, probes), value_and_grad(new64, log_snr, x, probes)):
            worst = max(worst, float((u - v).abs().max() / u.abs().max().clamp_min(1e-300)))
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of the current model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from spacetime_md.molecular.model.pretrained import load_pretrained

    new = load_pretrained("alanine-dipeptide")
    with tempfile.TemporaryDirectory() as tmp:
        old_cls = load_baseline_model_class(args.baseline, Path(tmp))
        old = old_cls(**new.config)
        old.load_state_dict(new.state_dict(), strict=True)
    old.eval()
    new.eval()
    assert sorted(old.state_dict()) == sorted(new.state_dict())
    print(f"max relative difference, float64 (outputs, energy, gradients): {check_agreement(old, new):.2e}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        log_snr, x, probes = curve_batch(new, 32)
        value_and_grad(new, log_snr, x, probes)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                value_and_grad(new, log_snr, x, probes)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(f"{'T':>4}{'call':>12}{'baseline ms':>13}{'current ms':>12}{'ratio':>8}")
    for n_points in args.points:
        batch = curve_batch(new, n_points)
        for name, fn in (("value+grad", value_and_grad), ("value", value_only)):
            best = {"baseline": float("inf"), "current": float("inf")}
            for r in range(args.rounds):
                order = [("baseline", old), ("current", new)]
                for label, model in (order if r % 2 == 0 else order[::-1]):
                    fn(model, *batch)  # warm-up
                    best[label] = min(best[label], cpu_time(lambda: fn(model, *batch), args.repeats))
            print(f"{n_points:>4}{name:>12}{1e3 * best['baseline']:>13.1f}{1e3 * best['current']:>12.1f}"
                  f"{best['baseline'] / best['current']:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
