"""A fixed budget of simulated time per path, spent where the annealed target changes (issue 21).

With ``PathConfig(path_time_ps=...)`` (``spacetime-md paths --path-time-ps``) every path runs
exactly ``round(path_time_ps / timestep)`` OpenMM steps in total, and the curve's ``n_points``
restraint points share them unevenly. Point ``n`` (its restraint is switched on after point
``n - 1``) gets steps in proportion to the weight

    w_n = (1 - f) * kl_n / sum(kl) + f * jump_n / sum(jump)

- ``kl_n`` is the KL divergence between the harmonic restraint targets of points ``n - 1`` and
  ``n``, ``N(c, kT/k I)`` in ``D = 3N`` dimensions (:func:`restraint_kl`), i.e. how far the
  annealed target moves in the restraint alone (the classical constant-thermodynamic-speed
  schedule, model free);
- ``jump_n`` is the heavy-atom RMSD between the minima of force field + restraint at points
  ``n - 1`` and ``n`` (each minimised from the previous one), summed over a window of
  ``+- width`` points (:func:`jump_profile`; ``width = n_points / 16``). It is large where the restrained landscape switches
  basin (for C5 -> C7ax the phi flip), so the molecule gets time before and after the switch to
  cross thermally instead of being dragged late by a stiff restraint. Each jump is first weighted
  by ``exp(climb / kT)`` (:func:`barrier_factors`), ``climb`` being how far the restrained minima
  rose in force-field energy before they switched: by Kramers' law a higher barrier needs more
  time to cross.

Every point gets at least one step and the steps sum to the budget exactly
(:func:`allocate_steps`, largest remainders). From the start of its window to the jump across the
highest barrier (the largest jump times its Boltzmann factor) the restraint constants are halved
(:func:`soften_before_jump`), so the molecule can find the
lower saddle itself rather than follow the curve's minima over a higher one. Recorded energies
stay the force field's energies of the recorded frames; the minimisations only choose the step
counts and the softened points.

Measured on alanine dipeptide C5 -> C7ax at 1 ps (docs/peer_protocol.md, 64 paths, seeds 0 and
1, every step a frame): uniform steps (friction 10/ps) hit the target in 25 % of the paths with
ETS 71-76 kJ/mol; this schedule with ``f = 0.8``, ``width = 4`` of 64 points and friction 1/ps
(:data:`BUDGET_FRICTION_PER_PS`) in 84-100 %, with ETS 31-36 where the geodesic's restrained
minima switch basin at phi ~ 0 and 41-58 where they switch at phi ~ 180 (the higher saddle): the
curve's route sets what is left.

Once a path has arrived across the largest jump (its heavy atoms closer to the last restrained
minimum than to the one before the jump, checked every 10 steps), its friction becomes
``PathConfig.arrival_friction_per_ps`` (default 10/ps, :func:`arrival_rule`): the molecule crosses
at the low friction and is cooled where it arrives. With the endpoint structures quenched
(``PathConfig.quench_endpoints``) this takes ETS at 1 ps from 30.8 / 33.7 to 24.2 / 25.8 kJ/mol
(seeds 0 / 1; 27.6-31.5 on held-out seeds and endpoints), docs/peer_protocol.md.

The barrier weighting of the jumps (:func:`barrier_factors`) and the softening before the jump
across the highest barrier were measured with the guided default model, whose geodesic's minima
jump twice (within the phi < 0 basin, then across phi ~ 0): THP 92.2-95.3 % -> 100 %, ETS 28.2 /
28.8 -> 26.5 / 26.6 kJ/mol and RMSD 0.26 / 0.32 -> 0.17 / 0.18 A on seeds 0 / 1 (ETS mean over 16
seeds 26.7), docs/peer_protocol.md.

Units inside: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.paths.openmm_langevin import Arrival

__all__ = [
    "BUDGET_ARRIVAL_FRICTION_PER_PS",
    "BUDGET_FRICTION_PER_PS",
    "BUDGET_JUMP_FRACTION",
    "BUDGET_SOFTEN",
    "BUDGET_JUMP_WIDTH",
    "BUDGET_BARRIER_SCALE",
    "barrier_factors",
    "PATH_TIME_RANGE_PS",
    "allocate_steps",
    "arrival_rule",
    "budget_steps",
    "compute_budget_schedule",
    "jump_profile",
    "restraint_kl",
    "sample_budget",
    "soften_before_jump",
]

#: Share of the budget placed by the restrained-minimum jumps (the rest follows the restraint KL).
BUDGET_JUMP_FRACTION = 0.8
#: Half-width of the window that spreads each jump's weight, as a fraction of the curve points
#: (4 points of the default 64).
BUDGET_JUMP_WIDTH = 1 / 16
#: Each jump's weight is multiplied by ``exp(BUDGET_BARRIER_SCALE * climb / kT)`` (see
#: :func:`barrier_factors`): 1 is Kramers' law, the crossing time growing with the Boltzmann
#: factor of the barrier (measured at 1 ps, docs/peer_protocol.md); 0 ignores the energies.
BUDGET_BARRIER_SCALE = 1.0
#: Restraint constants are multiplied by this in the jump window up to the largest jump.
BUDGET_SOFTEN = 0.5
#: The jump window: points whose spread jump exceeds this fraction of its maximum.
BUDGET_WINDOW_LEVEL = 0.2
#: Friction (1/ps) measured best at 1 ps per path (docs/peer_protocol.md).
BUDGET_FRICTION_PER_PS = 1.0
#: Friction (1/ps) of a path once it has arrived across the largest restrained-minimum jump
#: (:func:`arrival_rule`): the molecule crosses at the low friction above and is then cooled in
#: the target basin (measured at 1 ps, docs/peer_protocol.md).
BUDGET_ARRIVAL_FRICTION_PER_PS = 10.0
#: Accepted simulated time per path (ps).
PATH_TIME_RANGE_PS = (0.001, 1000.0)


def budget_steps(path_time_ps: float, timestep_fs: float) -> int:
    """Number of integrator steps in ``path_time_ps`` at ``timestep_fs`` (must be a whole number).

    Raises
    ------
    ValueError
        A time outside :data:`PATH_TIME_RANGE_PS`, or one that is not a whole number of steps.
    """
    lo, hi = PATH_TIME_RANGE_PS
    if isinstance(path_time_ps, bool) or not isinstance(path_time_ps, (int, float)) or not (
        math.isfinite(path_time_ps) and lo <= path_time_ps <= hi
    ):
        raise ValueError(f"path_time_ps: expected a number of ps in [{lo:g}, {hi:g}], got {path_time_ps!r}")
    steps = path_time_ps * 1000.0 / timestep_fs
    n = round(steps)
    if n < 1 or abs(steps - n) > 1e-6 * max(1.0, steps):
        raise ValueError(
            f"path_time_ps: expected a whole number of {timestep_fs:g} fs steps, got {path_time_ps!r} ps "
            f"({steps:.6g} steps)"
        )
    return int(n)


def allocate_steps(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer steps per point, at least 1 each, summing to ``total``, close to ``total * w / sum(w)``.

    Parameters
    ----------
    weights : ndarray, shape=(T,)
        Non-negative, finite, not all zero.
    total : int
        Budget, ``>= T``.

    Returns
    -------
    ndarray of int64, shape=(T,)
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights: expected shape (T,) with T >= 1, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ValueError("weights: expected finite values >= 0, not all zero")
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < w.size:
        raise ValueError(f"total: expected an integer >= the number of points ({w.size}), got {total!r}")
    # One step each, the rest by largest remainders of the ideal shares.
    share = w / w.sum() * (total - w.size)
    steps = np.floor(share).astype(np.int64)
    rest = int(total - w.size - steps.sum())
    if rest:
        steps[np.argsort(-(share - steps), kind="stable")[:rest]] += 1
    return steps + 1


def restraint_kl(centres: np.ndarray, force_constants: np.ndarray, kT: float) -> np.ndarray:
    """KL divergence between consecutive harmonic restraint targets, ``(T - 1,)`` (nats).

    Target ``n`` is ``N(c_n, kT / k_n I_D)``, ``D = 3N``; for ``n -> n + 1``:

        KL = D/2 (r - 1 - ln r) + k_{n+1} |c_{n+1} - c_n|^2 / (2 kT),    r = k_{n+1} / k_n
    """
    c = np.asarray(centres, dtype=float)
    k = np.asarray(force_constants, dtype=float)
    if c.ndim != 3 or k.shape != (c.shape[0],) or c.shape[0] < 2:
        raise ValueError(f"centres/force_constants: expected shapes (T, N, 3) and (T,) with T >= 2, got {c.shape}, {k.shape}")
    if not (k > 0).all():
        raise ValueError("force_constants: expected values > 0")
    dim = c.shape[1] * c.shape[2]
    r = k[1:] / k[:-1]
    dc2 = ((c[1:] - c[:-1]) ** 2).sum(axis=(1, 2))
    return 0.5 * dim * (r - 1.0 - np.log(r)) + 0.5 * k[1:] * dc2 / kT


def jump_profile(minima: np.ndarray, atoms: np.ndarray | None = None, width: int = 4) -> np.ndarray:
    """Per-point displacement of the restrained minima, spread over ``+- width`` points, ``(T,)``.

    Entry ``n`` (``n >= 1``) is the Kabsch RMSD (on ``atoms``) between minima ``n - 1`` and ``n``;
    entry 0 is 0; then a moving sum over ``2 * width + 1`` points (zero-padded).
    """
    from spacetime_md.molecular.paths.structures import kabsch_rmsd

    m = np.asarray(minima, dtype=float)
    if m.ndim != 3 or m.shape[0] < 2:
        raise ValueError(f"minima: expected shape (T, N, 3) with T >= 2, got {m.shape}")
    d = np.zeros(m.shape[0])
    d[1:] = [float(kabsch_rmsd(m[i + 1], m[i], atoms)) for i in range(m.shape[0] - 1)]
    return _spread(d, width)


def _spread(d: np.ndarray, width: int) -> np.ndarray:
    """Moving sum of ``d`` over ``2 * width + 1`` points (zero-padded); ``d`` itself for ``width <= 0``."""
    return np.convolve(d, np.ones(2 * width + 1), mode="same") if width > 0 else d


def _runs(indices: np.ndarray) -> list[np.ndarray]:
    """Sorted ``indices`` cut into runs of consecutive values."""
    return np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)


def barrier_factors(energies: np.ndarray, raw_jumps: np.ndarray, kT: float,
                    scale: float = BUDGET_BARRIER_SCALE) -> np.ndarray:
    """Per-point multipliers of the restrained-minimum jumps from the force-field energies of the minima.

    A jump is a run of neighbouring points whose raw jump (:func:`jump_profile` with ``width=0``)
    exceeds :data:`BUDGET_WINDOW_LEVEL` of the largest. Before it snaps across, the restraint drags the
    molecule's minimum uphill in its basin; the **climb** of jump ``n`` is the force-field energy
    of minimum ``n - 1`` above the lowest minimum since the previous jump (or the start), a
    lower bound of the barrier the molecule has to cross thermally there. By Kramers' law the
    time that crossing needs grows like ``exp(climb / kT)``, so jump ``n`` gets the factor
    ``exp(scale * climb_n / kT)`` and every other point ``exp(0)``, all divided by the largest
    (so the largest factor is 1 and nothing overflows). On the guided default's C5 -> C7ax
    geodesic the two jumps climb 5.6 and 9.2 kJ/mol (the second crosses phi ~ 0), so the second
    gets 4.2x the first's weight instead of about the same.

    Parameters
    ----------
    energies : ndarray, shape=(T,)
        Force-field energies of the restrained minima (kJ/mol).
    raw_jumps : ndarray, shape=(T,)
    kT : float
        kJ/mol.
    scale : float
        ``>= 0``; 0 gives all ones.

    Returns
    -------
    ndarray, shape=(T,)
        In (0, 1].
    """
    e = np.asarray(energies, dtype=float)
    raw = np.asarray(raw_jumps, dtype=float)
    if e.ndim != 1 or e.shape != raw.shape:
        raise ValueError(f"energies: expected shape {raw.shape} like the jumps, got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("energies: expected finite values")
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale: expected a finite number >= 0, got {scale!r}")
    if not (math.isfinite(kT) and kT > 0):
        raise ValueError(f"kT: expected a finite number > 0, got {kT!r}")
    if not raw.max() > 0:
        return np.ones(raw.shape)
    log_f = np.zeros(raw.shape)
    peaks = np.flatnonzero(raw > BUDGET_WINDOW_LEVEL * raw.max())
    since = 0
    # Neighbouring jump points are one jump (a switch spread over two points): one climb for all.
    for group in _runs(peaks):
        first = max(int(group[0]), 1)
        log_f[group] = scale * (e[first - 1] - e[since:first].min()) / kT
        since = int(group[-1])
    return np.exp(log_f - log_f.max())


def compute_budget_schedule(
    centres: np.ndarray,
    force_constants: np.ndarray,
    kT: float,
    total_steps: int,
    minima: np.ndarray | None = None,
    atoms: np.ndarray | None = None,
    jump_fraction: float = BUDGET_JUMP_FRACTION,
    width: int | None = None,
    energies: np.ndarray | None = None,
    barrier_scale: float = BUDGET_BARRIER_SCALE,
) -> np.ndarray:
    """Steps per curve point for a budget of ``total_steps`` (see the module docstring).

    Parameters
    ----------
    centres : ndarray, shape=(T, N, 3)
    force_constants : ndarray, shape=(T,)
    kT : float
        kJ/mol.
    total_steps : int
    minima : ndarray, shape=(T, N, 3), optional
        Restrained minima (:meth:`RestrainedLangevinSampler.restrained_minima`); without them
        the schedule follows the restraint KL alone.
    atoms : ndarray, optional
        Atoms of the jump RMSD (heavy atoms).
    jump_fraction : float
        ``f`` in [0, 1].
    width : int, optional
        Half-width of the jump window in points; default ``max(1, round(T * BUDGET_JUMP_WIDTH))``.
    energies : ndarray, shape=(T,), optional
        Force-field energies of the minima (kJ/mol): each jump is weighted by its
        :func:`barrier_factors` before the window spreads it. Without them every jump counts by
        its RMSD alone.
    barrier_scale : float
        ``scale`` of :func:`barrier_factors`.

    Returns
    -------
    ndarray of int64, shape=(T,)
        Sums to ``total_steps``, each >= 1.
    """
    if not 0.0 <= jump_fraction <= 1.0:
        raise ValueError(f"jump_fraction: expected a value in [0, 1], got {jump_fraction!r}")
    kl = restraint_kl(centres, force_constants, kT)
    kl_w = np.concatenate([[kl.min()], kl])
    kl_w = kl_w / kl_w.sum() if kl_w.sum() > 0 else np.full(kl_w.size, 1.0 / kl_w.size)
    weights = kl_w
    if minima is not None and jump_fraction > 0:
        if width is None:
            width = max(1, round(len(force_constants) * BUDGET_JUMP_WIDTH))
        if energies is None:
            jump = jump_profile(minima, atoms, width)
        else:
            raw = jump_profile(minima, atoms, 0)
            jump = _spread(raw * barrier_factors(energies, raw, kT, barrier_scale), width)
        if jump.sum() > 0:
            weights = (1.0 - jump_fraction) * kl_w + jump_fraction * jump / jump.sum()
    return allocate_steps(weights, total_steps)


def soften_before_jump(
    force_constants: np.ndarray,
    minima: np.ndarray,
    atoms: np.ndarray | None = None,
    factor: float = BUDGET_SOFTEN,
    width: int | None = None,
    energies: np.ndarray | None = None,
    kT: float | None = None,
    barrier_scale: float = BUDGET_BARRIER_SCALE,
) -> np.ndarray:
    """Restraint constants softened by ``factor`` before the main jump, from its window's start.

    The window holds the points whose spread jump (:func:`jump_profile`, half-width ``width``,
    default ``n_points / 16``) exceeds :data:`BUDGET_WINDOW_LEVEL` of its maximum; the softened
    points are the run of window points that holds the main jump, up to that jump. The main jump
    is the largest one, or with ``energies`` (force-field energies of the minima, kJ/mol) and
    ``kT`` the one with the largest jump times :func:`barrier_factors`: the jump across the
    highest barrier. A softer restraint before the switch lets the molecule find the lower saddle
    itself. With the guided default's C5 -> C7ax geodesic (two jumps of almost the same RMSD, the
    second across phi ~ 0) softening before the second instead of the first lowered ETS at 1 ps
    from a mean of 27.7 to 26.8 kJ/mol over seeds 0-7 (docs/peer_protocol.md). Measured at 1 ps
    (docs/peer_protocol.md): on one geodesic whose minima switch over phi ~ 180, 95 % of the paths
    then cross at phi ~ 0 and ETS drops from 56-60 to 41-43 kJ/mol; on a second such geodesic it
    rises from 49-56 to 57-58 (THP 84-89 -> 88-94 %); on a phi ~ 0 geodesic it costs 1-2 kJ/mol.
    Returns a copy, shape ``(T,)``.
    """
    k = np.asarray(force_constants, dtype=float).copy()
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"factor: expected a value in (0, 1], got {factor!r}")
    if width is None:
        width = max(1, round(len(k) * BUDGET_JUMP_WIDTH))
    raw = jump_profile(minima, atoms, 0)
    if not raw.max() > 0:
        return k
    main = int(np.argmax(raw))
    if energies is not None:
        if kT is None:
            raise ValueError("kT: expected a number > 0 with energies, got None")
        main = int(np.argmax(raw * barrier_factors(energies, raw, kT, barrier_scale)))
    spread = jump_profile(minima, atoms, width)
    points = np.flatnonzero(spread > BUDGET_WINDOW_LEVEL * spread.max())
    for run in _runs(points):
        if run.size and run[0] <= main <= run[-1]:
            k[run[0]:main + 1] *= factor
    return k


def arrival_rule(friction: float | None, minima: np.ndarray, steps: np.ndarray,
                 atoms: np.ndarray | None = None) -> "Arrival | None":
    """The :class:`~spacetime_md.molecular.paths.openmm_langevin.Arrival` of a budget schedule.

    From the first step of the point with the largest restrained-minimum jump
    (:func:`jump_profile`), each path is checked every 10 steps; once its ``atoms`` (default
    all) are closer to the last restrained minimum than to the minimum before the jump, its
    friction becomes ``friction`` (1/ps). ``None`` when ``friction`` is ``None`` or the minima
    never move.
    """
    from spacetime_md.molecular.paths.openmm_langevin import Arrival

    if friction is None:
        return None
    minima = np.asarray(minima, dtype=float)
    raw = jump_profile(minima, atoms, 0)
    if not raw.max() > 0:
        return None
    j = max(int(np.argmax(raw)), 1)
    idx = np.arange(minima.shape[1]) if atoms is None else np.asarray(atoms)
    return Arrival(float(friction), int(np.asarray(steps)[:j].sum()), idx, minima[-1][idx], minima[j - 1][idx])


def sample_budget(sampler, centres: np.ndarray, force_constants: np.ndarray, x_init: np.ndarray, config,
                  atoms: np.ndarray | None = None, *, progress: bool = False):
    """Run ``config.n_paths`` paths of ``config.path_time_ps`` each along one restraint schedule.

    Parameters
    ----------
    sampler : RestrainedLangevinSampler
    centres, force_constants : ndarray, shapes (T, N, 3) and (T,)
    x_init : ndarray, shape=(N, 3)
    config : PathConfig
        With ``path_time_ps`` set; each path runs at ``config.friction_per_ps`` until it has
        arrived across the largest jump, then at ``config.arrival_friction_per_ps``
        (:func:`arrival_rule`).
    atoms : ndarray, optional
        Atoms of the jump RMSD (heavy atoms).

    Returns
    -------
    (RestrainedPaths, ndarray of int64, shape=(T,))
        The paths and the steps per point (summing to ``config.total_steps``).
    """
    total = config.total_steps
    if total is None:
        raise ValueError("config: expected a PathConfig with path_time_ps set, got path_time_ps=None")
    minima, energies = sampler.restrained_minima(centres, force_constants, x_init, return_energies=True)
    steps = compute_budget_schedule(centres, force_constants, sampler.kT, total, minima, atoms, energies=energies)
    k = soften_before_jump(force_constants, minima, atoms, energies=energies, kT=sampler.kT)
    arrival = arrival_rule(config.arrival_friction_per_ps, minima, steps, atoms)
    paths = sampler.sample_schedule(centres, k, steps, x_init, n_paths=config.n_paths,
                                    seed=config.seed, record_every=config.record_every, progress=progress,
                                    arrival=arrival)
    return paths, steps
