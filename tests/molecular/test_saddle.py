"""Saddle points of the force field: an analytic torsion barrier, alanine dipeptide's C7eq -> C7ax
transition state (the basins on either side, p_B from real shots), and the committor's saddle row."""

from __future__ import annotations

import json
import math

import numpy as np
import openmm
import pytest

from spacetime_md import cli
from spacetime_md.molecular.paths.relaxed import DihedralQuencher, _dihedrals, refine_relaxed_maximum
from spacetime_md.molecular.paths.saddle import (
    MAX_SADDLE_ATOMS,
    SaddleSearch,
    compute_saddle_from_refined,
    flexible_system,
)
from spacetime_md.molecular.workflows.committor import estimate_committor
from spacetime_md.molecular.workflows.committor_config import CommittorConfig
from spacetime_md.molecular.workflows.committor_run import compute_dihedral_drive_path

BARRIER = 10.0  # kJ/mol: torsion energy A (1 + cos 2 theta), maxima 2A at theta = 0 and 180 deg


def _four_atoms(theta_deg: float) -> np.ndarray:
    """A chain of four atoms (bonds 0.15 nm, angles 109.5 deg) with dihedral ``theta_deg``."""
    b, a = 0.15, math.radians(109.5)
    p1, p2 = np.zeros(3), np.array([b, 0.0, 0.0])
    p0 = p1 + b * np.array([-math.cos(math.pi - a), math.sin(math.pi - a), 0.0])
    t = math.radians(theta_deg)
    p3 = p2 + b * np.array([math.cos(math.pi - a), math.sin(math.pi - a) * math.cos(t), math.sin(math.pi - a) * math.sin(t)])
    return np.stack([p0, p1, p2, p3])


def _torsion_system() -> openmm.System:
    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    for i in range(3):
        bonds.addBond(i, i + 1, 0.15, 2.0e5)
    for i in range(2):
        angles.addAngle(i, i + 1, i + 2, math.radians(109.5), 400.0)
    torsion = openmm.CustomTorsionForce(f"{BARRIER}*(1 + cos(2*theta))")
    torsion.addTorsion(0, 1, 2, 3, [])
    for force in (bonds, angles, torsion):
        system.addForce(force)
    return system


def test_analytic_torsion_barrier_is_found_exactly():
    search = SaddleSearch(_torsion_system())
    x0 = _four_atoms(35.0)  # on the slope of the cis barrier; the reaction runs through theta = 0
    direction = _four_atoms(30.0) - _four_atoms(40.0)
    seen = []
    found = search.search(x0, direction, gtol=1e-3, callback=seen.append)
    assert found.converged and found.n_negative == 1 and found.eigenvalue < 0
    theta = math.degrees(_dihedrals(found.positions[None], (0, 1, 2, 3))[0])
    assert abs(theta) < 0.05, theta
    assert found.energy == pytest.approx(2 * BARRIER, abs=1e-5)
    assert found.rms_gradient <= 1e-3 and seen and seen[0]["iteration"] == 1
    # The unstable mode turns the torsion and leaves bonds and angles as they are (first order).
    eps = 1e-4
    plus, minus = found.positions + eps * found.mode, found.positions - eps * found.mode
    turn = math.degrees(_dihedrals(plus[None], (0, 1, 2, 3))[0] - _dihedrals(minus[None], (0, 1, 2, 3))[0])
    assert abs(turn) > 0.05  # degrees per 2e-4 nm of mode
    bond = [np.linalg.norm(x[i + 1] - x[i]) for x in (plus, minus) for i in range(3)]
    assert np.ptp(np.reshape(bond, (2, 3)), axis=0).max() < 1e-7
    # Next to the minimum at 90 deg the gradient is small but the curvature positive: a point
    # is a saddle only with one unstable mode, so the search climbs to the barrier anyway.
    climbed = search.search(_four_atoms(85.0), _four_atoms(80.0) - _four_atoms(90.0), gtol=20.0)
    assert climbed.converged and climbed.n_negative == 1 and climbed.n_iterations > 1
    assert abs(math.degrees(_dihedrals(climbed.positions[None], (0, 1, 2, 3))[0])) < 10.0
    # Walked the other way from 145 deg it finds the trans barrier instead.
    trans = search.search(_four_atoms(145.0), _four_atoms(150.0) - _four_atoms(140.0), gtol=1e-3)
    assert trans.converged
    assert abs(abs(math.degrees(_dihedrals(trans.positions[None], (0, 1, 2, 3))[0])) - 180.0) < 0.05


def test_hessian_matches_the_energy_curvature():
    # d^T H d against the second difference of the energy alone (no forces) along random directions
    search = SaddleSearch(_torsion_system())
    x = _four_atoms(35.0)
    hessian = search.hessian(x)
    rng = np.random.default_rng(0)
    eps = 1e-4
    for _ in range(3):
        d = rng.normal(size=12)
        d /= np.linalg.norm(d)
        e0 = search.energy_gradient(x)[0]
        ep, em = (search.energy_gradient(x + s * eps * d.reshape(4, 3))[0] for s in (1.0, -1.0))
        assert d @ hessian @ d == pytest.approx((ep + em - 2 * e0) / eps**2, rel=1e-3)


def test_search_gives_up_and_rejects_bad_input():
    search = SaddleSearch(_torsion_system())
    x0 = _four_atoms(35.0)
    direction = _four_atoms(30.0) - _four_atoms(40.0)
    short = search.search(x0, direction, gtol=1e-3, max_iterations=1)
    assert not short.converged and short.n_iterations == 1
    constrained = _torsion_system()
    constrained.addConstraint(0, 1, 0.15)
    with pytest.raises(ValueError, match="expected no constraints for a saddle search, got 1"):
        SaddleSearch(constrained)
    with pytest.raises(ValueError, match=r"direction: expected a finite, non-zero array of shape \(4, 3\)"):
        search.search(x0, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x0: expected finite positions of shape \(4, 3\), got shape \(3, 3\)"):
        search.search(x0[:3], direction)
    with pytest.raises(ValueError, match="max_iterations: expected an integer >= 1, got 0"):
        search.search(x0, direction, max_iterations=0)
    with pytest.raises(ValueError, match="fd_step: expected > 0 nm, got 0.0"):
        SaddleSearch(_torsion_system(), fd_step=0.0)


def test_alanine_dipeptide_transition_state_joins_c7eq_and_c7ax(system):
    path = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=24)
    frames = path.frames[0]
    quencher = DihedralQuencher(system.openmm_system, system.phi_indices, system.psi_indices)
    top = int(np.argmax(quencher.quench_frames(frames)))
    refined = refine_relaxed_maximum(quencher, frames, top)
    found = compute_saddle_from_refined(system, quencher, refined)
    assert found.converged and found.n_negative == 1
    # Relaxing every coordinate but the unstable one cannot end above the held-torsion maximum.
    assert found.energy < refined.energy
    phi, psi = np.degrees(system.compute_phi_psi(found.positions[None])[0])
    assert -15.0 < phi < 10.0 and -45.0 < psi < -5.0, (phi, psi)  # measured: (-2, -26) deg
    # A small push either way along the unstable mode, then a plain minimisation: one side ends
    # in C7eq, the other in C7ax, so this saddle is the transition state between the two.
    context = openmm.Context(flexible_system(system), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    ends = []
    for sign in (-1.0, 1.0):
        context.setPositions(found.positions + sign * 0.05 * found.mode)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
        x = context.getState(getPositions=True).getPositions(asNumpy=True)._value
        ends.append(system.states[int(system.assign_states(np.asarray(x)[None])[0])].name)
    assert sorted(ends) == ["C7ax", "C7eq"], ends


def test_committor_shoots_from_the_saddle_point(system):
    # 64-frame drive path: measured p_B = 0.53 [0.41, 0.65] at the saddle (60 shots; the refined
    # maximum 0.57 from the same number).
    path = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=64)
    result = estimate_committor(path, system, CommittorConfig(n_frames=1, n_shots=60, max_length_ps=1.0, n_workers=1))
    r = result.saddle
    assert r is not None and result.saddle_na_reason is None
    assert abs(r["p_b"] - 0.5) <= 0.2, r
    assert r["n_start"] + r["n_target"] + r["n_undecided"] == 60
    assert r["energy_kj_mol"] < r["relaxed_energy_of_refined_kj_mol"]
    assert set(r["torsions_deg"]) == set(system.cvs.names)
    assert result.n_shots_total == 4 * 60  # the middle frame, the highest one, the refined maximum, the saddle
    assert "saddle point (" in result.format_table() and result.saddle_positions.shape == (22, 3)


def test_saddle_na_reasons(system, drive_path, monkeypatch):
    cfg = CommittorConfig(n_frames=2, n_shots=2, max_length_ps=1.0, n_workers=1)
    off = estimate_committor(drive_path, system, CommittorConfig(n_frames=2, n_shots=2, max_length_ps=1.0,
                                                                 n_workers=1, saddle=False))
    assert off.saddle is None and off.saddle_na_reason.startswith("not requested") and off.saddle_message is None
    no_refined = estimate_committor(drive_path, system, CommittorConfig(n_frames=2, n_shots=2, max_length_ps=1.0,
                                                                        n_workers=1, refine=False))
    assert no_refined.saddle is None and "no refined relaxed-energy maximum" in no_refined.saddle_na_reason
    import spacetime_md.molecular.paths.saddle as saddle

    monkeypatch.setattr(saddle, "MAX_SADDLE_ATOMS", 10)
    big = estimate_committor(drive_path, system, cfg)
    assert big.saddle is None and big.saddle_na_reason == (
        "n/a: 22 atoms, more than the 10 a dense-Hessian saddle search is made for")
    assert "saddle point n/a: 22 atoms" in big.format_table()


def test_cli_writes_the_saddle_point(paths_dir, tmp_path, capsys):
    import mdtraj

    out = tmp_path / "cli"
    code = cli.main(["committor", str(paths_dir), "--frames", "2", "--shots", "2", "--workers", "1",
                     "--max-length-ps", "1", "--out", str(out), "--no-plot"])
    printed = capsys.readouterr().out
    assert code == 0 and "saddle point (" in printed
    report = json.loads((out / "committor.json").read_text())
    assert report["saddle_point"]["n_start"] + report["saddle_point"]["n_target"] == 2
    assert report["files"]["saddle_point"] == "ts_saddle_point.pdb"
    assert mdtraj.load(out / "ts_saddle_point.pdb").n_atoms == 22
    code = cli.main(["committor", str(paths_dir), "--frames", "2", "--shots", "2", "--workers", "1",
                     "--max-length-ps", "1", "--out", str(tmp_path / "off"), "--no-plot", "--no-saddle"])
    capsys.readouterr()
    off = json.loads((tmp_path / "off" / "committor.json").read_text())
    assert code == 0 and off["saddle_point"] is None and off["shots"]["total"] == report["shots"]["total"] - 2


def test_help_states_the_atom_limit():
    import argparse

    from spacetime_md.commands import committor

    parser = argparse.ArgumentParser()
    committor.add_arguments(parser)
    # the --help text (a literal, so parsing never imports openmm) is the library's limit
    assert f"above {MAX_SADDLE_ATOMS} atoms" in " ".join(parser.format_help().split())


def test_failed_search_starts_again_along_the_next_unstable_mode(system, monkeypatch):
    from spacetime_md.molecular.paths import saddle

    path = compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=24)
    frames = path.frames[0]
    quencher = DihedralQuencher(system.openmm_system, system.phi_indices, system.psi_indices)
    refined = refine_relaxed_maximum(quencher, frames, int(np.argmax(quencher.quench_frames(frames))))
    real = saddle.SaddleSearch.search
    calls = []

    def first_gives_up(self, x0, direction, **kwargs):  # the first search stops after one step
        calls.append(np.asarray(direction).copy())
        return real(self, x0, direction, **({"max_iterations": 1} if len(calls) == 1 else {}), **kwargs)

    monkeypatch.setattr(saddle.SaddleSearch, "search", first_gives_up)
    found = compute_saddle_from_refined(system, quencher, refined)
    assert len(calls) >= 2 and found.n_searches == len(calls)
    # the restart walks along another unstable mode of the start structure, not the first direction
    assert abs(np.dot(calls[1].ravel(), calls[0].ravel())) / np.linalg.norm(calls[0]) < 0.99
    assert found.converged and found.n_searches == 2 and found.n_negative == 1
    monkeypatch.setattr(saddle.SaddleSearch, "search",
                        lambda self, x0, direction, **kw: real(self, x0, direction, max_iterations=1))
    gave_up = saddle.compute_saddle_point(system, refined.positions, calls[0], max_restarts=1)
    assert not gave_up.converged and gave_up.n_searches <= 2
    with pytest.raises(ValueError, match="max_restarts: expected an integer >= 0, got -1"):
        saddle.compute_saddle_point(system, refined.positions, calls[0], max_restarts=-1)
