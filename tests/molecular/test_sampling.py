"""Replica-exchange sampling: outputs, determinism, kill/resume, config errors, statistics helpers, CLI."""

from __future__ import annotations

import json
import math

import mdtraj
import numpy as np
import openmm.unit as unit
import pytest

from spacetime_md.cli import main
from spacetime_md.errors import CheckpointError
from spacetime_md.molecular import (
    block_average, evaluate_energies, load_samples, load_system, sample_boltzmann, state_populations,
)
from spacetime_md.molecular.sampling.reference import (
    estimate_populations_flat_bias,
    fit_free_energy_profile,
    reference_populations,
    solve_mbar,
)
from spacetime_md.molecular.sampling.sampling_config import SamplingConfig, geometric_temperatures

#: Tiny but real settings: 3 replicas, 10 MD steps between exchanges.
FAST = dict(
    n_replicas=3,
    max_temperature=500 * unit.kelvin,
    exchange_interval=0.02 * unit.picosecond,
    equilibration=0.1 * unit.picosecond,
    chunk_size=4,
    progress=False,
)


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


class Stop(Exception):
    pass


def test_outputs(tmp_path, system):
    out = tmp_path / "run"
    res = sample_boltzmann(system, 10, out, seed=1, **FAST)
    assert res.complete and res.n_frames == 10
    for name in ("samples.h5", "energies.npy", "config.json", "system.json", "report.json", "ramachandran.png",
                 "checkpoint.npz"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in (out / "chunks").iterdir()) == [f"chunk_00000{i}.npz" for i in (1, 2, 3)]
    traj = mdtraj.load(str(out / "samples.h5"))
    assert traj.n_frames == 10 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.xyz, res.coordinates_nm)
    np.testing.assert_allclose(traj.time, 0.02 * np.arange(1, 11), rtol=1e-5)
    energies = np.load(out / "energies.npy")
    np.testing.assert_array_equal(energies, res.energies_kj_per_mol)
    # Stored energies are the potential energies of the stored frames (float32 coordinates).
    recomputed = evaluate_energies(system, res.coordinates_nm).value_in_unit(unit.kilojoule_per_mole)
    np.testing.assert_allclose(recomputed, energies, atol=0.05)
    config = json.loads((out / "config.json").read_text())
    assert config["temperatures_k"] == pytest.approx([300.0, 387.298, 500.0], rel=1e-5)
    assert config["steps_per_exchange"] == 10 and config["seed"] == 1 and config["platform"] == "Reference"
    assert config["system"]["name"] == "alanine-dipeptide" and config["system"]["n_atoms"] == 22
    report = json.loads((out / "report.json").read_text())
    assert report["n_samples"] == 10 and len(report["exchange_acceptance"]) == 2
    assert 0.0 < np.mean(report["exchange_acceptance"]) <= 1.0
    assert set(report["populations"]) >= {"C7eq", "C7ax", "alpha_R", "phi>0"}
    assert report["cv_names"] == ["phi 2", "psi 2"]
    # The populations go through the system's CVs and states.
    labels = system.assign_states(res.coordinates_nm)
    assert report["populations"]["C7eq"]["fraction"] == pytest.approx(np.mean(labels == 0))
    assert report["populations"]["phi>0"]["fraction"] == pytest.approx(np.mean(system.compute_cvs(res.coordinates_nm)[:, 0] > 0))
    # system.json rebuilds the system (the contract with training).
    from spacetime_md.molecular import MolecularSystem

    rebuilt = MolecularSystem.from_spec(json.loads((out / "system.json").read_text()))
    assert rebuilt.fingerprint() == system.fingerprint() and rebuilt.cvs.names == system.cvs.names
    assert [s.name for s in rebuilt.states] == ["C7eq", "C7ax", "alpha_R"]
    loaded = load_samples(out)
    np.testing.assert_array_equal(loaded.coordinates_nm, res.coordinates_nm)
    assert loaded.config == res.config and loaded.to_mdtraj().n_frames == 10


def test_kill_and_resume_gives_the_uninterrupted_frames(tmp_path, system):
    full = sample_boltzmann(system, 14, tmp_path / "full", seed=5, **FAST)

    def stop_after_two(info):
        if info["chunk"] == 2:
            raise Stop

    with pytest.raises(Stop):
        sample_boltzmann(system, 14, tmp_path / "cut", seed=5, callback=stop_after_two, **FAST)
    assert not (tmp_path / "cut" / "samples.h5").exists()
    # A stale partial chunk from the killed process must be overwritten, not appended.
    np.savez(tmp_path / "cut" / "chunks" / "chunk_000003.npz", coordinates=np.zeros((4, 22, 3), np.float32),
             energies=np.zeros(4), walkers=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="already holds a sampling run; pass resume=True"):
        sample_boltzmann(system, 14, tmp_path / "cut", seed=5, **FAST)
    part = sample_boltzmann(system, 14, tmp_path / "cut", seed=5, resume=True, max_chunks=1, **FAST)
    assert not part.complete and part.n_frames == 12
    resumed = sample_boltzmann(system, 14, tmp_path / "cut", seed=5, resume=True, **FAST)
    assert resumed.complete and resumed.n_frames == 14
    np.testing.assert_array_equal(resumed.coordinates_nm, full.coordinates_nm)
    np.testing.assert_array_equal(resumed.energies_kj_per_mol, full.energies_kj_per_mol)
    np.testing.assert_array_equal(
        mdtraj.load(str(tmp_path / "cut" / "samples.h5")).xyz, mdtraj.load(str(tmp_path / "full" / "samples.h5")).xyz
    )
    assert resumed.report["exchange_acceptance"] == full.report["exchange_acceptance"]
    # Another seed gives other samples; the same seed in memory gives the same ones.
    other = sample_boltzmann(system, 4, None, seed=6, **FAST)
    same = sample_boltzmann(system, 4, None, seed=5, **FAST)
    np.testing.assert_array_equal(same.coordinates_nm, full.coordinates_nm[:4])
    assert not np.array_equal(other.coordinates_nm, full.coordinates_nm[:4])


def test_resume_errors(tmp_path, system):
    out = tmp_path / "run"
    sample_boltzmann(system, 4, out, seed=0, **FAST)
    with pytest.raises(CheckpointError, match=r"resume: expected the same settings .* seed: saved 0, now 1"):
        sample_boltzmann(system, 4, out, seed=1, resume=True, **FAST)
    (out / "chunks" / "chunk_000001.npz").unlink()
    with pytest.raises(CheckpointError, match="expected the samples of chunk 1 .checkpoint says it is done., missing"):
        sample_boltzmann(system, 4, out, seed=0, resume=True, **FAST)
    (out / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="expected a readable sampling checkpoint"):
        sample_boltzmann(system, 4, out, seed=0, resume=True, **FAST)


def test_config_errors(system):
    with pytest.raises(TypeError, match="max_temperature: expected an openmm.unit.Quantity in kelvin"):
        sample_boltzmann(system, 4, None, max_temperature=600.0, progress=False)
    with pytest.raises(TypeError, match="exchange_interval: expected an openmm.unit.Quantity in picosecond"):
        sample_boltzmann(system, 4, None, exchange_interval=0.5, progress=False)
    with pytest.raises(ValueError, match="n_samples: expected a positive integer, got 0"):
        sample_boltzmann(system, 0, None, progress=False)
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer, got 0"):
        sample_boltzmann(system, 4, None, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match="temperatures: expected the first temperature to be the system temperature 300.0 K"):
        sample_boltzmann(system, 4, None, temperatures=[310, 400] * unit.kelvin, progress=False)
    with pytest.raises(ValueError, match="temperatures: expected positive, strictly increasing"):
        sample_boltzmann(system, 4, None, temperatures=[300, 300] * unit.kelvin, progress=False)
    with pytest.raises(ValueError, match="max_temperature: expected > 300.0 K"):
        sample_boltzmann(system, 4, None, max_temperature=250 * unit.kelvin, progress=False)
    with pytest.raises(ValueError, match="exchange_interval: expected at least one time step"):
        sample_boltzmann(system, 4, None, exchange_interval=0.0001 * unit.picosecond, progress=False)
    with pytest.raises(ValueError, match=r"timestep: expected a value in \(0, 5\] fs"):
        sample_boltzmann(system, 4, None, timestep=10 * unit.femtosecond, progress=False)
    with pytest.raises(ValueError, match="seed: expected a non-negative integer"):
        sample_boltzmann(system, 4, None, seed=-1, progress=False)
    with pytest.raises(ValueError, match="max_chunks: expected a non-negative integer or None"):
        sample_boltzmann(system, 4, None, max_chunks=-1, progress=False)
    with pytest.raises(ValueError, match="n_replicas: expected >= 1"):
        geometric_temperatures(300, 600, 0)
    temps = geometric_temperatures(300.0, 800.0, 4)
    assert temps[0] == 300.0 and abs(temps[-1] - 800.0) < 1e-9
    assert np.allclose(np.diff(np.log(temps)), math.log(800 / 300) / 3)
    cfg = SamplingConfig(n_samples=5, temperatures_k=(300.0,))
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg


def test_block_average_and_populations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20000)
    mean, sem = block_average(x, 20)
    assert abs(mean) < 4 * sem and 0.5 / math.sqrt(20000) < sem < 1.6 / math.sqrt(20000)
    # A strongly correlated series has a much larger error than the naive one.
    y = np.repeat(rng.normal(size=200), 100)
    assert block_average(y, 20)[1] > 5 * y.std() / math.sqrt(len(y))
    with pytest.raises(ValueError, match="n_blocks: expected >= 2"):
        block_average(x, 1)
    with pytest.raises(ValueError, match="values: expected at least 2 samples"):
        block_average([1.0], 5)
    states = load_system("alanine-dipeptide").states
    pp = np.radians(np.array([[-150.0, 160.0]] * 90 + [[60.0, -40.0]] * 10))[rng.permutation(100)]
    pops = state_populations(pp, states, n_blocks=10)
    assert pops["C7ax"]["fraction"] == pytest.approx(0.1) and pops["C7eq"]["fraction"] == pytest.approx(0.9)
    assert pops["phi>0"]["fraction"] == pytest.approx(0.1)
    assert pops["C7ax/C7eq"]["fraction"] == pytest.approx(1 / 9)
    assert pops["C7ax"]["error"] > 0


def test_mbar_recovers_a_known_distribution():
    """Umbrella windows on the circle over p(phi) ~ exp(-2 cos(phi)): MBAR gives P(phi > 0) = 1/2 and
    P(|phi| > pi/2) from the Bessel-function closed form."""
    rng = np.random.default_rng(1)
    k, centres = 4.0, np.linspace(-np.pi, np.pi, 12, endpoint=False)
    samples = []
    for c in centres:  # exact rejection sampling of exp(-2 cos phi - k/2 d^2)
        out = []
        while len(out) < 3000:
            phi = rng.uniform(-np.pi, np.pi, 20000)
            d = (phi - c + np.pi) % (2 * np.pi) - np.pi
            logp = -2 * np.cos(phi) - 0.5 * k * d**2
            out.extend(phi[np.log(rng.uniform(size=phi.size)) < logp - 2.0])
        samples.append(np.array(out[:3000]))
    flat = np.concatenate(samples)
    bias = 0.5 * k * ((flat[None] - centres[:, None] + np.pi) % (2 * np.pi) - np.pi) ** 2
    _, log_w = solve_mbar(bias, np.full(12, 3000))
    w = np.exp(log_w)
    assert abs(w.sum() - 1) < 1e-9
    assert abs(w[flat > 0].sum() - 0.5) < 0.02
    grid = np.linspace(-np.pi, np.pi, 200001)
    dens = np.exp(-2 * np.cos(grid))
    exact = dens[np.abs(grid) > np.pi / 2].sum() / dens.sum()
    assert abs(w[np.abs(flat) > np.pi / 2].sum() - exact) < 0.02
    with pytest.raises(ValueError, match=r"bias_kn: expected shape \(3, Ntot\)"):
        solve_mbar(np.zeros((2, 5)), np.ones(3))


def test_cli_sample_resume_and_dry_run(tmp_path, capsys, system):
    out = tmp_path / "cli"
    common = ["sample", "--system", "alanine-dipeptide", "--solvent", "vacuum", "--n-samples", "8", "--out", str(out),
              "--seed", "2", "--n-replicas", "3", "--max-temperature", "500", "--exchange-interval", "0.02",
              "--equilibration", "0.1", "--chunk-size", "4", "--no-progress"]
    assert main(common + ["--max-chunks", "1"]) == 0
    text = capsys.readouterr().out
    assert "stopped after 4/8 samples; rerun with --resume" in text
    assert main(common) == 2
    assert "already holds a sampling run" in capsys.readouterr().err
    assert main(common + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "swap acceptance" in text and "samples/min" in text and "C7ax" in text
    assert f"wrote {out}/samples.h5 (8 frames)" in text
    direct = sample_boltzmann(system, 8, None, seed=2, **FAST)
    np.testing.assert_array_equal(mdtraj.load(str(out / "samples.h5")).xyz, direct.coordinates_nm)
    assert main(["sample", "--n-samples", "5", "--out", str(tmp_path / "d"), "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["n_samples"] == 5 and cfg["n_replicas"] == 4 and cfg["temperatures_k"][-1] == pytest.approx(800)
    assert not (tmp_path / "d").exists()
    assert main(["sample", "--system", "nope", "--n-samples", "5", "--out", str(tmp_path / "e")]) == 2
    assert "system: expected one of ['alanine-dipeptide'" in capsys.readouterr().err


def test_reference_lookup(system):
    ref = reference_populations(system)
    if ref is not None:
        assert {"C7eq", "C7ax", "phi>0"} <= set(ref["populations"]) and "umbrella" in ref["method"]
    assert reference_populations(load_system("alanine-dipeptide", temperature=310 * unit.kelvin)) is None


def test_cli_any_pdb(tmp_path, capsys):
    from spacetime_md.molecular.system.build import system_data_path

    pdb = system_data_path("alanine_dipeptide/C7ax.pdb")
    out = tmp_path / "pdb"
    assert main(["sample", "--pdb", str(pdb), "--n-samples", "4", "--out", str(out), "--n-replicas", "2",
                 "--exchange-interval", "0.02", "--equilibration", "0.1", "--no-progress", "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "C7ax (vacuum): 4 samples at 300 K" in text
    assert "state populations: n/a (no states defined for this molecule; pass a --states file)" in text
    assert "collective variables: phi 2, psi 2" in text
    assert json.loads((out / "config.json").read_text())["system"]["name"] == "C7ax"
    assert not (out / "ramachandran.png").exists()
    spec = json.loads((out / "system.json").read_text())
    assert spec["name"] == "C7ax" and [c["name"] for c in spec["cvs"]] == ["phi 2", "psi 2"]
    # --pdb is an alias of --system: both at once is an error; so is a PDB without atoms.
    assert main(["sample", "--pdb", str(pdb), "--system", "alanine-dipeptide", "--n-samples", "4",
                 "--out", str(tmp_path / "x"), "--dry-run"]) == 2
    assert "--pdb: an alias of --system, expected one of them" in capsys.readouterr().err
    (tmp_path / "garbage.pdb").write_text("garbage\nhello world\n")
    for flags in (["--pdb", str(tmp_path / "garbage.pdb")], ["--system", str(tmp_path / "garbage.pdb")]):
        assert main(["sample", *flags, "--n-samples", "4", "--out", str(tmp_path / "g"), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith("--system: expected a PDB file with ATOM/HETATM records, got none in "
                                    f"'{tmp_path / 'garbage.pdb'}'") and len(err.strip().splitlines()) == 1
    (tmp_path / "binary.pdb").write_bytes(bytes(range(256)))
    assert main(["sample", "--pdb", str(tmp_path / "binary.pdb"), "--n-samples", "4", "--out", str(tmp_path / "g"),
                 "--dry-run"]) == 2
    assert "--system: expected a text PDB file, got binary data" in capsys.readouterr().err
    assert main(["sample", "--pdb", str(tmp_path / "missing.pdb"), "--n-samples", "4", "--out", str(tmp_path / "g"),
                 "--dry-run"]) == 2
    assert "--system: expected a preset name or an existing PDB file, got" in capsys.readouterr().err
    assert main(["sample", "--n-samples", "4", "--out", str(tmp_path / "g"), "--states", str(tmp_path / "no.json"),
                 "--dry-run"]) == 2
    assert "--states: expected an existing file, got" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_populations_agree_with_reference(system):
    """Replica exchange (4 replicas, 300-800 K) vs the shipped reweighted biased-MD estimate."""
    ref = reference_populations(system)
    assert ref is not None, "reference_populations.json has no entry for vacuum amber99sbildn at 300 K"
    res = sample_boltzmann(system, 12000, None, seed=11, chunk_size=4000, progress=False)
    for key in ("C7ax", "C7eq", "phi>0"):
        ours, theirs = res.report["populations"][key], ref["populations"][key]
        err = math.hypot(ours["error"], theirs["error"])
        assert abs(ours["fraction"] - theirs["fraction"]) < 4 * err, (key, ours, theirs)
    assert res.report["populations"]["C7ax"]["fraction"] > 0


def test_fourier_profile_fit():
    rng = np.random.default_rng(2)
    phi = rng.vonmises(0.0, 2.0, size=200000)  # p ~ exp(2 cos phi): F = -2 cos phi + c
    coef = fit_free_energy_profile(phi, np.zeros(len(phi)), order=3)
    assert abs(coef[1] + 2.0) < 0.1 and np.all(np.abs(coef[2:]) < 0.1)


def test_flat_bias_reference_runs(system):
    res = estimate_populations_flat_bias(
        system, production=20 * unit.picosecond, umbrella_window_time=2 * unit.picosecond,
        umbrella_equilibration=0.5 * unit.picosecond, equilibration=1 * unit.picosecond, n_blocks=4, seed=1,
    )
    pops = res["populations"]
    assert {"C7eq", "C7ax", "alpha_R", "phi>0", "C7ax/C7eq"} <= set(pops)
    assert all(0.0 <= pops[k]["fraction"] <= 1.0 for k in ("C7eq", "C7ax", "alpha_R", "phi>0"))
    assert res["n_samples"] == 40 and 1.0 <= res["weight_ess"] <= 40
    assert len(res["settings"]["bias_fourier_coefficients_kT"]) == 13
    with pytest.raises(ValueError, match=r"flatten: expected a value in \[0, 1\], got 2"):
        estimate_populations_flat_bias(system, flatten=2)


def test_merge_reference_runs():
    from spacetime_md.molecular.sampling.reference import merge_reference_runs

    def run(seed, f, e):
        return {"populations": {"C7ax": {"fraction": f, "error": e}}, "method": "m", "md_time_ns": 1.0,
                "wall_seconds": 2.0, "system": {}, "settings": {"seed": seed}}

    m = merge_reference_runs([run(0, 0.02, 0.003), run(1, 0.03, 0.004)])
    assert m["populations"]["C7ax"]["fraction"] == pytest.approx(0.025)
    assert m["populations"]["C7ax"]["error"] == pytest.approx(0.0025)
    assert m["md_time_ns"] == 2.0 and m["method"].startswith("2 independent runs (seeds [0, 1])")
    with pytest.raises(ValueError, match="runs: expected at least one result"):
        merge_reference_runs([])


def test_report_carries_the_reference_comparison(system):
    res = sample_boltzmann(system, 4, None, seed=0, **FAST)
    ref = reference_populations(system)
    assert res.report["reference"]["populations"] == ref["populations"]
    c = res.report["comparison"]["C7ax"]
    assert c["reference"] == ref["populations"]["C7ax"]["fraction"] and "z" in c


def test_more_sampling_errors(tmp_path, system):
    from spacetime_md.errors import NonFiniteError
    from spacetime_md.molecular.sampling.samples import BoltzmannSamples

    with pytest.raises(TypeError, match="n_replicas: expected an integer or .auto., got float"):
        sample_boltzmann(system, 4, None, n_replicas=2.5, progress=False)
    with pytest.raises(FileNotFoundError, match="expected samples.h5 of a finished sampling run"):
        load_samples(tmp_path)
    with pytest.raises(ValueError, match="topology: expected samples with a topology"):
        BoltzmannSamples(np.zeros((1, 22, 3)), np.zeros(1), SamplingConfig(1, (300.0,)), {}).to_mdtraj()
    # A replica at 10^8 K with 2 fs steps blows up: the run stops with NonFiniteError.
    with pytest.raises(NonFiniteError, match="replica exchange: non-finite energy or positions"):
        sample_boltzmann(system, 4, None, temperatures=[300, 1e8] * unit.kelvin, progress=False,
                         equilibration=2 * unit.picosecond, exchange_interval=0.1 * unit.picosecond)
    # Config file removed -> cannot check the resumed settings.
    out = tmp_path / "run"
    sample_boltzmann(system, 4, out, seed=0, **FAST)
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="expected the config of the run to resume, missing"):
        sample_boltzmann(system, 4, out, seed=0, resume=True, **FAST)
    # A checkpoint from another run under an unchanged config.json.
    other = tmp_path / "other"
    sample_boltzmann(system, 4, other, seed=3, **FAST)
    (other / "checkpoint.npz").replace(out / "checkpoint.npz")
    (other / "config.json").replace(out / "config.json")
    sample_boltzmann(system, 4, tmp_path / "seed0", seed=0, **FAST)
    (tmp_path / "seed0" / "config.json").replace(out / "config.json")
    with pytest.raises(CheckpointError, match="checkpoint belongs to another config"):
        sample_boltzmann(system, 4, out, seed=0, resume=True, **FAST)


def test_reference_errors(system, tmp_path):
    from spacetime_md.molecular import MolecularSystem
    from spacetime_md.molecular.sampling.reference import estimate_populations_umbrella
    from spacetime_md.molecular.system.build import resolve_system

    system = load_system("alanine-dipeptide")  # a copy: its CVs are replaced below

    with pytest.raises(ValueError, match="n_blocks: expected >= 2, got 1"):
        estimate_populations_umbrella(system, n_blocks=1)
    import openmm.app as app
    from pathlib import Path

    src = app.PDBFile(str(Path(app.__file__).parent / "data" / "tip3p.pdb"))
    modeller = app.Modeller(src.topology, src.positions)
    modeller.delete(list(modeller.topology.residues())[1:])
    with open(tmp_path / "w.pdb", "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh)
    water = MolecularSystem.from_pdb(tmp_path / "w.pdb", forcefield=["amber14-all.xml", "amber14/tip3p.xml"])
    with pytest.raises(ValueError, match="w: expected a backbone phi among the collective variables"):
        estimate_populations_umbrella(water)
    with pytest.raises(ValueError, match=r"bias_cv: expected a torsion collective variable, got 'd' \(distance\)"):
        estimate_populations_umbrella(resolve_system(system, cvs=[{"type": "distance", "name": "d", "atoms": [0, 1]}]),
                                      bias_cv="d")
