"""Committor, relaxed refinement and the CV state checker for molecules other than alanine dipeptide.

Run directories are laid out like `spacetime-md paths` output (paths_geodesic.npz, system.json,
report.json with the endpoint states, config.json) but made without a model: the glycine
dipeptide path is a dihedral drive C7eq -> C7ax, the N-methylacetamide (no backbone phi/psi;
RMSD CVs to its end structures) path a restrained drive of its amide torsion trans -> cis.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from spacetime_md import cli
from spacetime_md.molecular.workflows.committor import SHOTS_FILE, estimate_committor
from spacetime_md.molecular.workflows.shots import START, TARGET, UNDECIDED, CVStateChecker
from spacetime_md.molecular.workflows.committor_config import CommittorConfig
from spacetime_md.molecular.workflows.committor_run import compute_dihedral_drive_path, run_committor
from spacetime_md.molecular.system.cvs import RMSD, CollectiveVariables, Distance, Torsion
from spacetime_md.molecular.paths.structures import resolve_structure
from spacetime_md.molecular.paths.transition import TransitionPaths
from spacetime_md.molecular.paths.relaxed import (
    TorsionQuencher,
    cv_torsion_quencher,
    refine_relaxed_maximum,
    relaxed_na_reason,
)
from spacetime_md.molecular.system.states import MetastableState, Region, endpoint_state
from spacetime_md.molecular.system.build import MolecularSystem

ROOT = Path(__file__).resolve().parents[2]
MOLECULES = ROOT / "systems" / "test_molecules"
TETRAPEPTIDE = ROOT / "systems" / "alanine_tetrapeptide"
#: The amide torsion CH3(ACE)-C-N-C(NME) of N-methylacetamide (systems/test_molecules/README.md).
NMA_OMEGA = (0, 4, 6, 8)
FAST = ["--frames", "2", "--shots", "2", "--max-length-ps", "0.2", "--workers", "1"]


# --------------------------------------------------------------------------- molecules and run directories


def glycine_path() -> tuple[MolecularSystem, np.ndarray]:
    """Glycine dipeptide (default CVs phi 2, psi 2; no states) and a C7eq -> C7ax drive path."""
    system = MolecularSystem.from_pdb(MOLECULES / "glycine-dipeptide.pdb")
    path = compute_dihedral_drive_path(system, MOLECULES / "gly_C7eq.pdb", MOLECULES / "gly_C7ax.pdb", n_frames=8)
    return system, path.frames[0]


def nma_path(n_frames: int = 8) -> tuple[MolecularSystem, np.ndarray]:
    """N-methylacetamide with RMSD CVs to its trans and cis structures (as `paths` gives a molecule
    without backbone) and a trans -> cis path: minimisations with the amide torsion held."""
    system = MolecularSystem.from_pdb(MOLECULES / "n-methylacetamide.pdb")
    trans = resolve_structure(system, MOLECULES / "nma_trans.pdb", "start")[0]
    cis = resolve_structure(system, MOLECULES / "nma_cis.pdb", "end")[0]
    heavy = tuple(int(i) for i in system.heavy_atom_indices)
    system.cvs = CollectiveVariables([RMSD("rmsd start", trans, heavy), RMSD("rmsd end", cis, heavy)])
    quencher = TorsionQuencher(system.openmm_system, [NMA_OMEGA], platform=system.platform_name)
    frames, x = [], trans
    for omega in np.radians(np.linspace(180.0, 0.0, n_frames)):
        _, x = quencher.quench_at(x, [omega])
        frames.append(np.asarray(x, dtype=np.float64))
    return system, np.asarray(frames)


def write_run(out: Path, system: MolecularSystem, frames: np.ndarray, length_tolerance: float = 0.05) -> dict:
    """A `spacetime-md paths`-like directory; returns the endpoint states it records."""
    energies = np.zeros((1, len(frames)))
    TransitionPaths(frames[None], np.zeros(len(frames)), energies, "geodesic").save(out, system)
    (out / "system.json").write_text(json.dumps(system.spec()))
    values = system.compute_cvs(frames[[0, -1]])
    start = endpoint_state(system.cvs, values[0], "start", length_tolerance=length_tolerance)
    target = endpoint_state(system.cvs, values[1], "target", length_tolerance=length_tolerance)
    endpoints = {"start_state": start.to_dict(), "target_state": target.to_dict()}
    report = {"endpoints": endpoints, "cv_names": list(system.cvs.names)}
    (out / "report.json").write_text(json.dumps(report))
    (out / "config.json").write_text(json.dumps({"command": "paths", "system": system.name, "solvent": "vacuum"}))
    return endpoints


@pytest.fixture(scope="module")
def glycine_run(tmp_path_factory):
    system, frames = glycine_path()
    out = tmp_path_factory.mktemp("gly_run")
    return out, write_run(out, system, frames), system, frames


@pytest.fixture(scope="module")
def nma_run(tmp_path_factory):
    system, frames = nma_path()
    out = tmp_path_factory.mktemp("nma_run")
    # trans and cis are only 0.069 nm apart in heavy-atom RMSD: boxes of +-0.015 nm leave frames
    # 2-5 of 8 (amide torsion 129 to 51 deg) in neither state.
    return out, write_run(out, system, frames, length_tolerance=0.015), system, frames


def p_b_from_shots(out: Path, report: dict) -> dict[int, float | None]:
    """p_B per booked structure recomputed from the checkpoint: hits / decided shots."""
    shots = json.loads((out / SHOTS_FILE).read_text())["frames"]
    p = {}
    for frame, outcomes in shots.items():
        codes = [v[0] for v in outcomes.values()]
        decided = sum(c in (START, TARGET) for c in codes)
        p[int(frame)] = None if decided == 0 else sum(c == TARGET for c in codes) / decided
    return p


# --------------------------------------------------------------------------- the CV state checker


def _quad(theta_deg: float, offset: float) -> np.ndarray:
    """Four atoms whose dihedral is ``theta_deg`` (mdtraj's convention), shifted by ``offset`` nm."""
    t = np.radians(theta_deg)
    return np.array([[0.15, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.15],
                     [0.15 * np.cos(t), 0.15 * np.sin(t), 0.15]]) + offset


def _frames(pairs) -> np.ndarray:
    return np.stack([np.concatenate([_quad(a, 0.0), _quad(b, 1.0)]) for a, b in pairs])


def test_cv_state_checker_across_the_periodic_wrap():
    cvs = CollectiveVariables([Torsion("a", (0, 1, 2, 3)), Torsion("b", (4, 5, 6, 7)), Distance("d", (0, 4))])
    frames = _frames([(179, -179), (-179, 179), (175, 170), (150, 180), (0, 0), (10, -20), (90, 90)])
    np.testing.assert_allclose(np.degrees(cvs.compute(frames)[:2, :2]), [[179, -179], [-179, 179]], atol=1e-6)
    # A: a disc around (180, 180) of radius 15 deg (across the wrap); B: a box around (0, 0) that
    # also requires the (constant) distance between the two quadruples.
    start = MetastableState("A", regions=(Region(("a", "b"), centre=(180.0, 180.0), radius=15.0),))
    target = MetastableState("B", regions=(Region(("a", "b"), bounds=((-30.0, 30.0), (-30.0, 30.0))),
                                           Region(("d",), bounds=((1.7, 1.8),))))
    checker = CVStateChecker([c.to_dict() for c in cvs], start.to_dict(), target.to_dict())
    expected = [START, START, START, UNDECIDED, TARGET, TARGET, UNDECIDED]
    assert checker.outcomes(frames).tolist() == expected
    assert [checker(x) for x in frames] == expected
    # The same verdicts as the states themselves; (179, -179) is 1.4 deg from the centre, not 358.
    values = cvs.compute(frames)
    assert start.contains(values, cvs).tolist() == [e == START for e in expected]
    # Plain data in, so it pickles for the worker processes and rebuilds from its spec.
    for clone in (pickle.loads(pickle.dumps(checker)), CVStateChecker(**checker.to_spec())):
        assert clone.outcomes(frames).tolist() == expected
    # A box across the wrap: the arc from 170 to -170 deg through 180.
    arc = MetastableState("arc", regions=(Region(("a",), bounds=((170.0, -170.0),)),))
    on_arc = CVStateChecker([c.to_dict() for c in cvs], arc.to_dict(), target.to_dict())
    assert on_arc.outcomes(frames).tolist() == [START, START, START, UNDECIDED, TARGET, TARGET, UNDECIDED]
    with pytest.raises(ValueError, match="state 'A'"):  # its disc needs 'b', which is not given
        CVStateChecker([cvs[0].to_dict()], start.to_dict(), target.to_dict())


def test_cv_state_checker_on_rmsd_states(nma_run):
    _, endpoints, system, frames = nma_run
    start, target = (MetastableState(name, regions=tuple(map(Region.from_dict, endpoints[f"{name}_state"]["regions"])))
                     for name in ("start", "target"))
    checker = CVStateChecker.from_system(system, start, target)
    assert [c["type"] for c in checker.cv_dicts] == ["rmsd", "rmsd"] and "reference_nm" in checker.cv_dicts[0]
    values = system.compute_cvs(frames)
    want = np.where(target.contains(values, system.cvs), TARGET, np.where(start.contains(values, system.cvs),
                                                                          START, UNDECIDED))
    got = pickle.loads(pickle.dumps(checker)).outcomes(frames)
    assert got.tolist() == want.tolist()
    assert got[0] == START and got[-1] == TARGET and (got == UNDECIDED).any()


# --------------------------------------------------------------------------- relaxed energies and refinement


def test_drive_and_refinement_over_every_torsion_of_a_tetrapeptide():
    system = MolecularSystem.from_pdb(TETRAPEPTIDE / "alanine-tetrapeptide.pdb")
    assert len(system.cvs.torsions) == 6 and relaxed_na_reason(system) is None
    path = compute_dihedral_drive_path(system, TETRAPEPTIDE / "C7eq_all.pdb", TETRAPEPTIDE / "mid_C7ax.pdb",
                                       n_frames=5)
    frames = path.frames[0]
    way = np.asarray(path.metrics["waypoints_deg"])
    assert way.shape == (2, 6) and path.metrics["torsions"] == list(system.cvs.names)
    # Every frame is held at its route point in all six torsions (within a degree).
    route = np.linspace(way[0], way[1], 5)
    got = np.degrees(system.compute_cvs(frames))
    assert np.abs((got - route + 180) % 360 - 180).max() < 1.0
    quencher = cv_torsion_quencher(system)
    refined = refine_relaxed_maximum(quencher, frames, 2, window=1, substeps=2)
    assert refined.route.shape == (5, 6) and refined.angles.shape == (6,)
    np.testing.assert_allclose(refined.route[::2], system.cvs.unwrap(system.compute_cvs(frames[1:4])), atol=1e-9)
    assert refined.energy == refined.energies.max() and 1.0 <= refined.frame_position <= 3.0
    with pytest.raises(ValueError, match="phi_psi: expected a refinement over 2 torsions"):
        refined.phi_psi
    with pytest.raises(ValueError, match=r"waypoints_deg: expected at least two points of 6 torsion values"):
        compute_dihedral_drive_path(system, TETRAPEPTIDE / "C7eq_all.pdb", waypoints_deg=[(-150, 160), (60, -40)])
    with pytest.raises(TypeError, match="quencher: expected a TorsionQuencher, got str"):
        refine_relaxed_maximum("phi", frames, 2)


def test_relaxed_energy_is_na_without_torsions(nma_run):
    _, _, system, frames = nma_run
    reason = relaxed_na_reason(system)
    assert reason.startswith("n/a") and "no torsion" in reason and "rmsd start" in reason
    with pytest.raises(ValueError, match="relaxed energy: n/a"):
        cv_torsion_quencher(system)
    with pytest.raises(ValueError, match="relaxed energy: n/a"):
        compute_dihedral_drive_path(system, MOLECULES / "nma_trans.pdb", MOLECULES / "nma_cis.pdb")


# --------------------------------------------------------------------------- the committor command


def test_glycine_committor_uses_the_endpoint_states(glycine_run, tmp_path, capsys):
    run, endpoints, system, frames = glycine_run
    out = tmp_path / "c"
    assert cli.main(["committor", str(run), *FAST, "--out", str(out), "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "phi 2" in printed and "psi 2" in printed and "energy n/a" not in printed
    report = json.loads((out / "committor.json").read_text())
    # Glycine dipeptide has no states of its own: the run's endpoint discs are A and B.
    assert report["start_state"] == "start" and report["target_state"] == "target"
    assert report["state_sources"] == {"start": "endpoints", "target": "endpoints"}
    assert report["states"]["start"]["regions"] == endpoints["start_state"]["regions"]
    assert report["states"]["target"]["regions"] == endpoints["target_state"]["regions"]
    assert report["cv_names"] == ["phi 2", "psi 2"] and report["cv_units"] == {"phi 2": "deg", "psi 2": "deg"}
    # Relaxed energy and refinement with both torsions held.
    assert report["energy_used"] == "relaxed" and report["energy_na_reason"] is None
    refined = report["refined_max_energy"]
    assert refined is not None and list(refined["torsions_deg"]) == ["phi 2", "psi 2"]
    assert refined["phi_psi_deg"] == list(refined["torsions_deg"].values())
    # p_B from the checkpoint's shots: hits / decided, in [0, 1]; the ends commit at t = 0.
    recomputed = p_b_from_shots(out, report)
    for row in report["frames"]:
        assert row["p_b"] == recomputed[row["frame"]]
        assert row["p_b"] is None or 0.0 <= row["p_b"] <= 1.0
        assert row["n_start"] + row["n_target"] + row["n_undecided"] == 2
        np.testing.assert_allclose([row["cvs"]["phi 2"], row["cvs"]["psi 2"]], row["phi_psi_deg"])
    assert report["frames"][0]["p_b"] == 0.0 and report["frames"][-1]["p_b"] == 1.0
    assert refined["p_b"] == recomputed[len(frames)]
    # The saddle point next to it: a first-order saddle of glycine dipeptide's force field, booked
    # one past the refined maximum, with every torsion CV reported.
    saddle = report["saddle_point"]
    assert saddle is not None and saddle["eigenvalue_kj_mol_nm2"] < 0 and saddle["rms_gradient_kj_mol_nm"] <= 1.0
    assert list(saddle["torsions_deg"]) == ["phi 2", "psi 2"] and saddle["p_b"] == recomputed[len(frames) + 1]
    # A rerun resumes every shot.
    again = run_committor(run, out, CommittorConfig(n_frames=2, n_shots=2, max_length_ps=0.2, n_workers=1),
                          plot=False)
    assert again.n_shots_run == 0 and again.n_shots_resumed == again.n_shots_total == 2 * 5
    assert again.refined == refined


def test_states_file_overrides_the_run_states(glycine_run, tmp_path, capsys):
    run, _, system, _ = glycine_run
    states = tmp_path / "states" / "gly_states.json"
    states.parent.mkdir()
    (states.parent / "c7eq.pdb").write_text((MOLECULES / "gly_C7eq.pdb").read_text())
    states.write_text(json.dumps({"states": [
        {"name": "C7eq_gly", "disc": {"phi 2": -80, "psi 2": 70}, "radius": 40, "representative_pdb": "c7eq.pdb"},
        {"name": "C7ax_gly", "disc": {"phi 2": 75, "psi 2": -50}, "radius": 40},
    ]}))
    out = tmp_path / "named"
    code = cli.main(["committor", str(run), *FAST, "--out", str(out), "--no-plot", "--no-max-energy",
                     "--states", str(states)])
    capsys.readouterr()
    report = json.loads((out / "committor.json").read_text())
    assert code == 0 and report["start_state"] == "C7eq_gly" and report["target_state"] == "C7ax_gly"
    assert report["state_sources"] == {"start": "system", "target": "system"}
    assert report["states"]["start"]["representative_pdb"] == str(states.parent / "c7eq.pdb")
    assert report["refined_max_energy"] is None and report["refined_max_energy_na_reason"].startswith("not requested")
    config = json.loads((out / "config.json").read_text())
    assert config["states_file"] == str(states.resolve()) and config["system_source"] == "system.json"
    # Named states may also be the run's endpoint states.
    out = tmp_path / "by_name"
    assert cli.main(["committor", str(run), *FAST, "--out", str(out), "--no-plot", "--no-refine",
                     "--states", str(states), "--start-state", "start", "--target-state", "C7ax_gly"]) == 0
    capsys.readouterr()
    report = json.loads((out / "committor.json").read_text())
    assert (report["start_state"], report["target_state"]) == ("start", "C7ax_gly")
    assert report["state_sources"] == {"start": "named", "target": "named"}
    # Both ends in one state of the file: the run's endpoint states tell them apart.
    wide = tmp_path / "states" / "wide.json"
    wide.write_text(json.dumps({"states": [{"name": "anywhere", "box": {"phi 2": [-180, 180], "psi 2": [-180, 180]}}]}))
    out = tmp_path / "wide"
    assert cli.main(["committor", str(run), *FAST, "--out", str(out), "--no-plot", "--no-max-energy",
                     "--states", str(wide)]) == 0
    capsys.readouterr()
    report = json.loads((out / "committor.json").read_text())
    assert (report["start_state"], report["target_state"]) == ("start", "target")
    assert report["state_sources"] == {"start": "endpoints", "target": "endpoints"}
    for argv, match in [
        (["--states", str(tmp_path / "none.json")], "--states: expected an existing file"),
        (["--start-state", "nowhere"], "state: expected one of ['start', 'target'], got 'nowhere'"),
    ]:
        assert cli.main(["committor", str(run), *FAST, "--out", str(tmp_path / "err"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and match in err, err


def test_nma_committor_reports_relaxed_criteria_as_na(nma_run, tmp_path, capsys):
    run, endpoints, system, frames = nma_run
    out = tmp_path / "c"
    assert cli.main(["committor", str(run), *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "relaxed energy n/a" in printed and "used the quenched energy" in printed
    assert "refined relaxed-energy maximum n/a" in printed and "rmsd start" in printed
    report = json.loads((out / "committor.json").read_text())
    assert report["start_state"] == "start" and report["target_state"] == "target"
    assert report["states"]["start"]["regions"] == endpoints["start_state"]["regions"]
    assert report["cv_names"] == ["rmsd start", "rmsd end"]
    assert report["cv_units"] == {"rmsd start": "nm", "rmsd end": "nm"}
    # No torsion CV: the relaxed energy and the refinement are n/a, with the reason; never a number.
    assert report["energy_requested"] == "relaxed" and report["energy_used"] == "quenched"
    assert "no torsion" in report["energy_na_reason"]
    assert report["refined_max_energy"] is None and "no torsion" in report["refined_max_energy_na_reason"]
    assert "refined_max_energy" not in report["files"]
    assert report["phi_psi_na_reason"] and all(row["phi_psi_deg"] is None for row in report["frames"])
    recomputed = p_b_from_shots(out, report)
    assert set(recomputed) == {row["frame"] for row in report["frames"]}  # nothing booked for a refinement
    for row in report["frames"]:
        assert row["p_b"] == recomputed[row["frame"]]
        assert row["p_b"] is None or 0.0 <= row["p_b"] <= 1.0
        assert row["cvs"]["rmsd start"] >= 0.0
    assert report["frames"][0]["p_b"] == 0.0 and report["frames"][-1]["p_b"] == 1.0
    assert (out / "committor.png").stat().st_size > 1000
    # --energy raw is no n/a: nothing is reported missing for it.
    raw = run_committor(run, tmp_path / "raw", CommittorConfig(n_frames=2, n_shots=1, max_length_ps=0.2,
                                                               energy="raw", n_workers=1), plot=False)
    assert raw.max_energy_source == "raw" and raw.energy_na_reason is None
    assert "no torsion" in raw.refined_na_reason
    with pytest.raises(ValueError, match="phi_psi: n/a"):
        raw.phi_psi


def test_old_checkpoints_and_runs_without_system_json(glycine_run, tmp_path, capsys):
    run, _, system, frames = glycine_run
    out = tmp_path / "old"
    out.mkdir()
    (out / SHOTS_FILE).write_text(json.dumps({"version": 1, "fingerprint": {}, "frames": {}}))
    assert cli.main(["committor", str(run), *FAST, "--out", str(out), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "checkpoint version 2 to resume, got version 1" in err
    assert cli.main(["committor", str(run), *FAST, "--out", str(out), "--no-plot", "--overwrite"]) == 0
    capsys.readouterr()
    # A run of a molecule that is no preset needs its system.json.
    bare = tmp_path / "bare"
    TransitionPaths(frames[None], np.zeros(len(frames)), np.zeros((1, len(frames))), "geodesic").save(bare, system)
    (bare / "config.json").write_text(json.dumps({"command": "paths", "system": "glycine-dipeptide"}))
    assert cli.main(["committor", str(bare), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected system.json" in err and "glycine-dipeptide" in err


def test_estimate_committor_takes_endpoint_states(glycine_run):
    _, _, system, frames = glycine_run
    values = system.compute_cvs(frames[[0, -1]])
    ends = (endpoint_state(system.cvs, values[0], "A"), endpoint_state(system.cvs, values[1], "B"))
    cfg = CommittorConfig(n_frames=2, n_shots=1, max_length_ps=0.2, n_workers=1, include_max_energy=False)
    result = estimate_committor(frames, system, cfg, endpoint_states=ends)
    assert (result.start_state, result.target_state) == ("A", "B") and result.state_sources == ("endpoints",) * 2
    np.testing.assert_array_equal(result.p_b, [0.0, 1.0])
    with pytest.raises(ValueError, match="system: expected metastable-state definitions for glycine-dipeptide"):
        estimate_committor(frames, system, cfg)
    with pytest.raises(ValueError, match=r"endpoint_states: expected \(start, target\), got 1 states"):
        estimate_committor(frames, system, cfg, endpoint_states=ends[:1])
