"""Sampling from a denoiser and the quality metrics against MD samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spacetime_md.cli import main
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.model.evaluation import compute_energies, evaluate_samples
from spacetime_md.molecular.model.generate import sample_model
from spacetime_md.molecular.model.metrics import (
    bond_length_errors,
    c7ax_population,
    jensen_shannon,
    phi_psi,
    ramachandran_histogram,
)
from spacetime_md.molecular.model.denoiser import center
from spacetime_md.molecular.model.pretrained import save_checkpoint

from ._model_helpers import _one_torch_thread, ALA_BONDS, ALA_TYPES, alanine_trajectory, tiny_model, write_synthetic_h5


@pytest.mark.parametrize("method, n_steps", [("heun", 100), ("ddim", 300), ("ancestral", 500)])
def test_samplers_reproduce_a_gaussian(method, n_steps):
    """x0 ~ N(0, s^2 P): exact denoiser alpha s^2 / (alpha^2 s^2 + sigma^2) P x."""
    s2 = 1.5**2

    def denoiser(x, log_snr):
        alpha, sigma = alpha_sigma(log_snr)
        return (alpha * s2 / (alpha**2 * s2 + sigma**2)).unsqueeze(-1) * center(x)

    gen = torch.Generator().manual_seed(0)
    xyz = sample_model(denoiser, 3000, dim=12, length_scale_nm=1.0, n_steps=n_steps, method=method,
                       log_snr_start=-8.0, log_snr_end=10.0, generator=gen)
    assert xyz.shape == (3000, 4, 3)
    assert np.abs(xyz.sum(1)).max() < 1e-10  # centred
    var = float((xyz**2).sum() / (3000 * 9))  # 9 = dimension of the centred subspace
    # relative standard error of the variance estimate: sqrt(2 / 27000) ~ 0.9 %
    assert abs(var / s2 - 1) < 0.04, f"{method}: sample variance {var:.3f}, expected {s2:.3f}"


def _two_mode_denoiser(minority: float, mu: float = 3.0, v: float = 0.09):
    """Exact denoiser of two Gaussians (variance v in the centred subspace of 4 atoms) at +-mu u,
    weights 1 - minority and minority; returns it with the unit direction u."""
    u = torch.tensor([1.0, 0, 0, -1.0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float64) / math.sqrt(2.0)

    def denoiser(x, log_snr):
        alpha, sigma = (t.unsqueeze(-1) for t in alpha_sigma(log_snr))
        x, var = center(x), alpha**2 * v + sigma**2
        means, logw = [], []
        for sign, weight in ((1.0, 1.0 - minority), (-1.0, minority)):
            residual = x - alpha * sign * mu * u
            logw.append(math.log(weight) - 0.5 * (residual**2).sum(-1, keepdim=True) / var)
            means.append(sign * mu * u + alpha * v / var * residual)
        w = torch.softmax(torch.cat(logw, -1), -1)
        return w[:, :1] * means[0] + w[:, 1:] * means[1]

    return denoiser, u


def test_predictor_corrector_restores_what_few_ancestral_steps_lose():
    """With 30 levels the ancestral sampler loses ~25 % of a Gaussian's variance and under-fills
    the 10 % mode of a mixture; three Langevin corrector steps per level (on the exact score)
    bring both back: a wrong score sign, step or noise factor in the corrector fails here."""
    s2 = 1.5**2

    def gaussian(x, log_snr):
        alpha, sigma = alpha_sigma(log_snr)
        return (alpha * s2 / (alpha**2 * s2 + sigma**2)).unsqueeze(-1) * center(x)

    def draw(denoiser, method):
        gen = torch.Generator().manual_seed(0)
        xyz = sample_model(denoiser, 3000, dim=12, length_scale_nm=1.0, n_steps=30, method=method, generator=gen)
        return torch.from_numpy(xyz.reshape(3000, 12))

    variance = {m: float((draw(gaussian, m) ** 2).sum()) / (3000 * 9) / s2 for m in ("ancestral", "pc")}
    assert variance["ancestral"] < 0.85, variance
    assert abs(variance["pc"] - 1.0) < 0.07, variance
    mixture, u = _two_mode_denoiser(0.1)
    minority = {m: float(((draw(mixture, m) @ u) < 0).double().mean()) for m in ("ancestral", "pc")}
    # binomial standard error sqrt(0.09 / 3000) ~ 0.55 %
    assert minority["ancestral"] < 0.09, minority
    assert abs(minority["pc"] - 0.1) < 0.017, minority
    # correcting only the low-noise end (log_snr >= 4) cannot undo what the early levels lost
    low_only = sample_model(gaussian, 3000, dim=12, length_scale_nm=1.0, n_steps=30, method="pc",
                            corrector_log_snr_min=4.0, generator=torch.Generator().manual_seed(0))
    assert abs(float((low_only**2).sum()) / (3000 * 9) / s2 - variance["ancestral"]) < 0.05
    with pytest.raises(ValueError, match="corrector_steps"):
        sample_model(gaussian, 2, dim=12, length_scale_nm=1.0, method="pc", corrector_steps=0)
    with pytest.raises(ValueError, match="corrector_scale"):
        sample_model(gaussian, 2, dim=12, length_scale_nm=1.0, method="pc", corrector_scale=1.5)


def test_sample_model_with_equivariant_model_and_messages():
    model = tiny_model()
    gen = torch.Generator().manual_seed(1)
    a = sample_model(model, 5, n_steps=4, batch_size=3, generator=gen)
    b = sample_model(model, 5, n_steps=4, batch_size=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (5, 22, 3) and np.array_equal(a, b)
    from spacetime_md.molecular.system.chirality import compute_chirality

    ala = (8, 6, 14, 10)  # (CA, N, C, CB)
    fixed = sample_model(model, 5, n_steps=4, batch_size=3, generator=torch.Generator().manual_seed(1), mirror_d=True,
                         chiral_atoms=ala)
    assert (compute_chirality(fixed, ala) > 0).all()
    is_l = compute_chirality(a, ala) > 0
    assert is_l.any() and not is_l.all()  # the untrained model makes both
    assert np.array_equal(fixed[is_l], a[is_l])
    assert np.allclose(fixed[~is_l], a[~is_l] * np.array([1.0, 1.0, -1.0]))
    # Expected sign -1: the L samples are the ones mirrored.
    flipped = sample_model(model, 5, n_steps=4, batch_size=3, generator=torch.Generator().manual_seed(1),
                           mirror_d=True, chiral_atoms=[ala], chiral_signs=[-1])
    assert (compute_chirality(flipped, ala) < 0).all() and np.array_equal(flipped[~is_l], a[~is_l])
    # No centre to check: nothing is mirrored.
    same = sample_model(model, 5, n_steps=4, batch_size=3, generator=torch.Generator().manual_seed(1),
                        mirror_d=True, chiral_atoms=[])
    assert np.array_equal(same, a)
    with pytest.raises(ValueError, match="chiral_atoms: expected the chiral centres to check with mirror_d=True, got None"):
        sample_model(model, 2, n_steps=2, mirror_d=True)
    with pytest.raises(ValueError, match=r"chiral_signs: expected 1 values of \+1 or -1, got \[0\]"):
        sample_model(model, 2, n_steps=2, mirror_d=True, chiral_atoms=ala, chiral_signs=[0])
    with pytest.raises(ValueError, match=r"chiral_atoms: expected \(centre, a, b, c\) quadruples, got \[\(1, 2, 3\)\]"):
        sample_model(model, 2, n_steps=2, mirror_d=True, chiral_atoms=[(1, 2, 3)])
    with pytest.raises(ValueError, match="method: expected 'heun', 'ancestral', 'ddim' or 'pc', got 'euler'"):
        sample_model(model, 2, method="euler")
    with pytest.raises(ValueError, match="log_snr_end: expected a value > log_snr_start = 3.0, got 2.0"):
        sample_model(model, 2, log_snr_start=3.0, log_snr_end=2.0)
    with pytest.raises(ValueError, match="n_samples, n_steps, batch_size: expected integers >= 1, got 0, 10, 5"):
        sample_model(model, 0, n_steps=10, batch_size=5)
    with pytest.raises(ValueError, match="dim, length_scale_nm: expected values"):
        sample_model(lambda x, l: x, 2)


def test_phi_psi_matches_mdtraj():
    import mdtraj

    traj = alanine_trajectory()
    rng = np.random.default_rng(0)
    xyz = traj.xyz + 0.02 * rng.standard_normal((5, 22, 3)).astype(np.float32)
    ours = phi_psi(xyz)
    ref = mdtraj.compute_dihedrals(mdtraj.Trajectory(xyz, traj.topology), [[4, 6, 8, 14], [6, 8, 14, 16]])
    assert np.allclose(ours, ref, atol=1e-5)
    with pytest.raises(ValueError, match=r"xyz: expected shape \(n_frames, N, 3\), got \(22, 3\)"):
        phi_psi(xyz[0])


def test_histogram_and_jensen_shannon():
    angles = np.array([[0.1, 0.1], [3.0, -3.0], [-0.1, 2 * np.pi + 0.1]])
    hist = ramachandran_histogram(angles, bins=4)
    assert hist.shape == (4, 4) and hist.sum() == pytest.approx(1.0)
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.0, 0.0, 0.5, 0.5])
    assert jensen_shannon(p, p) == 0.0
    assert jensen_shannon(p, q) == pytest.approx(math.log(2))
    r = np.array([0.25, 0.25, 0.25, 0.25])
    assert jensen_shannon(p, r) == pytest.approx(jensen_shannon(r, p))
    with pytest.raises(ValueError, match=r"q: expected the shape of p \(4,\), got \(3,\)"):
        jensen_shannon(p, q[:3])
    with pytest.raises(ValueError, match=r"angles: expected shape \(n_frames, 2\), got \(3,\)"):
        ramachandran_histogram(np.zeros(3))
    with pytest.raises(ValueError, match="angles: expected at least one frame, got 0"):
        ramachandran_histogram(np.zeros((0, 2)))


def test_c7ax_bonds_and_energies():
    xyz = alanine_trajectory().xyz.astype(np.float64)
    noisy = xyz + 0.01 * np.random.default_rng(2).standard_normal((50, 22, 3))
    mirror = xyz * np.array([1.0, 1.0, -1.0])  # phi -> -phi
    frac = c7ax_population(noisy)
    assert 0.0 < frac < 1.0  # the PDB has phi ~ 180 deg, noise puts it on either side
    assert frac + c7ax_population(noisy * np.array([1.0, 1.0, -1.0])) == pytest.approx(1.0)
    errors = bond_length_errors(np.repeat(xyz, 3, 0), xyz, ALA_BONDS)
    assert errors["mean_abs_error"] < 1e-12 and errors["rms_deviation"] < 1e-12
    stretched = xyz.copy()
    stretched[:, 9] = xyz[:, 8] + 1.1 * (xyz[:, 9] - xyz[:, 8])  # CA-HA 10 % longer
    err = bond_length_errors(stretched, xyz, ALA_BONDS)
    assert err["max_abs_error"] == pytest.approx(10 * 0.1 * np.linalg.norm(xyz[0, 9] - xyz[0, 8]))
    with pytest.raises(ValueError, match=r"bonds: expected shape \(n_bonds, 2\), got \(0,\)"):
        bond_length_errors(xyz, xyz, [])
    energy = compute_energies(np.concatenate([xyz, mirror, stretched]), alanine_trajectory().topology)
    assert np.isfinite(energy).all()
    assert energy[1] == pytest.approx(energy[0], abs=1e-6)  # the force field cannot see chirality
    assert energy[2] > energy[0] + 10.0  # a stretched C-H bond costs energy


def test_evaluate_samples_table():
    traj = alanine_trajectory()
    rng = np.random.default_rng(0)
    ref = traj.xyz + 0.003 * rng.standard_normal((40, 22, 3))
    samples = np.concatenate([ref[:9], ref[9:10] * np.array([1.0, 1.0, -1.0])])
    result = evaluate_samples(samples, ref[20:], traj.topology, reference_b=ref[:20], energies=True)
    assert result.fraction_l_model == pytest.approx(0.9) and result.fraction_l_md == 1.0
    assert result.passed()["fraction_l"] is False
    table = result.to_table()
    assert "| fraction L-chirality | 0.9000 | 1.0000 | >= 0.99 (NOT met) |" in table
    assert np.isfinite(result.rama_jsd_md)
    assert json.loads(json.dumps(result.to_dict()))["n_samples"] == 10
    with pytest.raises(ValueError, match=r"samples: expected shape \(n_frames >= 1, 22, 3\), got \(2, 21, 3\)"):
        evaluate_samples(np.zeros((2, 21, 3)), ref, traj.topology)
    with pytest.raises(ValueError, match="topology: expected an mdtraj topology or a system, got neither"):
        evaluate_samples(samples, ref)
    # Without a system there are no states: C7ax and the populations are n/a, with the reason.
    assert result.c7ax_model is None and "no state called C7ax" in result.c7ax_na_reason
    assert result.populations is None and "no states defined" in result.populations_na_reason
    assert "| C7ax population (phi > 0) | n/a (no state called C7ax" in table


def test_evaluate_samples_of_alanine_dipeptide_through_its_system():
    """The preset's CVs and states: the numbers of the (phi 2, psi 2) pair, C7ax = phi > 0, and
    state populations of model and MD; a mirrored sample is D at the one centre."""
    from spacetime_md.molecular import load_system

    system = load_system("alanine-dipeptide")
    rng = np.random.default_rng(3)
    base = system.positions_nm
    ref = base + 0.004 * rng.standard_normal((60, 22, 3))
    samples = ref[:20].copy()
    samples[:5] *= np.array([1.0, 1.0, -1.0])  # phi -> -phi, L -> D
    result = evaluate_samples(samples, ref[30:], system=system, reference_b=ref[:30], energies=False)
    pp = phi_psi(samples)
    assert result.c7ax_model == pytest.approx(np.mean(pp[:, 0] > 0)) == pytest.approx(0.25)
    assert result.c7ax_md == 0.0 and result.c7ax_na_reason is None
    assert result.rama_jsd == pytest.approx(jensen_shannon(ramachandran_histogram(pp), ramachandran_histogram(phi_psi(ref[30:]))))
    assert [r["residue"] for r in result.rama_jsd_by_residue] == [2]
    assert result.rama_jsd_by_residue[0]["cvs"] == ["phi 2", "psi 2"]
    assert result.fraction_l_model == pytest.approx(0.75) and result.fraction_l_md == 1.0
    assert result.chirality_by_centre == [{"name": "CA ALA2", "atoms": [8, 6, 14, 10], "residue": 2, "alpha": True,
                                           "expected": "L", "fraction_model": 0.75, "fraction_md": 1.0}]
    pops = result.populations
    assert set(pops) == {"C7eq", "C7ax", "alpha_R", "phi>0", "C7ax/C7eq"}
    labels = system.assign_states(samples)
    assert pops["C7eq"]["model"]["fraction"] == pytest.approx(np.mean(labels == 0))
    assert pops["C7eq"]["md"]["fraction"] == 1.0
    table = result.to_table()
    assert "| Ramachandran JSD (nats, 36x36) |" in table and "| population C7eq |" in table
    assert "| ratio C7ax/C7eq |" in table and "| C7ax population (phi > 0) | 0.2500 |" in table
    assert "| fraction L-chirality | 0.7500 | 1.0000 | >= 0.99 (NOT met) |" in table
    assert "| energy median (kJ/mol) | n/a | n/a |" in table


def test_cli_evaluate(tmp_path, capsys):
    data = write_synthetic_h5(tmp_path / "samples.h5", n_frames=30, noise_nm=0.005)
    ckpt = save_checkpoint(tmp_path / "m.pt", tiny_model(atom_names=[a.name for a in alanine_trajectory().topology.atoms]))
    out_json = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--n-samples", "6", "--n-steps", "5",
                 "--json", str(out_json), "--save-samples", str(tmp_path / "model_samples.h5")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Ramachandran JSD (nats, 36x36) |" in printed and "held-out MD 3" in printed
    assert json.loads(out_json.read_text())["metrics"]["n_samples"] == 6
    import mdtraj

    assert mdtraj.load(str(tmp_path / "model_samples.h5")).n_frames == 6
    wrong = save_checkpoint(tmp_path / "w.pt", tiny_model(atom_names=["X"] * 22))
    assert main(["evaluate", "--checkpoint", str(wrong), "--data", data, "--n-samples", "2", "--n-steps", "2"]) == 2
    assert "data: expected the model's 22 atoms" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--num-threads", "0"]) == 2
    assert "--num-threads: expected an integer in [1, 256], got 0" in capsys.readouterr().err


def test_cli_evaluate_against_an_independent_reference(tmp_path, capsys):
    data = write_synthetic_h5(tmp_path / "samples.h5", n_frames=30, noise_nm=0.005)
    (tmp_path / "ref").mkdir()
    ref = write_synthetic_h5(tmp_path / "ref" / "samples.h5", n_frames=12, noise_nm=0.005)
    ckpt = save_checkpoint(tmp_path / "m.pt", tiny_model(atom_names=[a.name for a in alanine_trajectory().topology.atoms]))
    out_json = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--reference", str(tmp_path / "ref"),
                 "--n-samples", "4", "--n-steps", "3", "--no-energies", "--json", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"reference MD: all 12 frames of {ref}" in printed and "held-out MD 12" in printed
    assert json.loads(out_json.read_text())["reference"].startswith("all 12 frames")
    import mdtraj

    traj = mdtraj.load(str(ref))
    mdtraj.Trajectory(traj.xyz[:, :21], traj.topology.subset(range(21))).save_hdf5(str(tmp_path / "bad.h5"))
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--reference", str(tmp_path / "bad.h5"),
                 "--n-samples", "2", "--n-steps", "2"]) == 2
    assert "reference: expected the data's 22 atoms" in capsys.readouterr().err


def test_cli_evaluate_with_autoguidance(tmp_path, capsys):
    data = write_synthetic_h5(tmp_path / "samples.h5", n_frames=30, noise_nm=0.005)
    names = [a.name for a in alanine_trajectory().topology.atoms]
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", tiny_model(atom_names=names))
    guide = save_checkpoint(tmp_path / "g.pt", tiny_model(atom_names=names))
    out_json = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--guide", str(guide), "--guidance-weight", "3",
                 "--data", data, "--n-samples", "4", "--n-steps", "4", "--no-energies", "--json", str(out_json)])
    assert code == 0
    metrics = json.loads(out_json.read_text())["metrics"]
    assert metrics["sampler"].endswith("autoguided (w = 3 on log_snr [-2, 8))")
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", "alanine-dipeptide-guided", "--guidance-log-snr-max", "5",
                 "--data", data, "--n-samples", "2", "--n-steps", "3", "--no-energies", "--json", str(out_json)])
    assert code == 0
    assert json.loads(out_json.read_text())["metrics"]["sampler"].endswith(
        "autoguided (w = 2.5 on log_snr [-2, 5), sigmoid edges of width 0.5)")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--guidance-weight", "2", "--data", data]) == 2
    assert "guide: expected --guide (or a guided --checkpoint) with --guidance-weight, got none" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", "alanine-dipeptide-guided", "--guide", str(guide), "--data", data]) == 2
    assert "brings its own guide" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--guide", str(guide), "--guidance-weight", "-1",
                 "--data", data]) == 2
    assert "weight: expected a finite number >= 0, got -1.0" in capsys.readouterr().err


def test_cli_evaluate_with_a_langevin_corrector(tmp_path, capsys):
    data = write_synthetic_h5(tmp_path / "samples.h5", n_frames=30, noise_nm=0.005)
    ckpt = save_checkpoint(tmp_path / "m.pt", tiny_model(atom_names=[a.name for a in alanine_trajectory().topology.atoms]))
    out_json = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--n-samples", "4", "--n-steps", "4",
                 "--method", "pc", "--corrector-steps", "2", "--no-energies", "--json", str(out_json)])
    assert code == 0
    sampler = json.loads(out_json.read_text())["metrics"]["sampler"]
    assert sampler == "pc, 4 steps, log_snr -8.0..10.0, 2 Langevin corrector steps of 0.3 sigma^2 per level"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--n-samples", "4", "--n-steps", "4",
                 "--method", "pc", "--corrector-log-snr-min", "4", "--no-energies", "--json", str(out_json)])
    assert code == 0
    assert json.loads(out_json.read_text())["metrics"]["sampler"].endswith("0.3 sigma^2 per level from log_snr 4")
    capsys.readouterr()
    from spacetime_md.commands.evaluate import RANGES
    from spacetime_md.molecular.model.generate import CORRECTOR_SCALE, CORRECTOR_STEPS

    # the --help defaults are the library's
    assert f"(default {CORRECTOR_STEPS})" in RANGES["corrector_steps"].help
    assert f"(default {CORRECTOR_SCALE:g})" in RANGES["corrector_scale"].help
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--corrector-steps", "2"]) == 2
    assert "method: expected --method pc with --corrector-steps, got --method ancestral" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--method", "pc",
                 "--corrector-scale", "0"]) == 2
    assert "--corrector-scale" in capsys.readouterr().err
