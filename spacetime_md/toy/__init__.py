"""Analytic toy models: Gaussian mixtures with exact diffusion quantities, 2-D landscapes.

Imports torch only (never openmm, mdtraj or torch_geometric).
"""

from spacetime_md.toy.gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
