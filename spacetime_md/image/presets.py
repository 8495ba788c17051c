"""Named geodesic settings and defaults of the Diffusion Edit Distance.

``IMAGE_PRESETS`` holds one :class:`~spacetime_md.core.GeodesicConfig` per use: ``fast`` (the
CLI's default, single pairs), ``matrix`` (many pairs: distance matrices, nearest neighbours)
and ``accurate``. Timings and spreads: ``docs/diffed.md`` (``benchmarks/bench_diffed.py``).

``fast`` solves with the exact divergence up to ``D = EXACT_LENGTH_MAX_DIM`` (``D`` denoiser
rows per curve point: no Hutchinson probes, so ``config.seed`` changes nothing and a rerun with
another seed gives the bitwise same distance; larger images fall back to 4 Hutchinson probes)
and ``clamp="abs"``: a negative segment term of the learned model costs its magnitude
instead of nothing, in the solver's objective and in the reported length alike. ``matrix`` and
``accurate`` keep Hutchinson probes and the segment clamp (negative terms count 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spacetime_md.core import GeodesicConfig

__all__ = [
    "DEFAULT_T_MIN",
    "DEFAULT_LENGTH_POINTS",
    "DEFAULT_LENGTH_PROBES",
    "DEFAULT_WARM_START",
    "DEFAULT_BATCH_PAIRS",
    "EXACT_LENGTH_MAX_DIM",
    "IMAGE_PRESETS",
    "resolve_preset",
]

#: Default anchor noise level (EDM sigma in model units; data in [-1, 1]).
DEFAULT_T_MIN = 0.1
#: Points of the final length evaluation.
DEFAULT_LENGTH_POINTS = 32
#: Hutchinson draws of the final length when the exact divergence is not used.
DEFAULT_LENGTH_PROBES = 16
#: ``length_divergence="auto"`` evaluates the final length exactly up to this ``D``
#: (``D`` denoiser rows per curve point).
EXACT_LENGTH_MAX_DIM = 1024
#: ``log_snr`` half-way along the warm-start curve (EDM sigma 0.61).
DEFAULT_WARM_START = 1.0
#: Pairs per batched solve in :func:`~spacetime_md.image.distance_matrix`.
DEFAULT_BATCH_PAIRS = 16

#: Named geodesic settings for images (see the module docstring).
IMAGE_PRESETS: dict[str, GeodesicConfig] = {
    "matrix": GeodesicConfig(n_nodes=4, n_points=(8,), n_probes=1, probe_layout="curve", max_steps=20,
                             min_steps=5, rtol=1e-3, divergence="hutchinson"),
    # exact divergence up to D = 1024 (64 denoiser rows per point for 8x8 digits): no probes, so
    # the distance does not depend on the seed; |t| for negative segment terms, in the objective
    # and the reported length
    "fast": GeodesicConfig(n_nodes=4, n_points=(8, 16), n_probes=4, probe_layout="curve", max_steps=30,
                           min_steps=5, rtol=1e-3, divergence="auto", exact_max_dim=EXACT_LENGTH_MAX_DIM,
                           clamp="abs"),
    "accurate": GeodesicConfig(n_nodes=6, n_points=(8, 16, 32), n_probes=8, probe_layout="curve", max_steps=100,
                               rtol=1e-4, divergence="hutchinson"),
}


def resolve_preset(name: str = "fast", *, seed: int = 0, max_steps: int | None = None) -> GeodesicConfig:
    """A copy of ``IMAGE_PRESETS[name]`` with ``seed`` (and ``max_steps``) replaced."""
    if name not in IMAGE_PRESETS:
        raise ValueError(f"preset: expected one of {sorted(IMAGE_PRESETS)}, got {name!r}")
    changes: dict[str, Any] = {"seed": seed}
    if max_steps is not None:
        changes["max_steps"] = max_steps
    return dataclasses.replace(IMAGE_PRESETS[name], **changes)


def _check_config(config):
    """``config``, or the ``fast`` preset for ``None``."""
    config = IMAGE_PRESETS["fast"] if config is None else config
    if not isinstance(config, GeodesicConfig):
        raise TypeError(f"config: expected a GeodesicConfig, got {type(config).__name__}")
    return config
