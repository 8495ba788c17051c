"""Compute the independent reference populations shipped with the package.

    python systems/alanine_dipeptide/reference_populations.py [--solvent vacuum|implicit]
        [--production NS] [--seeds S ...]

One long Langevin MD run at 300 K with a fixed bias on phi (minus 0.9 times a rough free-energy
profile from a short umbrella-sampling + MBAR run), reweighted exactly
(:func:`spacetime_md.molecular.sampling.reference.estimate_populations_flat_bias`): a different method
from the replica exchange of ``spacetime-md sample``, so agreement of the two checks both. The result is merged into
``spacetime_md/data/alanine_dipeptide/reference_populations.json`` under the key
``"<forcefield files>|<solvent>|<T> K|<constraints>"``. Default: two independent 10 ns runs
(seeds 0 and 1) merged (mean, error sqrt(e0^2 + e1^2) / 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import openmm.unit as unit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from spacetime_md.molecular._io import write_json_atomic  # noqa: E402
from spacetime_md.molecular.sampling.reference import (
    estimate_populations_flat_bias,
    merge_reference_runs,
    reference_key,
)  # noqa: E402
from spacetime_md.molecular.system.build import load_system  # noqa: E402

OUT = ROOT / "spacetime_md" / "data" / "alanine_dipeptide" / "reference_populations.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--solvent", default="vacuum", choices=("vacuum", "implicit"))
    p.add_argument("--production", type=float, default=10.0, help="ns of biased MD")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="independent runs, merged")
    p.add_argument("--out", default=str(OUT), help="JSON file to merge the result into")
    args = p.parse_args(argv)
    out = Path(args.out)
    system = load_system("alanine-dipeptide", solvent=args.solvent)
    runs = [
        estimate_populations_flat_bias(system, production=args.production * unit.nanosecond, seed=seed, progress=True)
        for seed in args.seeds
    ]
    for run in runs:
        print(f"seed {run['settings']['seed']}: " + ", ".join(
            f"{k} {v['fraction']:.4f} +- {v['error']:.4f}" for k, v in run["populations"].items()))
    result = merge_reference_runs(runs)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[reference_key(system)] = result
    write_json_atomic(out, data)
    for key, v in result["populations"].items():
        print(f"{key:<10} {v['fraction']:.4f} +- {v['error']:.4f}")
    print(f"{result['md_time_ns']:.1f} ns of MD in {result['wall_seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
