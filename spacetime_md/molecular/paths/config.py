"""Settings of a transition-path run: :class:`PathConfig` and the shipped geodesic defaults.

Units: nm, ps, K; ``log_snr`` values refer to model units.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spacetime_md.core import GeodesicConfig

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "PathConfig",
    "DEFAULT_GEODESIC",
]

#: Geodesic settings of the shipped defaults: honest mode (a fresh one-probe draw per step, the
#: best curve by its held-out value, stop when that stalls for 3 draws), an 8-draw held-out score
#: of the result, one torch thread, and negative segment terms of the learned model counted by
#: their magnitude (``clamp="abs"``: lower relaxed barriers and higher 1 ps hit rates than the
#: segment clamp, and a faster solve), and two solves, from the straight line and from the straight
#: line with its middle lowered by 3 in log_snr, keeping the lower final objective (``init_dips``:
#: the straight line can end in a local minimum that adds too little noise and routes the paths
#: over a higher pass), run concurrently in threads (``start_threads="auto"``: one per start, at
#: most the usable cores; the same curve as one after the other). docs/geodesic.md has the
#: measurements behind each choice.
DEFAULT_GEODESIC = GeodesicConfig(
    n_nodes=8, n_points=(16, 32), divergence="hutchinson", n_probes=1, max_steps=60, rtol=1e-3, num_threads=1,
    probe_layout="point", resample_every=1, patience=3, holdout_probes=8, clamp="abs", init_dips=(0.0, 3.0),
    start_threads="auto",
)


#: Langevin friction (1/ps) of the per-point sampler (``path_time_ps=None``).
DEFAULT_FRICTION_PER_PS = 10.0

#: Accepted ``endpoint_log_snr`` (model units): clean enough to be a structure, within training ranges.
ENDPOINT_LOG_SNR_RANGE = (1.0, 12.0)
#: Accepted range of the other log_snr settings (the models are trained on [-4, 10]).
LOG_SNR_RANGE = (-4.0, 12.0)


@dataclass(frozen=True)
class PathConfig:
    """Settings of :func:`compute_transition_paths` (all plain numbers in nm, ps, K, model units).

    Parameters
    ----------
    n_paths : int
        Transition paths per curve (geodesic and baseline each).
    endpoint_log_snr : float
        ``log_snr`` of the clean endpoints (model units; the paper uses 4 to 7).
    n_points : int
        Curve points visited by the annealed Langevin sampler.
    n_steps : int
        OpenMM steps per curve point.
    timestep_fs, friction_per_ps : float
        ``LangevinMiddleIntegrator`` settings; ``friction_per_ps=None`` (default) resolves to 10/ps,
        or to 1/ps with ``path_time_ps`` (measured best at 1 ps per path).
    arrival_friction_per_ps : float, optional
        With ``path_time_ps``: each path's friction once it has arrived across the curve's
        largest restrained-minimum jump (:func:`~spacetime_md.molecular.paths.budget.arrival_rule`),
        so the molecule crosses at ``friction_per_ps`` and is cooled where it arrives.
        ``None`` (default) resolves to 10/ps with ``path_time_ps`` and stays ``None`` (unused)
        without it; a value without ``path_time_ps`` is refused.
    constraint : {"none", "low-variance", "avoid"}
    min_log_snr : float
        ``LowVariance`` floor (also used with ``"avoid"``).
    avoid_state : str, optional
        State whose representative structure is the forbidden point (``"avoid"``).
    avoid_log_snr : float
        ``log_snr`` of the forbidden point.
    min_kl : float
        ``AvoidRegion`` threshold on the absolute KL.
    constraint_weight : float
        Weight of each constraint penalty.
    hit_radius : float
        Target hit, angle CVs: the final frame's (phi, psi) of every residue (and every other
        angle CV) within this periodic distance (rad) of the target's.
    hit_length_nm : float, optional
        Target hit, length CVs (distances, RMSDs): within this many nm of the target's value.
        ``None`` (default): ``HIT_LENGTH_FRACTION`` (0.3) times the heavy-atom RMSD between the
        start and end structures, so the tolerance scales with how far apart they are.
    baseline : bool
        Also sample the straight spacetime line.
    relaxed : bool
        Quench frames to compute the relaxed barrier (slower).
    record_every : int, optional
        Record a frame every this many OpenMM steps (a divisor of ``n_steps``); default
        ``gcd(n_steps, 20)`` (every 20 steps for the default 300 steps per point).
    relaxed_stride : int
        For the relaxed barrier, quench every frame in the transition region (in neither
        endpoint state), every ``relaxed_stride``-th other frame, and the last.
    seed : int
    device : str
        Torch device of the geodesic.
    allow_mirror : bool
        Accept endpoint structures whose stereocentres are inverted relative to the system's
        reference structure (a mirror image is refused by default).
    quench_endpoints : bool
        Quench the two endpoint structures before the geodesic is solved
        (:func:`~spacetime_md.molecular.paths.structures.quench_endpoints`: minimised with their
        heavy atoms held in place, which removes an MD snapshot's thermal strain). The geodesic
        and the restraints of the paths use the quenched structures; the paths start from the
        given start structure, and hits, RMSDs and energies are measured against the given
        structures. Default ``True``; ``False`` uses the given structures throughout.
    path_time_ps : float, optional
        Simulated time per path (ps). ``None`` (default): ``n_steps`` steps at every point. Set:
        every path runs exactly ``path_time_ps / timestep`` steps, shared unevenly by the
        ``n_points`` points (:mod:`spacetime_md.molecular.paths.budget`), ``n_steps`` unused, and a
        frame every ``record_every`` steps of the path (default 1, every step); the default
        friction becomes 1/ps (measured at 1 ps, docs/peer_protocol.md).
    geodesic : GeodesicConfig
        Solver settings; the default solves with one torch thread (``num_threads=1``), like
        the CLI, so the Python API gives the same curve as ``spacetime-md paths``.
    workers : int or "auto"
        Processes that run the independent OpenMM paths (``"auto"``, the default: the usable
        cores, at most ``n_paths``, or 1 in a script without an ``if __name__ == "__main__":``
        block, which ``spawn``-ed workers need; 1: all in this process). The straight-line baseline's
        paths run while the geodesic is solved: in a worker, or with one process in a
        background thread (and then the geodesic's paths too, while the baseline is validated).
        The frames are bitwise the same for any value (:class:`~spacetime_md.molecular.paths.openmm_langevin.RestrainedLangevinSampler`).
    """

    n_paths: int = 8
    endpoint_log_snr: float = 4.0
    n_points: int = 64
    n_steps: int = 300
    timestep_fs: float = 1.0
    friction_per_ps: float | None = None
    constraint: str = "none"
    min_log_snr: float = 1.0
    avoid_state: str | None = None
    avoid_log_snr: float = 3.0
    min_kl: float = 20.0
    constraint_weight: float = 100.0
    hit_radius: float = 0.75
    hit_length_nm: float | None = None
    baseline: bool = True
    relaxed: bool = False
    record_every: int | None = None
    relaxed_stride: int = 16
    seed: int = 0
    device: str = "cpu"
    allow_mirror: bool = False
    geodesic: GeodesicConfig = DEFAULT_GEODESIC
    path_time_ps: float | None = None
    workers: int | str = "auto"
    quench_endpoints: bool = True
    arrival_friction_per_ps: float | None = None

    def __post_init__(self) -> None:
        if self.friction_per_ps is None:
            from spacetime_md.molecular.paths.budget import BUDGET_FRICTION_PER_PS

            friction = DEFAULT_FRICTION_PER_PS if self.path_time_ps is None else BUDGET_FRICTION_PER_PS
            object.__setattr__(self, "friction_per_ps", friction)  # frozen dataclass
        if self.arrival_friction_per_ps is None and self.path_time_ps is not None:
            from spacetime_md.molecular.paths.budget import BUDGET_ARRIVAL_FRICTION_PER_PS

            object.__setattr__(self, "arrival_friction_per_ps", BUDGET_ARRIVAL_FRICTION_PER_PS)  # frozen dataclass
        if self.arrival_friction_per_ps is not None:
            value = self.arrival_friction_per_ps
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"arrival_friction_per_ps: expected a finite number > 0 (1/ps), got {value!r}")
            if self.path_time_ps is None:
                raise ValueError(f"arrival_friction_per_ps: only used with path_time_ps, got {value!r} without it")
        if self.path_time_ps is not None:
            self._check_path_time()
        if self.record_every is None:
            auto = math.gcd(self.n_steps, 20) if isinstance(self.n_steps, int) and self.n_steps > 0 else 1
            object.__setattr__(self, "record_every", auto)  # frozen dataclass
        for name in ("n_paths", "n_points", "n_steps", "record_every", "relaxed_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.path_time_ps is None and self.n_steps % self.record_every:
            raise ValueError(f"record_every: expected a divisor of n_steps ({self.n_steps}), got {self.record_every}")
        if self.n_points < 2:
            raise ValueError(f"n_points: expected an integer >= 2, got {self.n_points}")
        for name in ("timestep_fs", "friction_per_ps", "min_kl", "hit_radius"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        if self.hit_length_nm is not None and (
            isinstance(self.hit_length_nm, bool) or not isinstance(self.hit_length_nm, (int, float))
            or not self.hit_length_nm > 0 or not math.isfinite(self.hit_length_nm)
        ):
            raise ValueError(f"hit_length_nm: expected None or a finite number > 0 (nm), got {self.hit_length_nm!r}")
        if self.constraint not in ("none", "low-variance", "avoid"):
            raise ValueError(f"constraint: expected 'none', 'low-variance' or 'avoid', got {self.constraint!r}")
        if self.constraint == "avoid" and not self.avoid_state:
            raise ValueError("avoid_state: expected a state name with constraint 'avoid', got none")
        if self.avoid_state and self.constraint != "avoid":
            raise ValueError(
                f"avoid_state: only used with constraint 'avoid', got avoid_state={self.avoid_state!r} with "
                f"constraint {self.constraint!r}"
            )
        lo, hi = ENDPOINT_LOG_SNR_RANGE
        for name in ("endpoint_log_snr", "min_log_snr", "avoid_log_snr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number (model log_snr), got {value!r}")
        if not lo <= self.endpoint_log_snr <= hi:
            raise ValueError(
                f"endpoint_log_snr: expected a value in [{lo:g}, {hi:g}] (clean endpoints; the paper uses 4-7), "
                f"got {self.endpoint_log_snr!r}"
            )
        if not LOG_SNR_RANGE[0] <= self.min_log_snr < self.endpoint_log_snr:
            raise ValueError(
                f"min_log_snr: expected a value in [{LOG_SNR_RANGE[0]:g}, endpoint_log_snr={self.endpoint_log_snr:g}), "
                f"got {self.min_log_snr!r}"
            )
        if not LOG_SNR_RANGE[0] <= self.avoid_log_snr <= LOG_SNR_RANGE[1]:
            raise ValueError(
                f"avoid_log_snr: expected a value in [{LOG_SNR_RANGE[0]:g}, {LOG_SNR_RANGE[1]:g}], got {self.avoid_log_snr!r}"
            )
        if self.workers != "auto" and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                       or self.workers < 1):
            raise ValueError(f"workers: expected a positive integer or 'auto', got {self.workers!r}")
        for name in ("allow_mirror", "quench_endpoints"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.geodesic, GeodesicConfig):
            raise TypeError(f"geodesic: expected a GeodesicConfig, got {type(self.geodesic).__name__}")

    def _check_path_time(self) -> None:
        from spacetime_md.molecular.paths.budget import budget_steps

        if not isinstance(self.timestep_fs, (int, float)) or not self.timestep_fs > 0:
            return  # reported below
        total = budget_steps(self.path_time_ps, self.timestep_fs)
        if isinstance(self.n_points, int) and total < self.n_points:
            raise ValueError(f"path_time_ps: expected at least one step per curve point ({self.n_points} x "
                             f"{self.timestep_fs:g} fs), got {self.path_time_ps!r} ps ({total} steps)")
        record = 1 if self.record_every is None else self.record_every
        if isinstance(record, int) and not isinstance(record, bool) and record >= 1 and total % record:
            raise ValueError(f"record_every: expected a divisor of the path's {total} steps, got {record}")
        object.__setattr__(self, "record_every", record)

    @property
    def n_frames_per_path(self) -> int:
        """Frames recorded per path."""
        total = self.total_steps if self.path_time_ps is not None else self.n_points * self.n_steps
        return total // self.record_every

    @property
    def total_steps(self) -> int | None:
        """Integrator steps per path with ``path_time_ps``, else ``None``."""
        if self.path_time_ps is None:
            return None
        from spacetime_md.molecular.paths.budget import budget_steps

        return budget_steps(self.path_time_ps, self.timestep_fs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PathConfig":
        data = dict(data)
        geo = data.pop("geodesic", None)
        if geo is not None:
            data["geodesic"] = geo if isinstance(geo, GeodesicConfig) else GeodesicConfig(**geo)
        return cls(**data)
