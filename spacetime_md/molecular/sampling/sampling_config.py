"""The settings of a replica-exchange run: :class:`SamplingConfig`, its defaults, the
temperature ladder (:func:`resolve_config`: geometric, or the fewest replicas whose
predicted acceptance reaches the target) and the check that a resumed run keeps them.

Units: K, ps, fs; the public functions take ``openmm.unit`` quantities.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm.unit as unit

from spacetime_md.errors import CheckpointError
from spacetime_md.molecular.sampling.ladder import (
    DEFAULT_TARGET_ACCEPTANCE,
    MIN_REPLICAS,
    choose_temperatures,
    pilot_energy_statistics,
)
from spacetime_md.molecular.system.units import KELVIN, PS, to_md_array, to_md_float

if TYPE_CHECKING:
    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "SamplingConfig",
    "resolve_config",
    "geometric_temperatures",
    "resolve_run_config",
    "DEFAULT_N_REPLICAS",
    "DEFAULT_MAX_TEMPERATURE",
    "SYSTEM_FILE",
]

logger = logging.getLogger(__name__)


#: Replicas of a fixed ladder when ``n_replicas`` is an integer nobody gave: the automatic ladder
#: (``"auto"``) is the default and never uses fewer.
DEFAULT_N_REPLICAS = 4
DEFAULT_MAX_TEMPERATURE = 800.0 * unit.kelvin
DEFAULT_EXCHANGE_INTERVAL = 0.25 * unit.picosecond
#: The system the samples belong to (``MolecularSystem.spec()``), next to the samples; training
#: reads it to record the system in its checkpoint.
SYSTEM_FILE = "system.json"
#: 2: the Langevin noise is reseeded per replica and exchange (samples independent of the number
#: of worker processes); a run of version 1 cannot be resumed bitwise and is refused.
_FORMAT_VERSION = 2


def geometric_temperatures(t_min_k: float, t_max_k: float, n: int) -> tuple[float, ...]:
    """``n`` temperatures (K) spaced geometrically from ``t_min_k`` to ``t_max_k``."""
    if n < 1:
        raise ValueError(f"n_replicas: expected >= 1, got {n}")
    if n == 1:
        return (float(t_min_k),)
    if t_max_k <= t_min_k:
        raise ValueError(f"max_temperature: expected > {t_min_k} K (the system temperature), got {t_max_k} K")
    return tuple(float(t_min_k * (t_max_k / t_min_k) ** (k / (n - 1))) for k in range(n))


@dataclass(frozen=True)
class SamplingConfig:
    """Resolved replica-exchange settings (md units); written to ``config.json``.

    Attributes
    ----------
    n_samples : int
        Samples at ``temperatures_k[0]``.
    temperatures_k : tuple of float
        Replica temperatures (K), increasing; the first is the sampling temperature.
    exchange_interval_ps : float
        MD time per replica between exchange attempts (one sample per attempt).
    timestep_fs, friction_per_ps : float
        Langevin integrator settings.
    equilibration_ps : float
        Replica-exchange time discarded before the first sample.
    chunk_size : int
        Samples per checkpoint.
    seed : int
    platform : str
    system : dict
        :meth:`MolecularSystem.fingerprint` (checked on resume).
    ladder : dict
        How an automatic ladder was chosen (target, pilot energies, predicted acceptance);
        empty for a ladder given by hand or a fixed number of replicas.
    """

    n_samples: int
    temperatures_k: tuple[float, ...]
    exchange_interval_ps: float = 0.5
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    equilibration_ps: float = 20.0
    chunk_size: int = 1000
    seed: int = 0
    platform: str = "Reference"
    system: dict = field(default_factory=dict)
    format_version: int = _FORMAT_VERSION
    ladder: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, (int, np.integer)) or self.n_samples < 1:
            raise ValueError(f"n_samples: expected a positive integer, got {self.n_samples!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, (int, np.integer)) or self.chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {self.chunk_size!r}")
        temps = tuple(self.temperatures_k)
        if not temps or any(not (t > 0) for t in temps) or any(b <= a for a, b in zip(temps, temps[1:])):
            raise ValueError(f"temperatures: expected positive, strictly increasing values (K), got {temps}")
        if self.timestep_fs <= 0 or self.timestep_fs > 5:
            raise ValueError(f"timestep: expected a value in (0, 5] fs, got {self.timestep_fs} fs")
        if self.friction_per_ps <= 0:
            raise ValueError(f"friction: expected > 0 /ps, got {self.friction_per_ps} /ps")
        if self.steps_per_exchange < 1:
            raise ValueError(
                f"exchange_interval: expected at least one time step ({self.timestep_fs} fs), "
                f"got {self.exchange_interval_ps} ps"
            )
        if self.equilibration_ps < 0:
            raise ValueError(f"equilibration: expected >= 0 ps, got {self.equilibration_ps} ps")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")

    @property
    def n_replicas(self) -> int:
        return len(self.temperatures_k)

    @property
    def steps_per_exchange(self) -> int:
        return int(round(self.exchange_interval_ps * 1000.0 / self.timestep_fs))

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk_size)

    @property
    def n_equilibration_exchanges(self) -> int:
        return int(round(self.equilibration_ps / self.exchange_interval_ps))

    def chunk_length(self, chunk: int) -> int:
        """Samples in production chunk ``chunk`` (1-based)."""
        return min(self.chunk_size, self.n_samples - (chunk - 1) * self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["temperatures_k"] = list(self.temperatures_k)
        d["n_replicas"] = self.n_replicas
        d["steps_per_exchange"] = self.steps_per_exchange
        d["method"] = "temperature replica exchange (neighbour swaps, alternating even/odd pairs)"
        d["integrator"] = "LangevinMiddleIntegrator"
        if not self.ladder:  # fixed ladders keep the config (and checkpoint hash) of earlier versions
            del d["ladder"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplingConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["temperatures_k"] = tuple(kw["temperatures_k"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def resolve_config(
    system: "MolecularSystem",
    n_samples: int,
    *,
    temperatures: Any = None,
    n_replicas: int | str = "auto",
    target_acceptance: float = DEFAULT_TARGET_ACCEPTANCE,
    max_temperature: unit.Quantity = DEFAULT_MAX_TEMPERATURE,
    exchange_interval: unit.Quantity = DEFAULT_EXCHANGE_INTERVAL,
    timestep: unit.Quantity = 2.0 * unit.femtosecond,
    friction: unit.Quantity = 1.0 / unit.picosecond,
    equilibration: unit.Quantity = 20.0 * unit.picosecond,
    chunk_size: int = 1000,
    seed: int = 0,
) -> SamplingConfig:
    """The :class:`SamplingConfig` that :func:`sample_boltzmann` would run (same arguments).

    With ``n_replicas="auto"`` (and no ``temperatures``) this runs the pilot of
    :mod:`spacetime_md.molecular.sampling.ladder` (seconds) after every other setting was checked.
    """
    auto = isinstance(n_replicas, str)
    if auto and n_replicas != "auto":
        raise ValueError(f"n_replicas: expected an integer or 'auto', got {n_replicas!r}")
    if (isinstance(target_acceptance, bool) or not isinstance(target_acceptance, (int, float))
            or not 0.0 < target_acceptance < 1.0):
        raise ValueError(f"target_acceptance: expected a number in (0, 1), got {target_acceptance!r}")
    if temperatures is not None:
        temps = tuple(float(t) for t in to_md_array("temperatures", temperatures, KELVIN))
        if abs(temps[0] - system.temperature_k) > 1e-6:
            raise ValueError(
                f"temperatures: expected the first temperature to be the system temperature "
                f"{system.temperature_k} K, got {temps[0]} K"
            )
    else:
        t_max = to_md_float("max_temperature", max_temperature, KELVIN)
        if not auto and (isinstance(n_replicas, bool) or not isinstance(n_replicas, (int, np.integer))):
            raise TypeError(f"n_replicas: expected an integer or 'auto', got {type(n_replicas).__name__}")
        temps = geometric_temperatures(system.temperature_k, t_max, MIN_REPLICAS if auto else int(n_replicas))
    config = SamplingConfig(
        n_samples=n_samples,
        temperatures_k=temps,
        exchange_interval_ps=to_md_float("exchange_interval", exchange_interval, PS),
        timestep_fs=to_md_float("timestep", timestep, unit.femtosecond),
        friction_per_ps=to_md_float("friction", friction, PS**-1),
        equilibration_ps=to_md_float("equilibration", equilibration, PS),
        chunk_size=chunk_size,
        seed=seed,
        platform=system.platform_name,
        system=system.fingerprint(),
    )
    if not auto or temperatures is not None:
        return config
    stats = pilot_energy_statistics(
        system, geometric_temperatures(config.temperatures_k[0], config.temperatures_k[-1], 3),
        timestep_fs=config.timestep_fs, friction_per_ps=config.friction_per_ps, seed=config.seed,
    )
    temps, predicted = choose_temperatures(stats, config.temperatures_k[0], config.temperatures_k[-1],
                                           float(target_acceptance))
    ladder = {"method": "geometric, fewest replicas (>= 4) with predicted neighbour acceptance >= target "
                        "(pilot energies, Gaussian overlap)",
              "target_acceptance": float(target_acceptance), "predicted_acceptance": predicted, "pilot": stats}
    logger.info("ladder: %d replicas %s K, predicted acceptance %s", len(temps),
                ", ".join(f"{t:.0f}" for t in temps), ", ".join(f"{a:.2f}" for a in predicted))
    return dataclasses.replace(config, temperatures_k=temps, ladder=ladder)


def resolve_run_config(system: "MolecularSystem", n_samples: int, out_dir: str | Path | None, *,
                       resume: bool = False, **kwargs: Any) -> SamplingConfig:
    """:func:`resolve_config`, except that resuming the automatic-ladder run in ``out_dir``
    reuses its saved ladder (no new pilot; other settings are still checked on resume)."""
    saved_path = None if out_dir is None else Path(out_dir) / "config.json"
    auto = kwargs.get("temperatures") is None and kwargs.get("n_replicas", "auto") == "auto"
    if resume and auto and saved_path is not None and saved_path.exists() and (saved_path.parent / "checkpoint.npz").exists():
        import json

        try:
            saved = json.loads(saved_path.read_text())
            temps = [float(t) for t in saved["temperatures_k"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{saved_path}: expected the config of the run to resume, got error: {exc}") from exc
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in ("temperatures", "n_replicas", "target_acceptance", "max_temperature")}
        config = resolve_config(system, n_samples, temperatures=temps * unit.kelvin, **kwargs)
        return dataclasses.replace(config, ladder=saved.get("ladder") or {})
    return resolve_config(system, n_samples, **kwargs)


def _check_resume_config(path: Path, config: SamplingConfig) -> None:
    import json

    if not path.exists():
        raise CheckpointError(f"{path}: expected the config of the run to resume, missing")
    saved = json.loads(path.read_text())
    new = config.to_dict()
    diffs = [k for k in new if k in saved and _norm(saved[k]) != _norm(new[k])]
    if diffs:
        details = "; ".join(f"{k}: saved {saved[k]!r}, now {new[k]!r}" for k in diffs[:4])
        raise CheckpointError(f"resume: expected the same settings as the saved run in {path.parent}, got {details}")


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v
