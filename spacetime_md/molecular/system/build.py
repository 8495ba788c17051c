"""Molecular systems: an OpenMM ``System`` plus its topology, positions and metadata.

:class:`MolecularSystem` is what every other molecular module takes. Build one from any PDB
that an OpenMM force field can parameterise (:meth:`MolecularSystem.from_pdb`) or by name
(:func:`load_system`, e.g. ``"alanine-dipeptide"``).

Conventions
-----------
- Public arguments and results are ``openmm.unit`` quantities; inside, plain floats and numpy
  arrays in OpenMM's ``md_unit_system`` (nm, ps, kJ/mol, K), mdtraj's convention too.
- Force fields: ``"amber99sbildn"`` (default), ``"amber96"``, ``"amber14"``, or a sequence of
  OpenMM force-field XML files. ``solvent="vacuum"`` uses ``NoCutoff``; ``solvent="implicit"``
  adds the matching OBC GB model (``amber99_obc.xml``, a ``GBSAOBCForce``: about 35x faster on
  OpenMM's Reference platform than the ``CustomGBForce`` files in ``implicit/``), also with
  ``NoCutoff``. See ``forcefields/README.md``.
- Constraints: bonds to hydrogen are rigid (``constraints="hbonds"``) by default, so 2 fs time
  steps are stable; pass ``constraints=None`` for a fully flexible system. Energies are
  evaluated with the full potential either way.
- Platform: ``platform=None`` (or ``"auto"``) picks ``Reference`` for systems under 2 000 atoms
  (on the 2-core machines we run on it is about 60x faster than ``CPU`` for alanine dipeptide,
  see ``ENVIRONMENT.md``) and the fastest available of CUDA, OpenCL, CPU otherwise; name a
  platform to override.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from spacetime_md.molecular.system.dihedrals import compute_phi_psi as _compute_phi_psi
from spacetime_md.molecular.system.states import MetastableState, assign_states as _assign_states, load_states
from spacetime_md.molecular.system.units import KELVIN, NM, kT_kj_per_mol, to_md_float

if TYPE_CHECKING:
    import mdtraj

__all__ = [
    "MolecularSystem",
    "load_system",
    "resolve_platform",
    "known_systems",
    "FORCEFIELDS",
    "KNOWN_SYSTEMS",
    "system_data_path",
    "resolve_system",
]

logger = logging.getLogger(__name__)

#: Force-field presets: name -> solvent -> OpenMM XML files.
FORCEFIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "amber99sbildn": {"vacuum": ("amber99sbildn.xml",), "implicit": ("amber99sbildn.xml", "amber99_obc.xml")},
    "amber96": {"vacuum": ("amber96.xml",), "implicit": ("amber96.xml", "amber96_obc.xml")},
    "amber14": {"vacuum": ("amber14-all.xml",), "implicit": ("amber14-all.xml", "implicit/obc2.xml")},
}

from spacetime_md.molecular.system.presets import KNOWN_SYSTEMS, SYSTEM_ALIASES, preset_name  # noqa: E402  (re-exported)

_SOLVENTS = ("vacuum", "implicit")
_CONSTRAINTS = {"hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles, "none": None}
_PLATFORM_PREFERENCE = ("CUDA", "OpenCL", "CPU", "Reference")
#: Below this many atoms the automatic platform is ``Reference`` (see module docstring).
REFERENCE_PLATFORM_MAX_ATOMS = 2000


def known_systems() -> tuple[str, ...]:
    """Names accepted by :func:`load_system`."""
    return tuple(sorted(KNOWN_SYSTEMS))


def system_data_path(relative: str) -> Path:
    """Path of a file shipped in ``spacetime_md/data`` (works for installed packages)."""
    path = Path(str(resources.files("spacetime_md").joinpath("data", *relative.split("/"))))
    if not path.exists():
        raise FileNotFoundError(f"package data: expected {relative!r} under spacetime_md/data, not found")
    return path


def resolve_platform(platform: str | None = None, n_atoms: int = 0) -> openmm.Platform:
    """Return an OpenMM platform by name, or choose one automatically.

    Parameters
    ----------
    platform : str or None
        ``None``/``"auto"``: ``Reference`` below :data:`REFERENCE_PLATFORM_MAX_ATOMS` atoms,
        otherwise the first available of CUDA, OpenCL, CPU, Reference. Otherwise a platform
        name (case-insensitive).
    n_atoms : int
        System size used by the automatic choice.
    """
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if platform is None or str(platform).lower() == "auto":
        if n_atoms < REFERENCE_PLATFORM_MAX_ATOMS:
            return openmm.Platform.getPlatformByName("Reference")
        for name in _PLATFORM_PREFERENCE:
            if name in available:
                return openmm.Platform.getPlatformByName(name)
    if not isinstance(platform, str):
        raise TypeError(f"platform: expected a platform name or None, got {type(platform).__name__}")
    for name in available:
        if name.lower() == platform.lower():
            return openmm.Platform.getPlatformByName(name)
    raise ValueError(f"platform: expected one of {['auto', *available]}, got {platform!r}")


def _resolve_forcefield(forcefield: str | Sequence[str], solvent: str) -> tuple[str, ...]:
    if solvent not in _SOLVENTS:
        raise ValueError(f"solvent: expected one of {list(_SOLVENTS)}, got {solvent!r}")
    if isinstance(forcefield, str):
        key = forcefield.lower().removesuffix(".xml")
        if key in FORCEFIELDS:
            return FORCEFIELDS[key][solvent]
        if forcefield.endswith(".xml"):
            return (forcefield,)
        raise ValueError(
            f"forcefield: expected one of {sorted(FORCEFIELDS)} or OpenMM XML file names, got {forcefield!r}"
        )
    files = tuple(str(f) for f in forcefield)
    if not files:
        raise ValueError("forcefield: expected at least one XML file, got an empty sequence")
    return files


def _has_gb(system: openmm.System) -> bool:
    return any(isinstance(f, (openmm.GBSAOBCForce, openmm.CustomGBForce)) for f in system.getForces())


class MolecularSystem:
    """An OpenMM system with its topology, reference positions and sampling temperature.

    Build with :meth:`from_pdb` or :func:`load_system`. Energies go through
    :func:`spacetime_md.molecular.evaluate_energies`, which counts them in
    :attr:`n_energy_evaluations`.

    Attributes
    ----------
    name : str
        System name (``"alanine-dipeptide"`` or the PDB file stem).
    openmm_system : openmm.System
    topology : openmm.app.Topology
    solvent : str
        ``"vacuum"`` or ``"implicit"``.
    forcefield_files : tuple of str
    constraints : str
        ``"hbonds"``, ``"allbonds"``, ``"hangles"`` or ``"none"``.
    states : tuple of MetastableState
        Metastable states in CV space (empty for systems without definitions).
    cvs : CollectiveVariables
        Collective variables (default: every backbone phi/psi; see :mod:`.cvs`).
    n_energy_evaluations : int
        Energies evaluated through :func:`evaluate_energies` so far.
    """

    def __init__(
        self,
        topology: app.Topology,
        positions_nm: np.ndarray,
        openmm_system: openmm.System,
        *,
        name: str,
        solvent: str,
        forcefield_files: tuple[str, ...],
        constraints: str,
        temperature_k: float,
        platform: str | None = None,
        source_pdb: str | None = None,
        states: Sequence[MetastableState] | str | Path = (),
        cvs: Any = None,
        pdb_text: str | None = None,
    ) -> None:
        self.topology = topology
        self.openmm_system = openmm_system
        self.name = name
        self.solvent = solvent
        self.forcefield_files = tuple(forcefield_files)
        self.constraints = constraints
        self.source_pdb = source_pdb
        self.pdb_text = pdb_text
        self._positions_nm = np.array(positions_nm, dtype=np.float64)
        self._temperature_k = float(temperature_k)
        self._platform = resolve_platform(platform, self.n_atoms)
        self._platform_request = platform
        self.n_energy_evaluations = 0
        self._energy_context: openmm.Context | None = None
        self._mdtraj_topology = None
        self._bonds = np.array([[b[0].index, b[1].index] for b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
        self._phi_psi_indices = self._find_phi_psi()
        from spacetime_md.molecular.system.cvs import CollectiveVariables, default_cvs, load_cvs

        if cvs is None:
            self.cvs = default_cvs(self)
        elif isinstance(cvs, CollectiveVariables):
            cvs.check(self.n_atoms)
            self.cvs = cvs
        elif isinstance(cvs, (str, Path)):
            self.cvs = load_cvs(cvs, self)
        else:
            self.cvs = CollectiveVariables.from_spec(list(cvs), self)
        if isinstance(states, (str, Path)):
            self.states = load_states(states, self)
        else:
            self.states = tuple(states)
            for s in self.states:
                s.check(self.cvs)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pdb(
        cls,
        path: str | Path,
        forcefield: str | Sequence[str] = "amber99sbildn",
        solvent: str = "vacuum",
        temperature: unit.Quantity = 300.0 * unit.kelvin,
        platform: str | None = None,
        constraints: str | None = "hbonds",
        name: str | None = None,
        states: Sequence[MetastableState] | str | Path = (),
        cvs: Any = None,
    ) -> "MolecularSystem":
        """Parameterise a PDB file with an OpenMM force field.

        Parameters
        ----------
        path : str or Path
            PDB file with all hydrogens (OpenMM's residue templates must match).
        forcefield : str or sequence of str
            Preset name (``"amber99sbildn"``, ``"amber96"``, ``"amber14"``) or XML files.
        solvent : {"vacuum", "implicit"}
        temperature : Quantity (kelvin)
            Sampling temperature (default 300 K).
        platform : str or None
            OpenMM platform name, or ``None`` for the automatic choice.
        constraints : {"hbonds", "allbonds", "hangles", "none", None}
            Rigid bonds (default: bonds to hydrogen).
        states : sequence of MetastableState, or a state file (JSON/YAML)
            Metastable states in CV space (see :mod:`spacetime_md.molecular.system.states`).
        cvs : CollectiveVariables, sequence of CV specs, or a CV file, optional
            Collective variables (default: every backbone phi/psi, see
            :func:`~spacetime_md.molecular.system.cvs.default_cvs`).
        """
        temperature_k = to_md_float("temperature", temperature, KELVIN)
        if temperature_k <= 0:
            raise ValueError(f"temperature: expected > 0 K, got {temperature_k} K")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: expected an existing PDB file, got {str(path)!r}")
        key = "none" if constraints is None else str(constraints).lower()
        if key not in _CONSTRAINTS:
            raise ValueError(f"constraints: expected one of {list(_CONSTRAINTS)} or None, got {constraints!r}")
        files = _resolve_forcefield(forcefield, solvent)
        pdb_text = _read_pdb_text(path)
        pdb = _parse_pdb(pdb_text, path.name)
        ff = app.ForceField(*files)
        try:
            omm_system = ff.createSystem(
                pdb.topology, nonbondedMethod=app.NoCutoff, constraints=_CONSTRAINTS[key], rigidWater=True
            )
        except ValueError as exc:
            raise ValueError(f"force field {list(files)} cannot parameterise {path.name}: {exc}") from exc
        if solvent == "implicit" and not _has_gb(omm_system):
            raise ValueError(
                f"solvent='implicit': expected the force field files {list(files)} to include a GB "
                "model (e.g. amber99_obc.xml), got none"
            )
        positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(NM), dtype=np.float64)
        return cls(
            pdb.topology,
            positions,
            omm_system,
            name=name or path.stem,
            solvent=solvent,
            forcefield_files=files,
            constraints=key,
            temperature_k=temperature_k,
            platform=platform,
            source_pdb=str(path),
            states=states,
            cvs=cvs,
            pdb_text=pdb_text,
        )

    @classmethod
    def from_spec(cls, spec: dict[str, Any], platform: str | None = None) -> "MolecularSystem":
        """Rebuild a system from :meth:`spec` (e.g. the ``system`` entry of a checkpoint)."""
        import tempfile

        from spacetime_md.molecular.system.states import _state_from_dict

        required = ("name", "pdb", "forcefield_files", "solvent", "constraints", "temperature_k")
        missing = [k for k in required if k not in spec]
        if missing:
            raise ValueError(f"system spec: expected keys {list(required)}, missing {missing}")
        with tempfile.TemporaryDirectory() as tmp:
            pdb = Path(tmp) / f"{spec['name']}.pdb"
            pdb.write_text(spec["pdb"])
            system = cls.from_pdb(
                pdb, forcefield=list(spec["forcefield_files"]), solvent=spec["solvent"],
                temperature=float(spec["temperature_k"]) * unit.kelvin, platform=platform,
                constraints=spec["constraints"], name=spec["name"], cvs=spec.get("cvs"),
            )
        system.source_pdb = spec.get("source_pdb")
        system.states = tuple(_state_from_dict(s, None, None, []) for s in spec.get("states", ()))
        for s in system.states:
            s.check(system.cvs)
        return system

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this system (JSON-serialisable; stored in checkpoints).

        The PDB text, force-field files, solvent, constraints, temperature, collective
        variables (RMSD references inline) and states (structure files by absolute path).
        """
        cvs = []
        for c in self.cvs:
            d = c.to_dict()
            if d.get("type") == "rmsd":
                d.pop("reference", None)
                d["reference_nm"] = np.asarray(c.reference).tolist()
            cvs.append(d)
        pdb_text = self.pdb_text
        if pdb_text is None:
            import io

            buf = io.StringIO()
            app.PDBFile.writeFile(self.topology, self._positions_nm * 10.0 * unit.angstrom, buf, keepIds=True)
            pdb_text = buf.getvalue()
        return {
            "name": self.name,
            "pdb": pdb_text,
            "source_pdb": self.source_pdb,
            "forcefield_files": list(self.forcefield_files),
            "solvent": self.solvent,
            "constraints": self.constraints,
            "temperature_k": self._temperature_k,
            "cvs": cvs,
            "states": [s.to_dict() for s in self.states],
            "fingerprint": self.fingerprint(),
        }

    # ------------------------------------------------------------------ basic properties
    @property
    def n_atoms(self) -> int:
        return self.topology.getNumAtoms()

    @property
    def temperature(self) -> unit.Quantity:
        """Sampling temperature (kelvin)."""
        return self._temperature_k * KELVIN

    @property
    def temperature_k(self) -> float:
        return self._temperature_k

    @property
    def kT(self) -> unit.Quantity:
        """Thermal energy at :attr:`temperature` (kJ/mol)."""
        return kT_kj_per_mol(self._temperature_k) * unit.kilojoule_per_mole

    @property
    def platform(self) -> openmm.Platform:
        return self._platform

    @property
    def platform_name(self) -> str:
        return self._platform.getName()

    @property
    def positions(self) -> unit.Quantity:
        """Reference positions (nm), shape=(N, 3)."""
        return self._positions_nm.copy() * NM

    @property
    def positions_nm(self) -> np.ndarray:
        """Reference positions as a plain float64 array in nm, shape=(N, 3)."""
        return self._positions_nm.copy()

    @property
    def masses(self) -> unit.Quantity:
        """Atomic masses (dalton), shape=(N,)."""
        return self.masses_dalton * unit.dalton

    @property
    def masses_dalton(self) -> np.ndarray:
        s = self.openmm_system
        return np.array([s.getParticleMass(i).value_in_unit(unit.dalton) for i in range(s.getNumParticles())])

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(a.element.symbol if a.element is not None else "X" for a in self.topology.atoms())

    @property
    def atom_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.topology.atoms())

    @property
    def heavy_atom_indices(self) -> np.ndarray:
        """Indices of non-hydrogen atoms, shape=(H,)."""
        return np.array([i for i, e in enumerate(self.elements) if e != "H"], dtype=np.int64)

    @property
    def bonds(self) -> np.ndarray:
        """Bonded atom pairs from the topology, shape=(B, 2)."""
        return self._bonds.copy()

    @property
    def mdtraj_topology(self) -> "mdtraj.Topology":
        if self._mdtraj_topology is None:
            import mdtraj

            self._mdtraj_topology = mdtraj.Topology.from_openmm(self.topology)
        return self._mdtraj_topology

    @property
    def phi_indices(self) -> tuple[int, int, int, int] | None:
        """Atoms of the first backbone phi dihedral (C-N-CA-C), or ``None`` if there is none."""
        return self._phi_psi_indices[0]

    @property
    def psi_indices(self) -> tuple[int, int, int, int] | None:
        """Atoms of the first backbone psi dihedral (N-CA-C-N), or ``None`` if there is none."""
        return self._phi_psi_indices[1]

    def _find_phi_psi(self):
        import mdtraj

        top = self.mdtraj_topology
        dummy = mdtraj.Trajectory(self._positions_nm[None].astype(np.float32), top)
        phi = mdtraj.compute_phi(dummy)[0]
        psi = mdtraj.compute_psi(dummy)[0]
        # Take the first residue that has both (phi, psi): for a dipeptide this is ALA.
        for quad in phi:
            ca = quad[2]
            match = [q for q in psi if q[1] == ca]
            if match:
                return tuple(int(i) for i in quad), tuple(int(i) for i in match[0])
        return (tuple(int(i) for i in phi[0]) if len(phi) else None, tuple(int(i) for i in psi[0]) if len(psi) else None)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this system in checkpoints and configs (JSON-serialisable)."""
        h = hashlib.sha256()
        h.update(openmm.XmlSerializer.serialize(self.openmm_system).encode())
        return {
            "name": self.name,
            "n_atoms": self.n_atoms,
            "solvent": self.solvent,
            "forcefield_files": list(self.forcefield_files),
            "constraints": self.constraints,
            "system_sha256": h.hexdigest(),
        }

    def __repr__(self) -> str:
        return (
            f"MolecularSystem(name={self.name!r}, n_atoms={self.n_atoms}, solvent={self.solvent!r}, "
            f"forcefield={list(self.forcefield_files)}, constraints={self.constraints!r}, "
            f"temperature={self._temperature_k:g} K, platform={self.platform_name!r})"
        )

    # ------------------------------------------------------------------ helpers
    def compute_phi_psi(self, coordinates: Any) -> Any:
        """(phi, psi) in radians of coordinates (nm), shape=(F, N, 3) -> (F, 2); numpy or torch."""
        if self.phi_indices is None or self.psi_indices is None:
            raise ValueError(f"{self.name}: expected a peptide with backbone phi and psi, found none")
        if unit.is_quantity(coordinates):
            coordinates = np.asarray(coordinates.value_in_unit(NM))
        return _compute_phi_psi(coordinates, self.phi_indices, self.psi_indices)

    def compute_cvs(self, coordinates: Any) -> np.ndarray:
        """Collective-variable values (radians / nm) of coordinates (nm), shape=(F, N, 3) -> (F, K)."""
        return self.cvs.compute(coordinates)

    def assign_states(self, coordinates: Any) -> np.ndarray:
        """Index into :attr:`states` of each frame (nm, shape=(F, N, 3)), ``-1`` if in none."""
        if not self.states:
            raise ValueError(f"{self.name}: expected metastable-state definitions, this system has none")
        values = self.compute_cvs(coordinates)
        return _assign_states(np.atleast_2d(values), self.states, self.cvs)

    def get_state(self, name: str) -> MetastableState:
        """The metastable state called ``name`` (or one of its aliases)."""
        for s in self.states:
            if s.matches(name):
                return s
        raise KeyError(f"state: expected one of {[s.name for s in self.states]}, got {name!r}")

    def to_mdtraj(self, coordinates: Any) -> "mdtraj.Trajectory":
        """An ``mdtraj.Trajectory`` of coordinates (nm), shape=(F, N, 3) or (N, 3)."""
        import mdtraj

        if unit.is_quantity(coordinates):
            coordinates = coordinates.value_in_unit(NM)
        if hasattr(coordinates, "detach"):
            coordinates = coordinates.detach().cpu().numpy()
        x = np.asarray(coordinates, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"coordinates: expected shape (F, {self.n_atoms}, 3), got {x.shape}")
        return mdtraj.Trajectory(x, self.mdtraj_topology)

    def create_context(
        self,
        integrator: openmm.Integrator | None = None,
        *,
        system: openmm.System | None = None,
        positions_nm: np.ndarray | None = None,
    ) -> openmm.Context:
        """A new OpenMM Context on :attr:`platform` (default integrator: a dummy Verlet)."""
        integrator = integrator if integrator is not None else openmm.VerletIntegrator(0.001)
        ctx = openmm.Context(system if system is not None else self.openmm_system, integrator, self._platform)
        ctx.setPositions(self._positions_nm if positions_nm is None else np.asarray(positions_nm, dtype=np.float64))
        return ctx

    def minimize(
        self,
        positions: unit.Quantity | None = None,
        *,
        dihedral_restraints: Sequence[tuple[Sequence[int], unit.Quantity]] = (),
        restraint_constant: unit.Quantity = 2000.0 * unit.kilojoule_per_mole / unit.radian**2,
        tolerance: unit.Quantity = 1.0 * unit.kilojoule_per_mole / unit.nanometer,
        max_iterations: int = 0,
    ) -> unit.Quantity:
        """Local energy minimisation, optionally with harmonic dihedral restraints.

        Parameters
        ----------
        positions : Quantity (nm), shape=(N, 3), optional
            Start (default: :attr:`positions`).
        dihedral_restraints : sequence of (atoms, angle)
            Each restrains the dihedral of 4 atoms to ``angle`` (a Quantity in radians or
            degrees) with ``restraint_constant / 2 * dtheta^2`` (periodic ``dtheta``).
        tolerance : Quantity (kJ/mol/nm)
            OpenMM's ``LocalEnergyMinimizer`` tolerance (RMS force).
        max_iterations : int
            0 means until converged.

        Returns
        -------
        Quantity (nm), shape=(N, 3)
        """
        start = self._positions_nm if positions is None else _positions_to_nm("positions", positions, self.n_atoms)
        system = self.openmm_system
        if dihedral_restraints:
            k = to_md_float("restraint_constant", restraint_constant, unit.kilojoule_per_mole / unit.radian**2)
            system = copy.deepcopy(self.openmm_system)
            force = openmm.CustomTorsionForce("0.5*k_restraint*d^2; d = min(a, 2*pi - a); a = abs(theta - theta0); pi = 3.141592653589793")
            force.addGlobalParameter("k_restraint", k)
            force.addPerTorsionParameter("theta0")
            for atoms, angle in dihedral_restraints:
                atoms = tuple(int(a) for a in atoms)
                if len(atoms) != 4:
                    raise ValueError(f"dihedral_restraints: expected 4 atom indices, got {atoms}")
                force.addTorsion(*atoms, [to_md_float("dihedral_restraints angle", angle, unit.radian)])
            system.addForce(force)
        tol = to_md_float("tolerance", tolerance, unit.kilojoule_per_mole / unit.nanometer)
        ctx = self.create_context(system=system, positions_nm=start)
        ctx.applyConstraints(1e-8)
        openmm.LocalEnergyMinimizer.minimize(ctx, tol, int(max_iterations))
        out = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(NM)
        del ctx
        return np.asarray(out, dtype=np.float64) * NM


def _read_pdb_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path.name}: expected a text PDB file, got binary data") from None
    except OSError as exc:
        raise ValueError(f"{path.name}: cannot read ({exc.strerror})") from None


def _parse_pdb(text: str, label: str) -> "app.PDBFile":
    import io

    if not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
        raise ValueError(f"{label}: expected a PDB file with ATOM/HETATM records, found none")
    try:
        pdb = app.PDBFile(io.StringIO(text))
    except Exception as exc:  # OpenMM raises assorted errors for malformed files
        raise ValueError(f"{label}: expected a readable PDB file, got {type(exc).__name__}: {exc}") from None
    if pdb.topology.getNumAtoms() == 0:
        raise ValueError(f"{label}: expected a PDB file with ATOM/HETATM records, found no atoms")
    return pdb


def _positions_to_nm(name: str, positions: Any, n_atoms: int) -> np.ndarray:
    if not unit.is_quantity(positions):
        raise TypeError(f"{name}: expected an openmm.unit.Quantity in nanometer, got bare {type(positions).__name__}")
    x = np.asarray(positions.value_in_unit(NM), dtype=np.float64)
    if x.shape != (n_atoms, 3):
        raise ValueError(f"{name}: expected shape ({n_atoms}, 3), got {x.shape}")
    return x


def load_system(
    name: str,
    solvent: str = "vacuum",
    forcefield: str | Sequence[str] = "amber99sbildn",
    temperature: unit.Quantity = 300.0 * unit.kelvin,
    platform: str | None = None,
    constraints: str | None = "hbonds",
) -> MolecularSystem:
    """A named system shipped with the package (see :func:`known_systems` and
    :mod:`spacetime_md.molecular.system.presets`): ``"alanine-dipeptide"`` (22 atoms, states C7eq/C5,
    C7ax, alpha_R) or ``"alanine-tetrapeptide"`` (42 atoms, per-residue states).
    """
    key = preset_name(name)
    if key is None:
        raise ValueError(f"system: expected one of {list(known_systems())}, got {name!r}")
    entry = KNOWN_SYSTEMS[key]
    return MolecularSystem.from_pdb(
        system_data_path(entry["pdb"]),
        forcefield=forcefield,
        solvent=solvent,
        temperature=temperature,
        platform=platform,
        constraints=constraints,
        name=key,
        states=system_data_path(entry["states"]) if "states" in entry else (),
    )


def resolve_system(
    system: "str | Path | MolecularSystem",
    *,
    solvent: str = "vacuum",
    forcefield: str | Sequence[str] = "amber99sbildn",
    temperature: unit.Quantity = 300.0 * unit.kelvin,
    platform: str | None = None,
    constraints: str | None = "hbonds",
    cvs: Any = None,
    states: Any = None,
) -> MolecularSystem:
    """A named preset (``"alanine-dipeptide"``) or any PDB file, as a :class:`MolecularSystem`.

    ``cvs`` (a CV file or specs) and ``states`` (a state file) replace the defaults (a
    preset's own states; for a PDB, no states and every backbone phi/psi as CVs).
    """
    if isinstance(system, MolecularSystem):
        if cvs is not None:
            from spacetime_md.molecular.system.cvs import CollectiveVariables, load_cvs

            system.cvs = load_cvs(cvs, system) if isinstance(cvs, (str, Path)) else CollectiveVariables.from_spec(cvs, system)
        if states is not None:
            system.states = load_states(states, system) if isinstance(states, (str, Path)) else tuple(states)
        return system
    text = str(system)
    is_file = isinstance(system, Path) or text.lower().endswith(".pdb") or Path(text).is_file()
    if is_file:
        mol = MolecularSystem.from_pdb(Path(text), forcefield=forcefield, solvent=solvent, temperature=temperature,
                                       platform=platform, constraints=constraints, cvs=cvs)
    else:
        mol = load_system(text, solvent=solvent, forcefield=forcefield, temperature=temperature,
                          platform=platform, constraints=constraints)
        if cvs is not None:
            from spacetime_md.molecular.system.cvs import CollectiveVariables, load_cvs

            mol.cvs = load_cvs(cvs, mol) if isinstance(cvs, (str, Path)) else CollectiveVariables.from_spec(cvs, mol)
            for s in mol.states:
                s.check(mol.cvs)
    if states is not None:
        mol.states = load_states(states, mol) if isinstance(states, (str, Path)) else tuple(states)
    return mol


def _deg(value: float) -> unit.Quantity:
    return math.radians(value) * unit.radian
