"""Transition paths for molecules other than alanine dipeptide: glycine dipeptide (a peptide
without chiral centre), N-methylacetamide (no backbone phi/psi: RMSD CVs) and the alanine
tetrapeptide (hit on all three residues).

Tiny models are trained here on short OpenMM MD from the endpoint structures; the CLI runs
in-process and every reported number is checked against an independent computation (mdtraj on
the written DCD files, numpy periodic distances).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from spacetime_md import cli
from spacetime_md.molecular.system.cvs import CollectiveVariables, Torsion, backbone_torsions
from spacetime_md.molecular.paths.config import PathConfig
from spacetime_md.molecular.paths.hit import HIT_LENGTH_FRACTION, compute_target_hit

ROOT = Path(__file__).resolve().parents[2]
MOLECULES = ROOT / "systems" / "test_molecules"
TETRA = ROOT / "systems" / "alanine_tetrapeptide"
RUN = ["--n-paths", "2", "--n-points", "4", "--n-steps", "200", "--relaxed", "--num-threads", "1"]


def _md_frames(system, pdb: Path, n_frames: int, seed: int) -> np.ndarray:
    """``n_frames`` frames (nm) of 300 K Langevin MD started at ``pdb``, 20 fs apart."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    ctx = system.create_context(integrator, positions_nm=app.PDBFile(str(pdb)).getPositions(asNumpy=True)
                                .value_in_unit(unit.nanometer))
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(200)
    out = np.empty((n_frames, system.n_atoms, 3))
    for i in range(n_frames):
        integrator.step(10)
        out[i] = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return out


def _train_tiny(tmp: Path, pdb: Path, endpoints: tuple[Path, Path]) -> tuple[Path, object]:
    """A 16-channel, 2-layer model trained for 60 steps on 240 MD frames around both endpoints;
    its checkpoint records the system (as training does)."""
    import torch

    from spacetime_md.molecular.model.pretrained import load_checkpoint, save_checkpoint
    from spacetime_md.molecular.system.build import MolecularSystem
    from spacetime_md.molecular.model.dataset import MolecularDataset
    from spacetime_md.molecular.model.train_config import TrainConfig
    from spacetime_md.molecular.model.training import train

    system = MolecularSystem.from_pdb(pdb)
    frames = np.concatenate([_md_frames(system, p, 120, seed=k + 1) for k, p in enumerate(endpoints)])
    frames = frames[np.random.default_rng(0).permutation(len(frames))]
    dataset = MolecularDataset(frames[:216], frames[216:], system.mdtraj_topology, "test MD")
    config = TrainConfig(data=str(tmp), out=str(tmp / "train"), steps=60, batch_size=32, warmup_steps=10,
                         hidden_channels=16, n_layers=2, n_rbf=8, log_every=30, checkpoint_every=60, n_val=24,
                         num_threads=1)
    previous = torch.get_num_threads()
    try:
        train(config, dataset=dataset, progress=False)
    finally:
        torch.set_num_threads(previous)
    model = load_checkpoint(tmp / "train" / "model.pt")
    metadata = {**(getattr(model, "metadata", None) or {}), "system": system.spec()}
    path = save_checkpoint(tmp / "model.pt", model, metadata)
    return path, system


def _run_cli(args: list[str], capsys) -> str:
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _periodic(a, b):
    return (np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi


@pytest.fixture(scope="module")
def glycine_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gly")
    checkpoint, system = _train_tiny(tmp, MOLECULES / "glycine-dipeptide.pdb",
                                     (MOLECULES / "gly_C7eq.pdb", MOLECULES / "gly_C7ax.pdb"))
    return tmp, checkpoint, system


@pytest.fixture(scope="module")
def nma_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nma")
    checkpoint, system = _train_tiny(tmp, MOLECULES / "n-methylacetamide.pdb",
                                     (MOLECULES / "nma_trans.pdb", MOLECULES / "nma_cis.pdb"))
    return tmp, checkpoint, system


# --------------------------------------------------------------------------- the hit test (no model)


def _phi_psi_cvs() -> CollectiveVariables:
    return CollectiveVariables([Torsion("phi 2", (4, 6, 8, 14), residue=2), Torsion("psi 2", (6, 8, 14, 16), residue=2)])


def test_hit_wraps_across_180_degrees():
    cvs = _phi_psi_cvs()
    target = np.radians([-179.0, 60.0])
    final = np.radians([[179.0, 60.0], [179.0, 60.0 + 180.0]])
    hit, by_group = compute_target_hit(cvs, final, target, hit_radius=0.75)
    assert hit.tolist() == [True, False]  # 2 deg apart across the wrap; 180 deg apart in psi
    assert list(by_group) == ["phi 2/psi 2"]


def test_hit_radius_is_0_75_rad():
    cvs = _phi_psi_cvs()
    target = np.array([-2.0, 2.5])
    final = target + np.array([[0.74, 0.0], [0.76, 0.0], [0.74 / math.sqrt(2), 0.74 / math.sqrt(2)],
                               [0.76 / math.sqrt(2), -0.76 / math.sqrt(2)]])
    hit, _ = compute_target_hit(cvs, final, target, hit_radius=PathConfig().hit_radius)
    assert PathConfig().hit_radius == 0.75
    assert hit.tolist() == [True, False, True, False]


def test_tetrapeptide_hit_needs_every_residue():
    top = mdtraj.load(str(TETRA / "alanine-tetrapeptide.pdb")).topology
    cvs = CollectiveVariables(backbone_torsions(top))
    assert cvs.names == ("phi 2", "psi 2", "phi 3", "psi 3", "phi 4", "psi 4")
    target = cvs.compute(mdtraj.load(str(TETRA / "mid_C7ax.pdb")).xyz.astype(float))[0]
    start = cvs.compute(mdtraj.load(str(TETRA / "C7eq_all.pdb")).xyz.astype(float))[0]
    # Constructed: the target with only residue 3 moved by 1 rad in phi is no hit; small moves
    # of every residue are.
    moved = target.copy()
    moved[cvs.index("phi 3")] += 1.0
    near = target + 0.2
    hit, by_group = compute_target_hit(cvs, np.stack([moved, near]), target)
    assert hit.tolist() == [False, True]
    assert {k: v.tolist() for k, v in by_group.items()} == {
        "phi 2/psi 2": [True, True], "phi 3/psi 3": [False, True], "phi 4/psi 4": [True, True]}
    # Real structures: C7eq_all differs from mid_C7ax in residue 3 only, so the start is no hit
    # (the old first-residue test called it one).
    hit, by_group = compute_target_hit(cvs, start[None], target)
    assert not hit[0] and by_group["phi 2/psi 2"][0] and by_group["phi 4/psi 4"][0]
    assert not by_group["phi 3/psi 3"][0]


def test_hit_length_must_be_positive():
    with pytest.raises(ValueError, match=r"hit_length_nm: expected None or a finite number > 0 \(nm\), got 0"):
        PathConfig(hit_length_nm=0)
    assert PathConfig(hit_length_nm=0.02).hit_length_nm == 0.02


# --------------------------------------------------------------------------- glycine dipeptide


def test_glycine_paths_from_the_checkpoint_alone(glycine_run, capsys):
    tmp, checkpoint, system = glycine_run
    out = tmp / "paths"
    printed = _run_cli(["paths", "--checkpoint", str(checkpoint), "--start-pdb", str(MOLECULES / "gly_C7eq.pdb"),
                        "--end-pdb", str(MOLECULES / "gly_C7ax.pdb"), "--out", str(out), *RUN], capsys)
    report = json.loads((out / "report.json").read_text())
    assert report["cv_names"] == ["phi 2", "psi 2"]
    ends = report["endpoints"]
    target_traj = mdtraj.load(str(MOLECULES / "gly_C7ax.pdb"))
    target = np.array([mdtraj.compute_phi(target_traj)[1][0, 0], mdtraj.compute_psi(target_traj)[1][0, 0]])
    np.testing.assert_allclose([ends["target_cvs"]["phi 2"], ends["target_cvs"]["psi 2"]], target, atol=1e-4)
    assert ends["start_state"]["regions"][0]["disc"].keys() == {"phi 2", "psi 2"}
    assert not ends["start_in_target_state"]
    for kind in ("geodesic", "straight"):
        m = report[kind]
        traj = mdtraj.load(str(out / f"{kind}_path000.dcd"), top=str(out / "topology.pdb"))
        for p, entry in enumerate(m["per_path"]):
            final = mdtraj.load(str(out / f"{kind}_path{p:03d}.dcd"), top=str(out / "topology.pdb"))[-1]
            mine = np.array([mdtraj.compute_phi(final)[1][0, 0], mdtraj.compute_psi(final)[1][0, 0]])
            np.testing.assert_allclose([entry["final_cvs"]["phi 2"], entry["final_cvs"]["psi 2"]], mine, atol=1e-3)
            assert entry["final_phi_psi_rad"] == [entry["final_cvs"]["phi 2"], entry["final_cvs"]["psi 2"]]
            distance = float(np.sqrt((_periodic(mine, target) ** 2).sum()))
            if abs(distance - 0.75) > 1e-3:  # float32 DCD: skip a knife-edge case
                assert entry["target_hit"] == (distance <= 0.75)
            assert entry["chirality_kept_fraction"] is None
            # The relaxed barrier is defined (both backbone torsions held) and finite.
            assert math.isfinite(entry["relaxed_barrier_kj_mol"])
        assert m["target_hit_rate"] == np.mean([e["target_hit"] for e in m["per_path"]])
        assert "target_hit_by_group" not in m  # one residue
        assert m["chirality_kept_fraction"] is None and m["chirality_na_reason"] == "no chiral centre in the topology"
        assert m["relaxed_torsions"] == ["phi 2", "psi 2"]
        assert np.asarray(m["cvs"]).shape == (2, traj.n_frames, 2)
    assert "n/a (no chiral centre in the topology)" in printed and "relaxed barrier" in printed
    # system.json rebuilds the same system; the plots were written.
    from spacetime_md.molecular.system.build import MolecularSystem

    rebuilt = MolecularSystem.from_spec(json.loads((out / "system.json").read_text()))
    assert rebuilt.fingerprint() == system.fingerprint() and rebuilt.cvs.names == ("phi 2", "psi 2")
    config = json.loads((out / "config.json").read_text())
    assert config["system"] == "glycine-dipeptide" and config["forcefield_files"] == ["amber99sbildn.xml"]
    assert report["plots"] == ["ramachandran.png", "energies.png", "log_snr.png"]
    for name in report["plots"]:
        assert (out / name).stat().st_size > 1000


def test_glycine_needs_endpoints_and_names_its_states(glycine_run, tmp_path, capsys):
    _, checkpoint, _ = glycine_run
    code = cli.main(["paths", "--checkpoint", str(checkpoint), "--end-pdb", str(MOLECULES / "gly_C7ax.pdb"),
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err == ("spacetime-md: error: --start: expected a state name of glycine-dipeptide or --start-pdb FILE, "
                   "got neither (states: none defined; give --start-pdb and --end-pdb)")
    assert not (tmp_path / "o").exists()
    # The checkpoint's system is the default; --system PDB and --dry-run show the resolved one.
    code = cli.main(["paths", "--checkpoint", str(checkpoint), "--system", str(MOLECULES / "glycine-dipeptide.pdb"),
                     "--start-pdb", "a.pdb", "--end-pdb", "b.pdb", "--out", str(tmp_path / "o"), "--dry-run"])
    # --dry-run checks what a real run checks: a missing endpoint file is an error.
    err = capsys.readouterr().err.strip()
    assert code == 2 and "start: expected a PDB file, got missing path 'a.pdb'" in err
    code = cli.main(["paths", "--checkpoint", str(checkpoint), "--system", str(MOLECULES / "glycine-dipeptide.pdb"),
                     "--start-pdb", str(MOLECULES / "gly_C7eq.pdb"), "--end-pdb", str(MOLECULES / "gly_C7ax.pdb"),
                     "--out", str(tmp_path / "o"), "--dry-run"])
    resolved = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "o").exists()
    assert code == 0 and resolved["system"]["name"] == "glycine-dipeptide" and resolved["system"]["n_atoms"] == 19
    assert resolved["system"]["cvs"] == ["phi 2", "psi 2"]
    # A model for another molecule is refused in one line before anything is written.
    code = cli.main(["paths", "--checkpoint", str(checkpoint), "--system", "alanine-dipeptide",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("spacetime-md: error: model: expected a model for 22 atoms (alanine-dipeptide), "
                                 "got one for 19")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- N-methylacetamide


def test_nma_paths_use_rmsd_to_the_endpoints(nma_run, capsys):
    tmp, checkpoint, system = nma_run
    out = tmp / "paths"
    printed = _run_cli(["paths", "--checkpoint", str(checkpoint), "--start-pdb", str(MOLECULES / "nma_trans.pdb"),
                        "--end-pdb", str(MOLECULES / "nma_cis.pdb"), "--out", str(out), *RUN], capsys)
    report = json.loads((out / "report.json").read_text())
    assert report["cv_names"] == ["rmsd start", "rmsd end"]
    assert [c["reference"] for c in report["endpoints"]["cvs"]] == ["start structure", "end structure"]
    start = mdtraj.load(str(MOLECULES / "nma_trans.pdb"))
    end = mdtraj.load(str(MOLECULES / "nma_cis.pdb"))
    heavy = [a.index for a in start.topology.atoms if a.element.symbol != "H"]
    assert len(heavy) == 5
    tolerance = HIT_LENGTH_FRACTION * float(mdtraj.rmsd(end, start, atom_indices=heavy)[0])
    assert report["endpoints"]["hit_length_nm"] == pytest.approx(tolerance, rel=1e-4)
    assert report["endpoints"]["target_cvs"]["rmsd end"] == pytest.approx(0.0, abs=1e-6)
    for kind in ("geodesic", "straight"):
        m = report[kind]
        for p, entry in enumerate(m["per_path"]):
            final = mdtraj.load(str(out / f"{kind}_path{p:03d}.dcd"), top=str(out / "topology.pdb"))[-1]
            to_end = float(mdtraj.rmsd(final, end, atom_indices=heavy)[0])
            to_start = float(mdtraj.rmsd(final, start, atom_indices=heavy)[0])
            assert entry["final_cvs"]["rmsd end"] == pytest.approx(to_end, abs=2e-4)
            assert entry["final_cvs"]["rmsd start"] == pytest.approx(to_start, abs=2e-4)
            if abs(to_end - tolerance) > 1e-4:
                assert entry["target_hit"] == (to_end <= tolerance)
            assert "final_phi_psi_rad" not in entry
            assert entry["relaxed_barrier_kj_mol"] is None
        assert m["relaxed_barrier_kj_mol"] is None
        assert m["relaxed_barrier_na_reason"] == "no torsion collective variable to hold"
        assert set(m["target_hit_by_group"]) == {"rmsd start", "rmsd end"}
        assert "phi_psi" not in m and np.asarray(m["cvs"]).shape[-1] == 2
    assert "relaxed barrier n/a (no torsion collective variable to hold)" in printed
    from spacetime_md.molecular.system.build import MolecularSystem

    spec = json.loads((out / "system.json").read_text())
    rebuilt = MolecularSystem.from_spec(spec)
    assert rebuilt.fingerprint() == system.fingerprint()
    assert rebuilt.cvs.names == ("rmsd start", "rmsd end")
    np.testing.assert_allclose(rebuilt.compute_cvs(end.xyz.astype(float))[0],
                               [float(mdtraj.rmsd(end, start, atom_indices=heavy)[0]), 0.0], atol=1e-5)
    assert report["plots"] == ["cvs.png", "energies.png", "log_snr.png"]
    assert (out / "cvs.png").stat().st_size > 1000 and not (out / "ramachandran.png").exists()


# --------------------------------------------------------------------------- batch


def test_glycine_batch_with_a_states_file_and_a_pdb_system(glycine_run, tmp_path, capsys):
    import shutil

    from spacetime_md.core import GeodesicConfig

    _, checkpoint, _ = glycine_run
    states_dir, pairs_dir = tmp_path / "states", tmp_path / "pairs"
    states_dir.mkdir()
    pairs_dir.mkdir()
    for name in ("gly_C7eq.pdb", "gly_C7ax.pdb"):
        shutil.copy(MOLECULES / name, states_dir / name)
    (states_dir / "states.json").write_text(json.dumps({"states": [
        {"name": "C7eq", "disc": {"phi 2": -80, "psi 2": 70}, "radius": 40, "representative_pdb": "gly_C7eq.pdb"},
        {"name": "C7ax", "disc": {"phi 2": 75, "psi 2": -55}, "radius": 40, "representative_pdb": "gly_C7ax.pdb"},
    ]}))
    (pairs_dir / "pairs.csv").write_text("id,start,end\nby-name,C7eq,C7ax\nby-file,../states/gly_C7ax.pdb,C7eq\n")
    tiny = PathConfig(n_paths=1, n_points=4, n_steps=20, baseline=False,
                      geodesic=GeodesicConfig(n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1, max_steps=3))
    (tmp_path / "tiny.json").write_text(json.dumps(tiny.to_dict()))
    out = tmp_path / "out"
    printed = _run_cli(["batch", str(pairs_dir / "pairs.csv"), "--out", str(out), "--checkpoint", str(checkpoint),
                        "--system", str(MOLECULES / "glycine-dipeptide.pdb"), "--states", str(states_dir / "states.json"),
                        "--path-config", str(tmp_path / "tiny.json"), "--workers", "0", "--no-plots",
                        "--no-progress", "--no-dashboard"], capsys)
    assert "2 computed, 0 already finished, 0 failed" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["system"] == "glycine-dipeptide" and config["state_names"] == ["C7eq", "C7ax"]
    assert config["states_file"] == str((states_dir / "states.json").resolve())
    for task_id, (start, end) in {"by-name": ("C7eq", "C7ax"), "by-file": ("gly_C7ax.pdb", "C7eq")}.items():
        report = json.loads((out / task_id / "report.json").read_text())
        assert (report["endpoints"]["start"], report["endpoints"]["end"]) == (start, end)
        spec = json.loads((out / task_id / "system.json").read_text())
        assert [s["name"] for s in spec["states"]] == ["C7eq", "C7ax"]
        assert spec["states"][0]["representative_pdb"] == str(states_dir / "gly_C7eq.pdb")
        record = json.loads((out / task_id / "task.json").read_text())
        assert record["summary"]["geodesic_hit_rate"] == report["geodesic"]["target_hit_rate"]
    # The "by-name" target is the C7ax structure: its hit is the test on the written final frame.
    report = json.loads((out / "by-name" / "report.json").read_text())
    final = mdtraj.load(str(out / "by-name" / "geodesic_path000.dcd"), top=str(out / "by-name" / "topology.pdb"))[-1]
    target = mdtraj.load(str(MOLECULES / "gly_C7ax.pdb"))
    d = _periodic([mdtraj.compute_phi(final)[1][0, 0], mdtraj.compute_psi(final)[1][0, 0]],
                  [mdtraj.compute_phi(target)[1][0, 0], mdtraj.compute_psi(target)[1][0, 0]])
    distance = float(np.sqrt((d**2).sum()))
    if abs(distance - 0.75) > 1e-3:
        assert report["geodesic"]["per_path"][0]["target_hit"] == (distance <= 0.75)
    # A state the system does not have is refused in one line before anything runs.
    (pairs_dir / "bad.csv").write_text("start,end\nC7eq,alpha_R\n")
    code = cli.main(["batch", str(pairs_dir / "bad.csv"), "--out", str(tmp_path / "bad"), "--checkpoint",
                     str(checkpoint), "--states", str(states_dir / "states.json"), "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "bad.csv row 1: state: expected one of ['C7eq', 'C7ax']" in err
    assert not (tmp_path / "bad").exists()
