"""Project-wide exception types.

User mistakes raise ``ValueError`` / ``TypeError`` (or a ``FileNotFoundError``) with a
message of the form "expected X, got Y". Failures that are not a bad argument (a NaN
appearing during optimisation, a corrupt checkpoint, a topology that does not match a
model) raise a :class:`SpacetimeMDError` subclass. The CLI prints any of these as one
line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "SpacetimeMDError",
    "NonFiniteError",
    "CheckpointError",
    "TopologyMismatchError",
]


class SpacetimeMDError(Exception):
    """Base class of the errors raised by spacetime_md itself."""


class NonFiniteError(SpacetimeMDError, FloatingPointError):
    """A NaN or infinity appeared during a computation (optimisation, sampling)."""


class CheckpointError(SpacetimeMDError):
    """A checkpoint file is corrupt, incomplete or belongs to another system/version."""


class TopologyMismatchError(SpacetimeMDError, ValueError):
    """Coordinates or structures do not match the expected topology."""
