"""Your own molecule through `sample` and `evaluate`: a tetrapeptide (3 residues, 3 chiral centres),
glycine dipeptide (no chiral centre) and N-methylacetamide (no backbone phi/psi).

Tiny settings: a few hundred replica-exchange samples and untrained models built like training
builds them (the metrics are checked against independent numbers, not for quality).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from spacetime_md.cli import main
from spacetime_md.molecular import MolecularSystem
from spacetime_md.molecular.model.evaluation import evaluate_samples
from spacetime_md.molecular.system.build import resolve_system

from ._model_helpers import _one_torch_thread  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
TETRA = ROOT / "systems" / "alanine_tetrapeptide"
MOLS = ROOT / "systems" / "test_molecules"
GLY = MOLS / "glycine-dipeptide.pdb"
NMA = MOLS / "n-methylacetamide.pdb"

SAMPLE = ["--n-replicas", "3", "--max-temperature", "500", "--exchange-interval", "0.1", "--equilibration", "1",
          "--chunk-size", "1000", "--seed", "3", "--no-progress"]
EVALUATE = ["--n-samples", "24", "--n-steps", "6", "--batch-size", "24"]

#: omega (CH3-C-N-C) of N-methylacetamide and the trans/cis states in it (box in degrees).
NMA_CVS = {"cvs": [{"type": "torsion", "name": "omega", "atoms": [0, 4, 6, 8]}]}
NMA_STATES = {"states": [{"name": "trans", "box": {"omega": [150, -150]}},
                         {"name": "cis", "box": {"omega": [-30, 30]}}]}


def _noisy(pdb: Path, n: int, seed: int, noise_nm: float = 0.005) -> np.ndarray:
    x = mdtraj.load(str(pdb)).xyz[0].astype(np.float64)
    return x + noise_nm * np.random.default_rng(seed).standard_normal((n, *x.shape))


def _checkpoint(path: Path, system: MolecularSystem, record_system: bool = True) -> Path:
    """An untrained denoiser built as training builds it (atom types, bonds, names, scale)."""
    import torch

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.model.pretrained import save_checkpoint
    from spacetime_md.molecular.model.dataset import atom_types_from_topology

    top = system.mdtraj_topology
    torch.manual_seed(0)
    model = EquivariantDenoiser(
        atom_types_from_topology(top), [(b[0].index, b[1].index) for b in top.bonds], hidden_channels=16,
        n_layers=2, coord_gain=0.5, atom_names=[a.name for a in top.atoms],
    ).eval()
    return save_checkpoint(path, model, {"system": system.spec()} if record_system else {})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`spacetime-md sample` runs of the three molecules (NMA with an omega CV and trans/cis states)."""
    base = tmp_path_factory.mktemp("own_molecules")
    (base / "nma_cvs.json").write_text(json.dumps(NMA_CVS))
    (base / "nma_states.json").write_text(json.dumps(NMA_STATES))
    out = {}
    for key, flags in {
        "tetra": ["--system", str(TETRA / "alanine-tetrapeptide.pdb")],
        "gly": ["--pdb", str(GLY)],
        "nma": ["--system", str(NMA)],
        "nma_omega": ["--system", str(NMA), "--cvs", str(base / "nma_cvs.json"),
                      "--states", str(base / "nma_states.json")],
    }.items():
        out[key] = base / key
        assert main(["sample", *flags, "--n-samples", "240", "--out", str(out[key]), *SAMPLE]) == 0
    out["base"] = base
    return out


def test_sample_writes_a_system_json_that_rebuilds_the_system(runs, capsys):
    for key, pdb, cvs in (("gly", GLY, ["phi 2", "psi 2"]), ("nma", NMA, []), ("nma_omega", NMA, ["omega"]),
                          ("tetra", TETRA / "alanine-tetrapeptide.pdb", [f"{k} {r}" for r in (2, 3, 4) for k in ("phi", "psi")])):
        spec = json.loads((runs[key] / "system.json").read_text())
        rebuilt = MolecularSystem.from_spec(spec)
        original = resolve_system(pdb)
        assert rebuilt.fingerprint()["system_sha256"] == original.fingerprint()["system_sha256"], key
        assert list(rebuilt.cvs.names) == cvs, key
        np.testing.assert_allclose(rebuilt.positions_nm, original.positions_nm, atol=1e-4)
        report = json.loads((runs[key] / "report.json").read_text())
        assert report["cv_names"] == cvs and report["n_samples"] == 240
    # Plots through the CVs: one Ramachandran panel per residue, the omega profile, none without CVs.
    assert (runs["gly"] / "ramachandran.png").exists() and (runs["tetra"] / "ramachandran.png").exists()
    assert (runs["nma_omega"] / "cvs.png").exists() and not (runs["nma_omega"] / "ramachandran.png").exists()
    assert not list(runs["nma"].glob("*.png"))
    # No states: populations are n/a with the reason; with the omega states they go through the CV.
    assert "populations" not in json.loads((runs["nma"] / "report.json").read_text())
    report = json.loads((runs["nma_omega"] / "report.json").read_text())
    traj = mdtraj.load(str(runs["nma_omega"] / "samples.h5"))
    omega = np.degrees(mdtraj.compute_dihedrals(traj, [[0, 4, 6, 8]])[:, 0])
    assert report["populations"]["trans"]["fraction"] == pytest.approx(np.mean(np.abs(omega) >= 150))
    assert report["populations"]["trans"]["fraction"] > 0.9 and "phi>0" not in report["populations"]
    spec = json.loads((runs["nma_omega"] / "system.json").read_text())
    assert [s["name"] for s in spec["states"]] == ["trans", "cis"]


def test_jsd_values_per_residue_of_the_tetrapeptide():
    """Residue 3 is C7ax in mid_C7ax and C7eq in C7eq_all, residues 2 and 4 are C7eq in both: only
    residue 3's JSD is ln 2 (disjoint histograms); two halves of one distribution are close."""
    system = resolve_system(TETRA / "alanine-tetrapeptide.pdb")
    c7eq = _noisy(TETRA / "C7eq_all.pdb", 4000, seed=1)
    mid = _noisy(TETRA / "mid_C7ax.pdb", 400, seed=2)
    result = evaluate_samples(mid, c7eq[:2000], system=system, reference_b=c7eq[2000:], energies=False)
    by_res = {r["residue"]: r for r in result.rama_jsd_by_residue}
    assert sorted(by_res) == [2, 3, 4] and by_res[3]["cvs"] == ["phi 3", "psi 3"]
    assert by_res[3]["jsd"] == pytest.approx(math.log(2), abs=1e-9)
    assert by_res[2]["jsd"] < 0.45 and by_res[4]["jsd"] < 0.45  # the same basin, peaks a few degrees apart
    assert by_res[3]["phi_positive_model"] == 1.0 and by_res[3]["phi_positive_md"] == 0.0
    assert result.rama_jsd == pytest.approx(np.mean([r["jsd"] for r in by_res.values()]))
    # The noise floor: 400 frames of the second MD half against the first.
    assert all(r["jsd_md"] < 0.2 for r in by_res.values()) and result.rama_jsd_md < 0.2
    halves = evaluate_samples(c7eq[:2000], c7eq[2000:], system=system, energies=False)
    assert halves.rama_jsd < 0.05
    assert result.c7ax_model is None
    assert result.c7ax_na_reason == "C7ax (phi > 0) needs exactly one backbone (phi, psi) pair, got 3"


def test_chirality_of_every_centre_flips_in_the_mirror():
    system = resolve_system(TETRA / "alanine-tetrapeptide.pdb")
    md = _noisy(TETRA / "alanine-tetrapeptide.pdb", 20, seed=3)
    mirror = md * np.array([1.0, -1.0, 1.0])
    mixed = np.concatenate([md[:15], mirror[:5]])
    result = evaluate_samples(mixed, md, system=system, energies=False)
    assert [c["name"] for c in result.chirality_by_centre] == ["CA ALA2", "CA ALA3", "CA ALA4"]
    assert all(c["expected"] == "L" and c["fraction_model"] == 0.75 and c["fraction_md"] == 1.0
               for c in result.chirality_by_centre)
    assert result.fraction_l_model == 0.75 and result.fraction_l_md == 1.0
    # One centre inverted by hand (swap N and C of ALA3): only that centre changes.
    one = md.copy()
    centre = result.chirality_by_centre[1]["atoms"]
    one[:, [centre[1], centre[2]]] = md[:, [centre[2], centre[1]]]
    res = evaluate_samples(one, md, system=system, energies=False)
    assert [c["fraction_model"] for c in res.chirality_by_centre] == [1.0, 0.0, 1.0]
    assert res.fraction_l_model == 0.0
    assert "| fraction L-chirality (all 3 centres) | 0.0000 | 1.0000 |" in res.to_table()
    assert "|   CA ALA3 (L) | 0.0000 | 1.0000 | - |" in res.to_table()


def test_molecules_without_chiral_centre_or_backbone():
    gly = resolve_system(GLY)
    a, b = _noisy(MOLS / "gly_C7eq.pdb", 3000, seed=4), _noisy(MOLS / "gly_C7ax.pdb", 300, seed=5)
    result = evaluate_samples(a[:1500], a[1500:], system=gly, reference_b=b, energies=True)
    assert [r["residue"] for r in result.rama_jsd_by_residue] == [2] and result.rama_jsd < 0.05
    assert result.rama_jsd_md == pytest.approx(math.log(2), abs=1e-9)  # C7ax vs C7eq: disjoint
    assert result.fraction_l_model is None and result.fraction_l_md is None and result.chirality_by_centre == []
    assert result.fraction_l_na_reason == "no chiral centre in the topology"
    assert result.passed() == {"rama_jsd": True, "fraction_l": None}
    table = result.to_table()
    assert "| fraction L-chirality | n/a (no chiral centre in the topology) | n/a | - |" in table
    assert "1.0000" not in table.split("fraction L-chirality")[1]
    assert np.isfinite(result.energy_median_model)

    nma = resolve_system(NMA)
    x = _noisy(MOLS / "nma_trans.pdb", 40, seed=6)
    result = evaluate_samples(x[:20], x[20:], system=nma, energies=True)  # 12 atoms: no IndexError
    assert result.rama_jsd is None and result.rama_jsd_by_residue == []
    assert result.rama_jsd_na_reason == "no residue with both backbone phi and psi among the collective variables"
    assert result.cv_jsd is None and result.cv_jsd_na_reason == "no collective variables; pass a --cvs file"
    assert result.fraction_l_model is None and result.c7ax_model is None and result.populations is None
    assert result.bond_mean_abs_error is not None and np.isfinite(result.energy_median_md)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rama_jsd"] is None and data["fraction_l_na_reason"] == "no chiral centre in the topology"
    table = result.to_table()
    assert "| Ramachandran JSD (nats, 36x36) | n/a (no residue with both backbone phi and psi" in table
    assert "| JSD over the first two CVs | n/a (no collective variables; pass a --cvs file) |" in table

    # With an omega CV and trans/cis states: a JSD over omega and populations through it.
    omega = resolve_system(NMA, cvs=NMA_CVS["cvs"])
    from spacetime_md.molecular.system.states import _state_from_dict

    omega.states = tuple(_state_from_dict(s, None, None, []) for s in NMA_STATES["states"])
    cis = _noisy(MOLS / "nma_cis.pdb", 20, seed=7)
    result = evaluate_samples(np.concatenate([x[20:], cis]), x[20:], system=omega, energies=False)
    # p = (q + c) / 2 with c disjoint from q: JSD = (ln(2/3) + ln 2) / 4 + ln(4/3) / 2 exactly.
    exact = 0.25 * (math.log(2 / 3) + math.log(2)) + 0.5 * math.log(4 / 3)
    assert result.cv_jsd_cvs == ["omega"] and result.cv_jsd == pytest.approx(exact, abs=1e-12)
    assert result.populations["cis"]["model"]["fraction"] == 0.5 and result.populations["cis"]["md"]["fraction"] == 0.0
    assert result.populations["trans"]["md"]["fraction"] == 1.0


def _rama_jsd(xyz_a, xyz_b, top, residue_index, bins=36):
    """Independent oracle: mdtraj's phi/psi of one residue and numpy histograms."""
    def angles(xyz):
        traj = mdtraj.Trajectory(xyz, top)
        phi_idx, phi = mdtraj.compute_phi(traj)
        psi_idx, psi = mdtraj.compute_psi(traj)
        k_phi = [k for k, q in enumerate(phi_idx) if top.atom(int(q[2])).residue.resSeq == residue_index][0]
        k_psi = [k for k, q in enumerate(psi_idx) if top.atom(int(q[1])).residue.resSeq == residue_index][0]
        return phi[:, k_phi], psi[:, k_psi]

    edges = np.linspace(-np.pi, np.pi, bins + 1)
    hists = []
    for xyz in (xyz_a, xyz_b):
        phi, psi = angles(xyz)
        h, _, _ = np.histogram2d((phi + np.pi) % (2 * np.pi) - np.pi, (psi + np.pi) % (2 * np.pi) - np.pi,
                                 bins=[edges, edges])
        hists.append(h.ravel() / h.sum())
    p, q = hists
    m = 0.5 * (p + q)
    return 0.5 * sum(p[p > 0] * np.log(p[p > 0] / m[p > 0])) + 0.5 * sum(q[q > 0] * np.log(q[q > 0] / m[q > 0]))


def test_cli_evaluate_tetrapeptide(runs, tmp_path, capsys):
    system = MolecularSystem.from_spec(json.loads((runs["tetra"] / "system.json").read_text()))
    ckpt = _checkpoint(tmp_path / "tetra.pt", system)
    out_json, saved = tmp_path / "metrics.json", tmp_path / "model_samples.h5"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(runs["tetra"]), *EVALUATE, "--mirror-d",
                 "--json", str(out_json), "--save-samples", str(saved)]) == 0
    printed = capsys.readouterr().out
    assert "system: alanine-tetrapeptide (42 atoms); collective variables: phi 2, psi 2, phi 3, psi 3, phi 4, psi 4" in printed
    assert "chiral centres: CA ALA2, CA ALA3, CA ALA4" in printed
    assert "| Ramachandran JSD, mean of 3 residues (nats, 36x36) |" in printed
    assert "| C7ax population (phi > 0) | n/a (C7ax (phi > 0) needs exactly one backbone (phi, psi) pair, got 3) |" in printed
    metrics = json.loads(out_json.read_text())["metrics"]
    assert [r["residue"] for r in metrics["rama_jsd_by_residue"]] == [2, 3, 4]
    assert [c["name"] for c in metrics["chirality_by_centre"]] == ["CA ALA2", "CA ALA3", "CA ALA4"]
    assert metrics["c7ax_model"] is None and metrics["fraction_l_md"] == 1.0
    # Per-residue JSDs against an independent computation (mdtraj angles, numpy histograms).
    top = mdtraj.load(str(runs["tetra"] / "samples.h5")).topology
    model = mdtraj.load(str(saved)).xyz
    held_out = mdtraj.load(str(runs["tetra"] / "samples.h5")).xyz[-24:]  # last 10 % of 240 frames
    for r in metrics["rama_jsd_by_residue"]:
        assert r["jsd"] == pytest.approx(_rama_jsd(model, held_out, top, r["residue"]), abs=1e-9), r
    # --mirror-d with three centres: every sample has most of its centres L.
    from spacetime_md.molecular.system.chirality import compute_chirality

    signs = np.stack([compute_chirality(model, c["atoms"]) for c in metrics["chirality_by_centre"]], axis=1)
    assert ((signs > 0).sum(1) >= 2).all()


def test_cli_evaluate_glycine_and_nma(runs, tmp_path, capsys):
    gly = MolecularSystem.from_spec(json.loads((runs["gly"] / "system.json").read_text()))
    out_json = tmp_path / "gly.json"
    assert main(["evaluate", "--checkpoint", str(_checkpoint(tmp_path / "gly.pt", gly)), "--data", str(runs["gly"]),
                 *EVALUATE, "--json", str(out_json), "--mirror-d"]) == 0
    printed = capsys.readouterr().out
    assert "| fraction L-chirality | n/a (no chiral centre in the topology) | n/a | - |" in printed
    assert "| Ramachandran JSD (nats, 36x36) |" in printed and "chiral centres: none" in printed
    metrics = json.loads(out_json.read_text())["metrics"]
    assert metrics["fraction_l_model"] is None and len(metrics["rama_jsd_by_residue"]) == 1
    assert 0.0 <= metrics["rama_jsd"] <= math.log(2)

    nma = MolecularSystem.from_spec(json.loads((runs["nma"] / "system.json").read_text()))
    nma_ckpt = _checkpoint(tmp_path / "nma.pt", nma)
    assert main(["evaluate", "--checkpoint", str(nma_ckpt), "--data", str(runs["nma"]), *EVALUATE,
                 "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| Ramachandran JSD (nats, 36x36) | n/a (no residue with both backbone phi and psi" in printed
    assert "collective variables: none" in printed
    metrics = json.loads(out_json.read_text())["metrics"]
    assert metrics["rama_jsd"] is None and metrics["cv_jsd"] is None and metrics["fraction_l_model"] is None
    assert np.isfinite(metrics["energy_median_md"]) and metrics["bond_rms_md"] > 0
    # --cvs/--states on the command line: a JSD over omega and the trans/cis populations.
    base = runs["base"]
    assert main(["evaluate", "--checkpoint", str(nma_ckpt), "--data", str(runs["nma"]), *EVALUATE, "--no-energies",
                 "--cvs", str(base / "nma_cvs.json"), "--states", str(base / "nma_states.json"),
                 "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| JSD over omega (nats) |" in printed and "| population trans |" in printed
    metrics = json.loads(out_json.read_text())["metrics"]
    assert metrics["cv_jsd_cvs"] == ["omega"] and 0.0 <= metrics["cv_jsd"] <= math.log(2)
    assert metrics["populations"]["trans"]["md"]["fraction"] > 0.9


def test_cli_evaluate_mismatches_and_old_checkpoints(runs, tmp_path, capsys):
    tetra = MolecularSystem.from_spec(json.loads((runs["tetra"] / "system.json").read_text()))
    ckpt = _checkpoint(tmp_path / "tetra.pt", tetra)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(runs["gly"]), *EVALUATE]) == 2
    err = capsys.readouterr().err
    assert "data: expected the model's 42 atoms" in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(runs["tetra"]), "--system", str(GLY),
                 *EVALUATE]) == 2
    err = capsys.readouterr().err
    assert "system: expected the data's atoms for glycine-dipeptide, got 42 atoms instead of 19" in err
    # A checkpoint that records no system: the system.json beside the data.
    gly = resolve_system(GLY)
    old = _checkpoint(tmp_path / "old.pt", gly, record_system=False)
    out_json = tmp_path / "old.json"
    assert main(["evaluate", "--checkpoint", str(old), "--data", str(runs["gly"]), *EVALUATE, "--no-energies",
                 "--json", str(out_json)]) == 0
    assert "system: glycine-dipeptide (19 atoms)" in capsys.readouterr().out
    # ... or, without one, the data's own topology with the default force field.
    traj = mdtraj.load(str(runs["gly"] / "samples.h5"))
    bare = tmp_path / "bare"
    bare.mkdir()
    traj.save_hdf5(str(bare / "samples.h5"))
    assert main(["evaluate", "--checkpoint", str(old), "--data", str(bare), *EVALUATE, "--no-energies"]) == 0
    assert "| Ramachandran JSD (nats, 36x36) |" in capsys.readouterr().out


def test_plots_and_messages(runs, tmp_path, capsys):
    from spacetime_md.molecular.system.cvs import CollectiveVariables
    from spacetime_md.molecular.model.metrics import cv_histogram, cv_jsd
    from spacetime_md.molecular.sampling.populations import plot_cvs, plot_ramachandran

    tetra = resolve_system(TETRA / "alanine-tetrapeptide.pdb")
    x = _noisy(TETRA / "mid_C7ax.pdb", 30, seed=8)
    assert plot_cvs(tetra.compute_cvs(x), tetra.cvs, tmp_path / "r.png").stat().st_size > 0
    assert plot_cvs(np.zeros((3, 0)), CollectiveVariables(), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(ValueError, match=r"values: expected shape \(F, 6\) for CVs \['phi 2'"):
        plot_cvs(np.zeros((3, 2)), tetra.cvs, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"phi_psi: expected shape \(F, 2\), got \(3, 6\)"):
        plot_ramachandran(np.zeros((3, 6)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"values: expected shape \(n_frames, 2\) with 1 or 2 columns, got \(3, 3\)"):
        cv_histogram(np.zeros((3, 3)), [np.linspace(0, 1, 3)] * 2, [False, False])
    with pytest.raises(ValueError, match="values: expected at least one frame, got 0"):
        cv_histogram(np.zeros((0, 1)), [np.linspace(0, 1, 3)], [False])
    with pytest.raises(ValueError, match="columns: expected at least one CV column of 0, got none"):
        cv_jsd(np.zeros((3, 0)), np.zeros((3, 0)), CollectiveVariables())
    # evaluate: a broken system.json beside the data of an old checkpoint, a missing --reference.
    gly = resolve_system(GLY)
    old = _checkpoint(tmp_path / "old.pt", gly, record_system=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "samples.h5").symlink_to(runs["gly"] / "samples.h5")
    (data / "system.json").write_text("{not json")
    assert main(["evaluate", "--checkpoint", str(old), "--data", str(data), *EVALUATE]) == 2
    assert "system.json: expected the JSON written by `spacetime-md sample`" in capsys.readouterr().err
    ckpt = _checkpoint(tmp_path / "gly.pt", gly)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(runs["gly"]), "--reference",
                 str(tmp_path / "nowhere"), *EVALUATE]) == 2
    assert f"reference: no such file or directory '{tmp_path / 'nowhere'}'" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(runs["gly"]), "--reference", str(tmp_path),
                 *EVALUATE]) == 2
    assert "reference: expected one mdtraj HDF5 trajectory (*.h5)" in capsys.readouterr().err
    traj = mdtraj.load(str(runs["gly"] / "samples.h5"))
    for residue in traj.topology.residues:
        residue.name = "UNK"
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    traj.save_hdf5(str(unknown / "samples.h5"))
    assert main(["evaluate", "--checkpoint", str(old), "--data", str(unknown), *EVALUATE]) == 2
    err = capsys.readouterr().err
    assert "--system: the checkpoint records no system and the data's topology does not parameterise" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_evaluate_preset_system_defaults_to_its_shipped_model(runs, capsys):
    """`evaluate --system alanine-tetrapeptide` without --checkpoint samples the tetrapeptide's
    shipped model (it used to take the dipeptide's and stop at the atom check)."""
    from spacetime_md.molecular.system.presets import preset_name

    assert [preset_name(n) for n in ("ala4", "Alanine_Tetrapeptide", "alanine-dipeptide", "my.pdb", None)] == [
        "alanine-tetrapeptide", "alanine-tetrapeptide", "alanine-dipeptide", None, None]
    assert main(["evaluate", "--system", "ala4", "--data", str(runs["tetra"]), "--n-samples", "4", "--n-steps", "3",
                 "--batch-size", "4", "--no-energies"]) == 0
    printed = capsys.readouterr().out
    assert "system: alanine-tetrapeptide (42 atoms)" in printed
    assert "autoguided (w = 4 on log_snr [-2, 8), sigmoid edges of width 0.5)" in printed
