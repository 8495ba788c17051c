"""Collective variables and states in CV space, on molecules other than alanine dipeptide."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from spacetime_md.molecular.system.cvs import RMSD, CollectiveVariables, Distance, Torsion, load_cvs, parse_cv
from spacetime_md.molecular.system.states import MetastableState, Region, assign_states, endpoint_state, load_states
from spacetime_md.molecular.system.build import MolecularSystem, load_system, resolve_system

ROOT = Path(__file__).resolve().parents[2]
TETRA = ROOT / "systems" / "alanine_tetrapeptide"
MOLS = ROOT / "systems" / "test_molecules"


@pytest.fixture(scope="module")
def tetra():
    return resolve_system(TETRA / "alanine-tetrapeptide.pdb", states=TETRA / "states.json")


@pytest.fixture(scope="module")
def nma():
    return MolecularSystem.from_pdb(MOLS / "n-methylacetamide.pdb")


def test_alanine_default_cvs_are_the_old_phi_psi():
    ala = load_system("alanine-dipeptide")
    assert ala.cvs.names == ("phi 2", "psi 2")
    assert [c.atoms for c in ala.cvs] == [(4, 6, 8, 14), (6, 8, 14, 16)]
    x = ala.positions_nm[None]
    np.testing.assert_allclose(ala.compute_cvs(x), ala.compute_phi_psi(x), atol=1e-12)


def test_tetrapeptide_backbone_cvs_match_mdtraj(tetra):
    assert tetra.cvs.names == ("phi 2", "psi 2", "phi 3", "psi 3", "phi 4", "psi 4")
    traj = mdtraj.load(str(TETRA / "mid_C7ax.pdb"))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    expected = np.stack([phi[0], psi[0]], axis=1).reshape(-1)
    np.testing.assert_allclose(tetra.compute_cvs(traj.xyz)[0], expected, atol=1e-5)
    assert tetra.cvs.ramachandran_pairs() == [(2, 0, 1), (3, 2, 3), (4, 4, 5)]
    assert tetra.cvs.residue_groups() == [(0, 1), (2, 3), (4, 5)]


def test_no_backbone_molecule_has_no_default_cvs(nma):
    assert len(nma.cvs) == 0
    assert nma.compute_cvs(nma.positions_nm[None]).shape == (1, 0)


def test_named_torsions_and_errors(tetra, nma):
    cv = parse_cv("omega 3", tetra)
    assert isinstance(cv, Torsion) and cv.name == "omega 3"
    assert parse_cv("phi3", tetra).atoms == tetra.cvs["phi 3"].atoms
    with pytest.raises(ValueError, match=r"has no phi in residue 9; residues with phi: \[2, 3, 4\]"):
        parse_cv("phi 9", tetra)
    with pytest.raises(ValueError, match="expected a torsion name like 'phi 2'"):
        parse_cv("banana", tetra)
    with pytest.raises(ValueError, match=r"expected atom indices in \[0, 12\)"):
        parse_cv({"type": "distance", "name": "d", "atoms": [0, 40]}, nma)
    with pytest.raises(ValueError, match="expected 4 distinct atom indices"):
        Torsion("t", (1, 1, 2, 3))
    with pytest.raises(ValueError, match="expected unique names"):
        CollectiveVariables([Distance("d", (0, 1)), Distance("d", (1, 2))])


def test_distance_and_rmsd_values(nma):
    x = nma.positions_nm
    d = Distance("d", (0, 4)).compute(x[None])[0]
    assert d == pytest.approx(np.linalg.norm(x[0] - x[4]), rel=1e-12)
    heavy = tuple(int(i) for i in nma.heavy_atom_indices)
    rmsd = RMSD("r", x, heavy)
    # A rigid rotation + translation is RMSD 0; a uniform 0.1 nm shift of one of H heavy atoms is known.
    theta = 0.7
    rot = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    moved = x @ rot.T + 0.3
    assert rmsd.compute(moved[None])[0] == pytest.approx(0.0, abs=1e-9)
    assert rmsd.compute(x[None])[0] == pytest.approx(0.0, abs=1e-9)
    assert len(heavy) == 5  # N-methylacetamide: CH3-C(=O)-N-CH3
    bumped = x.copy()
    bumped[heavy[0], 0] += 0.6  # a large move: the Kabsch fit can only reduce it
    value = rmsd.compute(bumped[None])[0]
    assert 0 < value <= 0.6 / math.sqrt(len(heavy)) + 1e-12


def test_cv_file_with_relative_reference(tmp_path, nma, monkeypatch):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "ref.pdb").write_text((MOLS / "nma_cis.pdb").read_text())
    (folder / "cvs.json").write_text(json.dumps({"cvs": [
        {"type": "torsion", "name": "omega", "atoms": [0, 4, 6, 8]},
        {"type": "rmsd", "name": "rmsd cis", "reference": "ref.pdb"},
        {"type": "distance", "name": "d_CO", "atoms": [4, 5]}]}))
    monkeypatch.chdir(tmp_path)  # the reference is found relative to the file, not the cwd
    cvs = load_cvs(Path("inputs/cvs.json"), nma)
    cis = mdtraj.load(str(MOLS / "nma_cis.pdb")).xyz
    trans = mdtraj.load(str(MOLS / "nma_trans.pdb")).xyz
    v_cis, v_trans = cvs.compute(cis)[0], cvs.compute(trans)[0]
    assert abs(math.degrees(v_cis[0])) < 5 and abs(abs(math.degrees(v_trans[0])) - 180) < 5
    assert v_cis[1] == pytest.approx(0.0, abs=1e-3) and v_trans[1] > 0.01
    assert cvs.periodic.tolist() == [True, False, False]


def test_periodic_disc_across_180_and_radius():
    cvs = CollectiveVariables([Torsion("phi 2", (0, 1, 2, 3), residue=2), Torsion("psi 2", (1, 2, 3, 4), residue=2)])
    target = np.radians([-179.0, 170.0])
    state = endpoint_state(cvs, target, "target", angle_radius=0.75)
    # 2 degrees away across the +-180 wrap is a hit; the naive difference (358 deg) would not be.
    assert state.contains(np.radians([[179.0, 170.0]]), cvs)[0]
    # The radius is 0.75 rad: 0.74 rad away is in, 0.76 rad away is out.
    near = target + np.array([0.74, 0.0])
    far = target + np.array([0.76, 0.0])
    assert state.contains(near[None], cvs)[0] and not state.contains(far[None], cvs)[0]
    diag = target + 0.76 / math.sqrt(2) * np.array([1.0, 1.0])  # Euclidean in (phi, psi), not per axis
    assert not state.contains(diag[None], cvs)[0]


def test_endpoint_state_needs_every_residue(tetra):
    start = tetra.compute_cvs(mdtraj.load(str(TETRA / "C7eq_all.pdb")).xyz)[0]
    end = tetra.compute_cvs(mdtraj.load(str(TETRA / "mid_C7ax.pdb")).xyz)[0]
    target = endpoint_state(tetra.cvs, end, "target")
    assert len(target.regions) == 3
    assert target.contains(end[None], tetra.cvs)[0]
    assert not target.contains(start[None], tetra.cvs)[0]
    # Only residue 3 at the target, residues 2 and 4 far away: not a hit.
    mixed = start.copy()
    mixed[2:4] = end[2:4]
    mixed[0] += 1.5
    assert not target.contains(mixed[None], tetra.cvs)[0]


def test_box_region_periodic_wrap():
    cvs = CollectiveVariables([Torsion("chi", (0, 1, 2, 3))])
    box = MetastableState("b", regions=(Region(("chi",), bounds=((150.0, 210.0),)),))
    values = np.radians([[160.0], [-170.0], [179.9], [140.0], [-140.0]])
    np.testing.assert_array_equal(box.contains(values, cvs), [True, True, True, False, False])


def test_tetrapeptide_state_file(tetra):
    assert [s.name for s in tetra.states] == ["all_C7eq", "mid_C7ax", "mid_alpha_R", "nterm_alpha_R"]
    for name, expected in (("C7eq_all", 0), ("mid_C7ax", 1), ("alanine-tetrapeptide", 0), ("nterm_alpha_R", 3)):
        x = mdtraj.load(str(TETRA / f"{name}.pdb")).xyz
        assert tetra.assign_states(x)[0] == expected
    rep = Path(tetra.get_state("mid_C7ax").representative_pdb)
    assert rep.is_absolute() and rep.is_file()


def test_rmsd_state_and_yaml(tmp_path, nma):
    (tmp_path / "states.yaml").write_text(
        "states:\n"
        f"  - name: cis\n    rmsd: {{structure: {MOLS / 'nma_cis.pdb'}, max_nm: 0.02}}\n"
        f"  - name: trans\n    rmsd: {{structure: {MOLS / 'nma_trans.pdb'}, max_nm: 0.02}}\n"
    )
    system = MolecularSystem.from_pdb(MOLS / "n-methylacetamide.pdb", states=tmp_path / "states.yaml")
    assert system.cvs.names == ("rmsd cis", "rmsd trans")
    frames = np.concatenate([mdtraj.load(str(MOLS / f)).xyz for f in ("nma_cis.pdb", "nma_trans.pdb")])
    np.testing.assert_array_equal(system.assign_states(frames), [0, 1])
    rebuilt = MolecularSystem.from_spec(json.loads(json.dumps(system.spec())))
    np.testing.assert_allclose(rebuilt.compute_cvs(frames), system.compute_cvs(frames), atol=1e-9)
    np.testing.assert_array_equal(rebuilt.assign_states(frames), [0, 1])


def test_state_file_errors(tmp_path, tetra):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"states": [{"name": "a", "disc": {"phi 9": 0, "psi 9": 0}, "radius": 10}]}))
    with pytest.raises(ValueError, match=r"state 'a': cv: expected one of \['phi 2'"):
        load_states(bad, tetra)
    bad.write_text(json.dumps({"states": [{"name": "a", "disc": {"phi 2": 0}}]}))
    with pytest.raises(ValueError, match="expected a 'radius' with the disc"):
        load_states(bad, tetra)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="states file s.json: not valid JSON"):
        load_states(bad, tetra)
    bad.write_text(json.dumps({"states": [{"name": "a", "label": "x"}]}))
    with pytest.raises(ValueError, match="expected at least one region"):
        load_states(bad, tetra)
    # "phi" alone is ambiguous for three residues.
    with pytest.raises(KeyError, match="ambiguous"):
        tetra.cvs.index("phi")
    with pytest.raises(ValueError, match=r"values: expected shape \(F, 6\)"):
        tetra.states[0].contains(np.zeros((2, 2)), tetra.cvs)
    assert assign_states(np.zeros((1, 6)), tetra.states, tetra.cvs)[0] == -1
