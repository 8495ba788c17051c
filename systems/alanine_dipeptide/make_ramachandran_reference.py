"""Write the (phi, psi) histogram of Boltzmann samples drawn in the background of path plots.

    python systems/alanine_dipeptide/make_ramachandran_reference.py SAMPLES_DIR [--bins 72]

SAMPLES_DIR is the output of ``spacetime-md sample`` (its ``samples.h5``); the shipped file
``spacetime_md/data/alanine_dipeptide/ramachandran_reference.npz`` was made from the
50 000-sample vacuum run ``spacetime-md sample --system alanine-dipeptide --n-samples 50000
--out runs/ala2_samples --seed 0``. Keys: ``counts (bins, bins)``, ``phi_edges``, ``psi_edges``
(rad), ``n_samples``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from spacetime_md.molecular.sampling.samples import load_samples
from spacetime_md.molecular.system.build import load_system

OUT = Path(__file__).resolve().parents[2] / "spacetime_md" / "data" / "alanine_dipeptide" / "ramachandran_reference.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples_dir")
    parser.add_argument("--bins", type=int, default=72)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    samples = load_samples(args.samples_dir)
    system = load_system("alanine-dipeptide")
    phi_psi = np.asarray(system.compute_phi_psi(samples.coordinates_nm))
    edges = np.linspace(-np.pi, np.pi, args.bins + 1)
    counts, _, _ = np.histogram2d(phi_psi[:, 0], phi_psi[:, 1], bins=(edges, edges))
    out = Path(args.out)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=out.parent)
    os.close(fd)
    np.savez_compressed(tmp, counts=counts.astype(np.int32), phi_edges=edges, psi_edges=edges,
                        n_samples=np.int64(len(phi_psi)))
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"wrote {out}: {len(phi_psi)} samples, {args.bins} x {args.bins} bins")


if __name__ == "__main__":
    main()
