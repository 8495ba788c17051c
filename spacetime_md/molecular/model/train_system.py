"""The system a training run is for (:func:`resolve_training_system`): from the config, the
saved run, ``system.json`` beside the data, the ``top`` PDB, the data's own topology or a
matching preset; checked against the data's atoms.

Units: nm.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spacetime_md.molecular.model.dataset import MolecularDataset, _atom_mismatch, _extension, _load_dataset
from spacetime_md.molecular.model.train_config import SYSTEM_FILE, TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import mdtraj

    from spacetime_md.molecular.system.build import MolecularSystem

__all__ = [
    "resolve_training_system",
]

logger = logging.getLogger(__name__)


def _forcefield_choice(value: str | None) -> str | list[str]:
    """``None`` -> amber99sbildn; ``"amber14"`` stays a preset; ``"a.xml,b.xml"`` -> a list of files."""
    if value is None:
        return "amber99sbildn"
    parts = [v.strip() for v in str(value).split(",") if v.strip()]
    if not parts:
        raise ValueError(f"forcefield: expected a preset name or OpenMM XML files, got {value!r}")
    return parts[0] if len(parts) == 1 else parts


def _data_system_file(data: Any) -> Path | None:
    """The ``system.json`` beside the data (in a data directory, or beside a data file), if any."""
    entries = [data] if isinstance(data, str) else list(data)
    found: list[Path] = []
    for entry in entries:
        if not entry:
            continue
        path = Path(entry)
        candidate = (path if path.is_dir() else path.parent) / SYSTEM_FILE
        if candidate.is_file() and candidate.resolve() not in found:
            found.append(candidate.resolve())
    if len({f.read_text() for f in found}) > 1:
        names = ", ".join(str(f) for f in found)
        raise ValueError(f"data: expected one recorded system, got different {SYSTEM_FILE} files ({names}); pass --system")
    return found[0] if found else None


def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with numpy scalars and arrays as plain Python (JSON and ``weights_only`` loadable)."""

    def convert(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"system spec: expected JSON-serialisable values, got {type(value).__name__}")

    return json.loads(json.dumps(spec, default=convert))


def _apply_cv_files(system: "MolecularSystem", config: TrainConfig) -> "MolecularSystem":
    from spacetime_md.molecular.system.build import resolve_system

    if config.cvs is None and config.states is None:
        return system
    return resolve_system(system, cvs=config.cvs, states=config.states)


def _check_recorded(system: "MolecularSystem", config: TrainConfig, where: str) -> None:
    """A ``forcefield``/``solvent`` given with a recorded system must be the recorded one."""
    from spacetime_md.molecular.system.build import _resolve_forcefield

    if config.solvent is not None and config.solvent != system.solvent:
        raise ValueError(
            f"solvent: {where} records {system.solvent!r}, got {config.solvent!r}; pass --system too to change it"
        )
    if config.forcefield is not None:
        files = _resolve_forcefield(_forcefield_choice(config.forcefield), system.solvent)
        if tuple(files) != tuple(system.forcefield_files):
            raise ValueError(
                f"forcefield: {where} records {list(system.forcefield_files)}, got {list(files)}; pass --system "
                "too to change it"
            )


def _declared_system(config: TrainConfig, saved_spec: dict[str, Any] | None) -> tuple["MolecularSystem | None", str]:
    """The system named by the config, the resumed run or ``system.json``; ``(None, "")`` if none."""
    from spacetime_md.molecular.system.build import MolecularSystem, resolve_system

    for name in ("cvs", "states"):
        value = getattr(config, name)
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{name}: expected an existing file, got {value!r}")
    if config.system is not None:
        if config.system.lower().endswith(".pdb") and not Path(config.system).is_file():
            raise FileNotFoundError(f"system: expected a preset name or an existing PDB file, got {config.system!r}")
        system = resolve_system(
            config.system, solvent=config.solvent or "vacuum", forcefield=_forcefield_choice(config.forcefield),
            cvs=config.cvs, states=config.states,
        )
        return system, f"--system {config.system}"
    if saved_spec is not None:
        system = MolecularSystem.from_spec(saved_spec)
        _check_recorded(system, config, "the resumed run")
        return _apply_cv_files(system, config), "the resumed run"
    spec_file = _data_system_file(config.data)
    if spec_file is None:
        return None, ""
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"data: expected {SYSTEM_FILE} to be JSON, got a parse error in {spec_file}: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"data: expected {spec_file} to hold a system spec object, got {type(spec).__name__}")
    system = MolecularSystem.from_spec(spec)
    _check_recorded(system, config, str(spec_file))
    return _apply_cv_files(system, config), str(spec_file)


def _pdb_text(topology: "mdtraj.Topology", xyz_nm: np.ndarray) -> str:
    import io

    from openmm import app, unit

    buf = io.StringIO()
    app.PDBFile.writeFile(topology.to_openmm(), np.asarray(xyz_nm) * 10.0 * unit.angstrom, buf, keepIds=True)
    return buf.getvalue()


def _matching_preset(topology: "mdtraj.Topology") -> str | None:
    """The shipped preset (e.g. ``"alanine-dipeptide"``, with its states) whose atoms are ``topology``'s."""
    import mdtraj

    from spacetime_md.molecular.system.build import KNOWN_SYSTEMS, system_data_path

    for name, entry in sorted(KNOWN_SYSTEMS.items()):
        try:
            preset = mdtraj.load_topology(str(system_data_path(entry["pdb"])))
        except Exception:  # a preset file missing from an installation must not stop training
            continue
        if _atom_mismatch(preset, topology) is None:
            return name
    return None


def _system_from_data(config: TrainConfig, dataset: MolecularDataset) -> tuple["MolecularSystem", str]:
    """The system of the ``top`` PDB or of the data's own topology, with the configured force field.

    Atoms identical to a shipped preset's (alanine dipeptide) give that preset, states included.
    """
    import tempfile

    from spacetime_md.molecular.system.build import MolecularSystem, resolve_system

    forcefield = _forcefield_choice(config.forcefield)
    solvent = config.solvent or "vacuum"
    options = dict(forcefield=forcefield, solvent=solvent, cvs=config.cvs, states=config.states or ())
    first = Path(dataset.sources[0]) if dataset.sources else Path(dataset.source or "data")
    top = Path(config.top) if config.top is not None else None
    preset = _matching_preset(dataset.topology)
    try:
        if preset is not None:
            how = f"the preset {preset} (the data's atoms are its atoms)"
            system = resolve_system(preset, solvent=solvent, forcefield=forcefield, cvs=config.cvs,
                                    states=config.states)
        elif top is not None and _extension(top) == ".pdb":
            how = f"--top {top.name}"
            system = MolecularSystem.from_pdb(top, **options)
        else:
            how = f"the topology of {top.name if top is not None else first.name}"
            name = (top or first).name.split(".")[0] or "data"
            with tempfile.TemporaryDirectory() as tmp:
                pdb = Path(tmp) / f"{name}.pdb"
                pdb.write_text(_pdb_text(dataset.topology, dataset.train_xyz[0]))
                system = MolecularSystem.from_pdb(pdb, name=name, **options)
            system.source_pdb = None
    except ValueError as exc:
        raise ValueError(f"system from {how}: {exc}; pass --system your.pdb (and --forcefield)") from None
    if config.forcefield is None or config.solvent is None:
        logger.warning(
            "system: built from %s with %s in %s, assumed (pass --system, --forcefield, --solvent to choose)",
            how, list(system.forcefield_files), system.solvent,
        )
    return system, how


def _check_system_atoms(system: "MolecularSystem", how: str, dataset: MolecularDataset) -> None:
    mismatch = _atom_mismatch(system.mdtraj_topology, dataset.topology)
    if mismatch is not None:
        label = ", ".join(Path(s).name for s in dataset.sources) or dataset.source or "the dataset"
        raise ValueError(f"data: {label} {mismatch} (from the system {system.name}, {how})")


def _load_data(config: TrainConfig, system: "MolecularSystem | None", how: str) -> MolecularDataset:
    """``config.data`` with ``config.top``, else the system's topology for formats without one."""
    if config.top is not None or system is None:
        return _load_dataset(config.data, config.holdout_fraction, config.top, config.stride)
    return _load_dataset(config.data, config.holdout_fraction, system.mdtraj_topology, config.stride,
                         top_label=f"the system {system.name}, {how}")


def _resolve(
    config: TrainConfig, dataset: MolecularDataset | None, saved_spec: dict[str, Any] | None = None
) -> tuple["MolecularSystem", str, MolecularDataset]:
    system, how = _declared_system(config, saved_spec)
    if dataset is None:
        dataset = _load_data(config, system, how)
    if system is None:
        system, how = _system_from_data(config, dataset)
    _check_system_atoms(system, how, dataset)
    return system, how, dataset


def resolve_training_system(config: TrainConfig, dataset: MolecularDataset | None = None) -> "MolecularSystem":
    """The :class:`~spacetime_md.molecular.MolecularSystem` a training run records in its checkpoint.

    In this order: ``config.system`` (a preset name or a PDB, with ``forcefield``, ``solvent``,
    ``cvs``, ``states``); ``system.json`` beside the data (``MolecularSystem.spec()``, written
    by the sampler; ``cvs``/``states`` still apply, a different ``forcefield``/``solvent`` is an
    error); the shipped preset whose atoms are the data's (alanine dipeptide, with its states);
    the ``top`` PDB; the data's own topology (HDF5, PDB) written out as a PDB. The last three
    use ``forcefield`` (default amber99sbildn) and ``solvent`` (default vacuum) and warn when
    they were assumed.

    Parameters
    ----------
    config : TrainConfig
    dataset : MolecularDataset, optional
        The samples (default: read ``config.data`` with ``top`` and ``stride``); the system's
        atoms must be theirs.

    Raises
    ------
    ValueError
        A system the force field cannot parameterise, or atoms that differ from the data's
        (the message names the count or the first differing atom).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    return _resolve(config, dataset)[0]
