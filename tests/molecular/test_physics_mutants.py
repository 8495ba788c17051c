"""Molecular rules the mutation run (benchmarks/mutation_test.py) found untested.

Reference values by hand or from mdtraj: the input check tells Angstrom from a wrong atom order
(median bond length in [0.5, 3] = Angstrom; more than 25 % of bonds over 0.3 nm = wrong order),
also for a single frame; the default hit length is 0.3 x the heavy-atom RMSD; the hit test's
default length tolerance is 0.05 nm.

Units: nm, radians.
"""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest

import spacetime_md
from spacetime_md.errors import TopologyMismatchError
from spacetime_md.molecular import load_system
from spacetime_md.molecular.system.cvs import CollectiveVariables, Distance
from spacetime_md.molecular.system.energies import check_bond_lengths
from spacetime_md.molecular.paths.hit import compute_target_hit, default_hit_length_nm

DATA = Path(spacetime_md.__file__).parent / "data" / "alanine_dipeptide"


@pytest.fixture(scope="module")
def system():
    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def c7eq():
    return mdtraj.load(str(DATA / "C7eq.pdb")).xyz.astype(np.float64)


def test_a_single_frame_in_angstrom_is_refused(system, c7eq):
    with pytest.raises(ValueError, match=r"x: expected nm, got coordinates that look like Angstrom"):
        check_bond_lengths("x", 10.0 * c7eq, system)


def test_a_median_bond_above_3_is_a_wrong_order_not_angstrom(system, c7eq):
    bonds = system.bonds
    median = np.median(np.linalg.norm(c7eq[0, bonds[:, 0]] - c7eq[0, bonds[:, 1]], axis=-1))
    # scaled so that the median bond is 4.5: outside [0.5, 3], every bond over 0.3 nm
    with pytest.raises(TopologyMismatchError, match=r"100% of the 21 topology bonds are longer than 0.3 nm"):
        check_bond_lengths("x", c7eq * (4.5 / median), system)


def test_a_third_of_the_bonds_broken_is_a_wrong_order(system, c7eq):
    # Move 7 hydrogens (one bond each) 1 nm away: 7 of 21 bonds broken (33 % > 25 %).
    elements = [a.element.symbol for a in mdtraj.load(str(DATA / "C7eq.pdb")).topology.atoms]
    hydrogens = [i for i, e in enumerate(elements) if e == "H"][:7]
    moved = c7eq.copy()
    moved[0, hydrogens] += np.array([1.0, 0.0, 0.0])
    with pytest.raises(TopologyMismatchError, match=r"in frame 0, 33% of the 21 topology bonds"):
        check_bond_lengths("x", moved, system)
    check_bond_lengths("x", c7eq, system)  # the real structure passes
    moved = c7eq.copy()
    moved[0, hydrogens[:5]] += np.array([1.0, 0.0, 0.0])  # 5 of 21 = 24 %: below the threshold
    check_bond_lengths("x", moved, system)


def test_default_hit_length_is_0_3_x_the_heavy_atom_rmsd(system, c7eq):
    c7ax = mdtraj.load(str(DATA / "C7ax.pdb"))
    heavy = [a.index for a in c7ax.topology.atoms if a.element.symbol != "H"]
    rmsd = mdtraj.rmsd(c7ax, mdtraj.load(str(DATA / "C7eq.pdb")), atom_indices=heavy)[0]  # optimal superposition
    expected = 0.3 * float(rmsd)
    assert default_hit_length_nm(system, c7eq[0], c7ax.xyz[0].astype(np.float64)) == pytest.approx(expected, rel=1e-4)
    assert expected > 0.01


def test_default_hit_length_tolerance_is_0_05_nm():
    cvs = CollectiveVariables([Distance("d", (0, 1))])
    target = np.array([0.5])
    hit, _ = compute_target_hit(cvs, np.array([[0.54], [0.46], [0.56], [0.44]]), target)
    assert hit.tolist() == [True, True, False, False]


def test_endpoint_states_of_a_prepared_problem_are_discs_around_each_endpoint(system):
    # prepare_geodesic_problem without a solve: the start/target states are 0.75-rad discs around
    # the endpoints' own (phi, psi) (mdtraj), and the hit length is 0.3 x the heavy-atom RMSD.
    import torch

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.paths.config import PathConfig
    from spacetime_md.molecular.paths.transition import prepare_geodesic_problem

    torch.manual_seed(0)
    model = EquivariantDenoiser(["X"] * system.n_atoms, system.bonds.tolist(), atom_names=list(system.atom_names),
                                hidden_channels=8, n_layers=1, n_rbf=4)
    problem = prepare_geodesic_problem(system, model, "C7eq", "C7ax", PathConfig())
    traj = {name: mdtraj.load(str(DATA / f"{name}.pdb")) for name in ("C7eq", "C7ax")}
    angles = {k: mdtraj.compute_dihedrals(t, [(4, 6, 8, 14), (6, 8, 14, 16)])[0].astype(np.float64)
              for k, t in traj.items()}
    probes = np.stack([angles["C7eq"], angles["C7ax"], angles["C7eq"] + [0.74, 0.0], angles["C7ax"] + [0.0, -0.76]])
    assert problem.start_state.contains(probes, problem.cvs).tolist() == [True, False, True, False]
    assert problem.target_state.contains(probes, problem.cvs).tolist() == [False, True, False, False]
    heavy = [a.index for a in traj["C7ax"].topology.atoms if a.element.symbol != "H"]
    rmsd = float(mdtraj.rmsd(traj["C7ax"], traj["C7eq"], atom_indices=heavy)[0])
    assert problem.hit_length_nm == pytest.approx(0.3 * rmsd, rel=1e-4)


def test_default_hit_length_of_a_small_molecule_uses_its_heavy_atoms():
    # N-methylacetamide has 5 heavy atoms (>= 3): the RMSD is over those, not over all 12 atoms.
    from spacetime_md.molecular.system.build import resolve_system

    root = Path(__file__).resolve().parents[2] / "systems" / "test_molecules"
    nma = resolve_system(str(root / "n-methylacetamide.pdb"))
    trans, cis = (mdtraj.load(str(root / f"nma_{k}.pdb")) for k in ("trans", "cis"))
    heavy = [a.index for a in trans.topology.atoms if a.element.symbol != "H"]
    assert len(heavy) == 5
    expected = 0.3 * float(mdtraj.rmsd(cis, trans, atom_indices=heavy)[0])
    got = default_hit_length_nm(nma, trans.xyz[0].astype(np.float64), cis.xyz[0].astype(np.float64))
    assert got == pytest.approx(expected, rel=1e-4)
    all_atoms = 0.3 * float(mdtraj.rmsd(cis, trans)[0])
    assert abs(all_atoms - expected) > 1e-3  # the choice of atoms matters here


def test_a_full_circle_box_contains_every_angle_and_a_single_disc_has_a_centre():
    import math

    from spacetime_md.molecular.system.cvs import Torsion
    from spacetime_md.molecular.system.states import MetastableState, Region

    cvs = CollectiveVariables([Torsion("phi", (0, 1, 2, 3)), Torsion("psi", (1, 2, 3, 4))])
    box = Region(("phi",), bounds=((-180.0, 180.0),))  # the whole circle, degrees
    values = np.array([[-math.pi, 0.0], [-1.0, 0.0], [0.0, 0.0], [3.0, 0.0], [math.pi - 1e-9, 0.0]])
    assert box.contains(values, cvs).tolist() == [True] * 5
    half = Region(("phi",), bounds=((0.0, 180.0),))
    assert half.contains(values, cvs).tolist() == [True, False, True, True, True]  # -180 deg is +180 deg
    state = MetastableState("C7eq", -120.0, 100.0, 50.0)
    np.testing.assert_allclose(state.centre, np.radians([-120.0, 100.0]), atol=1e-12)


def test_periodic_distance_wraps_and_touching_discs_are_allowed_overlapping_refused(tmp_path):
    import json
    import math

    from spacetime_md.molecular.system.states import load_states, periodic_distance

    assert float(periodic_distance(np.radians([179.0, 0.0]), np.radians([-179.0, 0.0]))) == pytest.approx(
        math.radians(2.0), abs=1e-12)
    assert float(periodic_distance(np.radians([0.0, 170.0]), np.radians([0.0, -100.0]))) == pytest.approx(
        math.radians(90.0), abs=1e-12)

    def write(states):
        path = tmp_path / "states.json"
        path.write_text(json.dumps({"states": [{"name": n, "phi_deg": p, "psi_deg": 0.0, "radius_deg": r}
                                               for n, p, r in states]}))
        return path

    # centres 100 deg apart, radii 50 + 50: the discs touch, allowed
    assert [s.name for s in load_states(write([("A", 0.0, 50.0), ("B", 100.0, 50.0)]))] == ["A", "B"]
    with pytest.raises(ValueError, match=r"states: expected non-overlapping discs, got A and B"):
        load_states(write([("A", 0.0, 50.0), ("B", 90.0, 50.0)]))


# --------------------------------------------------------------------------- collective variables


def test_torsion_distance_and_periodic_difference_by_hand(system, c7eq):
    import math

    from spacetime_md.molecular.system.cvs import Torsion, backbone_torsions

    traj = mdtraj.load(str(DATA / "C7eq.pdb"))
    frames = np.concatenate([c7eq, c7eq + 0.01 * np.random.default_rng(2).standard_normal(c7eq.shape)])
    expected = mdtraj.compute_dihedrals(mdtraj.Trajectory(frames.astype(np.float32), traj.topology),
                                        [(4, 6, 8, 14)])[:, 0]
    np.testing.assert_allclose(Torsion("phi", (4, 6, 8, 14)).compute(frames), expected, atol=1e-5)
    np.testing.assert_allclose(Distance("d").compute(frames), np.linalg.norm(frames[:, 0] - frames[:, 1], axis=-1),
                               atol=1e-12)  # default atoms (0, 1)
    cvs = CollectiveVariables([Torsion("phi", (4, 6, 8, 14)), Distance("d", (0, 1))])
    d = cvs.difference(np.array([math.radians(179.0), 0.5]), np.array([math.radians(-179.0), 0.2]))
    np.testing.assert_allclose(d, [math.radians(-2.0), 0.3], atol=1e-12)  # lengths are not wrapped
    route = np.array([[math.radians(170.0), 0.1], [math.radians(-170.0), 0.2], [math.radians(-150.0), 0.3]])
    np.testing.assert_allclose(cvs.unwrap(route)[:, 0], np.radians([170.0, 190.0, 210.0]), atol=1e-12)
    np.testing.assert_allclose(cvs.unwrap(route[None])[0], cvs.unwrap(route), atol=0)
    # named from the topology alone (no positions): ALA2's phi and psi, the preset's atoms
    torsions = backbone_torsions(traj.topology)
    assert [(t.name, t.atoms) for t in torsions] == [("phi 2", (4, 6, 8, 14)), ("psi 2", (6, 8, 14, 16))]


def test_cvs_by_name_and_a_heavy_atom_rmsd_of_a_small_molecule():
    from spacetime_md.molecular.system.build import resolve_system

    ala = load_system("alanine-dipeptide")
    named = CollectiveVariables.from_spec(["psi 2", "phi 2"], ala)
    assert [(c.name, c.atoms) for c in named] == [("psi 2", (6, 8, 14, 16)), ("phi 2", (4, 6, 8, 14))]
    root = Path(__file__).resolve().parents[2] / "systems" / "test_molecules"
    nma = resolve_system(str(root / "n-methylacetamide.pdb"))
    cvs = CollectiveVariables.from_spec([{"type": "rmsd", "name": "r", "reference": str(root / "nma_cis.pdb")}], nma)
    heavy = tuple(int(i) for i in nma.heavy_atom_indices)
    assert len(heavy) == 5 and cvs["r"].atoms == heavy  # 5 >= 3 heavy atoms: those, not all 12 atoms


def _tree_frame(system, bond_length: float) -> np.ndarray:
    """One frame whose every bond is ``bond_length`` exactly: the molecule is a tree, so atoms at even
    depth sit at the origin and atoms at odd depth at (bond_length, 0, 0)."""
    x = np.full((system.n_atoms, 3), np.nan)
    x[0] = 0.0
    bonds = [tuple(int(a) for a in b) for b in system.bonds]
    while np.isnan(x).any():
        for i, j in bonds:
            for a, b in ((i, j), (j, i)):
                if not np.isnan(x[a, 0]) and np.isnan(x[b, 0]):
                    x[b] = (bond_length if x[a, 0] == 0.0 else 0.0, 0.0, 0.0)
    return x[None]


def test_bond_length_thresholds_are_inclusive_for_angstrom_and_exclusive_for_broken(system):
    assert len(system.bonds) == system.n_atoms - 1  # a tree: the construction below is exact
    frame = _tree_frame(system, 3.0)
    np.testing.assert_array_equal(np.linalg.norm(frame[0, system.bonds[:, 0]] - frame[0, system.bonds[:, 1]], axis=-1),
                                  3.0)
    with pytest.raises(ValueError, match=r"look like Angstrom \(median bond length 3.000"):
        check_bond_lengths("x", frame, system)  # a median of exactly 3 is still Angstrom
    check_bond_lengths("x", _tree_frame(system, 0.3), system)  # bonds of exactly 0.3 nm are not broken


def test_length_cv_endpoint_states_use_the_hit_length():
    # N-methylacetamide has no CVs: the run's CVs are the RMSDs to the two endpoints. The target
    # state is within hit_length_nm (0.3 x heavy-atom RMSD) of the end's values, so the start is
    # outside it.
    import torch

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser
    from spacetime_md.molecular.paths.config import PathConfig
    from spacetime_md.molecular.paths.transition import prepare_geodesic_problem
    from spacetime_md.molecular.system.build import resolve_system

    root = Path(__file__).resolve().parents[2] / "systems" / "test_molecules"
    nma = resolve_system(str(root / "n-methylacetamide.pdb"))
    torch.manual_seed(0)
    model = EquivariantDenoiser(["X"] * nma.n_atoms, nma.bonds.tolist(), atom_names=list(nma.atom_names),
                                hidden_channels=8, n_layers=1, n_rbf=4)
    trans, cis = (mdtraj.load(str(root / f"nma_{k}.pdb")).xyz[0].astype(np.float64) for k in ("trans", "cis"))
    problem = prepare_geodesic_problem(nma, model, trans, cis, PathConfig())
    heavy = [int(i) for i in nma.heavy_atom_indices]
    rmsd = float(mdtraj.rmsd(mdtraj.load(str(root / "nma_cis.pdb")), mdtraj.load(str(root / "nma_trans.pdb")),
                             atom_indices=heavy)[0])
    assert problem.cvs.names == ("rmsd start", "rmsd end")
    assert problem.hit_length_nm == pytest.approx(0.3 * rmsd, rel=1e-4) and problem.hit_length_nm < 0.1
    values = np.asarray(problem.cvs.compute(np.stack([problem.start_nm, problem.end_nm])))
    assert problem.target_state.contains(values, problem.cvs).tolist() == [False, True]
    assert problem.start_state.contains(values, problem.cvs).tolist() == [True, False]


def test_rmsd_cv_needs_a_reference_and_three_atoms():
    from spacetime_md.molecular.system.cvs import RMSD

    with pytest.raises(ValueError, match=r"cv 'r': expected at least 3 atoms to fit, got 0"):
        RMSD("r")  # the default reference is empty
    with pytest.raises(ValueError, match=r"cv 'r': expected at least 3 atoms to fit, got 2"):
        RMSD("r", np.zeros((4, 3)), (0, 1))
    assert RMSD("r", np.eye(3)).atoms == (0, 1, 2)


def test_time_budget_sampler_equals_the_uniform_one_for_equal_steps():
    # sample_schedule with the same steps at every point is sample(): same seeds, same frames in
    # the same order (one step per point, and two, with a frame every step).
    import openmm

    from spacetime_md.molecular.paths.openmm_langevin import RestrainedLangevinSampler

    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    sampler = RestrainedLangevinSampler(system)
    centres = np.stack([np.full((2, 3), 0.1 * n) for n in range(4)])
    k = np.array([100.0, 200.0, 300.0, 400.0])
    for steps in (1, 2):
        uniform = sampler.sample(centres, k, centres[0], n_paths=2, n_steps=steps, record_every=1, seed=3)
        budget = sampler.sample_schedule(centres, k, np.full(4, steps), centres[0], n_paths=2, record_every=1, seed=3)
        assert budget.frames.shape == (2, 4 * steps, 2, 3)
        np.testing.assert_array_equal(budget.frames, uniform.frames)
        assert budget.n_force_evals == uniform.n_force_evals == 2 * 4 * steps


def test_omega_is_named_by_the_residue_of_its_carbonyl_carbon():
    # omega i = CA_i, C_i, N_i+1, CA_i+1 (mdtraj's atom order): residue i owns atoms 0 and 1
    tetra = load_system("alanine-tetrapeptide")
    top = tetra.mdtraj_topology
    cvs = CollectiveVariables.from_spec(["omega 2", "omega 3"], tetra)
    for cv, res_seq in zip(cvs, (2, 3)):
        ca, c, n, ca_next = (top.atom(a) for a in cv.atoms)
        assert (ca.name, c.name, n.name, ca_next.name) == ("CA", "C", "N", "CA")
        assert ca.residue.resSeq == c.residue.resSeq == res_seq and n.residue.resSeq == res_seq + 1
