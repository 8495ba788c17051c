"""Cost of the equivariant denoiser vs atom count, dense vs sparse graph, in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_graph_scaling.py [--quick] [--batch 16] [--molecules 4]
        [--threads 1] [--out FILE.json]

Molecules (amber99sbildn atom types, bonds from the PDB; structures as built, minimised):
alanine dipeptide (22 atoms), Ace-(Ala)3-Nme (42, ``systems/alanine_tetrapeptide``),
Ace-(Ala)9-Nme (102) and Ace-(Ala)16-Nme (172, alpha helices, ``systems/alanine_chains``).

For each molecule and graph (``dense``: all pairs; ``sparse``: bonds up to 3 apart plus a
0.5 nm smooth cutoff), with the training defaults (width 32, 4 layers) and the same weights:

- ``train``: one training step (x0 loss at ``log_snr ~ U(-4, 10)``, backward, Adam) on a batch of
  ``--batch`` noisy copies of the structure (0.02 nm thermal-like noise);
- ``hutch``: the geodesic's per-row work: the denoiser, one Rademacher-probe Hutchinson
  divergence ``v^T J v`` (create_graph) and its gradient with respect to ``x``, at ``--batch``
  points with ``log_snr ~ U(0, 6)`` (frozen weights);
- ``edges/atom``: mean in-degree of the graph over the training batch.

Medians of ``--repeats`` timings (default 3; ``--clock cpu`` for process CPU time) after one warm-up; every dense/sparse pair is timed
interleaved in the same process, and the printed ratio is dense time / sparse time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MOLECULES = {
    "alanine dipeptide": ROOT / "spacetime_md" / "data" / "alanine_dipeptide" / "alanine-dipeptide.pdb",
    "Ace-(Ala)3-Nme": ROOT / "systems" / "alanine_tetrapeptide" / "alanine-tetrapeptide.pdb",
    "Ace-(Ala)9-Nme": ROOT / "systems" / "alanine_chains" / "ala9.pdb",
    "Ace-(Ala)16-Nme": ROOT / "systems" / "alanine_chains" / "ala16.pdb",
}


def build(pdb: Path, graph: str, seed: int = 0, cutoff_nm: float = 0.5):
    import mdtraj

    from spacetime_md.molecular.model.denoiser import EquivariantDenoiser, to_model
    from spacetime_md.molecular.model.dataset import atom_types_from_topology

    traj = mdtraj.load(str(pdb))
    types = atom_types_from_topology(traj.topology)
    bonds = [(b[0].index, b[1].index) for b in traj.topology.bonds]
    x0 = to_model(torch.as_tensor(traj.xyz[0], dtype=torch.float32), 0.15)
    sigma_data = float(x0.pow(2).mean().sqrt())
    torch.manual_seed(seed)
    model = EquivariantDenoiser(types, bonds, sigma_data=sigma_data, graph=graph, graph_cutoff_nm=cutoff_nm)
    return model, x0


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def timed(fn) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def workloads(model, x0: torch.Tensor, batch: int, seed: int = 0):
    from spacetime_md.molecular.model.denoiser import center
    from spacetime_md.molecular.model.training import denoising_loss

    gen = torch.Generator().manual_seed(seed)
    n = x0.numel()
    x_clean = center(x0.expand(batch, n) + (0.02 / 0.15) * torch.randn(batch, n, generator=gen))
    log_snr_train = -4.0 + 14.0 * torch.rand(batch, generator=gen)
    noise = torch.randn(batch, n, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = denoising_loss(model, x_clean, log_snr_train, noise)
        loss.backward()
        optimizer.step()

    frozen = [p.requires_grad for p in model.parameters()]
    log_snr_geo = 6.0 * torch.rand(batch, generator=gen)
    alpha = torch.sigmoid(log_snr_geo).sqrt().unsqueeze(-1)
    sigma = torch.sigmoid(-log_snr_geo).sqrt().unsqueeze(-1)
    x_geo = alpha * x_clean + sigma * center(noise)
    probe = torch.randint(0, 2, (batch, n), generator=gen).float() * 2 - 1

    def hutchinson_row():
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            x = x_geo.clone().requires_grad_(True)
            out = model(x, log_snr_geo)
            (vjp,) = torch.autograd.grad(out, x, probe, create_graph=True)
            estimate = (vjp * probe).sum() + out.square().sum()
            torch.autograd.grad(estimate, x)
        finally:
            for p, r in zip(model.parameters(), frozen):
                p.requires_grad_(r)

    def degree() -> float:
        with torch.no_grad():
            c_in = model.preconditioning(log_snr_train)[0].unsqueeze(-1)
            x_t = torch.sigmoid(log_snr_train).sqrt().unsqueeze(-1) * x_clean + \
                torch.sigmoid(-log_snr_train).sqrt().unsqueeze(-1) * center(noise)
            edge_index = model.edges((c_in * x_t).reshape(batch, -1, 3))[0]
        return edge_index.shape[1] / (batch * model.n_atoms)

    return train_step, hutchinson_row, degree


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 repeats, the two smallest molecules")
    parser.add_argument("--molecules", type=int, default=len(MOLECULES), help="the first N molecules (default all)")
    parser.add_argument("--cutoff-nm", type=float, default=0.5, help="cutoff of the sparse graph (default 0.5)")
    parser.add_argument("--clock", choices=tuple(CLOCK), default="wall",
                        help="wall time, or this process's CPU time (close to an idle machine's wall time with one "
                             "thread; less sensitive to other load)")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    molecules = dict(list(MOLECULES.items())[:2 if args.quick else args.molecules])
    rows = []
    print(f"sparse cutoff {args.cutoff_nm} nm, batch {args.batch}, {repeats} repeats (median, {args.clock} time), {args.threads} torch thread(s), "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    header = f"{'molecule':<18} {'atoms':>5} {'graph':<6} {'edges/atom':>10} {'train ms':>9} {'hutch ms':>9}"
    print(header)
    for name, pdb in molecules.items():
        pair = {}
        for graph in ("dense", "sparse"):
            model, x0 = build(pdb, graph, cutoff_nm=args.cutoff_nm)
            pair[graph] = (model, *workloads(model, x0, args.batch))
        result = {g: {"train": [], "hutch": []} for g in pair}
        for _, train_step, hutch, _ in pair.values():  # warm-up
            train_step()
            hutch()
        for _ in range(repeats):  # interleave dense and sparse
            for g, (_, train_step, hutch, _) in pair.items():
                result[g]["train"].append(timed(train_step))
                result[g]["hutch"].append(timed(hutch))
        for g, (model, _, _, degree) in pair.items():
            tr, hu = statistics.median(result[g]["train"]), statistics.median(result[g]["hutch"])
            row = {"molecule": name, "n_atoms": model.n_atoms, "graph": g, "edges_per_atom": degree(),
                   "train_step_s": tr, "hutchinson_row_batch_s": hu, "batch": args.batch}
            rows.append(row)
            print(f"{name:<18} {model.n_atoms:>5} {g:<6} {row['edges_per_atom']:>10.1f} {1e3 * tr:>9.1f} {1e3 * hu:>9.1f}")
    print("\nratios (dense / sparse time) and growth vs the smallest molecule (same graph):")
    print(f"{'molecule':<18} {'atoms':>5} {'train d/s':>9} {'hutch d/s':>9} {'dense x':>8} {'sparse x':>8}")
    first = {g: next(r for r in rows if r["graph"] == g) for g in ("dense", "sparse")}
    for name in molecules:
        d = next(r for r in rows if r["molecule"] == name and r["graph"] == "dense")
        s = next(r for r in rows if r["molecule"] == name and r["graph"] == "sparse")
        print(f"{name:<18} {d['n_atoms']:>5} {d['train_step_s'] / s['train_step_s']:>9.2f} "
              f"{d['hutchinson_row_batch_s'] / s['hutchinson_row_batch_s']:>9.2f} "
              f"{d['train_step_s'] / first['dense']['train_step_s']:>8.2f} "
              f"{s['train_step_s'] / first['sparse']['train_step_s']:>8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
