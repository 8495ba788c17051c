"""The command-line options of :class:`~spacetime_md.molecular.paths.config.PathConfig`, in one table.

``spacetime-md paths`` and ``spacetime-md batch`` add the same flags from :data:`PATH_OPTIONS`
and build their config with :func:`path_config_from_args`. Every flag defaults to ``None``,
which keeps the base config's value: for ``paths`` the base is ``PathConfig()`` (so the CLI's
defaults are the Python API's by construction), for ``batch`` the ``--path-config`` file. Ranges
are PathConfig's own checks (their messages name its fields); the help text states them.

Imports nothing heavy: ``--help`` and the option checks run before torch or OpenMM load.
"""

from __future__ import annotations

import argparse
from typing import Any

#: PathConfig field -> (argparse type, choices or None, help). The flag is ``--field-name``.
PATH_OPTIONS: dict[str, tuple[type, tuple[str, ...] | None, str]] = {
    "n_paths": (int, None, "paths per curve, >= 1 (default 8)"),
    "n_points": (int, None, "curve points sampled by annealed Langevin, >= 2 (default 64)"),
    "n_steps": (int, None, "OpenMM steps per curve point, >= 1 (default 300)"),
    "record_every": (int, None, "keep a frame every this many OpenMM steps, a divisor of --n-steps (default: "
                                "gcd(n_steps, 20), i.e. every 20 fs for the defaults; 1 with --path-time-ps; "
                                "1 keeps every step)"),
    "path_time_ps": (float, None, "simulated time per path in ps, in [0.001, 1000], a whole number of timesteps: "
                                  "every path runs exactly this long, its steps shared by the curve points where "
                                  "the annealed target moves (restraint KL and restrained-minimum jumps); "
                                  "--n-steps is then unused (e.g. 1 for the field's 1 ps protocol; default: "
                                  "--n-steps steps per point)"),
    "friction_per_ps": (float, None, "Langevin friction in 1/ps, > 0 (default 10, or 1 with --path-time-ps: "
                                     "measured best at 1 ps)"),
    "arrival_friction_per_ps": (float, None, "with --path-time-ps: Langevin friction in 1/ps, > 0, of each path "
                                             "once it has arrived across the curve's largest restrained-minimum "
                                             "jump, so the molecule crosses at --friction-per-ps and is cooled "
                                             "where it arrives (default 10)"),
    "endpoint_log_snr": (float, None, "log_snr of the clean endpoints, model units, in [1, 12] (default 4; the "
                                      "paper uses 4-7)"),
    "constraint": (str, ("none", "low-variance", "avoid"), "geodesic constraint (default none)"),
    "min_log_snr": (float, None, "LowVariance floor, model units, in [-4, endpoint log_snr) (default 1)"),
    "avoid_state": (str, None, "state to avoid (with --constraint avoid), e.g. alpha_R"),
    "avoid_log_snr": (float, None, "log_snr of the avoided structure, in [-4, 12] (default 3)"),
    "min_kl": (float, None, "AvoidRegion KL threshold, > 0 (default 20)"),
    "hit_length_nm": (float, None, "target hit for length CVs (distances, RMSDs): within this many nm of the end "
                                   "structure's value (default 0.3 x the heavy-atom RMSD between start and end)"),
    "device": (str, None, "torch device of the geodesic, cpu or cuda (default cpu)"),
}

#: Settings PathConfig derives from others when they are not given (``None``): derived again
#: when what they depend on changes on the command line.
_DERIVED = {"record_every": ("n_steps", "path_time_ps"), "friction_per_ps": ("path_time_ps",),
            "arrival_friction_per_ps": ("path_time_ps",)}


def add_path_options(parser: argparse.ArgumentParser) -> None:
    """Add every :data:`PATH_OPTIONS` flag, ``--relaxed``, ``--no-baseline`` and ``--no-quench-endpoints``
    (all default ``None``)."""
    for name, (kind, choices, text) in PATH_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, choices=choices, default=None,
                            help=text)
    parser.add_argument("--relaxed", action="store_true", default=None,
                        help="also compute relaxed (quenched) barriers")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", default=None,
                        help="skip the straight-line baseline")
    parser.add_argument("--no-quench-endpoints", dest="quench_endpoints", action="store_false", default=None,
                        help="solve and restrain with the endpoint structures exactly as given (default: quench them "
                             "first, heavy atoms held in place, which removes an MD snapshot's thermal strain; hits, "
                             "RMSDs and energies are measured against the given structures either way)")


def path_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The PathConfig fields given on the command line."""
    names = (*PATH_OPTIONS, "relaxed", "baseline", "quench_endpoints")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def path_config_from_args(args: argparse.Namespace, base: Any = None, **fixed: Any) -> Any:
    """``base`` (default ``PathConfig()``) with the command line's PathConfig flags and ``fixed``.

    A derived setting (``record_every``, ``friction_per_ps``) not given on the command line is
    derived again when what it depends on is given. ``--avoid-state`` without ``--constraint
    avoid`` is a ``ValueError`` (it would be silently unused).
    """
    from spacetime_md.molecular.paths.config import PathConfig

    overrides = path_overrides(args)
    data = {} if base is None else base.to_dict()
    for derived, sources in _DERIVED.items():
        if derived not in overrides and any(s in overrides for s in sources):
            data[derived] = None
    data.update(overrides)
    data.update(fixed)
    if data.get("avoid_state") and data.get("constraint", "none") != "avoid":
        raise ValueError(f"--avoid-state: only used with --constraint avoid, got --constraint "
                         f"{data.get('constraint', 'none')}")
    return PathConfig.from_dict(data)
