"""Automatic replica-exchange ladder: acceptance formula, ladder choice, pilot, warnings, resume, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import openmm.unit as unit
import pytest

from spacetime_md.cli import main
from spacetime_md.molecular import load_system, sample_boltzmann
from spacetime_md.molecular.sampling.ladder import (
    choose_temperatures,
    exchange_warnings,
    ladder_acceptance,
    pilot_energy_statistics,
    predicted_acceptance,
)
from spacetime_md.molecular.sampling.sampling_config import geometric_temperatures, resolve_config
from spacetime_md.molecular.system.units import kT_kj_per_mol

FAST = dict(exchange_interval=0.02 * unit.picosecond, equilibration=0.1 * unit.picosecond, chunk_size=4,
            progress=False)


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def ala_pilot(system):
    return pilot_energy_statistics(system, geometric_temperatures(300.0, 800.0, 3), timestep_fs=2.0,
                                   friction_per_ps=1.0, seed=0)


def harmonic_stats(n_dof: int, temps=(300.0, 550.0, 800.0)) -> dict:
    """Energies of ``n_dof`` harmonic degrees of freedom: mean n kT / 2, std sqrt(n / 2) kT."""
    kts = [kT_kj_per_mol(t) for t in temps]
    return {"temperatures_k": list(temps), "mean_kj_per_mol": [n_dof * kt / 2 for kt in kts],
            "std_kj_per_mol": [math.sqrt(n_dof / 2) * kt for kt in kts]}


@pytest.mark.parametrize("t_j,mean_j,std_j", [(330.0, 12.0, 9.0), (400.0, 40.0, 12.0), (700.0, 150.0, 25.0)])
def test_predicted_acceptance_matches_monte_carlo(t_j, mean_j, std_j):
    rng = np.random.default_rng(0)
    u_i = rng.normal(0.0, 8.0, 400_000)
    u_j = rng.normal(mean_j, std_j, 400_000)
    d_beta = 1 / kT_kj_per_mol(300.0) - 1 / kT_kj_per_mol(t_j)
    mc = np.minimum(1.0, np.exp(d_beta * (u_i - u_j)))
    predicted = predicted_acceptance(300.0, t_j, 0.0, 8.0, mean_j, std_j)
    assert abs(predicted - mc.mean()) < 5 * mc.std() / math.sqrt(mc.size) + 1e-4
    assert predicted_acceptance(300.0, 300.0, 5.0, 3.0, 5.0, 3.0) == pytest.approx(1.0)


def test_more_degrees_of_freedom_need_more_replicas_and_reach_the_target():
    counts = []
    for n_dof in (50, 200, 800):
        temps, acc = choose_temperatures(harmonic_stats(n_dof), 300.0, 800.0, 0.2)
        counts.append(len(temps))
        assert min(acc) >= 0.2 and temps[0] == 300.0 and temps[-1] == pytest.approx(800.0)
        fewer = geometric_temperatures(300.0, 800.0, len(temps) - 1)
        assert len(temps) == 4 or min(ladder_acceptance(harmonic_stats(n_dof), fewer)) < 0.2  # the fewest
    assert counts[0] == 4 and counts[0] < counts[1] < counts[2]
    # a larger target needs more replicas
    assert len(choose_temperatures(harmonic_stats(200), 300.0, 800.0, 0.5)[0]) > counts[1]
    with pytest.raises(ValueError, match="target_acceptance: expected a number in \\(0, 1\\), got 1.5"):
        choose_temperatures(harmonic_stats(50), 300.0, 800.0, 1.5)


def test_pilot_is_deterministic_and_keeps_the_dipeptide_ladder(system, ala_pilot):
    again = pilot_energy_statistics(system, geometric_temperatures(300.0, 800.0, 3), timestep_fs=2.0,
                                    friction_per_ps=1.0, seed=0)
    assert again == ala_pilot
    means, stds = ala_pilot["mean_kj_per_mol"], ala_pilot["std_kj_per_mol"]
    assert means[0] < means[1] < means[2] and stds[0] < stds[2]
    # 22 atoms, 3N - 6 - 12 HBonds constraints = 48 dof: std near sqrt(24) kT (anharmonic: somewhat above)
    assert 0.7 * math.sqrt(24) * kT_kj_per_mol(300) < stds[0] < 2.0 * math.sqrt(24) * kT_kj_per_mol(300)
    temps, acc = choose_temperatures(ala_pilot, 300.0, 800.0)
    assert temps == pytest.approx(geometric_temperatures(300.0, 800.0, 4))  # the earlier fixed ladder


def test_exchange_warnings():
    assert exchange_warnings([0.3, 0.25], 5, 1000, 0.2) == []
    (low,) = exchange_warnings([0.3, 0.05, 0.25], 5, 1000, 0.2)
    assert "low swap acceptance (< 0.10) between replicas 1-2: 0.050" in low
    (hand,) = exchange_warnings([0.08, 0.3], 3, 1000, None)
    assert "between replicas 0-1: 0.080" in hand
    (trips,) = exchange_warnings([0.3, 0.3, 0.3], 0, 1000, 0.2)
    assert "no round trip" in trips and "1000 exchanges" in trips
    assert exchange_warnings([0.3, 0.3, 0.3], 0, 50, 0.2) == []  # too early to expect one
    assert exchange_warnings([], 0, 1000, 0.2) == []
    assert exchange_warnings([0.0, 0.3], 5, 20, 0.2, n_attempted=[10, 10]) == []  # too few attempts to judge


def test_automatic_ladder_run_records_the_pilot_and_resumes_without_it(tmp_path, system, monkeypatch, caplog):
    out = tmp_path / "auto"
    part = sample_boltzmann(system, 8, out, seed=2, max_chunks=1, **FAST)
    config = json.loads((out / "config.json").read_text())
    assert config["n_replicas"] == 4 and config["ladder"]["target_acceptance"] == 0.2
    assert len(config["ladder"]["predicted_acceptance"]) == 3 and min(config["ladder"]["predicted_acceptance"]) >= 0.2
    assert part.report["predicted_acceptance"] == config["ladder"]["predicted_acceptance"]
    assert isinstance(part.report["warnings"], list)
    import spacetime_md.molecular.sampling.sampling_config as sampling_config  # resolve_config looks it up there

    def no_pilot(*args, **kwargs):
        raise AssertionError("a resumed run must keep its ladder, not rerun the pilot")

    monkeypatch.setattr(sampling_config, "pilot_energy_statistics", no_pilot)
    resumed = sample_boltzmann(system, 8, out, seed=2, resume=True, **FAST)
    assert resumed.complete and resumed.config.temperatures_k == tuple(config["temperatures_k"])
    # the same frames as an uninterrupted automatic run with that ladder
    direct = sample_boltzmann(system, 8, None, seed=2, temperatures=list(config["temperatures_k"]) * unit.kelvin,
                              **FAST)
    np.testing.assert_array_equal(resumed.coordinates_nm, direct.coordinates_nm)


def test_low_acceptance_is_reported_and_logged(system, caplog):
    with caplog.at_level("WARNING", logger="spacetime_md.molecular.sampling.boltzmann"):
        res = sample_boltzmann(system, 120, None, seed=1, temperatures=[300, 1200] * unit.kelvin,
                               **{**FAST, "chunk_size": 120})
    assert res.report["exchange_acceptance"][0] < 0.1
    assert any("low swap acceptance" in w for w in res.report["warnings"])
    assert "low swap acceptance" in caplog.text


def test_resolved_config_can_be_passed_to_the_sampler(system):
    config = resolve_config(system, 4, n_replicas=3, max_temperature=500 * unit.kelvin, chunk_size=4,
                            exchange_interval=0.02 * unit.picosecond, equilibration=0.1 * unit.picosecond)
    res = sample_boltzmann(system, 4, None, config=config, progress=False)
    assert res.config == config and res.n_frames == 4
    with pytest.raises(ValueError, match="config: expected a config resolved for this system and n_samples"):
        sample_boltzmann(system, 5, None, config=config, progress=False)
    with pytest.raises(ValueError, match="n_replicas: expected an integer or 'auto', got 'many'"):
        resolve_config(system, 4, n_replicas="many")
    with pytest.raises(ValueError, match="target_acceptance: expected a number in \\(0, 1\\), got 0"):
        resolve_config(system, 4, target_acceptance=0)


def test_cli_automatic_ladder(tmp_path, capsys):
    assert main(["sample", "--n-samples", "5", "--out", str(tmp_path / "d"), "--target-acceptance", "0.35",
                 "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["n_replicas"] > 4 and min(cfg["ladder"]["predicted_acceptance"]) >= 0.35
    assert main(["sample", "--n-samples", "5", "--out", str(tmp_path / "e"), "--n-replicas", "3",
                 "--target-acceptance", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--target-acceptance: sets the automatic ladder, expected no --n-replicas" in err
    assert main(["sample", "--n-samples", "5", "--out", str(tmp_path / "f"), "--target-acceptance", "1.5"]) == 2
    assert "--target-acceptance" in capsys.readouterr().err
