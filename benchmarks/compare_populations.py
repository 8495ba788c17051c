"""Per-residue basin populations of two independent Boltzmann sampling runs, with z-scores.

Issue 22's sampling check: the state populations of one run against an independent estimate
(another seed) within error bars. For every backbone (phi, psi) pair of the system's CVs
(``CollectiveVariables.ramachandran_pairs``) the frames in three backbone basins are counted:
C7eq/C5 (disc centre (-120, 100) deg, radius 100), C7ax (60, -20), radius 60, and alpha_R
(-75, -40), radius 40 (the discs of ``systems/alanine_tetrapeptide/states.json``), plus the
multi-residue states of ``--states`` if given. Errors are block averages over 20 contiguous
blocks of each run (``state_populations``); ``z = (a - b) / sqrt(err_a^2 + err_b^2)``.

    python benchmarks/compare_populations.py RUN_A RUN_B [--states systems/alanine_tetrapeptide/states.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from spacetime_md.molecular.sampling.populations import compare_to_reference, state_populations
from spacetime_md.molecular.sampling.samples import load_samples
from spacetime_md.molecular.system.build import MolecularSystem
from spacetime_md.molecular.system.states import MetastableState, Region, load_states

#: Backbone basins (degrees): name -> (phi centre, psi centre, radius).
BASINS = {"C7eq/C5": (-120.0, 100.0, 100.0), "C7ax": (60.0, -20.0, 60.0), "alpha_R": (-75.0, -40.0, 40.0)}


def residue_states(cvs) -> list[list[MetastableState]]:
    """One group of disjoint basins per residue (a frame is counted once per group)."""
    groups = []
    for residue, i, j in cvs.ramachandran_pairs():
        groups.append([MetastableState(f"res{residue} {basin}",
                                       regions=(Region((cvs[i].name, cvs[j].name), centre=(phi, psi), radius=radius),))
                       for basin, (phi, psi, radius) in BASINS.items()])
    return groups


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--states", default=None, help="states JSON with multi-residue states (optional)")
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)

    a, b = load_samples(args.run_a), load_samples(args.run_b)
    system = MolecularSystem.from_spec(json.loads((Path(args.run_a) / "system.json").read_text()))
    cvs = system.cvs
    groups = residue_states(cvs)
    if args.states:
        groups.append(list(load_states(args.states, system=system)))  # the file's states are disjoint
    values_a, values_b = cvs.compute(a.coordinates_nm), cvs.compute(b.coordinates_nm)
    table = {}
    for states in groups:
        table.update(compare_to_reference(state_populations(values_a, states, cvs),
                                          state_populations(values_b, states, cvs), [s.name for s in states]))
    print(f"A = {args.run_a} ({len(a.coordinates_nm)} frames), B = {args.run_b} ({len(b.coordinates_nm)} frames)")
    print(f"{'state':<22}{'A':>9}{'+-':>8}{'B':>9}{'+-':>8}{'z':>7}")
    for name, row in table.items():
        print(f"{name:<22}{row['ours']:>9.4f}{row['ours_error']:>8.4f}{row['reference']:>9.4f}"
              f"{row['reference_error']:>8.4f}{row['z']:>7.2f}")
    z = np.array([row["z"] for row in table.values()])
    print(f"|z| <= 2 for {int((np.abs(z) <= 2).sum())} of {len(z)} states; max |z| {np.abs(z).max():.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"run_a": args.run_a, "run_b": args.run_b, "states": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
