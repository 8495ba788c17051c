"""Fixtures shared by the committor and OpenPathSampling tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def system():
    from spacetime_md.molecular import load_system

    return load_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def drive_path(system):
    """C7eq (-150, 160) -> C7ax (60, -40) through phi = 0 by restrained minimisations (24 frames);
    its relaxed barrier is near phi = -5 deg."""
    from spacetime_md.molecular.committor import compute_dihedral_drive_path

    return compute_dihedral_drive_path(system, "C7eq", "C7ax", n_frames=24)
