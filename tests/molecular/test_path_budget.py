"""The time-budget path sampler (issue 21): exact budgets, valid schedules, values, CLI flag."""

from __future__ import annotations

import json

import numpy as np
import openmm.unit as unit
import pytest

from spacetime_md import cli
from spacetime_md.molecular.paths.budget import (
    allocate_steps,
    budget_steps,
    compute_budget_schedule,
    jump_profile,
    restraint_kl,
)
from spacetime_md.molecular.paths.config import PathConfig


def test_budget_steps_is_exact_and_refuses_fractions():
    assert budget_steps(1.0, 1.0) == 1000
    assert budget_steps(0.5, 2.0) == 250
    assert budget_steps(19.2, 1.0) == 19200
    with pytest.raises(ValueError, match=r"path_time_ps: expected a whole number of 1 fs steps, got 0.0105 ps"):
        budget_steps(0.0105, 1.0)
    with pytest.raises(ValueError, match=r"path_time_ps: expected a number of ps in \[0.001, 1000\], got 0"):
        budget_steps(0, 1.0)
    with pytest.raises(ValueError, match="expected a number of ps"):
        budget_steps(float("nan"), 1.0)


@pytest.mark.parametrize("weights, total", [([1.0, 2.0, 1.0], 8), ([0.0, 0.0, 5.0, 0.0], 10), ([1e-9, 1.0], 2),
                                            (np.random.default_rng(0).random(64), 1000)])
def test_allocate_steps_is_a_valid_distribution(weights, total):
    steps = allocate_steps(np.asarray(weights), total)
    assert steps.dtype.kind == "i" and steps.shape == (len(weights),)
    assert steps.sum() == total and steps.min() >= 1
    # Each count is within one step of its ideal share of the steps above the one-per-point floor.
    w = np.asarray(weights, dtype=float)
    ideal = 1 + w / w.sum() * (total - len(w))
    assert np.abs(steps - ideal).max() < 1.0


def test_allocate_steps_values_and_errors():
    assert allocate_steps(np.array([1.0, 2.0, 1.0]), 7).tolist() == [2, 3, 2]
    assert allocate_steps(np.array([0.0, 0.0, 5.0, 0.0]), 10).tolist() == [1, 1, 7, 1]
    with pytest.raises(ValueError, match=r"total: expected an integer >= the number of points \(3\), got 2"):
        allocate_steps(np.ones(3), 2)
    with pytest.raises(ValueError, match="weights: expected finite values >= 0, not all zero"):
        allocate_steps(np.zeros(3), 5)


def test_restraint_kl_closed_form():
    kT = 2.5
    c = np.zeros((3, 2, 3))
    c[1, 0, 0] = 0.1  # one atom moves 0.1 nm at constant k
    k = np.array([100.0, 100.0, 400.0])
    kl = restraint_kl(c, k, kT)
    assert kl[0] == pytest.approx(0.5 * 100.0 * 0.01 / kT)
    # second step: k x4 (D = 6) and the atom moves back 0.1 nm under k = 400
    assert kl[1] == pytest.approx(0.5 * 6 * (4 - 1 - np.log(4)) + 0.5 * 400.0 * 0.01 / kT)


def test_schedule_puts_steps_where_the_minima_jump():
    n_points = 16
    c = np.zeros((n_points, 3, 3))
    k = np.full(n_points, 100.0)
    minima = np.zeros((n_points, 3, 3))
    minima[:, :, 0] = np.arange(3) * 0.15
    minima[10:, 2, 1] = 0.3  # the restrained minimum switches basin between points 9 and 10
    jump = jump_profile(minima, width=1)
    assert np.flatnonzero(jump > 1e-6).tolist() == [9, 10, 11]
    steps = compute_budget_schedule(c, k, 2.5, 1000, minima, jump_fraction=0.5, width=1)
    assert steps.sum() == 1000 and steps.min() >= 1
    # Centres do not move: no KL; the uniform KL half plus the jump half on points 9-11.
    assert steps[9:12].sum() > 500 and steps[:9].max() <= 32


def test_sampler_respects_the_budget_exactly():
    """OpenMM runs exactly sum(steps) steps per path and records one frame per record_every."""
    from spacetime_md.molecular import load_system
    from spacetime_md.molecular.system.energies import evaluate_energies
    from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler

    system = load_system("alanine-dipeptide")
    x0 = system.positions_nm
    n_points = 5
    centres = np.broadcast_to(x0, (n_points, *x0.shape)).copy()
    k = np.full(n_points, 5000.0)
    sampler = RestrainedLangevinSampler(system.openmm_system, timestep=1.0 * unit.femtosecond,
                                        friction=3.0 / unit.picosecond, platform="Reference")
    steps = allocate_steps(np.array([1.0, 3.0, 1.0, 1.0, 2.0]), 60)
    out = sampler.sample_schedule(centres, k, steps, x0, n_paths=2, seed=3, record_every=4)
    assert out.frames.shape == (2, 15, system.n_atoms, 3)
    assert out.n_force_evals == 2 * 60 == sampler.n_force_evals
    energies = evaluate_energies(system, out.frames.reshape(-1, system.n_atoms, 3)).value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energies).all() and energies.max() < 100.0  # held at a minimum by a stiff restraint
    again = sampler.sample_schedule(centres, k, steps, x0, n_paths=2, seed=3, record_every=4)
    np.testing.assert_array_equal(out.frames, again.frames)
    with pytest.raises(ValueError, match=r"record_every: expected a divisor of the path's 60 steps, got 7"):
        sampler.sample_schedule(centres, k, steps, x0, record_every=7)
    with pytest.raises(ValueError, match="steps_per_point: expected 5 integers >= 1"):
        sampler.sample_schedule(centres, k, np.array([0, 10, 10, 10, 10]), x0)


def test_path_config_time_budget():
    config = PathConfig(path_time_ps=1.0)
    assert config.total_steps == 1000 and config.record_every == 1 and config.n_frames_per_path == 1000
    assert config.friction_per_ps == 1.0 and PathConfig().friction_per_ps == 10.0
    assert PathConfig(path_time_ps=1.0, friction_per_ps=3.0).friction_per_ps == 3.0
    assert PathConfig(path_time_ps=1.0, record_every=10).n_frames_per_path == 100
    assert PathConfig().total_steps is None and PathConfig().path_time_ps is None
    assert PathConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"path_time_ps: expected at least one step per curve point \(64 x 1 fs\)"):
        PathConfig(path_time_ps=0.01)
    with pytest.raises(ValueError, match=r"record_every: expected a divisor of the path's 1000 steps, got 3"):
        PathConfig(path_time_ps=1.0, record_every=3)


def test_cli_path_time_flag(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["paths", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--path-time-ps" in help_text and "in [0.001, 1000]" in help_text
    assert "--friction-per-ps" in help_text and "> 0 (default 10, or 1 with --path-time-ps" in help_text
    assert cli.main(["paths", "--out", str(tmp_path / "o"), "--path-time-ps", "1", "--friction-per-ps", "3",
                     "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)["path_config"]
    assert resolved["path_time_ps"] == 1.0 and resolved["record_every"] == 1 and resolved["friction_per_ps"] == 3.0
    # Without the flag the CLI resolves the friction as the Python API does.
    assert cli.main(["paths", "--out", str(tmp_path / "o"), "--path-time-ps", "1", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)["path_config"]
    assert resolved == json.loads(json.dumps(PathConfig(path_time_ps=1.0).to_dict()))
    assert resolved["friction_per_ps"] == 1.0
    for value, message in (
        ("2000", "spacetime-md: error: path_time_ps: expected a number of ps in [0.001, 1000], got 2000.0"),
        ("0.0105", "spacetime-md: error: path_time_ps: expected a whole number of 1 fs steps, got 0.0105 ps "
                   "(10.5 steps)"),
    ):
        code = cli.main(["paths", "--out", str(tmp_path / "o"), "--path-time-ps", value, "--dry-run"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == message


def test_soften_before_jump_values():
    from spacetime_md.molecular.paths.budget import soften_before_jump

    n_points = 16
    minima = np.zeros((n_points, 3, 3))
    minima[:, :, 0] = np.arange(3) * 0.15
    minima[10:, 2, 1] = 0.3  # largest (only) jump at point 10
    k = np.linspace(100.0, 250.0, n_points)
    soft = soften_before_jump(k, minima, factor=0.5, width=2)
    # window = points 8-12 (spread jump), cut at the jump (point 10): 8, 9, 10 halved.
    np.testing.assert_allclose(soft[8:11], 0.5 * k[8:11])
    np.testing.assert_array_equal(np.delete(soft, [8, 9, 10]), np.delete(k, [8, 9, 10]))
    np.testing.assert_array_equal(soften_before_jump(k, np.zeros((n_points, 3, 3))), k)  # no jump: unchanged
    with pytest.raises(ValueError, match=r"factor: expected a value in \(0, 1\], got 0"):
        soften_before_jump(k, minima, factor=0)


def test_memory_estimate_counts_the_budget_frames():
    """With path_time_ps the frames per path come from the budget, not n_points x n_steps."""
    from spacetime_md.molecular.paths.run import estimate_memory_bytes

    config = PathConfig(path_time_ps=1.0, n_paths=2, baseline=False)
    assert config.n_frames_per_path == 1000
    assert estimate_memory_bytes(config, 22) == 3 * 1 * 2 * 1000 * (22 * 3 + 1) * 8
    uniform = PathConfig(n_paths=2, baseline=True)
    assert estimate_memory_bytes(uniform, 22) == 3 * 2 * 2 * uniform.n_frames_per_path * (22 * 3 + 1) * 8


def _two_jumps(n_points: int = 32):
    """Minima that switch basin between points 7 / 8 and back between 23 / 24 (the same RMSD)."""
    minima = np.zeros((n_points, 3, 3))
    minima[:, :, 0] = np.arange(3) * 0.15
    minima[8:24, 2, 1] = 0.3
    return minima


def test_barrier_factors_weight_each_jump_by_the_boltzmann_factor_of_its_climb():
    from spacetime_md.molecular.paths.budget import barrier_factors

    kT = 2.5
    raw = np.zeros(32)
    raw[8], raw[24], raw[25] = 1.0, 0.6, 0.6  # the second jump is spread over two points
    raw[3] = 0.05  # a small move, not a jump
    energies = np.zeros(32)
    energies[4:8] = [1.0, 2.0, 3.0, 4.0]  # the first climb: 4 kJ/mol above the basin
    energies[8:24] = -5.0  # lands lower
    energies[20:24] = [-4.0, -2.0, 0.0, 2.0]  # the second climb: 7 kJ/mol above the new basin
    f = barrier_factors(energies, raw, kT)
    assert f.max() == 1.0 and f[24] == f[25] == 1.0
    assert f[8] == pytest.approx(np.exp((4.0 - 7.0) / kT))
    assert f[3] == pytest.approx(np.exp(-7.0 / kT)) == f[0]
    np.testing.assert_array_equal(barrier_factors(energies, raw, kT, scale=0.0), np.ones(32))
    assert barrier_factors(energies, np.zeros(32), kT).tolist() == [1.0] * 32  # no jump
    huge = barrier_factors(energies * 1e4, raw, kT)  # no overflow: the largest factor is 1
    assert np.isfinite(huge).all() and huge.max() == 1.0
    with pytest.raises(ValueError, match="energies: expected shape"):
        barrier_factors(energies[:5], raw, kT)
    with pytest.raises(ValueError, match="energies: expected finite"):
        barrier_factors(np.full(32, np.nan), raw, kT)
    with pytest.raises(ValueError, match="scale"):
        barrier_factors(energies, raw, kT, scale=-1.0)


def test_schedule_gives_the_higher_climb_more_steps():
    from spacetime_md.molecular.paths.budget import jump_profile as raw_jumps

    n_points = 32
    c = np.zeros((n_points, 3, 3))
    k = np.full(n_points, 100.0)
    minima = _two_jumps(n_points)
    raw = raw_jumps(minima, width=0)
    assert np.flatnonzero(raw > 1e-6).tolist() == [8, 24] and raw[8] == pytest.approx(raw[24])
    flat = np.zeros(n_points)
    plain = compute_budget_schedule(c, k, 2.5, 1000, minima, width=1)
    # Equal climbs: the same schedule as without energies.
    np.testing.assert_array_equal(compute_budget_schedule(c, k, 2.5, 1000, minima, width=1, energies=flat), plain)
    climbs = flat.copy()
    climbs[20:24] = [1.0, 2.0, 3.0, 4.0]  # only the second jump climbs, 4 kJ/mol = 1.6 kT
    assert abs(plain[23:26].sum() - plain[7:10].sum()) <= 2
    for scale in (1.0, 0.5):  # the jump share alone: the windows' steps above the floor of 1
        steps = compute_budget_schedule(c, k, 2.5, 1000, minima, width=1, energies=climbs, jump_fraction=1.0,
                                        barrier_scale=scale)
        assert steps.sum() == 1000 and steps.min() == 1
        ratio = (steps[23:26] - 1).sum() / (steps[7:10] - 1).sum()
        assert ratio == pytest.approx(np.exp(scale * 4.0 / 2.5), rel=0.02)


def test_restrained_minima_energies_are_the_force_field_alone():
    """The energies returned with the minima leave the restraint out: they equal an independent
    OpenMM evaluation of the force field at the minima (a restraint counted in would add its
    0.5 k |x - c|^2, hundreds of kJ/mol with these displaced centres)."""
    from spacetime_md.molecular import load_system
    from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler
    from spacetime_md.molecular.system.energies import evaluate_energies

    system = load_system("alanine-dipeptide")
    x0 = system.positions_nm
    centres = np.stack([x0, x0 + 0.02, x0 + np.array([0.05, 0.0, 0.0])])
    centres[1, 0] += 0.1
    k = np.array([5000.0, 20000.0, 1000.0])
    sampler = RestrainedLangevinSampler(system.openmm_system, platform="Reference")
    minima, energies = sampler.restrained_minima(centres, k, x0, return_energies=True)
    np.testing.assert_array_equal(minima, sampler.restrained_minima(centres, k, x0))
    reference = evaluate_energies(system, minima).value_in_unit(unit.kilojoule_per_mole)
    np.testing.assert_allclose(energies, reference, atol=1e-3)
    restraint = 0.5 * k * ((minima - centres) ** 2).sum(axis=(1, 2))
    assert restraint[1] > 1.0  # the restraint holds the second minimum away from the force field's


def test_soften_before_the_jump_across_the_highest_barrier():
    """Two jumps (points 8 and 24, the second a little smaller): without energies the largest is
    softened; with energies, the one whose minima climbed higher, and only the window points of
    its own run up to it."""
    from spacetime_md.molecular.paths.budget import soften_before_jump

    n_points = 32
    minima = _two_jumps(n_points)
    minima[24:, 2, 1] = 0.03
    k = np.full(n_points, 200.0)
    first = soften_before_jump(k, minima, width=1)
    assert np.flatnonzero(first != k).tolist() == [7, 8]
    climbs = np.zeros(n_points)
    climbs[20:24] = [1.0, 2.0, 3.0, 4.0]
    second = soften_before_jump(k, minima, width=1, energies=climbs, kT=2.5)
    assert np.flatnonzero(second != k).tolist() == [23, 24]
    np.testing.assert_allclose(second[23:25], 0.5 * k[23:25])
    flat = soften_before_jump(k, minima, width=1, energies=np.zeros(n_points), kT=2.5)
    np.testing.assert_array_equal(flat, first)  # equal climbs: the largest jump, as without energies
    with pytest.raises(ValueError, match="kT"):
        soften_before_jump(k, minima, energies=climbs)
