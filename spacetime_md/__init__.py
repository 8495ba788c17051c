"""spacetime_md: transition paths from the spacetime geometry of diffusion models.

Subpackages
-----------
core
    Model-agnostic geometry (schedule, exponential-family parameters, curve energy,
    curves, geodesic solver, annealed Langevin). Depends on torch only.
toy
    Analytic Gaussian mixtures and 2-D landscapes (test oracles, Table-1 benchmark).
molecular
    OpenMM systems, Boltzmann sampling, equivariant model, transition paths, export.
    The only subpackage that imports openmm, mdtraj and torch_geometric.
image
    Image denoiser adapters and diffusion edit distance.

Importing ``spacetime_md`` imports nothing heavy; import the subpackage you need.
"""

__version__ = "0.1.0"

from spacetime_md.errors import SpacetimeMDError

__all__ = ["SpacetimeMDError", "__version__"]
