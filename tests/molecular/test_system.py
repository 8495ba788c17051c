"""Systems: alanine dipeptide and any PDB, force fields, platforms, states, minimisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from spacetime_md.molecular import MolecularSystem, assign_states, known_systems, load_states, load_system, resolve_platform
from spacetime_md.molecular.system.states import MetastableState
from spacetime_md.molecular.system.build import system_data_path


@pytest.fixture(scope="module")
def vacuum():
    return load_system("alanine-dipeptide")


def test_alanine_dipeptide_topology(vacuum):
    assert vacuum.n_atoms == 22
    assert vacuum.phi_indices == (4, 6, 8, 14) and vacuum.psi_indices == (6, 8, 14, 16)
    assert [r.name for r in vacuum.topology.residues()] == ["ACE", "ALA", "NME"]
    assert vacuum.mdtraj_topology.n_atoms == 22 and vacuum.mdtraj_topology.n_residues == 3
    assert len(vacuum.heavy_atom_indices) == 10
    assert all(vacuum.elements[i] != "H" for i in vacuum.heavy_atom_indices)
    masses = vacuum.masses
    assert unit.is_quantity(masses)
    # C6 H12 N2 O2: 144.17 Da.
    assert abs(masses.value_in_unit(unit.dalton).sum() - 144.17) < 0.05
    assert vacuum.temperature == 300 * unit.kelvin
    assert abs(vacuum.kT.value_in_unit(unit.kilojoule_per_mole) - 2.4943) < 1e-3
    assert vacuum.positions.unit == unit.nanometer and vacuum.positions_nm.shape == (22, 3)


def test_vacuum_and_implicit_forces(vacuum):
    kinds = {type(f).__name__ for f in vacuum.openmm_system.getForces()}
    assert "GBSAOBCForce" not in kinds and "CustomGBForce" not in kinds
    nb = next(f for f in vacuum.openmm_system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    # HBonds constraints by default: 12 bonds to hydrogen.
    assert vacuum.openmm_system.getNumConstraints() == 12 and vacuum.constraints == "hbonds"
    implicit = load_system("alanine-dipeptide", solvent="implicit")
    kinds = {type(f).__name__ for f in implicit.openmm_system.getForces()}
    assert "GBSAOBCForce" in kinds and "CustomGBForce" not in kinds
    assert implicit.forcefield_files == ("amber99sbildn.xml", "amber99_obc.xml")
    flexible = load_system("alanine-dipeptide", constraints=None)
    assert flexible.openmm_system.getNumConstraints() == 0


def test_any_pdb(tmp_path):
    # Two TIP3P waters: no backbone, another force field given as XML files.
    src = app.PDBFile(str(Path(app.__file__).parent / "data" / "tip3p.pdb"))
    modeller = app.Modeller(src.topology, src.positions)
    modeller.delete(list(modeller.topology.residues())[2:])
    path = tmp_path / "water.pdb"
    with open(path, "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh)
    system = MolecularSystem.from_pdb(path, forcefield=["amber14-all.xml", "amber14/tip3p.xml"])
    assert system.n_atoms == 6 and system.name == "water"
    assert system.phi_indices is None
    with pytest.raises(ValueError, match="expected a peptide with backbone phi and psi"):
        system.compute_phi_psi(system.positions_nm[None])
    with pytest.raises(ValueError, match="expected metastable-state definitions"):
        system.assign_states(system.positions_nm[None])
    with pytest.raises(ValueError, match="expected the force field files .* to include a GB model"):
        MolecularSystem.from_pdb(path, forcefield=["amber14-all.xml", "amber14/tip3p.xml"], solvent="implicit")


def test_errors(tmp_path):
    with pytest.raises(ValueError, match=r"system: expected one of \['alanine-dipeptide', 'alanine-tetrapeptide'\], got 'chignolin'"):
        load_system("chignolin")
    assert "alanine-dipeptide" in known_systems()
    with pytest.raises(TypeError, match="temperature: expected an openmm.unit.Quantity in kelvin"):
        load_system("alanine-dipeptide", temperature=300.0)
    with pytest.raises(TypeError, match="temperature: expected a quantity compatible with kelvin"):
        load_system("alanine-dipeptide", temperature=300.0 * unit.nanometer)
    with pytest.raises(ValueError, match="solvent: expected one of"):
        load_system("alanine-dipeptide", solvent="water")
    with pytest.raises(ValueError, match="forcefield: expected one of"):
        load_system("alanine-dipeptide", forcefield="charmm-nonsense")
    with pytest.raises(ValueError, match="constraints: expected one of"):
        load_system("alanine-dipeptide", constraints="rigid")
    with pytest.raises(FileNotFoundError, match="path: expected an existing PDB file"):
        MolecularSystem.from_pdb(tmp_path / "missing.pdb")
    with pytest.raises(ValueError, match="cannot parameterise"):
        bad = tmp_path / "bad.pdb"
        bad.write_text("ATOM      1  C   UNK A   1       0.000   0.000   0.000  1.00  0.00           C\nEND\n")
        MolecularSystem.from_pdb(bad)


def test_platforms():
    assert resolve_platform(None, 22).getName() == "Reference"
    assert resolve_platform("auto", 22).getName() == "Reference"
    assert resolve_platform("cpu").getName() == "CPU"
    with pytest.raises(ValueError, match=r"platform: expected one of \['auto', .*'Reference'.*\], got 'TPU'"):
        resolve_platform("TPU")
    with pytest.raises(TypeError, match="platform: expected a platform name"):
        resolve_platform(3)


def test_states_and_representatives(vacuum):
    names = [s.name for s in vacuum.states]
    assert names == ["C7eq", "C7ax", "alpha_R"]
    assert vacuum.get_state("C5").name == "C7eq" and vacuum.get_state("c7eq/c5").name == "C7eq"
    with pytest.raises(KeyError, match="state: expected one of"):
        vacuum.get_state("alpha_L")
    record = json.loads(system_data_path("alanine_dipeptide/structures.json").read_text())
    for k, state in enumerate(vacuum.states):
        pdb = app.PDBFile(str(state.representative_pdb))
        x = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[None]
        assert vacuum.assign_states(x)[0] == k
        phi, psi = np.degrees(vacuum.compute_phi_psi(x)[0])
        entry = record["structures"][Path(state.representative_pdb).name]
        assert abs(phi - entry["phi_deg"]) < 0.1 and abs(psi - entry["psi_deg"]) < 0.1
    # The basins: C7eq/C5 near (-150, 160), C7ax near (+60, -40..20).
    assert vacuum.assign_states(np.zeros((1, 22, 3)) + vacuum.positions_nm)[0] == 0
    pp = np.radians([[-150.0, 160.0], [-80.0, 70.0], [60.0, -40.0], [60.0, 20.0], [-70.0, -40.0], [0.0, 0.0]])
    np.testing.assert_array_equal(assign_states(pp, vacuum.states), [0, 0, 1, 1, 2, -1])


def test_state_definition_errors(tmp_path):
    with pytest.raises(ValueError, match=r"radius_deg: expected a value in \(0, 180\]"):
        MetastableState("x", 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"phi_deg: expected degrees in \[-180, 180\]"):
        MetastableState("x", 200.0, 0.0, 10.0)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"states": [
        {"name": "a", "phi_deg": 0, "psi_deg": 0, "radius_deg": 50},
        {"name": "b", "phi_deg": 60, "psi_deg": 0, "radius_deg": 50}]}))
    with pytest.raises(ValueError, match="expected non-overlapping discs, got a and b"):
        load_states(path)
    with pytest.raises(FileNotFoundError, match="states file: expected an existing file"):
        load_states(tmp_path / "none.json")
    with pytest.raises(ValueError, match=r"phi_psi: expected shape \(F, 2\)"):
        assign_states(np.zeros((3, 3)), load_states())


def test_restrained_minimisation(vacuum):
    restraints = [(vacuum.phi_indices, 60 * unit.degree), (vacuum.psi_indices, -40 * unit.degree)]
    start = load_system("alanine-dipeptide").positions
    # Drag from C5 towards C7ax in steps (one jump would stall on a clash).
    x = vacuum.minimize(start, dihedral_restraints=[(vacuum.phi_indices, -60 * unit.degree), (vacuum.psi_indices, 60 * unit.degree)])
    x = vacuum.minimize(x, dihedral_restraints=[(vacuum.phi_indices, 0 * unit.degree), (vacuum.psi_indices, 0 * unit.degree)])
    x = vacuum.minimize(x, dihedral_restraints=restraints)
    phi, psi = np.degrees(vacuum.compute_phi_psi(x.value_in_unit(unit.nanometer)[None])[0])
    assert abs(phi - 60) < 3 and abs(psi + 40) < 3
    with pytest.raises(TypeError, match="positions: expected an openmm.unit.Quantity in nanometer"):
        vacuum.minimize(np.zeros((22, 3)))
    with pytest.raises(ValueError, match=r"positions: expected shape \(22, 3\)"):
        vacuum.minimize(np.zeros((21, 3)) * unit.nanometer)
    with pytest.raises(ValueError, match="dihedral_restraints: expected 4 atom indices"):
        vacuum.minimize(dihedral_restraints=[((1, 2, 3), 0 * unit.degree)])


def test_unit_and_misc_errors(vacuum, tmp_path):
    from spacetime_md.molecular.system.build import system_data_path as sdp
    from spacetime_md.molecular.system.units import to_md_array, to_md_float

    assert to_md_float("t", 1 * unit.picosecond, unit.femtosecond) == pytest.approx(1000.0)
    with pytest.raises(TypeError, match="t: expected a scalar quantity, got an array of shape"):
        to_md_float("t", [1.0, 2.0] * unit.kelvin, unit.kelvin)
    np.testing.assert_allclose(to_md_array("ts", [300 * unit.kelvin, 400 * unit.kelvin], unit.kelvin), [300, 400])
    with pytest.raises(TypeError, match="ts: expected quantities compatible with kelvin"):
        to_md_array("ts", [1.0, 2.0] * unit.nanometer, unit.kelvin)
    with pytest.raises(TypeError, match="ts: expected openmm.unit quantities in kelvin, got bare list"):
        to_md_array("ts", [300.0, 400.0], unit.kelvin)
    with pytest.raises(FileNotFoundError, match="package data: expected 'nothing/here.pdb' under spacetime_md/data"):
        sdp("nothing/here.pdb")
    with pytest.raises(ValueError, match="forcefield: expected at least one XML file"):
        load_system("alanine-dipeptide", forcefield=[])
    with pytest.raises(ValueError, match="temperature: expected > 0 K, got -5.0 K"):
        load_system("alanine-dipeptide", temperature=-5 * unit.kelvin)
    with pytest.raises(ValueError, match=r"coordinates: expected shape \(F, 22, 3\), got \(2, 21, 3\)"):
        vacuum.to_mdtraj(np.zeros((2, 21, 3)))
    assert vacuum.to_mdtraj(vacuum.positions).n_frames == 1
    with pytest.raises(ValueError, match="name: expected a non-empty state name"):
        MetastableState("", 0.0, 0.0, 10.0)
    path = tmp_path / "s.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="states file s.json: expected a top-level key 'states'"):
        load_states(path)
