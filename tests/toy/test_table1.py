"""Table 1 pipeline: metric, config, a tiny end-to-end run and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from spacetime_md.cli import main
from spacetime_md.core import GeodesicConfig
from spacetime_md.toy.landscape import PeriodicGridPotential, alanine_dipeptide_fes
from spacetime_md.toy.periodic_model import PeriodicModelConfig, PeriodicTrainConfig
from spacetime_md.toy.table1 import (
    TABLE1_PRESETS,
    Table1Config,
    format_table1,
    crossing_diagnostics,
    path_max_energy,
    run_table1,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensor ops: one intra-op thread (two threads stall when the other core is busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_config(**changes) -> Table1Config:
    base = Table1Config(
        variants=("unconstrained", "avoid_region"),
        n_data=4_000, n_chains=400, data_burn_in=20, data_thin=5,
        model=PeriodicModelConfig(hidden=32, n_layers=2, n_frequencies=4, n_time_frequencies=4),
        train=PeriodicTrainConfig(n_steps=60, batch_size=256, log_every=30),
        evaluate_model=False,
        geodesic=GeodesicConfig(n_nodes=5, n_points=(8, 16), max_steps=15),
        avoid_min_kl=2.0,
        n_paths=12, n_curve_points=24, n_steps_per_point=6, n_plot_paths=3,
    )
    return dataclasses.replace(base, **changes)


# -- metric ------------------------------------------------------------------------------------------


def ridge_potential():
    """A vertical ridge of height 10 at x0 = 0 (one grid column), zero elsewhere."""
    values = np.zeros((16, 16))
    values[:, 8] = 10.0
    return PeriodicGridPotential(values)


def test_path_max_energy_frames_and_densified():
    pot = ridge_potential()
    h = pot.spacing[0]
    x_ridge = pot.lower[0] + 8 * h
    # two frames on either side of the ridge column, 3 spacings apart: the frames miss the ridge
    path = torch.tensor([[[x_ridge - 1.5 * h, 0.0], [x_ridge + 1.5 * h, 0.0]]], dtype=torch.float64)
    assert float(path_max_energy(pot, path, "nearest")) == 0.0
    assert float(path_max_energy(pot, path, "nearest", densify=0.25)) == 10.0
    assert float(path_max_energy(pot, path, "bilinear", densify=0.25)) == pytest.approx(10.0)
    # a path that stays on one side is unchanged by densification
    flat = torch.tensor([[[x_ridge - 3 * h, 0.0], [x_ridge - 2 * h, 0.5]]], dtype=torch.float64)
    assert float(path_max_energy(pot, flat, "bilinear", densify=0.25)) == 0.0


def test_crossing_diagnostics_locates_each_paths_maximum():
    pot = ridge_potential()
    h = pot.spacing[0]
    x_ridge = pot.lower[0] + 8 * h
    # path 0 crosses the ridge at y = 0 (frame 2 of 4), path 1 at y = 1 (its last frame)
    p0 = [[x_ridge - 2 * h, 0.0], [x_ridge - h, 0.0], [x_ridge, 0.0], [x_ridge + h, 0.0], [x_ridge + 2 * h, 0.0]]
    p1 = [[x_ridge - 4 * h, 1.0], [x_ridge - 3 * h, 1.0], [x_ridge - 2 * h, 1.0], [x_ridge - h, 1.0], [x_ridge, 1.0]]
    paths = torch.tensor([p0, p1], dtype=torch.float64)
    # the saddle given one period away: distances are periodic
    saddle = torch.tensor([x_ridge + 2 * math.pi, 0.0], dtype=torch.float64)
    c = crossing_diagnostics(pot, paths, saddle)
    assert c["max_distance_to_saddle_rad"]["min"] == pytest.approx(0.0, abs=1e-9)
    assert c["max_distance_to_saddle_rad"]["max"] == pytest.approx(1.0)
    assert c["fraction_max_within_0.1_rad"] == 0.5 and c["fraction_max_within_0.2_rad"] == 0.5
    assert c["max_position_along_path"]["min"] == 0.5 and c["max_position_along_path"]["max"] == 1.0


def test_path_max_energy_densified_matches_brute_force():
    pot = alanine_dipeptide_fes()
    gen = torch.Generator().manual_seed(0)
    paths = torch.cumsum(torch.randn(20, 100, 2, generator=gen, dtype=torch.float64) * 0.1, dim=1)
    fast = path_max_energy(pot, paths, "bilinear", densify=0.1)
    w = torch.linspace(0, 1, 41, dtype=torch.float64)
    seg = paths[:, 1:] - paths[:, :-1]
    pts = paths[:, :-1, None, :] + w[None, None, :, None] * seg[:, :, None, :]
    brute = pot.lookup(pts.reshape(20, -1, 2), "bilinear").max(dim=1).values
    assert torch.allclose(fast, brute, atol=0.05)
    assert bool((fast >= path_max_energy(pot, paths, "bilinear") - 1e-12).all())


def test_path_max_energy_errors():
    pot = ridge_potential()
    with pytest.raises(ValueError, match=r"paths: expected shape \(P, F, 2\)"):
        path_max_energy(pot, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="densify: expected a number > 0"):
        path_max_energy(pot, torch.zeros(1, 3, 2, dtype=torch.float64), densify=0.0)


# -- config --------------------------------------------------------------------------------------------


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="frames: expected 'steps' or 'points', got 'all'"):
        Table1Config(frames="all")
    with pytest.raises(ValueError, match="variants: expected names from"):
        Table1Config(variants=("fast",))
    with pytest.raises(ValueError, match="start: expected two finite angles"):
        Table1Config(start=(0.0, math.inf))
    with pytest.raises(ValueError, match="min_log_snr: expected a value <= endpoint_log_snr"):
        Table1Config(min_log_snr=5.0)
    with pytest.raises(ValueError, match="langevin_method: expected 'ula' or 'mala', got 'ULA'"):
        Table1Config(langevin_method="ULA")
    with pytest.raises(ValueError, match="n_curve_points: expected an integer >= 2"):
        Table1Config(n_curve_points=1)
    with pytest.raises(TypeError, match="geodesic: expected a GeodesicConfig"):
        Table1Config(geodesic={"n_nodes": 3})
    config = TABLE1_PRESETS["paper"]()
    assert config.evals_per_path == 128 * 128
    again = Table1Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(KeyError, match="unknown \\['bogus'\\]"):
        Table1Config.from_dict({"bogus": 1})
    default = TABLE1_PRESETS["default"]()
    assert default.evals_per_path == 128 * 15 + 1 <= 4000
    assert (default.langevin_method, default.step_size) == ("mala", 8e-3)
    algorithm1 = TABLE1_PRESETS["algorithm1"]()
    assert (algorithm1.langevin_method, algorithm1.step_size, algorithm1.evals_per_path) == ("ula", 2e-3, 128 * 15)


# -- end to end ---------------------------------------------------------------------------------------


def test_run_table1_end_to_end(tmp_path):
    config = tiny_config()
    report = run_table1(config, tmp_path)
    for name in ("report.json", "config.json", "model.pt", "fig_paths.png", "fig_log_snr.png",
                 "paths_unconstrained.npz", "paths_avoid_region.npz"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["lower_bound"]["connectivity_8"] == pytest.approx(36.336, abs=1e-3)
    assert Table1Config.from_dict(json.loads((tmp_path / "config.json").read_text())) == config
    n_frames = config.n_curve_points * config.n_steps_per_point
    with np.load(tmp_path / "paths_unconstrained.npz") as npz:
        assert npz["phi"].shape == npz["psi"].shape == (config.n_paths, n_frames)
        assert npz["phi"].dtype == np.float32
        assert (np.abs(npz["phi"]) <= math.pi + 1e-5).all()
        assert npz["geodesic_log_snr"].shape == (config.n_curve_points,)
        assert npz["geodesic_log_snr"][0] == pytest.approx(4.0)
    for variant in config.variants:
        res = report["variants"][variant]
        m = res["metrics"]
        assert res["langevin"]["evaluations_per_path"] == config.evals_per_path
        assert res["langevin"]["method"] == "mala" and 0.0 < res["langevin"]["acceptance_rate"] <= 1.0
        assert m["n_frames"] == n_frames
        # densification can only raise the maximum; every path starts in the start basin
        assert m["max_energy_bilinear_densified"]["mean"] >= m["max_energy_bilinear"]["mean"] - 1e-9
        assert m["max_energy_nearest"]["min"] >= 0.0
        assert 0.0 <= m["hit_rate"] <= 1.0
        c = m["crossing"]
        assert c["saddle"] == pytest.approx(saved["lower_bound"]["saddle"])
        assert 0.0 <= c["max_position_along_path"]["min"] <= c["max_position_along_path"]["max"] <= 1.0
        assert 0.0 <= c["fraction_max_within_0.1_rad"] <= c["fraction_max_within_0.2_rad"] <= 1.0
    assert report["variants"]["avoid_region"]["geodesic"]["min_kl_to_forbidden_point"] > 0
    assert report["model"]["source"] == "trained" and report["model"]["data_evaluations"] > 0
    text = format_table1(report)
    assert "[paper] spacetime geodesic (paper)" in text and "[ours] spacetime geodesic, unconstrained" in text


def test_run_table1_loads_a_saved_model(tmp_path):
    first = tiny_config(variants=("unconstrained",), plots=False, save_paths=False, n_paths=4,
                        model_path=str(tmp_path / "shared_model.pt"))
    run_table1(first, tmp_path / "a")
    assert (tmp_path / "shared_model.pt").is_file()
    second = run_table1(first, tmp_path / "b")
    assert second["model"]["source"] == "loaded" and second["model"]["data_evaluations"] == 0
    assert not (tmp_path / "b" / "paths_unconstrained.npz").exists()


def test_run_table1_rejects_bad_config():
    with pytest.raises(TypeError, match="expected a Table1Config"):
        run_table1({"n_paths": 3})


# -- CLI ----------------------------------------------------------------------------------------------


def test_cli_dry_run_prints_resolved_config(capsys, tmp_path):
    code = main(["benchmark", "table1", "--out", str(tmp_path), "--quick", "--n-paths", "7",
                 "--variants", "unconstrained,low_variance", "--dry-run"])
    assert code == 0
    config = json.loads(capsys.readouterr().out)
    assert config["n_paths"] == 7 and config["variants"] == ["unconstrained", "low_variance"]
    assert config["train"]["n_steps"] == TABLE1_PRESETS["quick"]().train.n_steps
    assert main(["benchmark", "table1", "--out", str(tmp_path), "--preset", "algorithm1", "--langevin", "mala",
                 "--dry-run"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert (config["langevin_method"], config["step_size"]) == ("mala", 2e-3)


def test_cli_errors(capsys, tmp_path):
    assert main(["benchmark", "table1", "--out", str(tmp_path), "--quick", "--preset", "paper"]) == 2
    assert "--quick: expected no other --preset" in capsys.readouterr().err
    assert main(["benchmark", "table1", "--out", str(tmp_path), "--variants", "nope", "--dry-run"]) == 2
    assert "variants: expected names from" in capsys.readouterr().err
    assert main(["benchmark"]) == 2


def test_run_table1_with_a_given_denoiser(tmp_path):
    from spacetime_md.toy.periodic_model import ExactPeriodicDenoiser

    config = tiny_config(variants=("unconstrained",), model_path=str(tmp_path / "never.pt"), plots=False,
                         geodesic=GeodesicConfig(n_nodes=4, n_points=(8,), max_steps=3))
    report = run_table1(config, tmp_path, denoiser=ExactPeriodicDenoiser(alanine_dipeptide_fes(), n_images=1))
    assert report["model"]["source"] == "given" and report["model"]["type"] == "ExactPeriodicDenoiser"
    assert not (tmp_path / "never.pt").exists() and not (tmp_path / "model.pt").exists()
    assert math.isfinite(report["variants"]["unconstrained"]["metrics"]["max_energy_nearest"]["mean"])
    with pytest.raises(TypeError, match="denoiser: expected a callable"):
        run_table1(config, None, denoiser="exact")
