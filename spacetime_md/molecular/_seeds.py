"""OpenMM random seeds derived from a run seed and indices."""

from __future__ import annotations

import numpy as np


def openmm_seed(*keys: int) -> int:
    """A seed in ``[1, 2**31 - 1)`` (never 0: OpenMM's "pick one") mixed from integer ``keys``.

    Different key tuples give unrelated streams (``numpy.random.SeedSequence`` mixing), so, for
    example, path 1 of run seed 0 and path 0 of run seed 1 do not share their noise.
    """
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint32)[0]
    return int(state % (2**31 - 2)) + 1
