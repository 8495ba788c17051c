"""Alanine dipeptide transition paths C7eq -> C7ax in a few lines of Python.

    python examples/alanine_dipeptide_paths.py [OUT_DIR]

The same job as ``spacetime-md paths --system alanine-dipeptide --start C7eq --end C7ax``,
step by step: the OpenMM system, the shipped equivariant diffusion model, the spacetime
geodesic, annealed-Langevin transition paths run in OpenMM on the force field, validation
with OpenMM energies, and export with mdtraj.
"""

from __future__ import annotations

import sys

import numpy as np
import openmm.unit as unit

from spacetime_md.molecular import (PathConfig, TransitionPaths, compute_transition_paths, load_pretrained,
                                    load_system)


def main(out_dir: str = "runs/example_paths") -> None:
    system = load_system("alanine-dipeptide", solvent="vacuum", temperature=300 * unit.kelvin)
    model = load_pretrained("alanine-dipeptide")  # trained by `spacetime-md train`, see README

    config = PathConfig(n_paths=4, seed=0)  # geodesic + straight-line baseline, 4 paths each
    result = compute_transition_paths(system, model, "C7eq", "C7ax", config)

    geodesic = result["geodesic"]
    print(f"geodesic: energy {geodesic.energy:.1f}, lowest log_snr {float(geodesic.log_snr.min()):.2f}")
    for kind in ("geodesic", "straight"):
        m = result["report"][kind]
        print(f"{kind:9s}: target hit {m['target_hit_rate']:.0%}, max energy "
              f"{m['max_energy_kj_mol']['mean']:.1f} +- {m['max_energy_kj_mol']['std']:.1f} kJ/mol, "
              f"chirality kept in {m['chirality_kept_fraction']:.0%} of frames")

    paths: TransitionPaths = result["paths"]
    paths.save(out_dir, system)                 # DCD per path + topology.pdb + all paths in HDF5
    traj = TransitionPaths.load(out_dir).to_mdtraj(path=0)  # back as an mdtraj.Trajectory
    print(f"path 0: {traj.n_frames} frames written to {out_dir}")

    # An OpenMM Simulation positioned at the last frame of path 0, ready for unbiased MD.
    simulation = paths.simulation_at(system, path=0, frame=-1)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy()
    print(f"potential energy at the last frame: {energy.value_in_unit(unit.kilojoule_per_mole):.1f} kJ/mol")
    assert np.isfinite(energy.value_in_unit(unit.kilojoule_per_mole))


if __name__ == "__main__":
    main(*sys.argv[1:2])
