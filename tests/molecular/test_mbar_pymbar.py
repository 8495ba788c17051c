"""The hand-written MBAR solver (reference populations) agrees with pymbar on umbrella data."""

from __future__ import annotations

import numpy as np
import pytest

from spacetime_md.molecular.sampling.reference import solve_mbar


def test_solve_mbar_matches_pymbar():
    pymbar = pytest.importorskip("pymbar")
    rng = np.random.default_rng(0)
    n_windows, n = 8, 150
    centres = np.linspace(-np.pi, np.pi, n_windows, endpoint=False)
    x = np.concatenate([rng.normal(c, 0.3, n) for c in centres])
    d = (x[None] - centres[:, None] + np.pi) % (2 * np.pi) - np.pi
    bias = 0.5 * 20.0 * d**2  # reduced umbrella bias (kT) of every sample under every window
    n_k = np.full(n_windows, n)
    f, log_w = solve_mbar(bias, n_k)
    mbar = pymbar.MBAR(bias, n_k, initialize="zeros")
    np.testing.assert_allclose(f, mbar.f_k - mbar.f_k[0], atol=1e-7)
    # unbiased weights from pymbar's free energies: w_n = 1 / sum_k N_k exp(f_k - bias_kn), normalised
    log_w_pymbar = -np.log((n_k[:, None] * np.exp(mbar.f_k[:, None] - bias)).sum(0))
    log_w_pymbar -= np.log(np.exp(log_w_pymbar).sum())
    np.testing.assert_allclose(log_w, log_w_pymbar, atol=1e-7)
