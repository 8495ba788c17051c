"""Periodic grid potential: spline, lookups, minimax bound, Langevin sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spacetime_md.toy.landscape import PeriodicGridPotential, alanine_dipeptide_fes
from spacetime_md.toy.langevin import sample_boltzmann, sample_langevin

TWO_PI = 2 * math.pi


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensor ops: one intra-op thread (two threads stall when the other core is busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fes():
    return alanine_dipeptide_fes()


def cosine_grid(n0=40, n1=32, a=3.0, b=1.5):
    """U = a (1 - cos x0) + b (1 - cos 2 x1) on [-pi, pi)^2 (values[j, i])."""
    x0 = -math.pi + TWO_PI * np.arange(n0) / n0
    x1 = -math.pi + TWO_PI * np.arange(n1) / n1
    return a * (1 - np.cos(x0))[None, :] + b * (1 - np.cos(2 * x1))[:, None]


def write_grid(path, values, lower=(-math.pi, -math.pi), fastest_first=True):
    n1, n0 = values.shape
    x0 = lower[0] + TWO_PI * np.arange(n0) / n0
    x1 = lower[1] + TWO_PI * np.arange(n1) / n1
    rows = []
    if fastest_first:
        for j in range(n1):
            for i in range(n0):
                rows.append((x0[i], x1[j], values[j, i]))
    else:
        for i in range(n0):
            for j in range(n1):
                rows.append((x0[i], x1[j], values[j, i]))
    np.savetxt(path, np.array(rows), header="phi psi z")
    return path


# -- construction ------------------------------------------------------------------------------


def test_packaged_grid_matches_the_shared_file_layout(fes):
    assert fes.shape == (89, 89)
    assert fes.lower == pytest.approx((-math.pi, -math.pi), abs=1e-9)
    assert fes.period == pytest.approx((TWO_PI, TWO_PI), abs=1e-8)
    # first data rows of the file: (-pi, -pi) -> 16.2749, (-pi + h, -pi) -> 13.2985
    assert float(fes.values[0, 0]) == pytest.approx(16.27487217)
    assert float(fes.values[0, 1]) == pytest.approx(13.298453643)
    assert float(fes.values.min()) == 0.0
    assert float(fes.values.max()) == pytest.approx(96.36, abs=0.01)


def test_from_file_round_trip_and_layout(tmp_path):
    values = cosine_grid()
    pot = PeriodicGridPotential.from_file(write_grid(tmp_path / "g.dat", values))
    assert pot.shape == (40, 32)
    assert np.allclose(pot.values.numpy(), values)


@pytest.mark.parametrize(
    "content, message",
    [
        ("# x y z\n0 0\n1 1\n", "expected 3 columns"),
        ("0 0 1\n1 0 1\n0 1 1\n", "expected a complete grid"),
        ("0 0 nan\n", "expected finite numbers"),
    ],
)
def test_from_file_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.dat"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        PeriodicGridPotential.from_file(path)


def test_from_file_rejects_wrong_order_and_uneven_spacing(tmp_path):
    values = cosine_grid(8, 8)
    with pytest.raises(ValueError, match="first column varying fastest"):
        PeriodicGridPotential.from_file(write_grid(tmp_path / "o.dat", values, fastest_first=False))
    data = np.loadtxt(write_grid(tmp_path / "u.dat", values))
    data[data[:, 0] == data[:, 0].max(), 0] += 0.3
    np.savetxt(tmp_path / "u.dat", data)
    with pytest.raises(ValueError, match="expected equally spaced first-column values"):
        PeriodicGridPotential.from_file(tmp_path / "u.dat")


def test_from_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected an existing file"):
        PeriodicGridPotential.from_file(tmp_path / "nope.dat")


def test_constructor_validation():
    with pytest.raises(ValueError, match="at least 4 x 4"):
        PeriodicGridPotential(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="expected a number > 0"):
        PeriodicGridPotential(np.zeros((8, 8)), period=(1.0, -1.0))
    with pytest.raises(ValueError, match="expected two numbers each"):
        PeriodicGridPotential(np.zeros((8, 8)), lower=(0.0,))
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 2\)"):
        PeriodicGridPotential(np.zeros((8, 8)))(torch.zeros(3, 3, dtype=torch.float64))


# -- the spline ---------------------------------------------------------------------------------


def test_spline_interpolates_grid_values(fes):
    grid = fes.grid_points().reshape(-1, 2)
    assert torch.allclose(fes(grid), fes.values.reshape(-1), atol=1e-9)


def test_spline_is_periodic_and_smooth(fes):
    x = (torch.rand(200, 2, dtype=torch.float64) * 2 - 1) * math.pi
    for shift in ([TWO_PI, 0.0], [0.0, -TWO_PI], [3 * TWO_PI, TWO_PI]):
        shifted = x + torch.tensor(shift, dtype=torch.float64)
        assert torch.allclose(fes(shifted), fes(x), atol=1e-9)
        assert torch.allclose(fes.energy_and_grad(shifted)[1], fes.energy_and_grad(x)[1], atol=1e-8)
    # C1 across cell boundaries: gradient just left/right of a grid line agree
    edge = fes.grid_points()[10, 20].unsqueeze(0)
    dx = torch.tensor([[1e-9, 0.0]], dtype=torch.float64)
    g_left, g_right = fes.energy_and_grad(edge - dx)[1], fes.energy_and_grad(edge + dx)[1]
    assert torch.allclose(g_left, g_right, atol=1e-5)


def test_analytic_gradient_matches_autograd_and_finite_differences(fes):
    x = (torch.rand(300, 2, dtype=torch.float64) * 2 - 1) * math.pi
    xr = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(fes(xr).sum(), xr)
    energy, g_analytic = fes.energy_and_grad(x)
    assert torch.allclose(energy, fes(x), atol=1e-10)
    assert torch.allclose(g_auto, g_analytic, atol=1e-9)
    h = 1e-6
    fd = torch.stack(
        [(fes(x + h * e) - fes(x - h * e)) / (2 * h) for e in torch.eye(2, dtype=torch.float64)], dim=-1
    )
    assert torch.allclose(fd, g_analytic, atol=1e-5)
    fn = fes.as_autograd_function()
    xr = x.clone().requires_grad_(True)
    (g_fn,) = torch.autograd.grad(fn(xr).sum(), xr)
    assert torch.allclose(g_fn, g_analytic, atol=1e-12)


def test_spline_reproduces_a_smooth_function():
    pot = PeriodicGridPotential(cosine_grid(64, 64))
    x = (torch.rand(500, 2, dtype=torch.float64) * 2 - 1) * math.pi
    exact = 3.0 * (1 - torch.cos(x[:, 0])) + 1.5 * (1 - torch.cos(2 * x[:, 1]))
    assert torch.allclose(pot(x), exact, atol=1e-4)


def test_evaluation_counter(fes):
    pot = PeriodicGridPotential(fes.values)
    pot(torch.zeros(5, 2, dtype=torch.float64))
    pot.energy_and_grad(torch.zeros(7, 2, dtype=torch.float64))
    pot.lookup(torch.zeros(9, 2, dtype=torch.float64), "spline")
    assert pot.n_evals == 12


# -- lookups ------------------------------------------------------------------------------------


def test_lookups_at_grid_points_and_midpoints(fes):
    grid = fes.grid_points()
    for method in ("nearest", "bilinear", "spline"):
        assert torch.allclose(fes.lookup(grid, method), fes.values, atol=1e-9)
    h0 = fes.spacing[0]
    mid = grid[5, 7] + torch.tensor([0.5 * h0, 0.0], dtype=torch.float64)
    expected = 0.5 * (fes.values[5, 7] + fes.values[5, 8])
    assert float(fes.lookup(mid, "bilinear")) == pytest.approx(float(expected))
    slightly_left = grid[5, 7] + torch.tensor([0.4 * h0, 0.0], dtype=torch.float64)
    assert float(fes.lookup(slightly_left, "nearest")) == float(fes.values[5, 7])
    # wrapping: the last column's right neighbour is column 0
    right_edge = grid[3, 88] + torch.tensor([0.5 * h0, 0.0], dtype=torch.float64)
    expected = 0.5 * (fes.values[3, 88] + fes.values[3, 0])
    assert float(fes.lookup(right_edge, "bilinear")) == pytest.approx(float(expected))
    assert float(fes.lookup(grid[3, 2] + TWO_PI, "nearest")) == float(fes.values[3, 2])


def test_lookup_errors(fes):
    with pytest.raises(ValueError, match="expected 'nearest', 'bilinear' or 'spline'"):
        fes.lookup(torch.zeros(2, 2), "cubic")
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 2\)"):
        fes.lookup(torch.zeros(2, 3), "nearest")
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        fes.lookup([[0.0, 0.0]], "nearest")


def test_wrap(fes):
    x = torch.tensor([[math.pi, -math.pi - 0.1], [7.0, -7.0]], dtype=torch.float64)
    w = fes.wrap(x)
    lower, period = fes.lower[0], fes.period[0]
    assert bool(((w >= lower) & (w < lower + period)).all())
    k = (w - x) / period
    assert torch.allclose(k, k.round(), atol=1e-9)


# -- minimax ------------------------------------------------------------------------------------


def test_minimax_on_alanine_matches_the_documented_bound(fes):
    for connectivity in (4, 8):
        res = fes.minimax_barrier((-2.55, 2.7), (0.95, -0.4), connectivity)
        assert res.barrier == pytest.approx(36.336052838)
        idx = res.path_indices
        energies = fes.values.numpy()[idx[:, 1], idx[:, 0]]
        assert energies.max() == pytest.approx(res.barrier)
        steps = np.abs(np.diff(idx, axis=0))
        steps = np.minimum(steps, np.array(fes.shape) - steps)  # periodic
        assert steps.max() <= 1
        if connectivity == 4:
            assert (steps.sum(-1) == 1).all()


def test_minimax_uses_wrap_around_and_diagonals():
    values = np.full((8, 8), 50.0)
    values[:, 0] = 1.0  # a low column at i = 0 ...
    values[:, 7] = 2.0  # ... joined only across the periodic boundary to column 7
    values[4, 3] = 0.0
    pot = PeriodicGridPotential(values)
    grid = pot.grid_points()
    start, end = grid[2, 0], grid[2, 7]
    assert pot.minimax_barrier(start, end, 4).barrier == 2.0
    # a diagonal-only channel: 8-neighbour bound is lower than 4-neighbour
    diag = np.full((8, 8), 50.0)
    for k in range(8):
        diag[k, k] = 1.0
    pot = PeriodicGridPotential(diag)
    grid = pot.grid_points()
    assert pot.minimax_barrier(grid[1, 1], grid[5, 5], 8).barrier == 1.0
    assert pot.minimax_barrier(grid[1, 1], grid[5, 5], 4).barrier == 50.0


def test_minimax_errors(fes):
    with pytest.raises(ValueError, match="connectivity: expected 4 or 8, got 6"):
        fes.minimax_barrier((0, 0), (1, 1), 6)
    with pytest.raises(ValueError, match="start: expected two finite coordinates"):
        fes.minimax_barrier((0, float("nan")), (1, 1))


# -- sampling ------------------------------------------------------------------------------------


def test_sample_grid_follows_boltzmann_weights():
    values = np.full((8, 8), 10.0)
    values[2, 3] = 0.0
    values[6, 1] = math.log(3.0)  # weight 1/3 of the minimum
    pot = PeriodicGridPotential(values)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    x = pot.sample_grid(n, generator=gen, jitter=False)
    idx = pot.nearest_index(x)
    frac_min = float(((idx[:, 0] == 3) & (idx[:, 1] == 2)).double().mean())
    weights = np.exp(-values)
    p = weights[2, 3] / weights.sum()
    assert abs(frac_min - p) < 5 * math.sqrt(p * (1 - p) / n)
    jittered = pot.sample_grid(1000, generator=gen)
    assert bool(((jittered >= -math.pi) & (jittered < math.pi)).all())
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        pot.sample_grid(0)


@pytest.mark.parametrize("method", ["mala", "ula"])
def test_langevin_samples_the_boltzmann_distribution(method):
    # U = 2 (1 - cos x0) + 2 (1 - cos x1): each coordinate is von Mises with kappa = 2.
    pot = PeriodicGridPotential(cosine_grid(64, 64, a=2.0, b=0.0) + 2.0 * (1 - np.cos(
        -math.pi + TWO_PI * np.arange(64) / 64))[:, None])
    gen = torch.Generator().manual_seed(1)
    x0 = pot.sample_grid(1000, generator=gen)
    res = sample_langevin(pot, x0, n_steps=100, step_size=0.05, thin=20, burn_in=20, method=method, generator=gen)
    assert res.samples.shape == (5, 1000, 2)
    assert res.n_energy_evals == 1000 * (120 + 1)
    samples = res.flat()
    # E[cos x] for von Mises(kappa=2) = I1(2)/I0(2)
    i0 = sum((1.0 ** k / math.factorial(k)) ** 2 for k in range(30))
    i1 = sum(1.0 ** (2 * k + 1) / (math.factorial(k) * math.factorial(k + 1)) for k in range(30))
    expected = i1 / i0
    n_eff = samples.shape[0] / 4  # thinning leaves some correlation
    tol = 5 * math.sqrt(0.5 / n_eff) + (0.02 if method == "ula" else 0.0)
    assert abs(float(torch.cos(samples[:, 0]).mean()) - expected) < tol
    if method == "mala":
        assert 0.5 < res.acceptance <= 1.0
    else:
        assert res.acceptance is None


def test_sample_boltzmann_on_alanine_reproduces_the_mean_energy(fes):
    gen = torch.Generator().manual_seed(0)
    res = sample_boltzmann(fes, 10_000, n_chains=2000, thin=5, burn_in=30, step_size=3e-3, generator=gen)
    samples = res.flat()
    assert samples.shape[0] >= 10_000
    weights = torch.softmax(-fes.values.reshape(-1), 0)
    grid_mean = float((weights * fes.values.reshape(-1)).sum())  # 1.595
    mean = float(fes.lookup(samples, "spline").mean())
    assert abs(mean - grid_mean) < 0.15
    assert res.n_energy_evals == 2000 * (30 + 25 + 1)


def test_langevin_errors(fes):
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="step_size: expected a number > 0"):
        sample_langevin(fes, x, n_steps=2, step_size=0.0)
    with pytest.raises(ValueError, match="method: expected 'ula' or 'mala'"):
        sample_langevin(fes, x, n_steps=2, step_size=1e-3, method="hmc")
    with pytest.raises(ValueError, match="n_steps: expected an integer >= 1"):
        sample_langevin(fes, x, n_steps=0, step_size=1e-3)
    with pytest.raises(ValueError, match=r"x_init: expected shape \(\*, 2\)"):
        sample_langevin(fes, torch.zeros(4, 3, dtype=torch.float64), n_steps=2, step_size=1e-3)
    with pytest.raises(TypeError, match="expected a PeriodicGridPotential"):
        sample_langevin(lambda y: y.sum(-1), x, n_steps=2, step_size=1e-3)
    with pytest.raises(ValueError, match="n_samples: expected a positive integer"):
        sample_boltzmann(fes, 0)


# -- annealed Langevin with the analytic gradient ----------------------------------------------------


def table1_like_curve(n_points=16):
    from spacetime_md.core import alpha_sigma

    s = torch.linspace(0, 1, n_points, dtype=torch.float64)
    log_snr = 4.0 - 16.0 * s * (1 - s)
    a = torch.tensor([-2.55, 2.7], dtype=torch.float64)
    b = torch.tensor([0.95, -0.4], dtype=torch.float64)
    x = alpha_sigma(log_snr)[0][:, None] * ((1 - s)[:, None] * a + s[:, None] * b)
    return log_snr, x, a


def test_fast_gradient_matches_analytic(fes):
    x = (torch.rand(500, 2, dtype=torch.float64) * 2 - 1) * 5.0
    assert torch.allclose(fes.grad(x), fes.energy_and_grad(x)[1], atol=1e-10)
    x32 = x.float()
    assert torch.allclose(fes.grad(x32).double(), fes.energy_and_grad(x)[1], atol=2e-2)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 2\)"):
        fes.grad(torch.zeros(3))


@pytest.mark.parametrize("record, method", [("points", "ula"), ("steps", "ula"), ("steps", "mala")])
def test_grid_sampler_reproduces_the_core_sampler(fes, record, method):
    from spacetime_md.core import sample_annealed_langevin

    log_snr, x, start = table1_like_curve()
    step = torch.full((16,), 2e-3, dtype=torch.float64)
    step[8:] = 1e-3
    if method == "mala":
        step = step * 8  # large enough that some proposals are rejected
    kwargs = dict(n_paths=32, n_steps=5, step_size=step, record=record, method=method)
    core = sample_annealed_langevin(fes.as_autograd_function(), log_snr, x, start,
                                    generator=torch.Generator().manual_seed(5), **kwargs)
    seen = []
    from spacetime_md.toy.langevin import sample_annealed_langevin_grid

    grid = sample_annealed_langevin_grid(fes, log_snr, x, start, generator=torch.Generator().manual_seed(5),
                                         callback=seen.append, **kwargs)
    assert grid.paths.shape == core.paths.shape == (32, 16 if record == "points" else 80, 2)
    assert torch.allclose(grid.paths, core.paths, atol=1e-10)
    assert grid.n_energy_evals == core.n_energy_evals == 32 * (16 * 5 + (method == "mala"))
    if method == "mala":
        assert torch.allclose(grid.acceptance, core.acceptance)
        assert 0.5 < grid.acceptance_rate < 1.0
        # a rejected step repeats the state exactly
        repeats = (grid.paths[:, 1:] == grid.paths[:, :-1]).all(-1).double().mean()
        assert float(repeats) == pytest.approx(1.0 - grid.acceptance_rate, abs=0.02)
    assert len(seen) == 16 and seen[-1]["point"] == 15


def test_grid_sampler_errors(fes):
    from spacetime_md.errors import NonFiniteError
    from spacetime_md.toy.langevin import sample_annealed_langevin_grid

    log_snr, x, start = table1_like_curve()
    with pytest.raises(ValueError, match="record: expected 'points' or 'steps'"):
        sample_annealed_langevin_grid(fes, log_snr, x, start, record="all")
    with pytest.raises(ValueError, match=r"x_init: expected shape \(3, 2\)"):
        sample_annealed_langevin_grid(fes, log_snr, x, torch.zeros(2, 2, dtype=torch.float64), n_paths=3)
    with pytest.raises(ValueError, match="step_size: expected values > 0"):
        sample_annealed_langevin_grid(fes, log_snr, x, start, step_size=torch.zeros(16, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected size 16 for dimension T"):
        sample_annealed_langevin_grid(fes, log_snr[:5], x, start)
    with pytest.raises(TypeError, match="expected a PeriodicGridPotential"):
        sample_annealed_langevin_grid(None, log_snr, x, start)
    with pytest.raises(ValueError, match="method: expected 'ula' or 'mala', got 'MALA'"):
        sample_annealed_langevin_grid(fes, log_snr, x, start, method="MALA")
    with pytest.raises(NonFiniteError, match="reduce step_size"):
        sample_annealed_langevin_grid(fes, log_snr, x, start, n_steps=50, step_size=5.0)
