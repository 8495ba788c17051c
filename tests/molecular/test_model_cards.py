"""The shipped models' card metrics, recomputed from the weights (not read from the JSON).

Metrics are computed here independently of ``evaluation.py``: (phi, psi) with mdtraj, the
Ramachandran JSD with scipy on 36 x 36 bins (the card's), the L fraction from the sign of the
C-alpha's signed volume compared with the shipped C7eq structure (an L-alanine). The reference
histogram is the shipped ``ramachandran_reference.npz`` (72 x 72 counts of 50 000 Boltzmann
samples, summed into 36 x 36); the cards used an independent 20 000-frame run, whose JSD to a
second MD run is 0.02 at 2000 samples.

Samples are drawn with ``sample_model`` (ancestral), the cards' sampler.
"""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

import spacetime_md
from spacetime_md.molecular.model.generate import sample_model
from spacetime_md.molecular.model.pretrained import load_pretrained, pretrained_path

DATA = Path(spacetime_md.__file__).parent / "data" / "alanine_dipeptide"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
CA, N, C, CB = 8, 6, 14, 10


def _card(name: str) -> dict:
    return json.loads(pretrained_path(name).with_suffix(".json").read_text())


def _reference_counts() -> np.ndarray:
    with np.load(DATA / "ramachandran_reference.npz") as data:
        counts, edges = data["counts"].astype(np.float64), data["phi_edges"]
    np.testing.assert_allclose(edges, np.linspace(-np.pi, np.pi, 73), atol=1e-12)
    return counts.reshape(36, 2, 36, 2).sum(axis=(1, 3))


def _ramachandran_counts(xyz: np.ndarray) -> np.ndarray:
    topology = mdtraj.load(str(DATA / "alanine-dipeptide.pdb")).topology
    angles = mdtraj.compute_dihedrals(mdtraj.Trajectory(xyz.astype(np.float32), topology), [PHI, PSI])
    edges = np.linspace(-np.pi, np.pi, 37)
    return np.histogram2d(angles[:, 0], angles[:, 1], bins=[edges, edges])[0]


def _jsd(p: np.ndarray, q: np.ndarray) -> float:
    return float(jensenshannon(p.ravel(), q.ravel())) ** 2  # scipy returns the square root, natural log


def _fraction_l(xyz: np.ndarray) -> float:
    def sign(x):
        a, b, c = x[..., N, :] - x[..., CA, :], x[..., C, :] - x[..., CA, :], x[..., CB, :] - x[..., CA, :]
        return np.sign(np.einsum("...i,...i->...", np.cross(a, b), c))

    l_sign = sign(mdtraj.load(str(DATA / "C7eq.pdb")).xyz[0].astype(np.float64))
    return float(np.mean(sign(xyz) == l_sign))


def _finite_sample_floor(reference: np.ndarray, n: int, draws: int = 400) -> float:
    """Mean JSD of ``n`` samples drawn from the reference histogram itself (the bias at that n)."""
    rng = np.random.default_rng(0)
    p = reference.ravel() / reference.sum()
    return float(np.mean([_jsd(rng.multinomial(n, p).astype(np.float64), reference) for _ in range(draws)]))


def test_small_sample_jsd_and_chirality_of_the_default_model():
    # 128 samples, 50 ancestral steps; the JSD minus its finite-sample floor at n = 128 (0.16).
    # Measured excess over generator seeds 0 / 1 / 2: 0.030 / 0.013 / -0.016 for the shipped
    # guided checkpoint (card JSD 0.03-0.04), 0.070 / 0.055 / 0.056 for its model without the guide,
    # 0.096 / 0.088 / 0.086 for the retired 12k default; the bound 0.05 lies between them, so a
    # guide that is not applied (or a model trained like the 12k one) fails.
    card = _card("alanine-dipeptide")["evaluation"]
    model = load_pretrained("alanine-dipeptide")
    xyz = sample_model(model, 128, n_steps=50, method="ancestral", generator=torch.Generator().manual_seed(0))
    reference = _reference_counts()
    excess = _jsd(_ramachandran_counts(xyz), reference) - _finite_sample_floor(reference, 128)
    assert excess < 0.05, excess
    assert card["rama_jsd"] <= 0.05
    # card: 1.0 L; at most 2 D of 128 (a model with 2 % D has P < 0.26 of passing, 5 %: < 0.01)
    assert _fraction_l(xyz) >= 126 / 128


def test_fraction_l_detects_a_mirror_image():
    xyz = mdtraj.load(str(DATA / "C7ax.pdb")).xyz.astype(np.float64)
    assert _fraction_l(xyz) == 1.0
    assert _fraction_l(xyz * np.array([1.0, 1.0, -1.0])) == 0.0


@pytest.mark.slow
def test_card_metrics_recomputed_from_the_weights():
    # The card's own settings: 2000 samples, 300 ancestral steps, log_snr -8..10 (about 25 min on
    # one core: the guided checkpoint evaluates two models).
    card = _card("alanine-dipeptide")
    evaluation = card["evaluation"]
    assert evaluation["sampler"].startswith("ancestral, 300 steps, log_snr -8.0..10.0")
    n = evaluation["n_samples"]
    xyz = sample_model(load_pretrained("alanine-dipeptide"), n, n_steps=300, method="ancestral", log_snr_start=-8.0,
                       log_snr_end=10.0, generator=torch.Generator().manual_seed(1))
    jsd = _jsd(_ramachandran_counts(xyz), _reference_counts())
    # another seed and another reference run: within the MD-vs-MD JSD (0.02) plus sampling noise
    assert abs(jsd - evaluation["rama_jsd"]) < 0.03, (jsd, evaluation["rama_jsd"])
    fraction_l = _fraction_l(xyz)
    sigma = max(np.sqrt(evaluation["fraction_l_model"] * (1 - evaluation["fraction_l_model"]) / n), 1 / n)
    assert fraction_l >= evaluation["fraction_l_model"] - 3 * sigma
    assert fraction_l >= card["targets"]["fraction_l_min"]
