"""Boltzmann samples as a run writes and reads them: :class:`BoltzmannSamples`, the output
files (``samples.h5``, ``energies.npy``, the free-energy plot) and :func:`load_samples`.

Units: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import openmm.unit as unit

from spacetime_md.molecular._io import atomic_path, save_npy_atomic
from spacetime_md.molecular.sampling.sampling_config import SamplingConfig
from spacetime_md.molecular.system.units import KJ_PER_MOL, NM

if TYPE_CHECKING:
    import mdtraj

    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "BoltzmannSamples",
    "load_samples",
    "plot_file_name",
]

logger = logging.getLogger(__name__)


@dataclass
class BoltzmannSamples:
    """Samples at the system temperature.

    Attributes
    ----------
    coordinates_nm : ndarray, shape=(F, N, 3)
        Positions (nm, float32).
    energies_kj_per_mol : ndarray, shape=(F,)
        Potential energies (kJ/mol) of the samples (float64, from the double-precision state).
    config : SamplingConfig
    report : dict
        Exchange acceptance, round trips, throughput, state populations.
    out_dir : Path or None
    complete : bool
        ``False`` when the run stopped early (``max_chunks``); resume it to finish.
    topology : mdtraj.Topology or None
    """

    coordinates_nm: np.ndarray
    energies_kj_per_mol: np.ndarray
    config: SamplingConfig
    report: dict
    out_dir: Path | None = None
    complete: bool = True
    topology: Any = None

    @property
    def n_frames(self) -> int:
        return len(self.coordinates_nm)

    @property
    def coordinates(self) -> unit.Quantity:
        return self.coordinates_nm * NM

    @property
    def energies(self) -> unit.Quantity:
        return self.energies_kj_per_mol * KJ_PER_MOL

    def to_mdtraj(self) -> "mdtraj.Trajectory":
        import mdtraj

        if self.topology is None:
            raise ValueError("topology: expected samples with a topology, got None")
        dt = self.config.exchange_interval_ps
        return mdtraj.Trajectory(self.coordinates_nm, self.topology, time=np.arange(self.n_frames) * dt)


def _write_outputs(system: "MolecularSystem", samples: BoltzmannSamples, out: Path, plot: bool) -> None:
    from mdtraj.formats import HDF5TrajectoryFile

    coords = samples.coordinates_nm
    dt = samples.config.exchange_interval_ps
    with atomic_path(out / "samples.h5") as tmp:
        with HDF5TrajectoryFile(str(tmp), "w") as fh:
            fh.topology = system.mdtraj_topology
            fh.title = f"{system.name} Boltzmann samples at {samples.config.temperatures_k[0]:g} K (replica exchange)"
            fh.write(
                coordinates=coords,
                time=(np.arange(len(coords)) + 1) * dt,
                potentialEnergy=samples.energies_kj_per_mol.astype(np.float32),
            )
    save_npy_atomic(out / "energies.npy", samples.energies_kj_per_mol)
    if plot and len(coords) > 1:
        name = plot_file_name(system)
        if name is None:
            logger.info("no collective variables to plot for %s; no plot written", system.name)
            return
        from spacetime_md.molecular.sampling.populations import plot_cvs

        r = samples.report
        title = f"{system.name} ({system.solvent}), {len(coords)} samples at {samples.config.temperatures_k[0]:g} K"
        if "populations" in r and "C7ax" in r["populations"]:
            p = r["populations"]["C7ax"]
            title += f"\nC7ax {p['fraction']:.4f} +- {p['error']:.4f}"
        plot_cvs(system.compute_cvs(coords), system.cvs, out / name, system.states, title=title)


def plot_file_name(system: "MolecularSystem") -> str | None:
    """``ramachandran.png`` for a peptide, ``cvs.png`` for other CVs, ``None`` without CVs."""
    if system.cvs.ramachandran_pairs():
        return "ramachandran.png"
    return "cvs.png" if len(system.cvs) else None


def load_samples(out_dir: str | Path) -> BoltzmannSamples:
    """Read the outputs of a finished :func:`sample_boltzmann` run."""
    import json

    import mdtraj

    out = Path(out_dir)
    path = out / "samples.h5"
    if not path.exists():
        raise FileNotFoundError(f"{out}: expected samples.h5 of a finished sampling run, not found")
    traj = mdtraj.load_hdf5(str(path))
    config = SamplingConfig.from_dict(json.loads((out / "config.json").read_text()))
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    energies = np.load(out / "energies.npy")
    return BoltzmannSamples(traj.xyz, energies, config, report, out, True, traj.topology)
