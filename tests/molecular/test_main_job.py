"""The README's main job with the shipped model and defaults (~25 s): the product's first command."""

from __future__ import annotations

import json

import numpy as np

from spacetime_md import cli


def test_readme_main_command_meets_the_path_targets(tmp_path, capsys):
    out = tmp_path / "ala2"
    code = cli.main(["paths", "--system", "alanine-dipeptide", "--start", "C7eq", "--end", "C7ax",
                     "--n-paths", "8", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("curve")
    report = json.loads((out / "report.json").read_text())
    geo, straight = report["geodesic"], report["straight"]
    assert geo["target_hit_rate"] == 1.0 and geo["chirality_kept_fraction"] == 1.0
    assert geo["max_energy_kj_mol"]["mean"] < straight["max_energy_kj_mol"]["mean"]
    assert report["geodesic_curve"]["log_snr_min"] < 3.0  # the geodesic goes through noise
    config = json.loads((out / "config.json").read_text())
    assert config["torch_num_threads"] == 1 and config["path_config"]["n_paths"] == 8
    assert report["cv_names"] == ["phi 2", "psi 2"]  # the old (phi, psi) of ALA2, by name
    assert len(report["geodesic"]["per_path"][0]["final_phi_psi_rad"]) == 2
    assert report["plots"] == ["ramachandran.png", "energies.png", "log_snr.png"]
    for name in ("topology.pdb", "geodesic_all_paths.h5", "straight_all_paths.h5", "ramachandran.png",
                 "energies.png", "log_snr.png", "geodesic.npz", "system.json"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("geodesic_path*.dcd"))) == 8
    import mdtraj

    traj = mdtraj.load(str(out / "geodesic_path000.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_atoms == 22 and traj.n_frames == 64 * 300 // 20
    assert np.isfinite(traj.xyz).all()
