"""Transition-path pipeline end to end on a tiny (untrained) model: outputs, errors, CLI."""

from __future__ import annotations

import dataclasses
import json

import mdtraj
import numpy as np
import pytest
import torch

from spacetime_md import cli
from spacetime_md.core import GeodesicConfig
from spacetime_md.errors import TopologyMismatchError
from spacetime_md.molecular import load_system
from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.paths.structures import kabsch_align, kabsch_rmsd
from spacetime_md.molecular.paths.transition import TransitionPaths, compute_transition_paths
from spacetime_md.molecular.model.pretrained import save_checkpoint
from spacetime_md.molecular.paths.run import run_paths

TINY = PathConfig(
    n_paths=2, n_points=8, n_steps=10,
    geodesic=GeodesicConfig(n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1, max_steps=2),
)


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def tiny_model(system):
    torch.manual_seed(0)
    return EquivariantDenoiser(["X"] * system.n_atoms, system.bonds.tolist(), atom_names=list(system.atom_names),
                               hidden_channels=8, n_layers=1, n_rbf=4)


@pytest.fixture(scope="module")
def tiny_checkpoint(system, tiny_model, tmp_path_factory):
    """The tiny model saved with its system recorded, as training writes it."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_model, {"system": system.spec()})


def test_kabsch_recovers_rotation_and_keeps_handedness():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(10, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    moved = ref @ q.T + np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(kabsch_align(moved, ref), ref, atol=1e-10)
    assert kabsch_rmsd(moved, ref) < 1e-10
    mirror = ref * np.array([-1.0, 1.0, 1.0])
    assert kabsch_rmsd(mirror, ref) > 0.1  # proper rotations only


def test_pipeline_outputs(tmp_path, system, tiny_checkpoint):
    report = run_paths(tmp_path, start="C7eq", end="C7ax", config=TINY, checkpoint=tiny_checkpoint)
    for kind in ("geodesic", "straight"):
        m = report[kind]
        assert len(m["per_path"]) == 2
        assert m["force_evaluations_per_path"] == 8 * 10
        assert 0.0 <= m["target_hit_rate"] <= 1.0 and 0.0 <= m["chirality_kept_fraction"] <= 1.0
        assert np.isfinite(m["max_energy_kj_mol"]["mean"])
        traj = mdtraj.load(tmp_path / f"{kind}_path000.dcd", top=tmp_path / "topology.pdb")
        assert traj.n_frames == 8 and traj.n_atoms == 22
        assert mdtraj.load(tmp_path / f"{kind}_all_paths.h5").n_frames == 16
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["geodesic"]["per_path"][0]["path"] == 0
    assert set(saved["timings"]) >= {"geodesic_s", "paths_s", "validation_s", "total_s"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert PathConfig.from_dict(config["path_config"]) == TINY
    for png in ("ramachandran.png", "energies.png", "log_snr.png"):
        assert (tmp_path / png).stat().st_size > 1000
    paths = TransitionPaths.load(tmp_path)
    assert paths.frames.shape == (2, 8, 22, 3) and paths.metrics["target_hit_rate"] == report["geodesic"]["target_hit_rate"]
    traj = paths.to_mdtraj(path=1)
    np.testing.assert_allclose(traj.xyz, paths.frames[1], atol=1e-6)
    sim = paths.simulation_at(system, path=0, frame=3)
    pos = np.asarray(sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_allclose(pos, paths.frames[0, 3], atol=1e-6)


def test_restrained_end_of_curve_reaches_the_target(system, tiny_model):
    # At the endpoint the restraint (k = kT SNR / s^2) holds atoms near the clean target:
    # whatever the model, the final frame is close to the end structure.
    cfg = PathConfig(n_paths=2, n_points=8, n_steps=200, baseline=False, geodesic=TINY.geodesic)
    out = compute_transition_paths(system, tiny_model, "C7eq", "C7ax", cfg)
    assert out["report"]["geodesic"]["target_hit_rate"] == 1.0
    assert out["report"]["geodesic"]["final_heavy_rmsd_angstrom"]["mean"] < 0.5
    assert out["baseline"] is None


def test_pipeline_errors(system, tiny_model, tmp_path):
    with pytest.raises(KeyError, match="state: expected one of"):
        compute_transition_paths(system, tiny_model, "C7eq", "nowhere", TINY)
    with pytest.raises(ValueError, match="start and end: expected two different structures"):
        compute_transition_paths(system, tiny_model, "C7eq", "C7eq", TINY)
    other = EquivariantDenoiser(["X"] * 10, [(i, i + 1) for i in range(9)], hidden_channels=8, n_layers=1)
    with pytest.raises(TopologyMismatchError, match="model: expected a model for 22 atoms"):
        compute_transition_paths(system, other, "C7eq", "C7ax", TINY)
    with pytest.raises(FileNotFoundError, match="end: expected a PDB file, got missing path"):
        compute_transition_paths(system, tiny_model, "C7eq", str(tmp_path / "missing.pdb"), TINY)
    bad_pdb = tmp_path / "short.pdb"
    traj = system.to_mdtraj(system.positions_nm)
    traj.atom_slice(range(20)).save_pdb(str(bad_pdb))
    with pytest.raises(TopologyMismatchError, match="end: expected 22 atoms like alanine-dipeptide, got 20"):
        compute_transition_paths(system, tiny_model, "C7eq", str(bad_pdb), TINY)
    with pytest.raises(ValueError, match="avoid_state: expected a state name with constraint 'avoid'"):
        PathConfig(constraint="avoid")
    with pytest.raises(ValueError, match="constraint: expected 'none', 'low-variance' or 'avoid', got 'x'"):
        PathConfig(constraint="x")


def test_avoid_region_containing_an_endpoint_is_rejected(system, tiny_model):
    # A structure file skips the (phi, psi) state check, so the core's KL check decides.
    from spacetime_md.molecular.system.build import system_data_path

    c7ax_pdb = str(system_data_path("alanine_dipeptide/C7ax.pdb"))
    cfg = PathConfig(n_paths=1, n_points=8, n_steps=5, constraint="avoid", avoid_state=c7ax_pdb,
                     avoid_log_snr=5.0, min_log_snr=1.0, geodesic=TINY.geodesic)
    with pytest.raises(ValueError, match="forbidden region contains the end point"):
        compute_transition_paths(system, tiny_model, "C7eq", "C7ax", cfg)


def test_cli_paths_errors_are_one_line(tmp_path, tiny_checkpoint, capsys):
    code = cli.main(["paths", "--out", str(tmp_path), "--end", "nowhere", "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("spacetime-md: error: state: expected one of")
    assert cli.main(["paths", "--out", str(tmp_path), "--dry-run"]) == 0
    assert '"n_paths": 8' in capsys.readouterr().out


def test_avoid_state_containing_an_endpoint_is_rejected_by_name(system, tiny_model):
    cfg = PathConfig(n_paths=1, n_points=8, n_steps=5, constraint="avoid", avoid_state="C5", geodesic=TINY.geodesic)
    with pytest.raises(ValueError, match=r"avoid_state: expected a state that contains neither endpoint, got C7eq, "
                                         r"which contains the start structure \(phi 2 = -147 deg, psi 2 = 159 deg\)"):
        compute_transition_paths(system, tiny_model, "C7eq", "C7ax", cfg)


def test_cli_pdb_arguments_are_files_whatever_their_suffix(tmp_path, tiny_checkpoint, capsys):
    notpdb = tmp_path / "endpoint.txt"
    notpdb.write_text("this is not a PDB file\n")
    code = cli.main(["paths", "--out", str(tmp_path / "o"), "--end-pdb", str(notpdb), "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "end: expected" in err and "endpoint.txt" in err and "state" not in err
    code = cli.main(["paths", "--out", str(tmp_path / "o"), "--end-pdb", str(tmp_path / "missing.pdb"),
                     "--checkpoint", str(tiny_checkpoint)])
    assert code != 0 and "missing.pdb" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [
    ("gpu", "device: expected 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    pytest.param("cuda", "device: expected 'cpu' or an available CUDA device, got 'cuda'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available")),
])
def test_cli_unusable_device_is_one_line(tmp_path, tiny_checkpoint, capsys, device, message):
    code = cli.main(["paths", "--out", str(tmp_path), "--device", device, "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and message in err


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_in_the_baseline_keeps_the_geodesic_results(tmp_path, tiny_checkpoint, monkeypatch, workers):
    from spacetime_md.errors import NonFiniteError
    from spacetime_md.molecular.paths.openmm_langevin import PendingPaths

    original_init, original_result = PendingPaths.__init__, PendingPaths.result
    started = []

    def record(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        started.append(self)

    def failing_baseline(self, *args, **kwargs):
        # The baseline's paths start first (they run during the solve) and may be collected
        # before the geodesic's: their failure must not lose the geodesic's results.
        if self is started[0]:
            raise NonFiniteError("path 0: OpenMM produced non-finite positions")
        return original_result(self, *args, **kwargs)

    monkeypatch.setattr(PendingPaths, "__init__", record)
    monkeypatch.setattr(PendingPaths, "result", failing_baseline)
    with pytest.raises(NonFiniteError, match="non-finite positions"):
        run_paths(tmp_path, config=dataclasses.replace(TINY, workers=workers), checkpoint=tiny_checkpoint,
                  plots=False)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "geodesic.npz").is_file()
    with np.load(tmp_path / "geodesic.npz") as curve:
        assert set(curve.files) == {"log_snr", "x", "start_nm", "end_nm"}
    kept = TransitionPaths.load(tmp_path, kind="geodesic")
    assert kept.n_paths == TINY.n_paths and np.isfinite(kept.frames).all()
    assert not (tmp_path / "report.json").exists() and not list(tmp_path.glob("straight_*"))


def test_record_every_must_divide_n_steps_and_defaults_to_a_divisor():
    assert PathConfig(n_steps=300).record_every == 20 and PathConfig(n_steps=7).record_every == 1
    with pytest.raises(ValueError, match=r"record_every: expected a divisor of n_steps \(300\), got 7"):
        PathConfig(n_steps=300, record_every=7)


def test_cli_num_threads_must_be_positive(tmp_path, tiny_checkpoint, capsys):
    code = cli.main(["paths", "--out", str(tmp_path), "--num-threads", "0", "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "spacetime-md: error: --num-threads: expected an integer in [1, 256], got 0"


def test_cli_record_every(tmp_path, capsys):
    assert cli.main(["paths", "--out", str(tmp_path), "--record-every", "5", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["path_config"]["record_every"] == 5
    assert cli.main(["paths", "--out", str(tmp_path), "--n-steps", "30", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["path_config"]["record_every"] == 10
    code = cli.main(["paths", "--out", str(tmp_path), "--record-every", "7", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "spacetime-md: error: record_every: expected a divisor of n_steps (300), got 7"


def test_record_every_sets_the_frame_spacing(tmp_path, tiny_checkpoint):
    run_paths(tmp_path / "c", config=dataclasses.replace(TINY, baseline=False), checkpoint=tiny_checkpoint, plots=False)
    fine_cfg = dataclasses.replace(TINY, baseline=False, record_every=1)
    run_paths(tmp_path / "f", config=fine_cfg, checkpoint=tiny_checkpoint, plots=False)
    a, b = TransitionPaths.load(tmp_path / "c"), TransitionPaths.load(tmp_path / "f")
    every = TINY.record_every
    assert b.frames.shape[1] == TINY.n_points * TINY.n_steps == a.frames.shape[1] * every
    # Same seed, same dynamics: the coarse frames are every record_every-th fine frame.
    np.testing.assert_allclose(a.frames, b.frames[:, every - 1 :: every], atol=1e-5)
    for name, expected in (("c", every), ("f", 1)):
        resolved = json.loads((tmp_path / name / "config.json").read_text())
        assert resolved["path_config"]["record_every"] == expected


def test_a_checkpoint_without_a_recorded_system_needs_one(system, tiny_model, tmp_path, capsys):
    plain = save_checkpoint(tmp_path / "plain.pt", tiny_model)  # as written before systems were recorded
    with pytest.raises(ValueError, match=r"system: the checkpoint records no system .* pass system='alanine-dipeptide'"):
        run_paths(tmp_path / "out", config=TINY, checkpoint=plain)
    assert not (tmp_path / "out").exists()
    code = cli.main(["paths", "--out", str(tmp_path / "out"), "--checkpoint", str(plain), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("spacetime-md: error: system: the checkpoint records no system")
    assert cli.main(["paths", "--out", str(tmp_path / "out"), "--checkpoint", str(plain), "--system",
                     "alanine-dipeptide", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["system"]["name"] == "alanine-dipeptide" and resolved["system"]["cvs"] == ["phi 2", "psi 2"]
    assert (resolved["start"], resolved["end"]) == ("C7eq", "C7ax")


def test_report_names_the_cvs_and_the_endpoint_states(tmp_path, tiny_checkpoint):
    report = run_paths(tmp_path, config=dataclasses.replace(TINY, baseline=False), checkpoint=tiny_checkpoint,
                       plots=False)
    assert report["cv_names"] == ["phi 2", "psi 2"]
    ends = report["endpoints"]
    assert set(ends["target_cvs"]) == {"phi 2", "psi 2"} and "target_phi_psi_rad" not in ends
    disc = ends["target_state"]["regions"][0]
    assert disc["radius"] == pytest.approx(np.degrees(0.75))
    assert disc["disc"]["phi 2"] == pytest.approx(np.degrees(ends["target_cvs"]["phi 2"]))
    assert ends["hit_length_nm"] is None and ends["hit_length_na_reason"] == "no length collective variable"
    m = report["geodesic"]
    values = np.asarray(m["cvs"])
    np.testing.assert_array_equal(values, np.asarray(m["phi_psi"]))  # single residue: the same columns
    for p, entry in enumerate(m["per_path"]):
        assert entry["final_phi_psi_rad"] == values[p, -1].tolist()
        assert entry["chirality_kept_fraction"] is not None
    assert m["chiral_centres"] == ["CA ALA2"]
    from spacetime_md.molecular.system.build import MolecularSystem

    rebuilt = MolecularSystem.from_spec(json.loads((tmp_path / "system.json").read_text()))
    assert rebuilt.name == "alanine-dipeptide" and rebuilt.cvs.names == ("phi 2", "psi 2")
    assert [s.name for s in rebuilt.states] == ["C7eq", "C7ax", "alpha_R"]


def test_cli_hit_length_nm(tmp_path, capsys):
    assert cli.main(["paths", "--out", str(tmp_path), "--hit-length-nm", "0.02", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["path_config"]["hit_length_nm"] == 0.02
    code = cli.main(["paths", "--out", str(tmp_path), "--hit-length-nm", "-1", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "spacetime-md: error: hit_length_nm: expected None or a finite number > 0 (nm), got -1.0"


def test_python_api_defaults_equal_the_cli(tmp_path, capsys):
    """The API's default PathConfig is the CLI's resolved config (same threads, same solver)."""
    import dataclasses

    assert cli.main(["paths", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)["path_config"]
    api = json.loads(json.dumps(PathConfig().to_dict()))
    assert resolved == api
    assert api["geodesic"]["num_threads"] == 1
    assert dataclasses.replace(PathConfig(), n_paths=3).geodesic.num_threads == 1
