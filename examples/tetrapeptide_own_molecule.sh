#!/usr/bin/env bash
# Your own molecule, end to end from the CLI, with small settings (minutes on 2 CPU cores):
# capped alanine tetrapeptide (42 atoms, systems/alanine_tetrapeptide/), from Boltzmann samples
# to validated transition paths, committor and a batch of pairs.
#   bash examples/tetrapeptide_own_molecule.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-runs/ala4}
SMD=${SMD:-spacetime-md}
SYS=systems/alanine_tetrapeptide
mkdir -p "$OUT"
# 1. Boltzmann samples: any PDB works as --system; the states file is per residue in CV space.
$SMD sample --system $SYS/alanine-tetrapeptide.pdb --states $SYS/states.json \
    --n-samples 3000 --n-replicas 6 --max-temperature 600 --out "$OUT/samples" --seed 0 --no-progress
# 2. Train: the checkpoint records the system (PDB, force field, CVs, states) from samples/system.json.
$SMD train --data "$OUT/samples" --out "$OUT/model" --steps 300 --batch-size 32 --seed 0 --num-threads 1 --no-progress
# 3. Evaluate: per-residue Ramachandran JSD, every chiral centre, state populations.
$SMD evaluate --checkpoint "$OUT/model/model.pt" --data "$OUT/samples" --n-samples 300 --n-steps 100 --num-threads 1 \
    --json "$OUT/evaluate.json"
# 4. Paths between two states of the checkpoint's system: nothing else is needed.
$SMD paths --checkpoint "$OUT/model/model.pt" --start all_C7eq --end mid_C7ax --n-paths 4 --relaxed \
    --out "$OUT/paths"
# 5. Committor along the first geodesic path (states from the recorded system).
$SMD committor "$OUT/paths" --frames 4 --shots 6 --max-length-ps 2
# 6. A batch of pairs (state names or PDB files relative to the pairs file).
cp $SYS/C7eq_all.pdb $SYS/mid_C7ax.pdb "$OUT/"
printf 'start,end\nall_C7eq,mid_C7ax\nmid_C7ax.pdb,C7eq_all.pdb\n' > "$OUT/pairs.csv"
$SMD batch "$OUT/pairs.csv" --checkpoint "$OUT/model/model.pt" --n-paths 2 --workers 1 --no-dashboard \
    --no-progress --out "$OUT/batch"
