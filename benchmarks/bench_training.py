"""Training throughput of the equivariant denoiser: PyG MessagePassing vs a dense baseline.

    python benchmarks/bench_training.py [--quick] [--out FILE.json] [--threads N]

Measures, for the alanine dipeptide model (22 atoms, fully connected):

- forward time (no grad) and one training step (forward + backward + Adam) for several batch
  sizes, giving steps/s and samples/s;
- the input-gradient workload of the geodesic solver: a Hutchinson probe ``v^T J v`` and its
  gradient with respect to ``x`` (double backward) at batch 128;

for the model as shipped (``EquivariantConv``, a torch-geometric ``MessagePassing`` layer) and,
in the same process, for a dense plain-torch implementation of the *same* layer and weights
(``(B, N, N, H)`` broadcasting, no gathers or scatters). Ratios are PyG time / dense time
(> 1: the dense baseline is faster). Medians of ``--repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn

from spacetime_md.molecular.model.denoiser import EquivariantDenoiser, center

ALA_TYPES = ["710", "711", "710", "710", "712", "713", "0", "1", "2", "3", "4", "5", "5", "5",
             "6", "7", "706", "707", "708", "709", "709", "709"]
ALA_BONDS = [(1, 4), (4, 5), (0, 1), (1, 2), (1, 3), (4, 6), (8, 14), (14, 15), (8, 10), (8, 9),
             (6, 8), (10, 11), (10, 12), (10, 13), (6, 7), (14, 16), (18, 19), (18, 20), (18, 21),
             (16, 18), (16, 17)]


class DenseDenoiser(nn.Module):
    """The same network as ``EquivariantDenoiser`` (shares its weights) on dense tensors."""

    def __init__(self, model: EquivariantDenoiser):
        super().__init__()
        self.model = model
        n = model.n_atoms
        eye = torch.eye(n, dtype=torch.bool)
        attr = torch.zeros(n, n, model._edge_attr.shape[1])
        attr[~eye] = model._edge_attr  # edges are sorted by target: row i = target, column j = source
        self.register_buffer("edge_attr", attr)
        self.register_buffer("mask", (~eye).float().unsqueeze(-1))

    def conv(self, conv, h, pos):
        H, n = conv.hidden_channels, pos.shape[1]
        ab = conv.lin_node(h)
        a, b = ab[..., :H], ab[..., H:]
        rel = pos.unsqueeze(2) - pos.unsqueeze(1)
        dist = torch.sqrt((rel * rel).sum(-1, keepdim=True) + conv.eps)
        e = torch.cat([self.edge_attr.expand(h.shape[0], n, n, -1), conv.rbf(dist), dist / conv.rbf.cutoff], dim=-1)
        m = nn.functional.silu(a.unsqueeze(2) + b.unsqueeze(1) + conv.lin_edge(e))
        m = nn.functional.silu(conv.lin_message(m)) * self.mask
        coef = conv.coord_out(m)
        vec = torch.einsum("bijk,bijc->bikc", coef, rel / (dist + 1.0)) / (n - 1)
        m_agg = m.sum(2) / (n - 1)
        disp = vec[:, :, 0]
        pseudo = torch.linalg.cross(vec[:, :, 1], vec[:, :, 2], dim=-1)
        frame = vec[:, :, 3:] * torch.rsqrt((vec[:, :, 3:] ** 2).sum(-1, keepdim=True) + conv.frame_eps**2)
        ps = (frame[:, :, 0] * torch.linalg.cross(frame[:, :, 1], frame[:, :, 2], dim=-1)).sum(-1, keepdim=True)
        h = h + conv.node_mlp(torch.cat([h, m_agg, ps], dim=-1))
        return h, pos + disp + pseudo

    def forward(self, x, log_snr):
        mdl = self.model
        B, N, H, L = x.shape[0], mdl.n_atoms, mdl.hidden_channels, mdl.n_layers
        x = center(x)
        c_in, c_skip, c_out = mdl.preconditioning(log_snr)
        pos0 = (c_in.unsqueeze(-1) * x).reshape(B, N, 3)
        t = mdl.time_proj(mdl.time_embedding(log_snr)).reshape(B, 1, L, H)
        h = mdl.atom_embedding(mdl.type_index).unsqueeze(0).expand(B, N, H)
        p = pos0
        for k, conv in enumerate(mdl.convs):
            h, p = self.conv(conv, h + t[:, :, k], p)
        out = center((p - pos0).reshape(B, -1))
        return c_skip.unsqueeze(-1) * x + c_out.unsqueeze(-1) * out


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(net, params, batch: int, repeats: int) -> dict[str, float]:
    x = torch.randn(batch, 66)
    log_snr = torch.empty(batch).uniform_(-6, 12)
    opt = torch.optim.Adam(params, lr=1e-4)

    def forward():
        with torch.no_grad():
            net(x, log_snr)

    def step():
        loss = (net(x, log_snr) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def hutchinson_grad():
        xr = x.clone().requires_grad_(True)
        out = net(xr, log_snr)
        probe = torch.randint(0, 2, x.shape).float() * 2 - 1
        (vjp,) = torch.autograd.grad(out, xr, probe, create_graph=True)
        (vjp * probe).sum().backward()

    fwd = median_time(forward, repeats)
    stp = median_time(step, repeats)
    result = {"batch": batch, "forward_ms": fwd * 1e3, "step_ms": stp * 1e3,
              "steps_per_s": 1.0 / stp, "samples_per_s": batch / stp}
    if batch == 128:
        result["hutchinson_double_backward_ms"] = median_time(hutchinson_grad, max(repeats // 2, 2)) * 1e3
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "training.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 7)
    batches = [128] if args.quick else [32, 128, 256]

    model = EquivariantDenoiser(ALA_TYPES, ALA_BONDS, hidden_channels=args.hidden, n_layers=args.layers)
    dense = DenseDenoiser(model)
    x = torch.randn(8, 66)
    log_snr = torch.linspace(-6, 12, 8)
    with torch.no_grad():
        agreement = float((model(x, log_snr) - dense(x, log_snr)).abs().max())

    rows = []
    for batch in batches:
        pyg = bench(model, model.parameters(), batch, repeats)
        base = bench(dense, model.parameters(), batch, repeats)
        rows.append({"pyg": pyg, "dense": base,
                     "ratio_step": pyg["step_ms"] / base["step_ms"],
                     "ratio_forward": pyg["forward_ms"] / base["forward_ms"]})

    print(f"EquivariantDenoiser H={args.hidden} L={args.layers}, 22 atoms fully connected, "
          f"{args.threads} threads, medians of {repeats}; PyG vs dense max |diff| = {agreement:.1e}")
    print(f"{'batch':>5} | {'fwd PyG ms':>10} {'fwd dense':>9} {'ratio':>5} | {'step PyG ms':>11} "
          f"{'step dense':>10} {'ratio':>5} | {'PyG samples/s':>13} {'steps/s':>7}")
    for r in rows:
        p, d = r["pyg"], r["dense"]
        print(f"{p['batch']:>5} | {p['forward_ms']:>10.1f} {d['forward_ms']:>9.1f} {r['ratio_forward']:>5.2f} | "
              f"{p['step_ms']:>11.1f} {d['step_ms']:>10.1f} {r['ratio_step']:>5.2f} | "
              f"{p['samples_per_s']:>13.0f} {p['steps_per_s']:>7.2f}")
    for r in rows:
        if "hutchinson_double_backward_ms" in r["pyg"]:
            p, d = r["pyg"]["hutchinson_double_backward_ms"], r["dense"]["hutchinson_double_backward_ms"]
            print(f"Hutchinson probe + gradient w.r.t. x (double backward), batch 128: "
                  f"PyG {p:.1f} ms, dense {d:.1f} ms, ratio {p / d:.2f}")
    result = {
        "benchmark": "training",
        "config": {"hidden": args.hidden, "layers": args.layers, "threads": args.threads, "repeats": repeats},
        "agreement_max_abs_diff": agreement,
        "rows": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "load_average": os.getloadavg(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(result, handle, indent=2)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
