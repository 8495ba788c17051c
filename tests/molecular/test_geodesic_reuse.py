"""Reusing a solved geodesic (``--geodesic FILE``), the honest energy in the report, lazy imports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from spacetime_md import cli
from spacetime_md.core import GeodesicConfig
from spacetime_md.molecular import load_system
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.model.pretrained import save_checkpoint
from spacetime_md.molecular.paths.run import format_table, model_sha256, run_paths

TINY = PathConfig(
    n_paths=1, n_points=8, n_steps=10, baseline=False,
    geodesic=GeodesicConfig(n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1, max_steps=3,
                            probe_layout="point", resample_every=1, holdout_probes=4, num_threads=1),
)


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


def _model(system, seed):
    torch.manual_seed(seed)
    return EquivariantDenoiser(["X"] * system.n_atoms, system.bonds.tolist(), atom_names=list(system.atom_names),
                               hidden_channels=8, n_layers=1, n_rbf=4)


@pytest.fixture(scope="module")
def checkpoints(system, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return [save_checkpoint(root / f"tiny{seed}.pt", _model(system, seed), {"system": system.spec()})
            for seed in (0, 1)]


@pytest.fixture(scope="module")
def solved(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("solved")
    report = run_paths(out, config=TINY, checkpoint=checkpoints[0], plots=False)
    return out, report


def test_report_holds_the_held_out_energy(solved):
    out, report = solved
    curve = json.loads((out / "report.json").read_text())["geodesic_curve"]
    est = curve["estimate"]
    assert est["n_probes"] == 4 and est["method"] == "hutchinson" and est["n_segments"] == 7
    assert est["energy_se"] > 0 and 0 <= est["n_negative_segments"] <= 7
    assert "n_failed_searches" in curve
    line = report["table"].splitlines()[-1]
    assert f"{est['n_negative_segments']} of 7 segments negative" in line and "held-out, 4 probes" in line


def test_reused_geodesic_gives_the_same_curve_and_skips_the_solve(solved, checkpoints, tmp_path):
    out, report = solved
    again = run_paths(tmp_path / "again", config=dataclasses.replace(TINY, n_paths=2), checkpoint=checkpoints[0],
                      plots=False, geodesic=out / "geodesic.npz")
    assert again["energy_evaluations"]["denoiser_rows_geodesic"] == 0
    assert again["geodesic_curve"]["log_snr"] == report["geodesic_curve"]["log_snr"]
    assert again["geodesic_curve"]["reused_from"] == str(out / "geodesic.npz")
    assert "reused " in again["table"].splitlines()[-1]
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["geodesic"] == "precomputed" and config["geodesic_file"].endswith("geodesic.npz")
    # The run directory and geodesic.json name the same geodesic; another thread count is allowed.
    threads = dataclasses.replace(TINY, geodesic=dataclasses.replace(TINY.geodesic, num_threads=2))
    third = run_paths(tmp_path / "third", config=threads, checkpoint=checkpoints[0], plots=False, geodesic=out)
    assert third["geodesic_curve"]["log_snr"] == report["geodesic_curve"]["log_snr"]


def test_reuse_refuses_another_model_settings_or_endpoints(solved, checkpoints, tmp_path):
    out, _ = solved
    with pytest.raises(ValueError, match=r"solved with another model \(sha256 \w{12} vs this run's \w{12}\)"):
        run_paths(tmp_path / "a", config=TINY, checkpoint=checkpoints[1], plots=False, geodesic=out)
    other = dataclasses.replace(TINY, geodesic=dataclasses.replace(TINY.geodesic, n_nodes=4))
    with pytest.raises(ValueError, match=r"solved with other settings \(geodesic.n_nodes 3 \(file\) vs 4 \(this run\)\)"):
        run_paths(tmp_path / "b", config=other, checkpoint=checkpoints[0], plots=False, geodesic=out)
    with pytest.raises(ValueError, match="solved between other endpoints than C7eq -> alpha_R"):
        run_paths(tmp_path / "c", config=TINY, checkpoint=checkpoints[0], plots=False, geodesic=out, end="alpha_R")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_cli_reuse_errors_are_one_line(solved, checkpoints, tmp_path, capsys):
    out, _ = solved
    code = cli.main(["paths", "--out", str(tmp_path / "o"), "--checkpoint", str(checkpoints[1]),
                     "--geodesic", str(out / "geodesic.npz"), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "solved with another model" in err
    code = cli.main(["paths", "--out", str(tmp_path / "o"), "--checkpoint", str(checkpoints[0]),
                     "--geodesic", str(tmp_path / "missing.npz")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "no such file" in err


def test_model_hash_sees_every_parameter(system):
    model = _model(system, 0)
    before = model_sha256(model)
    assert model_sha256(_model(system, 0)) == before
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1e-6
    assert model_sha256(model) != before


def test_a_guided_checkpoint_runs_paths_when_smooth_and_is_refused_with_a_hard_interval(system, checkpoints,
                                                                                        tmp_path, capsys):
    """A guided checkpoint (`spacetime-md guide`) is a model like any other for paths; its hash
    sees the guidance settings, and one with a hard interval (not differentiable in log_snr) is
    a one-line error before anything is written."""
    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_guided_checkpoint

    a, b = (load_checkpoint(c) for c in checkpoints)
    smooth = save_guided_checkpoint(tmp_path / "smooth.pt", a, b, weight=2.0, log_snr_min=-2.0, log_snr_max=8.0,
                                    edge_width=0.5, metadata={"system": system.spec()})
    hard = save_guided_checkpoint(tmp_path / "hard.pt", a, b, weight=2.0, log_snr_min=-2.0, log_snr_max=8.0,
                                  edge_width=0.0, metadata={"system": system.spec()})
    heavier = save_guided_checkpoint(tmp_path / "w3.pt", a, b, weight=3.0, log_snr_min=-2.0, log_snr_max=8.0,
                                     edge_width=0.5)
    hashes = {model_sha256(load_checkpoint(p)) for p in (smooth, hard, heavier, checkpoints[0])}
    assert len(hashes) == 4
    report = run_paths(tmp_path / "out", config=TINY, checkpoint=smooth, plots=False)
    recorded = json.loads((tmp_path / "out" / "config.json").read_text())["model"]["guidance"]
    assert recorded == {"weight": 2.0, "log_snr_min": -2.0, "log_snr_max": 8.0, "edge_width": 0.5}
    assert len(report["geodesic"]["per_path"]) == 1 and 0.0 <= report["geodesic"]["target_hit_rate"] <= 1.0
    code = cli.main(["paths", "--out", str(tmp_path / "o2"), "--checkpoint", str(hard), "--n-paths", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "hard interval (edge_width 0)" in err, err
    assert not (tmp_path / "o2").exists()


def test_format_table_without_an_estimate_keeps_the_old_line(solved):
    _, report = solved
    report = json.loads(json.dumps({k: v for k, v in report.items() if k != "table"}))
    report["geodesic_curve"]["estimate"] = None
    assert "energy " in format_table(report).splitlines()[-1] and "held-out" not in format_table(report)


def test_format_table_reports_the_optimised_energy_with_the_abs_clamp(solved):
    _, report = solved
    report = json.loads(json.dumps({k: v for k, v in report.items() if k != "table"}))
    assert report["geodesic_curve"]["clamp"] == "segment" and "|t|-counted" not in format_table(report)
    report["geodesic_curve"]["clamp"] = "abs"
    est = report["geodesic_curve"]["estimate"]
    assert est["energy_abs"] >= est["energy"]
    assert f"|t|-counted {est['energy_abs']:.4g}, the objective" in format_table(report).splitlines()[-1]


def test_format_table_names_the_initial_curve_and_the_starts(solved):
    _, report = solved
    report = json.loads(json.dumps({k: v for k, v in report.items() if k != "table"}))
    g = report["geodesic_curve"]
    assert g["init_dips"] == [0.0] and "start_objectives" not in g
    line = format_table(report).splitlines()[-1]
    assert "straight line" in line and "starts" not in line
    g.update(init_dips=[3.0, 0.0], start_objectives=[1.0, 2.0], start=0, start_dip=3.0)
    line = format_table(report).splitlines()[-1]
    assert "initial curve, dip 3" in line and "straight line" not in line
    assert "over 2 starts (best: dip 3)" in line


def test_the_default_geodesic_optimises_and_reports_the_abs_counted_energy(checkpoints, tmp_path):
    """The shipped molecular settings count negative segment terms by magnitude and solve from
    two initial curves (the straight line and a dip of 3); the report then states that energy (the
    objective) first, it can only exceed the segment-clamped one, and both starts are recorded
    with the winner being the lower objective."""
    from spacetime_md.molecular.paths.config import DEFAULT_GEODESIC

    assert DEFAULT_GEODESIC.clamp == "abs" and PathConfig().geodesic.clamp == "abs"
    assert DEFAULT_GEODESIC.init_dips == (0.0, 3.0) and PathConfig().geodesic.init_dips == (0.0, 3.0)
    small = dataclasses.replace(DEFAULT_GEODESIC, n_nodes=3, n_points=(8,), max_steps=3, holdout_probes=4)
    report = run_paths(tmp_path / "out", config=dataclasses.replace(TINY, geodesic=small),
                       checkpoint=checkpoints[0], plots=False)
    curve = json.loads((tmp_path / "out" / "report.json").read_text())["geodesic_curve"]
    est = curve["estimate"]
    assert curve["clamp"] == "abs" and est["energy_abs"] >= est["energy"] > 0
    objectives = curve["start_objectives"]
    assert curve["init_dips"] == [0.0, 3.0] and len(objectives) == 2
    assert curve["start_dip"] == [0.0, 3.0][objectives.index(min(objectives))]
    assert "over 2 starts" in report["table"].splitlines()[-1]
    assert f"|t|-counted {est['energy_abs']:.4g}, the objective" in report["table"].splitlines()[-1]


def test_importing_the_molecular_package_is_lazy():
    code = ("import sys, spacetime_md.molecular as m; assert 'torch_geometric' not in sys.modules; "
            "assert 'openmm' not in sys.modules; m.PathConfig; assert 'torch_geometric' not in sys.modules; "
            "m.EquivariantDenoiser; assert 'torch_geometric' in sys.modules; assert 'run_paths' in dir(m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_num_threads_auto_and_errors(tmp_path, capsys):
    assert cli.main(["paths", "--out", str(tmp_path / "o"), "--num-threads", "auto", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["path_config"]["geodesic"]["num_threads"] == "auto"
    code = cli.main(["paths", "--out", str(tmp_path / "o"), "--num-threads", "0", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.endswith("--num-threads: expected an integer in [1, 256], got 0")
    with pytest.raises(SystemExit):
        cli.main(["paths", "--out", str(tmp_path / "o"), "--num-threads", "many", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "expected an integer in [1, 256] or 'auto', got 'many'" in err
