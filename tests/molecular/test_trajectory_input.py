"""Training data from any trajectory mdtraj reads, and checkpoints that record their system (issue 19).

A short glycine-dipeptide MD trajectory (not alanine: 19 atoms, no chiral centre) is written
in DCD, XTC, TRR, NetCDF, HDF5 and multi-model PDB; ``spacetime-md train`` reads each (with
``--top`` where the format has no topology) and records a system that
:func:`checkpoint_system` rebuilds. Bad inputs end in one line on stderr, and no output folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from spacetime_md.cli import main
from spacetime_md.molecular.model.pretrained import checkpoint_system, load_checkpoint
from spacetime_md.molecular.system.build import MolecularSystem
from spacetime_md.molecular.model.dataset import load_dataset
from spacetime_md.molecular.model.train_config import TrainConfig
from spacetime_md.molecular.model.train_system import resolve_training_system
from spacetime_md.molecular.model.training import train

from ._model_helpers import _one_torch_thread  # noqa: F401  (autouse: one torch thread)

ROOT = Path(__file__).resolve().parents[2]
GLY = ROOT / "systems" / "test_molecules" / "glycine-dipeptide.pdb"
ALA = ROOT / "spacetime_md" / "data" / "alanine_dipeptide" / "alanine-dipeptide.pdb"
FORMATS = ("dcd", "xtc", "trr", "nc", "h5", "pdb")
#: Largest coordinate error (nm) each format's precision allows: XTC keeps 1e-3 nm, PDB 1e-3 A.
ATOL = {"dcd": 1e-5, "xtc": 6e-4, "trr": 1e-5, "nc": 1e-5, "h5": 1e-6, "pdb": 6e-5}
N_FRAMES = 60
TINY = ["--steps", "3", "--hidden-channels", "8", "--n-layers", "1", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def gly_md(tmp_path_factory):
    """60 frames of 300 K Langevin MD of the glycine dipeptide (OpenMM Reference), in six formats."""
    import openmm
    import openmm.unit as unit

    system = MolecularSystem.from_pdb(GLY, platform="Reference")
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(7)
    context = system.create_context(integrator)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    frames = []
    for _ in range(N_FRAMES):
        integrator.step(20)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    traj = mdtraj.Trajectory(np.asarray(frames, dtype=np.float32), mdtraj.load(str(GLY)).topology)
    folder = tmp_path_factory.mktemp("gly_md")
    files = {}
    for fmt in FORMATS:
        files[fmt] = folder / f"gly.{fmt}"
        traj.save(str(files[fmt]))
    return {"files": files, "traj": traj, "system": system, "folder": folder}


def _train(capsys, argv) -> tuple[int, str, str]:
    code = main(["train", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(capsys, argv, out: Path) -> str:
    code, _, err = _train(capsys, [*argv, "--out", str(out), *TINY])
    assert code == 2, err
    assert err.startswith("spacetime-md: error: ") and err.count("\n") == 1, err
    assert not out.exists(), "a failed start must not leave an output folder"
    return err


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_trains_and_records_its_system(gly_md, tmp_path, capsys, fmt):
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, ["--data", str(gly_md["files"][fmt]), "--top", str(GLY), "--out", str(out),
                                        *TINY])
    assert code == 0, err
    assert "trained 3 steps" in stdout and "glycine-dipeptide (19 atoms" in stdout
    model = load_checkpoint(out / "model.pt")
    spec = model.metadata["system"]
    assert spec["name"] == "glycine-dipeptide" and spec["forcefield_files"] == ["amber99sbildn.xml"]
    system = checkpoint_system(model)
    assert system.n_atoms == 19 and list(system.cvs.names) == ["phi 2", "psi 2"]
    assert np.allclose(system.positions_nm, gly_md["system"].positions_nm)
    # the resumable state and the config record it too
    assert load_checkpoint(out / "training_state.pt").metadata["system"] == spec
    derived = json.loads((out / "config.json").read_text())["derived"]
    assert derived["system"]["from"] == "--top glycine-dipeptide.pdb" and derived["n_train"] + derived["n_test"] == 60


@pytest.mark.parametrize("fmt", FORMATS)
def test_loaded_frames_equal_the_written_ones_and_stride_halves_them(gly_md, fmt):
    written = gly_md["traj"].xyz
    data = load_dataset(gly_md["files"][fmt], holdout_fraction=0.1, top=GLY)
    xyz = np.concatenate([data.train_xyz, data.test_xyz])
    assert xyz.shape == (N_FRAMES, 19, 3) and data.test_xyz.shape[0] == 6
    assert np.abs(xyz - written).max() <= ATOL[fmt]
    strided = load_dataset(gly_md["files"][fmt], holdout_fraction=0.1, top=GLY, stride=2)
    xyz2 = np.concatenate([strided.train_xyz, strided.test_xyz])
    assert xyz2.shape[0] == N_FRAMES // 2
    assert np.abs(xyz2 - written[::2]).max() <= ATOL[fmt]


def test_several_files_and_directories(gly_md, tmp_path):
    files = gly_md["files"]
    both = load_dataset([files["dcd"], files["xtc"]], holdout_fraction=0.5, top=GLY)
    assert both.train_xyz.shape[0] == N_FRAMES and both.sources == (str(files["dcd"]), str(files["xtc"]))
    assert np.abs(both.test_xyz - gly_md["traj"].xyz).max() <= ATOL["xtc"]  # the last file is held out
    folder = tmp_path / "md"
    folder.mkdir()
    for name in ("b.xtc", "a.dcd"):
        shutil.copy(files[name.split(".")[1]], folder / name)
    (folder / "notes.txt").write_text("not a trajectory\n")
    from_dir = load_dataset(folder, top=GLY)
    assert [Path(s).name for s in from_dir.sources] == ["a.dcd", "b.xtc"]
    assert from_dir.train_xyz.shape[0] + from_dir.test_xyz.shape[0] == 2 * N_FRAMES
    # the sampler's layout (one *.h5 in a directory) still wins over anything else
    shutil.copy(files["h5"], folder / "samples.h5")
    assert [Path(s).name for s in load_dataset(folder).sources] == ["samples.h5"]
    with pytest.raises(ValueError, match="stride: expected an integer >= 1, got 0"):
        load_dataset(files["h5"], stride=0)
    with pytest.raises(FileNotFoundError, match="top: expected an existing topology file"):
        load_dataset(files["dcd"], top=tmp_path / "missing.pdb")


def test_system_json_beside_the_samples_is_the_recorded_system(gly_md, tmp_path, capsys):
    # The sampler's contract: system.json = MolecularSystem.spec() next to the samples.
    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(gly_md["files"]["h5"], samples / "samples.h5")
    spec = gly_md["system"].spec()
    spec["name"] = "my-glycine"
    spec["temperature_k"] = 350.0
    (samples / "system.json").write_text(json.dumps(spec))
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, ["--data", str(samples), "--out", str(out), *TINY])
    assert code == 0, err
    system = checkpoint_system(load_checkpoint(out / "model.pt"))
    assert system.name == "my-glycine" and system.temperature_k == 350.0 and system.n_atoms == 19
    # a force field other than the recorded one needs --system
    err = _one_line_error(capsys, ["--data", str(samples), "--forcefield", "amber14"], tmp_path / "ff")
    assert "forcefield: " in err and "records ['amber99sbildn.xml']" in err and "pass --system" in err


def test_system_flag_gives_coordinate_files_their_topology(gly_md, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, ["--data", str(gly_md["files"]["dcd"]), "--system", str(GLY), "--out",
                                        str(out), *TINY, "--stride", "2"])
    assert code == 0, err
    model = load_checkpoint(out / "model.pt")
    assert checkpoint_system(model).name == "glycine-dipeptide"
    assert model.metadata["train_config"]["stride"] == 2
    derived = json.loads((out / "config.json").read_text())["derived"]
    assert derived["n_train"] + derived["n_test"] == N_FRAMES // 2
    assert derived["system"]["from"] == f"--system {GLY}"


def test_data_topology_alone_gives_a_system_with_an_assumed_force_field(gly_md, tmp_path, caplog):
    config = TrainConfig(data=str(gly_md["files"]["pdb"]), out=str(tmp_path / "run"))
    with caplog.at_level("WARNING", logger="spacetime_md.molecular.model.train_system"):
        system = resolve_training_system(config)
    assert system.n_atoms == 19 and system.name == "gly" and list(system.cvs.names) == ["phi 2", "psi 2"]
    assert "built from the topology of gly.pdb with ['amber99sbildn.xml'] in vacuum, assumed" in caplog.text
    assert not (tmp_path / "run").exists()


def test_resume_reads_the_saved_system(gly_md, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--data", str(gly_md["files"]["dcd"]), "--out", str(out), "--hidden-channels", "8", "--n-layers", "1",
            "--batch-size", "8", "--no-progress"]
    assert _train(capsys, [*args, "--top", str(GLY), "--steps", "2"])[0] == 0
    # no --top: the DCD gets the topology of the system saved with the run
    code, stdout, err = _train(capsys, [*args, "--steps", "4", "--resume"])
    assert code == 0, err
    assert "trained 4 steps" in stdout
    code, _, err = _train(capsys, [*args, "--steps", "6", "--resume", "--forcefield", "amber14"])
    assert code == 2 and "forcefield: the resumed run records ['amber99sbildn.xml']" in err


def test_dcd_without_top(gly_md, tmp_path, capsys):
    err = _one_line_error(capsys, ["--data", str(gly_md["files"]["dcd"])], tmp_path / "out")
    assert "gly.dcd (DCD) holds coordinates only; pass --top" in err


def test_wrong_topology_names_the_atom_count(gly_md, tmp_path, capsys):
    err = _one_line_error(capsys, ["--data", str(gly_md["files"]["xtc"]), "--top", str(ALA)], tmp_path / "out")
    assert "data: gly.xtc has 19 atoms, expected 22 (from --top alanine-dipeptide.pdb)" in err
    err = _one_line_error(capsys, ["--data", str(gly_md["files"]["h5"]), "--system", "alanine-dipeptide"],
                          tmp_path / "out")
    assert "data: gly.h5 has 19 atoms, expected 22 (from the system alanine-dipeptide" in err


def test_reordered_atoms_name_the_first_differing_atom(gly_md, tmp_path, capsys):
    lines = GLY.read_text().splitlines(keepends=True)
    atoms = [i for i, line in enumerate(lines) if line.startswith(("ATOM", "HETATM"))]
    lines[atoms[1]], lines[atoms[2]] = lines[atoms[2]], lines[atoms[1]]  # ACE H1 <-> H2
    swapped = tmp_path / "swapped.pdb"
    swapped.write_text("".join(line for line in lines if not line.startswith("CONECT")))
    err = _one_line_error(capsys, ["--data", str(gly_md["files"]["h5"]), "--system", str(swapped)], tmp_path / "out")
    assert "data: gly.h5 has atom 1 = ACE1 H1 (H), expected ACE1 H2 (H)" in err


def test_files_that_are_not_trajectories(gly_md, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("frames: 60\n")
    err = _one_line_error(capsys, ["--data", str(text)], tmp_path / "out")
    assert "data: expected a trajectory file mdtraj reads (DCD, XTC, TRR, NetCDF, HDF5, PDB, ...), got 'notes.txt'" in err
    fake_pdb = tmp_path / "fake.pdb"
    fake_pdb.write_text("frames: 60\n")
    err = _one_line_error(capsys, ["--data", str(fake_pdb)], tmp_path / "out")
    assert "data: expected a readable PDB trajectory, got fake.pdb" in err
    fake_dcd = tmp_path / "fake.dcd"
    fake_dcd.write_text("frames: 60\n")
    err = _one_line_error(capsys, ["--data", str(fake_dcd), "--top", str(GLY)], tmp_path / "out")
    assert "data: expected a readable DCD trajectory, got fake.dcd" in err
    err = _one_line_error(capsys, ["--data", str(tmp_path / "missing.xtc")], tmp_path / "out")
    assert "data: no such file or directory" in err


@pytest.mark.parametrize("factor, message", [
    (10.0, "the coordinates look like Angstrom written as nm (divide them by 10)"),
    (0.1, "the coordinates look like nm written as Angstrom (multiply them by 10)"),
])
def test_coordinates_in_the_wrong_unit(gly_md, tmp_path, capsys, factor, message):
    traj = gly_md["traj"]
    wrong = tmp_path / "wrong.h5"
    mdtraj.Trajectory(traj.xyz * factor, traj.topology).save_hdf5(str(wrong))
    err = _one_line_error(capsys, ["--data", str(wrong)], tmp_path / "out")
    assert "data: median bond length" in err and message in err


def test_non_finite_frames_and_too_few_frames(gly_md, tmp_path, capsys):
    traj = gly_md["traj"]
    xyz = traj.xyz.copy()
    xyz[7, 3, 0] = np.nan
    bad = tmp_path / "nan.h5"
    mdtraj.Trajectory(xyz, traj.topology).save_hdf5(str(bad))
    err = _one_line_error(capsys, ["--data", str(bad)], tmp_path / "out")
    assert "data: expected finite coordinates, got NaN or inf in frame 7 of nan.h5" in err
    err = _one_line_error(capsys, ["--data", str(gly_md["files"]["h5"]), "--stride", "60"], tmp_path / "out")
    assert "data: expected at least 2 frames, got 1 in gly.h5 (stride 60)" in err


def test_config_keeps_data_lists_and_round_trips():
    config = TrainConfig(data=("a.dcd", Path("b.dcd")), out="o", top=Path("t.pdb"), stride=3, system="x.pdb")
    assert config.data == ["a.dcd", "b.dcd"] and config.top == "t.pdb"
    assert TrainConfig(**json.loads(json.dumps(config.to_dict()))) == config
    for kwargs, message in [
        ({"stride": 0}, "stride: expected an integer >= 1, got 0"),
        ({"data": []}, r"data: expected a path or a non-empty list of paths, got \[\]"),
        ({"solvent": "water"}, "solvent: expected None, 'vacuum' or 'implicit', got 'water'"),
        ({"top": ""}, "top: expected None or a non-empty string, got ''"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{"data": "d", "out": "o", **kwargs})


def test_cli_dry_run_shows_the_data_list(gly_md, capsys):
    files = [str(gly_md["files"]["dcd"]), str(gly_md["files"]["xtc"])]
    assert main(["train", "--data", *files, "--top", str(GLY), "--stride", "2", "--out", "o", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"] == files and printed["top"] == str(GLY) and printed["stride"] == 2


def test_python_api_records_a_given_system(gly_md, tmp_path):
    data = load_dataset(gly_md["files"]["h5"])
    result = train(TrainConfig(data="", out=str(tmp_path / "run"), steps=2, batch_size=8, hidden_channels=8,
                               n_layers=1, n_val=4), dataset=data, system=gly_md["system"], progress=False)
    assert result.system is gly_md["system"]
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["metadata"]["system"]["fingerprint"] == gly_md["system"].fingerprint()
    with pytest.raises(ValueError, match=r"data: gly.h5 has 19 atoms, expected 22 \(from the system alanine-dipeptide"):
        train(TrainConfig(data="", out=str(tmp_path / "ala"), steps=2), dataset=data,
              system=MolecularSystem.from_pdb(ALA, name="alanine-dipeptide"), progress=False)
    assert not (tmp_path / "ala").exists()


def test_a_system_the_force_field_cannot_parameterise(gly_md, tmp_path, capsys):
    err = _one_line_error(capsys, ["--data", str(gly_md["files"]["dcd"]), "--top", str(GLY), "--forcefield",
                                   "amber99_obc.xml"], tmp_path / "out")
    assert "system from --top glycine-dipeptide.pdb: force field ['amber99_obc.xml'] cannot parameterise" in err
    assert "pass --system your.pdb (and --forcefield)" in err


def test_units_check_without_bonds_uses_nearest_neighbours(gly_md):
    from spacetime_md.molecular.model.dataset import _check_coordinates

    atoms, _ = gly_md["traj"].topology.to_dataframe()
    bare = mdtraj.Topology.from_dataframe(atoms)  # no bonds
    _check_coordinates(gly_md["traj"].xyz, bare, "gly")
    with pytest.raises(ValueError, match="median nearest-neighbour distance .* Angstrom written as nm"):
        _check_coordinates(gly_md["traj"].xyz * 10, bare, "gly")


def test_missing_system_and_state_files(gly_md, tmp_path, capsys):
    data = ["--data", str(gly_md["files"]["h5"])]
    err = _one_line_error(capsys, [*data, "--system", str(tmp_path / "mine.pdb")], tmp_path / "out")
    assert "system: expected a preset name or an existing PDB file, got" in err
    err = _one_line_error(capsys, [*data, "--states", str(tmp_path / "states.json")], tmp_path / "out")
    assert "states: expected an existing file, got" in err


def test_states_file_is_recorded_with_the_system(gly_md, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(GLY.parent / "gly_C7ax.pdb", folder / "C7ax.pdb")
    states = {"states": [
        {"name": "C7eq", "disc": {"phi 2": -80.0, "psi 2": 70.0}, "radius": 40.0},
        {"name": "C7ax", "rmsd": {"structure": "C7ax.pdb", "max_nm": 0.05}},  # relative to the states file
    ]}
    (folder / "states.json").write_text(json.dumps(states))
    out = tmp_path / "run"
    code, stdout, err = _train(capsys, ["--data", str(gly_md["files"]["nc"]), "--system", str(GLY), "--states",
                                        str(folder / "states.json"), "--out", str(out), *TINY])
    assert code == 0, err
    assert "states: C7eq, C7ax" in stdout
    shutil.rmtree(folder)  # the checkpoint holds everything: the RMSD reference is inline
    system = checkpoint_system(load_checkpoint(out / "model.pt"))
    assert [s.name for s in system.states] == ["C7eq", "C7ax"]
    assert list(system.cvs.names) == ["phi 2", "psi 2", "rmsd C7ax"]
    c7ax = MolecularSystem.from_pdb(GLY.parent / "gly_C7ax.pdb").positions_nm
    assert system.assign_states(c7ax[None])[0] == 1
