"""Helpers shared by the geodesic tests (single and batched solver)."""

from __future__ import annotations

import itertools
from typing import Any

from spacetime_md.core import GeodesicConfig


def stops_as_documented(history: list[dict[str, Any]], config: GeodesicConfig) -> list[bool]:
    """Check from a solve's ``history`` that every stage stopped where ``GeodesicConfig`` says.

    The documented rule: a stage converges at the first step where the best objective so far
    improved by at most ``rtol * |best|`` over the last ``patience`` steps (``10 * rtol`` in the
    coarse stages), the test applying after ``min_steps`` steps of the first stage (one step in
    later stages; with constraints, once their weights are at full value); otherwise it stops
    after ``max_steps``. Returns, per stage, whether it converged.
    """
    patience = config.resolved_patience
    converged = []
    for stage in range(len(config.n_points)):
        objective = [h["objective"] for h in history if h["stage"] == stage]
        best = list(itertools.accumulate(objective, min))
        rtol = config.rtol if stage == len(config.n_points) - 1 else 10 * config.rtol
        min_steps = config.min_steps if stage == 0 else 1
        first = next((i for i in range(len(best)) if i + 1 > max(patience, min_steps)
                      and best[i - patience] - best[i] <= rtol * max(abs(best[i]), 1e-12)), None)
        if first is None:
            assert len(objective) == config.max_steps, (stage, len(objective), best)
        else:
            assert len(objective) == first + 1, (stage, len(objective), first, best)
        converged.append(first is not None)
    return converged
