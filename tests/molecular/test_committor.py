"""Committor analysis on real OpenMM shots: physics along a C7eq -> C7ax path, resume, errors, CLI."""

from __future__ import annotations

import dataclasses
import json

import mdtraj
import numpy as np
import pytest
import torch

from spacetime_md import cli
from spacetime_md.molecular import load_system
from spacetime_md.molecular.workflows.committor import SHOTS_FILE, estimate_committor
from spacetime_md.molecular.workflows.committor_config import CommittorConfig
from spacetime_md.molecular.workflows.committor_run import compute_dihedral_drive_path, run_committor
from spacetime_md.molecular.workflows.shots import select_frames, shot_seed, wilson_interval

# Shots commit within about 0.3 ps from anywhere on this path; keep them short.
FAST = dict(max_length_ps=1.0, n_workers=1)



def test_wilson_interval_textbook_values():
    low, high = wilson_interval([0, 5, 10], [10, 10, 10], 0.95)
    np.testing.assert_allclose(low, [0.0, 0.2366, 0.7225], atol=1e-4)
    np.testing.assert_allclose(high, [0.2775, 0.7634, 1.0], atol=1e-4)
    low, high = wilson_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)
    with pytest.raises(ValueError, match="expected 0 <= successes <= trials"):
        wilson_interval(3, 2)


def test_select_frames_and_seeds():
    np.testing.assert_array_equal(select_frames(24, 4), [0, 8, 15, 23])
    np.testing.assert_array_equal(select_frames(24, 1), [11])
    with pytest.raises(ValueError, match="n_frames: expected at most the path's 5 frames, got 6"):
        select_frames(5, 6)
    seeds = {shot_seed(0, f, k) for f in range(10) for k in range(10)}
    assert len(seeds) == 100 and 0 not in seeds


def test_drive_path_goes_from_start_to_target(system, drive_path):
    states = system.assign_states(drive_path.frames[0])
    assert system.states[states[0]].name == "C7eq" and system.states[states[-1]].name == "C7ax"
    assert (states == -1).sum() >= 3  # frames between the two discs


def test_committor_rises_across_the_barrier(system, drive_path):
    frames = drive_path.frames[0]
    states = system.assign_states(frames)
    outside = np.flatnonzero(states == -1)
    first, last = int(outside[0]), int(outside[-1])
    cfg = CommittorConfig(n_frames=24, n_shots=8, **FAST)
    # All 24 frames: the inside frames commit at t = 0, the outside ones need dynamics.
    result = estimate_committor(drive_path, system, cfg)
    assert result.start_state == "C7eq" and result.target_state == "C7ax"
    p = dict(zip(result.frames.tolist(), result.p_b))
    assert all(p[int(f)] == 0.0 for f in np.flatnonzero(states == 0))
    assert all(p[int(f)] == 1.0 for f in np.flatnonzero(states == 1))
    # Physical: just outside C7eq the system falls back; just past the barrier it goes on to C7ax.
    assert p[first] <= 0.25, p
    assert p[last] >= 0.75, p
    assert result.crosses_half
    assert first <= result.ts_candidates[0] <= last
    # The extra frame is the argmax of the relaxed energy and lies between the two states.
    assert result.max_energy_source == "relaxed"
    assert first <= result.max_energy_frame <= last
    k = int(np.flatnonzero(result.frames == result.max_energy_frame)[0])
    assert result.relaxed_energies[k] == result.relaxed_energies.max()
    # 24 frames, the refined relaxed-energy maximum and the saddle point next to it, 8 shots each
    assert result.n_shots_total == 26 * 8 and result.n_shots_run == 26 * 8 and result.n_undecided.sum() == 0
    assert result.saddle["n_start"] + result.saddle["n_target"] + result.saddle["n_undecided"] == 8
    assert result.refined["around_frame"] == result.max_energy_frame
    assert result.refined["n_start"] + result.refined["n_target"] + result.refined["n_undecided"] == 8
    assert result.md_steps > 0
    assert np.all(result.p_b_low <= result.p_b) and np.all(result.p_b <= result.p_b_high)


def test_relaxed_energy_maximum_is_the_transition_state(system):
    # On the dihedral-drive path the relaxed-energy maximum (phi about -6 deg) is where shots
    # split evenly: measured p_B = 0.52 [0.42, 0.62] from 100 shots (64-frame path).
    path = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=64)
    cfg = CommittorConfig(n_frames=1, n_shots=60, **FAST)
    result = estimate_committor(path, system, cfg)
    k = int(np.flatnonzero(result.frames == result.max_energy_frame)[0])
    # 60 shots at p_B ~ 0.5: binomial std 0.065, the window is 3 sigma.
    assert abs(result.p_b[k] - 0.5) <= 0.2, result.p_b
    assert result.p_b_low[k] < 0.5 < result.p_b_high[k]


def test_refined_maximum_lies_between_frames(system):
    from spacetime_md.molecular.paths.relaxed import DihedralQuencher, refine_relaxed_maximum

    # A coarse drive path: 8 frames, about 30 deg apart in phi, like 20-fs frames at the barrier.
    coarse = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=8)
    frames = coarse.frames[0]
    quencher = DihedralQuencher(system.openmm_system, system.phi_indices, system.psi_indices)
    relaxed = quencher.quench_frames(frames)
    top = int(np.argmax(relaxed))
    refined = refine_relaxed_maximum(quencher, frames, top, window=1, substeps=6)
    assert refined.window == (top - 1, top + 1) and len(refined.route) == 2 * 6 + 1
    assert top - 1 <= refined.frame_position <= top + 1
    # The frames themselves are route points, so the refined maximum is at least as high.
    assert refined.energy >= relaxed[top] - 1e-6 and refined.energy == refined.energies.max()
    np.testing.assert_allclose(refined.route[::6], np.unwrap(system.compute_phi_psi(frames[top - 1 : top + 2]), axis=0),
                               atol=1e-9)
    # The structure is held at its route point: (phi, psi) within a degree.
    got = np.asarray(system.compute_phi_psi(refined.positions[None]))[0]
    assert np.degrees(np.abs(np.angle(np.exp(1j * (got - refined.phi_psi))))).max() < 1.0
    # On the fine 64-frame drive path the maximum sits near phi = -6 deg (see the test below).
    assert -20.0 < np.degrees(refined.phi_psi[0]) < 10.0, np.degrees(refined.phi_psi)
    for kwargs, match in [(dict(window=0), "window: expected an integer >= 1, got 0"),
                          (dict(substeps=True), "substeps: expected an integer >= 1, got True")]:
        with pytest.raises(ValueError, match=match):
            refine_relaxed_maximum(quencher, frames, top, **kwargs)
    with pytest.raises(ValueError, match=r"around: expected a frame index in \[0, 8\), got 8"):
        refine_relaxed_maximum(quencher, frames, 8)
    with pytest.raises(ValueError, match=r"frames: expected a path of shape \(T >= 2, N, 3\), got \(1, 22, 3\)"):
        refine_relaxed_maximum(quencher, frames[:1], 0)


def test_refined_shots_resume_only_from_the_same_structure(system, drive_path, tmp_path):
    cfg = CommittorConfig(n_frames=2, n_shots=3, **FAST)
    first = estimate_committor(drive_path, system, cfg, out_dir=tmp_path)
    assert first.refined is not None and first.refined_positions.shape == (22, 3)
    again = estimate_committor(drive_path, system, cfg, out_dir=tmp_path)
    assert again.n_shots_run == 0 and again.refined == first.refined
    # Other refinement settings move the structure: only its shots, and those of the saddle point
    # searched from it (the same saddle to within the search's tolerance, not bit for bit), run again.
    other = estimate_committor(drive_path, system, dataclasses.replace(cfg, refine_substeps=3), out_dir=tmp_path)
    assert other.n_shots_run == 2 * 3 and other.n_shots_resumed == 3 * len(other.frames)
    assert abs(other.saddle["energy_kj_mol"] - first.saddle["energy_kj_mol"]) < 0.01
    # Without the saddle point its shots are simply not run; the rest resumes.
    plain = estimate_committor(drive_path, system, dataclasses.replace(cfg, saddle=False), out_dir=tmp_path)
    assert plain.n_shots_run == 3 and plain.saddle is None
    assert estimate_committor(drive_path, system, dataclasses.replace(cfg, refine=False)).refined is None


def test_quenched_energy_picks_its_own_maximum(system, drive_path):
    from spacetime_md.molecular.paths.relaxed import PositionQuencher

    frames = drive_path.frames[0]
    energies = PositionQuencher(system.openmm_system, system.heavy_atom_indices).quench_frames(frames)
    cfg = CommittorConfig(n_frames=2, n_shots=4, energy="quenched", **FAST)
    result = estimate_committor(frames, system, cfg)
    assert result.max_energy_source == "quenched"
    assert result.max_energy_frame == int(np.argmax(energies))
    # the drive path's frames are minimised already, so the quench moves them little and the
    # maximum is at the barrier (neither end state)
    assert system.assign_states(frames[result.max_energy_frame][None])[0] == -1


def test_path_that_never_crosses_is_reported(system):
    # C7eq to just outside the disc, well before the barrier: every shot falls back to C7eq.
    path = compute_dihedral_drive_path(system, "C7eq", n_frames=6, waypoints_deg=[(-150, 160), (-25, 40)])
    cfg = CommittorConfig(n_frames=3, n_shots=4, target_state="C7ax", energy="raw", **FAST)
    result = estimate_committor(path, system, cfg)
    assert not result.crosses_half
    assert np.all(result.p_b == 0.0)
    assert result.max_energy_source == "raw" and result.relaxed_energies is None
    assert "never crosses 0.5" in result.message
    assert result.to_dict()["crosses_half"] is False


def test_profile_that_jumps_is_unresolved(system, drive_path):
    frames = drive_path.frames[0]
    states = system.assign_states(frames)
    inside = frames[states != -1]  # drop the barrier region: the path jumps from C7eq to C7ax
    n_a = int((states == 0).sum())
    cfg = CommittorConfig(n_frames=len(inside), n_shots=2, refine=False, **FAST)  # frames only
    result = estimate_committor(inside, system, cfg)
    assert result.md_steps == 0 and result.n_shots_run == 2 * len(inside)
    assert result.crosses_half and result.ts_candidates == []
    assert result.crossing_bracket == (n_a - 1, n_a)
    assert "unresolved" in result.message


def test_undecided_shots_are_counted(system, drive_path):
    # One check interval (10 steps, 20 fs) is too short to leave the barrier region.
    frame = int(np.argmax(drive_path.energies[0]))
    x = drive_path.frames[0, frame - 1 : frame + 2]
    cfg = CommittorConfig(n_frames=1, n_shots=3, max_length_ps=0.02, target_state="C7ax", start_state="C7eq",
                          include_max_energy=False, n_workers=1)
    result = estimate_committor(x, system, cfg)
    assert result.n_undecided[0] + result.n_start[0] + result.n_target[0] == 3
    assert result.n_undecided[0] >= 1
    if result.n_undecided[0] == 3:
        assert np.isnan(result.p_b[0])


def test_run_outputs_and_resume(system, paths_dir, tmp_path):
    cfg = CommittorConfig(n_frames=4, n_shots=4, **FAST)
    seen = []

    def interrupt(info):
        seen.append(info)
        if len(seen) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        run_committor(paths_dir, out, cfg, callback=interrupt)
    saved = json.loads((out / SHOTS_FILE).read_text())["frames"]
    n_saved = sum(len(v) for v in saved.values())
    assert n_saved == 8  # two finished batches of 4 shots
    resumed = run_committor(paths_dir, out, cfg)
    assert resumed.n_shots_resumed == 8 and resumed.n_shots_run == resumed.n_shots_total - 8
    again = run_committor(paths_dir, out, cfg)
    assert again.n_shots_run == 0 and again.n_shots_resumed == again.n_shots_total
    fresh = run_committor(paths_dir, tmp_path / "fresh", cfg)
    # Per-shot seeds: an interrupted and resumed run equals an uninterrupted one.
    assert json.loads((out / SHOTS_FILE).read_text())["frames"] == \
        json.loads((tmp_path / "fresh" / SHOTS_FILE).read_text())["frames"]
    np.testing.assert_array_equal(resumed.p_b, fresh.p_b)

    report = json.loads((out / "committor.json").read_text())
    assert report["shots"]["total"] == resumed.n_shots_total
    assert [f["frame"] for f in report["frames"]] == resumed.frames.tolist()
    assert report["max_energy_source"] == "relaxed" and report["crosses_half"] == resumed.crosses_half
    config = json.loads((out / "config.json").read_text())
    assert config["committor_config"]["n_shots"] == 4 and config["temperature_k"] == 300.0
    assert (out / "committor.png").stat().st_size > 1000
    for name in report["files"]["ts_candidates"]:
        traj = mdtraj.load(out / name)
        assert traj.n_atoms == 22
    # More shots per frame reuse the finished ones.
    more = run_committor(paths_dir, out, dataclasses.replace(cfg, n_shots=6))
    # (two more at every frame, the refined maximum and the saddle point)
    assert more.n_shots_resumed == resumed.n_shots_total and more.n_shots_run == 2 * (len(more.frames) + 2)
    # Other dynamics: refuse to mix, unless asked to start over.
    other = dataclasses.replace(cfg, friction_per_ps=5.0)
    with pytest.raises(ValueError, match=r"different settings \(friction_per_ps\)"):
        run_committor(paths_dir, out, other)
    assert run_committor(paths_dir, out, other, overwrite=True).n_shots_resumed == 0


def test_parallel_workers_match_in_process(system, paths_dir, tmp_path, monkeypatch):
    import spacetime_md.molecular.workflows.committor as committor

    monkeypatch.setattr(committor, "WORKERS_AFTER_S", 0.0)  # hand shots to workers even in this small job
    # Ends in the states (settled in-process) plus the barrier frame, the refined maximum and the
    # saddle point (MD, each split into 2 batches: the first runs in-process, the other five in the
    # workers).
    cfg = CommittorConfig(n_frames=2, n_shots=4, max_length_ps=1.0)
    one = run_committor(paths_dir, tmp_path / "one", dataclasses.replace(cfg, n_workers=1), plot=False)
    two = run_committor(paths_dir, tmp_path / "two", dataclasses.replace(cfg, n_workers=2), plot=False)
    assert two.n_shots_run == 20 and two.md_steps > 0
    assert two.n_shots_in_workers == 10 and one.n_shots_in_workers == 0
    assert json.loads((tmp_path / "one" / SHOTS_FILE).read_text())["frames"] == \
        json.loads((tmp_path / "two" / SHOTS_FILE).read_text())["frames"]
    np.testing.assert_array_equal(one.p_b, two.p_b)
    assert one.refined == two.refined and one.saddle["p_b"] == two.saddle["p_b"]


def test_tiny_model_paths_directory(tmp_path):
    # The real `spacetime-md paths` layout (tiny untrained model; the endpoint restraint ends paths in C7ax).
    from spacetime_md.core import GeodesicConfig
    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.paths.config import PathConfig
    from spacetime_md.molecular.model.pretrained import save_checkpoint
    from spacetime_md.molecular.paths.run import run_paths

    system = load_system("alanine-dipeptide")
    torch.manual_seed(0)
    model = EquivariantDenoiser(["X"] * 22, system.bonds.tolist(), atom_names=list(system.atom_names),
                                hidden_channels=8, n_layers=1, n_rbf=4)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", model)
    cfg = PathConfig(n_paths=1, n_points=8, n_steps=200, geodesic=GeodesicConfig(
        n_nodes=3, n_points=(8,), divergence="hutchinson", n_probes=1, max_steps=2))
    run_paths(tmp_path / "run", system="alanine-dipeptide", config=cfg, checkpoint=ckpt, plots=False)
    # The run records its system (system.json): the committor rebuilds it from there.
    assert (tmp_path / "run" / "system.json").is_file()
    for kind in ("geodesic", "straight"):
        result = run_committor(tmp_path / "run", None, CommittorConfig(n_frames=2, n_shots=2, kind=kind, **FAST),
                               plot=False)
        assert result.start_state == "C7eq" and result.target_state == "C7ax"
        assert (tmp_path / "run" / f"committor_{kind}_path000" / "committor.json").is_file()
        assert result.p_b[0] == 0.0 and result.p_b[-1] == 1.0


def test_errors(system, drive_path, paths_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="paths_dir: expected a directory written by `spacetime-md paths`"):
        run_committor(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="paths: expected paths_straight.npz"):
        run_committor(paths_dir, tmp_path / "x", CommittorConfig(kind="straight"))
    with pytest.raises(ValueError, match="kind: expected 'geodesic' or 'straight', got 'curvy'"):
        run_committor(paths_dir, tmp_path / "x", CommittorConfig(kind="curvy"))
    (tmp_path / "noconf").mkdir()
    dataclasses.replace(drive_path, kind="geodesic").save(tmp_path / "noconf", system)
    with pytest.raises(FileNotFoundError, match="paths_dir: expected config.json"):
        run_committor(tmp_path / "noconf")
    for kwargs, match in [
        (dict(n_frames=0), "n_frames: expected an integer >= 1, got 0"),
        (dict(n_shots=-1), "n_shots: expected an integer >= 1, got -1"),
        (dict(max_length_ps=0.0), "max_length_ps: expected a finite number > 0, got 0.0"),
        (dict(max_length_ps=0.001), "max_length_ps: expected at least one check interval"),
        (dict(energy="kinetic"), "energy: expected one of 'quenched', 'relaxed', 'raw', got 'kinetic'"),
        (dict(confidence=1.5), r"confidence: expected a level in \(0, 1\), got 1.5"),
        (dict(path=-1), "path: expected an integer >= 0, got -1"),
        (dict(refine_window=0), "refine_window: expected an integer >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            CommittorConfig(**kwargs)
    with pytest.raises(ValueError, match=r"path: expected an index in \[0, 1\), got 3"):
        estimate_committor(drive_path, system, CommittorConfig(path=3))
    with pytest.raises(ValueError, match="n_frames: expected at most the path's 24 frames, got 30"):
        estimate_committor(drive_path, system, CommittorConfig(n_frames=30))
    with pytest.raises(ValueError, match="start_state and target_state: expected two different states, got C7ax twice"):
        estimate_committor(drive_path, system, CommittorConfig(start_state="C7ax"))
    with pytest.raises(KeyError, match="state: expected one of"):
        estimate_committor(drive_path, system, CommittorConfig(target_state="nowhere"))
    middle = drive_path.frames[0, system.assign_states(drive_path.frames[0]) == -1]
    with pytest.raises(ValueError, match="start_state: the path's first frame is in no state"):
        estimate_committor(middle, system, CommittorConfig(n_frames=2))
    with pytest.raises(ValueError, match=r"paths: expected 22 atoms \(alanine-dipeptide\), got 10"):
        estimate_committor(np.zeros((4, 10, 3)), system, CommittorConfig(n_frames=2))
    with pytest.raises(TypeError, match="config: expected a CommittorConfig, got dict"):
        estimate_committor(drive_path, system, {"n_frames": 2})


def test_cli(paths_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(["committor", str(paths_dir), "--frames", "3", "--shots", "2", "--workers", "1",
                     "--max-length-ps", "1", "--out", str(out), "--no-plot"])
    printed = capsys.readouterr().out
    assert code == 0 and "p_B" in printed and "shots: " in printed
    report = json.loads((out / "committor.json").read_text())
    assert report["shots"]["total"] == 2 * 6  # 3 frames, the highest-energy one, the refined maximum, the saddle
    assert report["refined_max_energy"]["n_start"] + report["refined_max_energy"]["n_target"] == 2
    assert mdtraj.load(out / "ts_refined_max_energy.pdb").n_atoms == 22
    code = cli.main(["committor", str(paths_dir), "--frames", "3", "--shots", "2", "--workers", "1",
                     "--max-length-ps", "1", "--out", str(tmp_path / "plain"), "--no-plot", "--no-refine"])
    capsys.readouterr()
    plain = json.loads((tmp_path / "plain" / "committor.json").read_text())
    # without the refined maximum there is no saddle point either
    assert code == 0 and plain["refined_max_energy"] is None and plain["shots"]["total"] == 2 * 4
    assert plain["saddle_point"] is None and "no refined relaxed-energy maximum" in plain["saddle_point_na_reason"]
    code = cli.main(["committor", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "paths_dir: expected a directory" in err
    code = cli.main(["committor", str(paths_dir), "--shots", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "spacetime-md: error: n_shots: expected an integer >= 1, got 0"
    assert cli.main(["committor", str(paths_dir), "--dry-run"]) == 0
    assert '"n_shots": 20' in capsys.readouterr().out
    # the parser keeps its energy choices literal (no OpenMM import to build it): same as the API's
    from spacetime_md.commands import committor as command
    from spacetime_md.molecular.workflows.committor_config import ENERGIES

    assert command.ENERGIES == ENERGIES and command.DEFAULT_ENERGY == CommittorConfig().energy


def test_an_old_paths_run_names_its_preset_by_any_alias(tmp_path):
    """Runs without system.json name a preset in config.json: every alias of the presets is read
    (preset_name), anything else is refused with the fix."""
    from spacetime_md.molecular.workflows.committor_run import _system_for_paths

    for name, atoms in (("ala4", 42), ("Alanine_Dipeptide", 22), ("ad", 22)):
        (tmp_path / "config.json").write_text(json.dumps({"system": name}))
        system, _ = _system_for_paths(tmp_path, "Reference")
        assert system.n_atoms == atoms, name
    (tmp_path / "config.json").write_text(json.dumps({"system": "chignolin"}))
    with pytest.raises(FileNotFoundError, match=r"expected system.json \(the run's system\) in .* for system "
                                                r"'chignolin', which is no preset \(alanine-dipeptide, "
                                                r"alanine-tetrapeptide\); rerun `spacetime-md paths`"):
        _system_for_paths(tmp_path, "Reference")
