"""The result of a committor estimate (:class:`CommittorResult`), its summary and its plot.

Units: p_B dimensionless; energies kJ/mol; CVs radians (angles) or nm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from spacetime_md._atomic import atomic_path
from spacetime_md.molecular.workflows.committor_config import CommittorConfig
from spacetime_md.molecular.workflows.shots import START, TARGET, UNDECIDED, _finite_or_none, wilson_interval

if TYPE_CHECKING:  # pragma: no cover
    from spacetime_md.molecular.system.cvs import CollectiveVariables

__all__ = [
    "CommittorResult",
    "plot_committor",
]


@dataclass
class CommittorResult:
    """Committor estimates at selected frames of one path.

    Attributes
    ----------
    frames : ndarray of int, shape=(K,)
        Indices into the path, increasing.
    s : ndarray, shape=(K,)
        Position along the path in [0, 1] (``frame / (n_path_frames - 1)``).
    cv_values : ndarray, shape=(K, C)
        The system's collective variables at each frame (radians for angles, nm otherwise), in
        the order of ``cv_names``.
    energies : ndarray, shape=(K,)
        Raw OpenMM potential energy, kJ/mol.
    relaxed_energies : ndarray or None, shape=(K,)
        The energy that picked the highest-energy frame (``max_energy_source``: relaxed or
        quenched, kJ/mol) when computed.
    n_start, n_target, n_undecided : ndarray of int, shape=(K,)
        Shot outcomes.
    p_b, p_b_low, p_b_high : ndarray, shape=(K,)
        ``n_target / (n_start + n_target)`` and its Wilson interval (nan where all undecided).
    mean_commit_ps : ndarray, shape=(K,)
        Mean time to commitment of the decided shots (ps).
    max_energy_frame : int or None
        The path frame of highest energy, if it was included.
    max_energy_source : str
        The energy used: ``"quenched"``, ``"relaxed"`` or ``"raw"`` (see :class:`CommittorConfig`).
    start_state, target_state : str
    ts_candidates : list of int
        Path frames with ``p_B`` closest to 1/2.
    crosses_half : bool
        Whether the estimates reach 1/2 from both sides (some ``<= 0.5`` and some ``>= 0.5``).
        Frames with all shots in one state are no candidates: a profile that jumps from 0 to 1
        crosses, but only between two frames (``crossing_bracket``), and has no candidate.
    crossing_bracket : (int, int) or None
        The first two neighbouring evaluated frames whose ``p_B`` lie on either side of 1/2 (or
        a frame at exactly 1/2, twice).
    n_shots_run, n_shots_resumed : int
        Shots run by this call and shots taken from a checkpoint.
    n_shots_in_workers : int
        Shots of this call run in worker processes.
    md_steps : int
        Integration steps of all shots.
    cv_names : tuple of str
    cv_periodic : ndarray of bool, shape=(C,)
        Angle CVs (shown in degrees).
    phi_psi_columns : (int, int) or None
        Columns of the backbone (phi, psi) when the CVs hold exactly one residue's pair (a
        dipeptide), else ``None``: :attr:`phi_psi` and ``phi_psi_deg`` are then n/a.
    energy_requested : str
        ``config.energy``.
    energy_na_reason : str or None
        Why the requested energy was not used (``max_energy_source`` differs), else ``None``.
    refined : dict or None
        The refined relaxed-energy maximum (``config.refine``): ``around_frame``, ``window``,
        ``frame_position`` (fractional frame index), ``s``, ``torsions_deg`` (each held torsion
        CV), ``phi_psi_deg`` (``None`` unless the CVs hold one residue's (phi, psi)),
        ``relaxed_energy_kj_mol``, shot counts, ``p_b``, ``p_b_interval``, ``mean_commit_ps``.
    refined_na_reason : str or None
        Why there is no refined maximum (not requested, or no torsion CV to hold).
    refined_positions : ndarray or None, shape=(N, 3)
        Its structure (nm).
    saddle : dict or None
        The force field's first-order saddle point next to the refined maximum
        (``config.saddle``): ``energy_kj_mol``, ``relaxed_energy_of_refined_kj_mol``,
        ``torsions_deg`` (each torsion CV there), ``rms_gradient_kj_mol_nm``,
        ``eigenvalue_kj_mol_nm2`` (the unstable mode's), ``n_iterations``, ``n_searches``, ``search_s``, shot
        counts, ``p_b``, ``p_b_interval``, ``mean_commit_ps``.
    saddle_na_reason : str or None
        Why there is no saddle point (not requested, no refined maximum, too many atoms, or the
        search did not converge).
    saddle_positions : ndarray or None, shape=(N, 3)
        Its structure (nm; bonds to hydrogen as the flexible force field has them).
    states : dict
        ``{"start": ..., "target": ...}``: the two states (name and regions in CV space).
    state_sources : (str, str)
        Where each state came from: ``"named"``, ``"system"`` (the system's states) or
        ``"endpoints"`` (built around the paths run's start / end structure).
    """

    frames: np.ndarray
    s: np.ndarray
    cv_values: np.ndarray
    energies: np.ndarray
    relaxed_energies: np.ndarray | None
    n_start: np.ndarray
    n_target: np.ndarray
    n_undecided: np.ndarray
    p_b: np.ndarray
    p_b_low: np.ndarray
    p_b_high: np.ndarray
    mean_commit_ps: np.ndarray
    max_energy_frame: int | None
    max_energy_source: str
    start_state: str
    target_state: str
    ts_candidates: list[int]
    crosses_half: bool
    n_shots_run: int
    n_shots_resumed: int
    md_steps: int
    config: CommittorConfig
    crossing_bracket: tuple[int, int] | None = None
    n_shots_in_workers: int = 0
    wall_time_s: float = 0.0
    cv_names: tuple[str, ...] = ()
    cv_periodic: np.ndarray | None = None
    phi_psi_columns: tuple[int, int] | None = None
    energy_requested: str = "relaxed"
    energy_na_reason: str | None = None
    refined: dict[str, Any] | None = None
    refined_na_reason: str | None = None
    refined_positions: np.ndarray | None = None
    saddle: dict[str, Any] | None = None
    saddle_na_reason: str | None = None
    saddle_positions: np.ndarray | None = None
    states: dict[str, Any] = field(default_factory=dict)
    state_sources: tuple[str, str] = ("system", "system")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def phi_psi(self) -> np.ndarray:
        """(phi, psi) in radians, shape=(K, 2), when the CVs are one residue's backbone pair."""
        if self.phi_psi_columns is None:
            raise ValueError(f"phi_psi: n/a, {_phi_psi_na_reason(self.cv_names)}; use cv_values")
        return self.cv_values[:, list(self.phi_psi_columns)]

    @property
    def n_shots_total(self) -> int:
        """All shots, the refined maximum's and the saddle point's included."""
        extra = sum(r.get("n_start", 0) + r.get("n_target", 0) + r.get("n_undecided", 0)
                    for r in (self.refined or {}, self.saddle or {}))
        return int(self.n_start.sum() + self.n_target.sum() + self.n_undecided.sum()) + extra

    @property
    def energy_message(self) -> str | None:
        """One line when the requested energy was n/a and another was used."""
        if self.energy_na_reason is None:
            return None
        return f"{self.energy_requested} energy {self.energy_na_reason}; used the {self.max_energy_source} energy"

    @property
    def refined_message(self) -> str | None:
        """One line on p_B at the refined relaxed-energy maximum, or why there is none."""
        r = self.refined
        if r is None:
            return _na_line("refined relaxed-energy maximum", self.refined_na_reason)
        held = ", ".join(f"{name} = {value:.1f}" for name, value in r["torsions_deg"].items())
        return _p_b_line(f"refined relaxed-energy maximum (frame {r['frame_position']:.1f}, {held} deg, "
                         f"{r['relaxed_energy_kj_mol']:.1f} kJ/mol)", r)

    @property
    def saddle_message(self) -> str | None:
        """One line on p_B at the saddle point, or why there is none."""
        r = self.saddle
        if r is None:
            return _na_line("saddle point", self.saddle_na_reason)
        return _p_b_line(f"saddle point ({r['energy_kj_mol']:.1f} kJ/mol, refined relaxed maximum "
                         f"{r['relaxed_energy_of_refined_kj_mol']:.1f}; {r['n_iterations']} iterations, "
                         f"{r['search_s']:.1f} s)", r)

    @property
    def message(self) -> str:
        """One line on where (or whether) the path crosses p_B = 1/2."""
        decided = np.isfinite(self.p_b)
        if not decided.any():
            return "no shot committed to either state: p_B is undefined at every frame"
        lo, hi = float(np.nanmin(self.p_b)), float(np.nanmax(self.p_b))
        if not self.crosses_half:
            return (f"p_B never crosses 0.5 along this path (range {lo:.2f} to {hi:.2f}); "
                    f"no transition-state candidate")
        a, b = self.crossing_bracket
        ka, kb = (int(np.flatnonzero(self.frames == f)[0]) for f in (a, b))
        where = (f"at frame {a}" if a == b else
                 f"between frames {a} and {b} (p_B {self.p_b[ka]:.2f} -> {self.p_b[kb]:.2f})")
        if not self.ts_candidates:
            return (f"p_B crosses 0.5 {where}, unresolved: no evaluated frame has shots to both states; "
                    f"evaluate more frames there")
        c = self.ts_candidates[0]
        k = int(np.flatnonzero(self.frames == c)[0])
        return (f"p_B crosses 0.5 {where}; closest frame {c} (s = {self.s[k]:.2f}) has p_B = {self.p_b[k]:.2f} "
                f"[{self.p_b_low[k]:.2f}, {self.p_b_high[k]:.2f}]")

    def _periodic(self) -> np.ndarray:
        if self.cv_periodic is None:
            return np.zeros(len(self.cv_names), dtype=bool)
        return np.asarray(self.cv_periodic, dtype=bool)

    def _display(self, k: int) -> dict[str, float]:
        """CV values of evaluated frame ``k``: degrees for angles, nm otherwise."""
        periodic = self._periodic()
        return {name: float(np.degrees(v) if periodic[j] else v)
                for j, (name, v) in enumerate(zip(self.cv_names, self.cv_values[k]))}

    def to_dict(self) -> dict[str, Any]:
        periodic = self._periodic()
        per_frame = []
        for k, f in enumerate(self.frames):
            per_frame.append({
                "frame": int(f),
                "s": float(self.s[k]),
                "cvs": self._display(k),
                "phi_psi_deg": (None if self.phi_psi_columns is None else
                                [float(v) for v in np.degrees(self.cv_values[k, list(self.phi_psi_columns)])]),
                "energy_kj_mol": float(self.energies[k]),
                "relaxed_energy_kj_mol": None if self.relaxed_energies is None else float(self.relaxed_energies[k]),
                "n_start": int(self.n_start[k]),
                "n_target": int(self.n_target[k]),
                "n_undecided": int(self.n_undecided[k]),
                "p_b": _finite_or_none(self.p_b[k]),
                "p_b_interval": [_finite_or_none(self.p_b_low[k]), _finite_or_none(self.p_b_high[k])],
                "mean_commit_ps": _finite_or_none(self.mean_commit_ps[k]),
                "max_energy_frame": bool(self.max_energy_frame is not None and int(f) == self.max_energy_frame),
            })
        return {
            "start_state": self.start_state,
            "target_state": self.target_state,
            "states": self.states,
            "state_sources": {"start": self.state_sources[0], "target": self.state_sources[1]},
            "cv_names": list(self.cv_names),
            "cv_units": {name: ("deg" if periodic[j] else "nm") for j, name in enumerate(self.cv_names)},
            "phi_psi_na_reason": None if self.phi_psi_columns is not None else _phi_psi_na_reason(self.cv_names),
            "frames": per_frame,
            "max_energy_frame": self.max_energy_frame,
            "max_energy_source": self.max_energy_source,
            "energy_requested": self.energy_requested,
            "energy_used": self.max_energy_source,
            "energy_na_reason": self.energy_na_reason,
            "ts_candidates": list(self.ts_candidates),
            "crosses_half": self.crosses_half,
            "crossing_bracket": None if self.crossing_bracket is None else list(self.crossing_bracket),
            "message": self.message,
            "refined_max_energy": self.refined,
            "refined_max_energy_na_reason": self.refined_na_reason,
            "saddle_point": self.saddle,
            "saddle_point_na_reason": self.saddle_na_reason,
            "shots": {
                "total": self.n_shots_total,
                "run": self.n_shots_run,
                "resumed": self.n_shots_resumed,
                "in_workers": self.n_shots_in_workers,
                "undecided": int(self.n_undecided.sum()),
                "md_steps": self.md_steps,
            },
            "confidence": self.config.confidence,
            "wall_time_s": self.wall_time_s,
            **self.extra,
        }

    def format_table(self) -> str:
        """Printable per-frame summary (CV columns in degrees for angles, nm otherwise)."""
        energy = f"E {self.max_energy_source}" if self.relaxed_energies is not None else "E raw"
        periodic = self._periodic()
        widths = [max(8, len(n) + 2) for n in self.cv_names]
        head = "".join(f"{n:>{w}}" for n, w in zip(self.cv_names, widths))
        lines = [f"{'frame':>6}{'s':>6}{head}{energy:>13}{'A':>5}{'B':>5}{'?':>4}{'p_B':>7}  interval"]
        for k, f in enumerate(self.frames):
            e = self.relaxed_energies[k] if self.relaxed_energies is not None else self.energies[k]
            p = "   n/a" if not np.isfinite(self.p_b[k]) else f"{self.p_b[k]:6.2f}"
            ci = "" if not np.isfinite(self.p_b[k]) else f"[{self.p_b_low[k]:.2f}, {self.p_b_high[k]:.2f}]"
            mark = "  <- max energy" if f == self.max_energy_frame else ""
            cvs = "".join(f"{np.degrees(v):>{w}.0f}" if periodic[j] else f"{v:>{w}.3f}"
                          for j, (v, w) in enumerate(zip(self.cv_values[k], widths)))
            lines.append(f"{int(f):>6}{self.s[k]:>6.2f}{cvs}{e:>13.1f}{self.n_start[k]:>5}"
                         f"{self.n_target[k]:>5}{self.n_undecided[k]:>4} {p}  {ci}{mark}")
        if len(self.cv_names) and not periodic.all():
            lines.append("(angles in deg, lengths in nm)")
        lines.append(self.message)
        for extra in (self.energy_message, self.refined_message, self.saddle_message):
            if extra is not None:
                lines.append(extra)
        lines.append(f"shots: {self.n_shots_total} ({self.n_shots_run} run now, {self.n_shots_resumed} from checkpoint, "
                     f"{int(self.n_undecided.sum())} undecided after {self.config.max_length_ps:g} ps); "
                     f"{self.md_steps} MD steps; {self.wall_time_s:.1f} s")
        return "\n".join(lines)


def _na_line(what: str, reason: str | None) -> str | None:
    """Why an off-path structure was not shot from, or None where it was simply not requested."""
    if reason is None or reason.startswith("not requested"):
        return None
    return f"{what} {reason}"


def _p_b_line(where: str, r: dict[str, Any]) -> str:
    """``where: p_B = p [low, high] from n shots`` for a row with shot counts and an interval."""
    if r["p_b"] is None:
        return f"{where}: no shot committed"
    low, high = r["p_b_interval"]
    return f"{where}: p_B = {r['p_b']:.2f} [{low:.2f}, {high:.2f}] from {r['n_start'] + r['n_target']} shots"


def _phi_psi_na_reason(cv_names: Sequence[str]) -> str:
    return (f"the collective variables ({', '.join(cv_names) or 'none'}) do not hold exactly one residue's "
            "backbone (phi, psi)")


def _phi_psi_columns(cvs: "CollectiveVariables") -> tuple[int, int] | None:
    pairs = cvs.ramachandran_pairs()
    if len(pairs) != 1:
        return None
    return pairs[0][1], pairs[0][2]


def _summarise(outcomes: dict[int, dict[int, tuple[int, int]]], frames: np.ndarray, timestep_fs: float,
               confidence: float):
    n = len(frames)
    n_a, n_b, n_u = (np.zeros(n, dtype=np.int64) for _ in range(3))
    commit = np.full(n, np.nan)
    steps = 0
    for k, f in enumerate(frames):
        shots = outcomes.get(int(f), {})
        res = np.array(list(shots.values()), dtype=np.int64).reshape(-1, 2)
        n_a[k] = int((res[:, 0] == START).sum())
        n_b[k] = int((res[:, 0] == TARGET).sum())
        n_u[k] = int((res[:, 0] == UNDECIDED).sum())
        decided = res[:, 0] != UNDECIDED
        if decided.any():
            commit[k] = float(res[decided, 1].mean()) * timestep_fs / 1000.0
        steps += int(res[:, 1].sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        p = n_b / (n_a + n_b)
    p = np.where(n_a + n_b > 0, p, np.nan)
    low, high = wilson_interval(n_b, n_a + n_b, confidence)
    return n_a, n_b, n_u, p, low, high, commit, steps


def plot_committor(result: CommittorResult, path: str | os.PathLike, title: str | None = None) -> Path:
    """p_B along the path with Wilson error bars (and the energy profile on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ok = np.isfinite(result.p_b)
    err = np.maximum(np.vstack([result.p_b - result.p_b_low, result.p_b_high - result.p_b]), 0.0)
    ax.errorbar(result.s[ok], result.p_b[ok], yerr=err[:, ok], fmt="o-", color="tab:red", capsize=3,
                label=f"p_B ({result.config.confidence:.0%} Wilson)")
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    if result.max_energy_frame is not None:
        k = int(np.flatnonzero(result.frames == result.max_energy_frame)[0])
        ax.axvline(result.s[k], color="tab:orange", lw=1, ls=":",
                   label=f"highest {result.max_energy_source} energy")
    for c in result.ts_candidates if result.crosses_half else []:
        k = int(np.flatnonzero(result.frames == c)[0])
        ax.plot(result.s[k], result.p_b[k], "*", ms=14, color="tab:green")
    r = result.refined
    # The saddle point lies off the path; it is drawn where its search started, at the refined maximum.
    for row, fmt, color, label in ((r, "D", "tab:purple", "refined relaxed maximum"),
                                   (result.saddle, "P", "black", "saddle point (at the refined maximum's s)")):
        if r is not None and row is not None and row["p_b"] is not None:
            lo, hi = row["p_b_interval"]
            ax.errorbar([r["s"]], [row["p_b"]], yerr=[[row["p_b"] - lo], [hi - row["p_b"]]], fmt=fmt, color=color,
                        capsize=3, label=label)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("position along the path s")
    ax.set_ylabel(f"p_B (reach {result.target_state} before {result.start_state})")
    ax2 = ax.twinx()
    e = result.relaxed_energies if result.relaxed_energies is not None else result.energies
    ax2.plot(result.s, e, "s-", color="tab:gray", ms=3, lw=0.8, alpha=0.7)
    label = result.max_energy_source if result.relaxed_energies is not None else "raw"
    ax2.set_ylabel(f"{label} energy (kJ/mol)", color="tab:gray")
    ax.legend(loc="upper left", fontsize=8)
    import textwrap

    ax.set_title(textwrap.fill(title or result.message, 100), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
