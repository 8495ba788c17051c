"""The equivariant denoiser for one molecule and the nm <-> model-unit scaling.

Units and subspace
------------------
Coordinates enter the network in dimensionless *model units*. The one conversion is

    x_model = centre(x_nm) / length_scale_nm          (:func:`to_model`)
    x_nm    = x_model * length_scale_nm                (:func:`from_model`)

with ``length_scale_nm`` stored with the model (and its checkpoint). ``centre`` removes the
centre of *geometry* (the unweighted mean over atoms), so the centring map ``P`` is the
orthogonal projection ``P = I_N - 1 1^T / N`` acting on each Cartesian axis. Data, forward
noise (``P eps``) and denoiser outputs all live in the ``3N - 3``-dimensional subspace
``{x : sum_atoms x = 0}``. The denoiser is ``D(x) = f(P x)`` with ``f`` mapping into that
subspace, so its Jacobian satisfies ``J = P J P`` and the full-space divergence computed by the
core (autograd over all ``3N`` inputs, or Hutchinson) *is* the trace restricted to the subspace;
no correction is needed. ``log_snr`` values quoted for molecules refer to model units.

Preconditioning (x0-prediction in ``log_snr``)
----------------------------------------------
With the VP schedule ``alpha^2 = sigmoid(l)``, ``sigma^2 = sigmoid(-l)`` and the data's RMS
coordinate ``sigma_data`` (model units),

    v      = alpha^2 sigma_data^2 + sigma^2            (variance of x_t per coordinate)
    c_in   = 1 / sqrt(v)
    c_skip = alpha sigma_data^2 / v
    c_out  = sigma sigma_data / sqrt(v)
    D(x, l) = c_skip P x + c_out P F(c_in P x, l)

where ``F`` is the EGNN displacement ``pos_L - pos_0`` of the stacked :class:`EquivariantConv`
layers. This is EDM's preconditioning written for VP in ``log_snr``: the network's target
``(x0 - c_skip x_t) / c_out`` has unit variance at every noise level.

Graphs
------
``graph="dense"`` (the default, and what every checkpoint without a ``graph`` entry uses)
connects all ``N (N - 1)`` ordered atom pairs: the cost of a layer grows with ``N^2``.
``graph="sparse"`` keeps, per structure, the pairs at most ``max_hops`` bonds apart (always,
weight 1) and every other pair whose distance in the network input ``c_in P x`` is below
``r_c = graph_cutoff_nm / (length_scale_nm * sigma_data)``; at low noise ``c_in = 1 /
sigma_data``, so ``r_c`` is ``graph_cutoff_nm`` in real space, and at high noise the input is
a unit-variance cloud, so the number of neighbours stays bounded at every noise level.
Non-bonded edges carry the weight ``w(d) = 1 - 10 t^3 + 15 t^4 - 6 t^5`` with ``t =
clip((d - 0.75 r_c) / (0.25 r_c), 0, 1)`` (C^2, zero at the cutoff), so edges enter and leave
the graph with zero weight and the denoiser stays twice differentiable in ``x`` and
``log_snr``, as the geometry needs. Distances and weights are invariant, so equivariance and
the chirality terms are those of the dense model; messages are divided by the fixed
``min(N - 1, SPARSE_NORM)``. With a cutoff that covers every pair the sparse model *is*
the dense one. A k-nearest-neighbour graph was not used: its edge set jumps when neighbours
swap rank, which makes the denoiser discontinuous.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from spacetime_md.core._validation import check_tensor
from spacetime_md.core.schedule import alpha_sigma
from spacetime_md.molecular.model.egnn import EquivariantConv

__all__ = [
    "EquivariantDenoiser",
    "to_model",
    "from_model",
    "center",
    "bond_graph_distances",
    "sparse_edges",
    "smooth_cutoff",
    "DEFAULT_LENGTH_SCALE_NM",
    "DEFAULT_GRAPH_CUTOFF_NM",
    "GRAPHS",
    "SPARSE_NORM",
]

#: Default length scale: 0.15 nm is about the RMS centred coordinate of alanine dipeptide,
#: so model coordinates have roughly unit variance.
DEFAULT_LENGTH_SCALE_NM = 0.15
#: Graphs of :class:`EquivariantDenoiser` (``graph=``); checkpoints without one are dense.
GRAPHS = ("dense", "sparse")
#: Default distance cutoff of the sparse graph (nm, at low noise).
DEFAULT_GRAPH_CUTOFF_NM = 0.5
#: Sparse graphs divide aggregated messages by ``min(N - 1, SPARSE_NORM)``.
SPARSE_NORM = 32.0
#: The smooth cutoff switches off between ``SWITCH_START * r_c`` and ``r_c``.
SWITCH_START = 0.75


def center(x: Tensor) -> Tensor:
    """Remove the centre of geometry: ``P x`` for flattened ``x`` of shape ``(B, 3N)``."""
    pos = x.reshape(x.shape[0], -1, 3)
    return (pos - pos.mean(dim=1, keepdim=True)).reshape(x.shape)


def to_model(x_nm: Tensor | np.ndarray, length_scale_nm: float) -> Tensor:
    """Coordinates in nm ``(..., N, 3)`` -> centred, flattened model units ``(..., 3N)``.

    ``x_model = (x_nm - mean_over_atoms(x_nm)) / length_scale_nm``. A NumPy input gives a
    float32 tensor (or float64 for float64 input).
    """
    if not isinstance(length_scale_nm, (int, float)) or isinstance(length_scale_nm, bool) or not length_scale_nm > 0:
        raise ValueError(f"length_scale_nm: expected a number > 0, got {length_scale_nm!r}")
    x = torch.as_tensor(x_nm)
    if not x.is_floating_point():
        raise TypeError(f"x_nm: expected floating-point coordinates, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[-1] != 3:
        raise ValueError(f"x_nm: expected shape (..., N, 3), got {tuple(x.shape)}")
    x = x - x.mean(dim=-2, keepdim=True)
    return (x / length_scale_nm).reshape(*x.shape[:-2], -1)


def from_model(x_model: Tensor, length_scale_nm: float) -> Tensor:
    """Model units ``(..., 3N)`` -> coordinates in nm ``(..., N, 3)`` (inverse of :func:`to_model`
    up to the removed centre)."""
    if not isinstance(length_scale_nm, (int, float)) or isinstance(length_scale_nm, bool) or not length_scale_nm > 0:
        raise ValueError(f"length_scale_nm: expected a number > 0, got {length_scale_nm!r}")
    x = torch.as_tensor(x_model)
    if x.ndim < 1 or x.shape[-1] % 3 != 0:
        raise ValueError(f"x_model: expected shape (..., 3N), got {tuple(x.shape)}")
    return (x * length_scale_nm).reshape(*x.shape[:-1], -1, 3)


def bond_graph_distances(n_atoms: int, bonds: Sequence[Sequence[int]]) -> np.ndarray:
    """Shortest-path lengths on the bond graph, ``(N, N)`` int; unreachable pairs get ``N``."""
    adjacency: list[list[int]] = [[] for _ in range(n_atoms)]
    for pair in bonds:
        i, j = int(pair[0]), int(pair[1])
        if not (0 <= i < n_atoms and 0 <= j < n_atoms) or i == j:
            raise ValueError(f"bonds: expected pairs of distinct atom indices in [0, {n_atoms}), got ({i}, {j})")
        adjacency[i].append(j)
        adjacency[j].append(i)
    dist = np.full((n_atoms, n_atoms), n_atoms, dtype=np.int64)
    for start in range(n_atoms):
        dist[start, start] = 0
        queue = deque([start])
        while queue:
            k = queue.popleft()
            for nb in adjacency[k]:
                if dist[start, nb] > dist[start, k] + 1:
                    dist[start, nb] = dist[start, k] + 1
                    queue.append(nb)
    return dist


def smooth_cutoff(dist: Tensor, cutoff: float) -> Tensor:
    """C^2 switch: 1 below ``SWITCH_START * cutoff``, ``1 - 10 t^3 + 15 t^4 - 6 t^5`` between,
    0 at and beyond ``cutoff`` (``t`` the position inside the switching interval)."""
    start = SWITCH_START * cutoff
    t = ((dist - start) / (cutoff - start)).clamp(0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)


def sparse_edges(pos: Tensor, cutoff: float, always: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges of a batch of structures: pairs closer than ``cutoff`` or marked in ``always``.

    Vectorised over the batch (one ``(B, N, N)`` distance matrix, no loops over atoms or
    edges); the selection itself is not differentiated, the weights are.

    Parameters
    ----------
    pos : Tensor, shape=(B, N, 3)
    cutoff : float
        Distance cutoff, units of ``pos``.
    always : BoolTensor, shape=(N, N)
        Pairs that are edges whatever their distance (bonded); the diagonal is ignored.

    Returns
    -------
    edge_index : LongTensor, shape=(2, E)
        Source ``j`` (row 0) and target ``i`` (row 1) as flat indices ``b * N + atom``, sorted
        by target.
    i, j : LongTensor, shape=(E,)
        Target and source atom indices within their structure.
    weight : Tensor, shape=(E, 1)
        1 on ``always`` pairs, :func:`smooth_cutoff` of the distance otherwise.
    """
    B, N, _ = pos.shape
    with torch.no_grad():
        d2 = (pos.unsqueeze(2) - pos.unsqueeze(1)).square().sum(-1)
        mask = (d2 < cutoff * cutoff) | always
        mask &= ~torch.eye(N, dtype=torch.bool, device=pos.device)
        b, i, j = mask.nonzero(as_tuple=True)
        flat_i, flat_j = b * N + i, b * N + j
    flat = pos.reshape(B * N, 3)
    rel = flat.index_select(0, flat_i) - flat.index_select(0, flat_j)
    dist = torch.sqrt(rel.square().sum(-1, keepdim=True) + 1e-12)
    weight = torch.where(always[i, j].unsqueeze(-1), torch.ones_like(dist), smooth_cutoff(dist, cutoff))
    return torch.stack([flat_j, flat_i]), i, j, weight


class _TimeEmbedding(nn.Module):
    """Fourier features of ``log_snr`` followed by a two-layer MLP: ``(B,) -> (B, H)``.

    Periods ``longest_period / 2^k`` (default 64, 32, ..., 2 log_snr units): the shortest
    period is kept long so the denoiser varies smoothly with ``log_snr`` (the spacetime
    metric differentiates it with respect to ``log_snr``).
    """

    def __init__(self, hidden_channels: int, n_frequencies: int = 6, longest_period: float = 64.0):
        super().__init__()
        freqs = 2.0 * math.pi / longest_period * 2.0 ** torch.arange(n_frequencies, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = longest_period / 4.0
        self.mlp = nn.Sequential(
            nn.Linear(2 * n_frequencies + 1, hidden_channels),
            nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels),
        )

    def forward(self, log_snr: Tensor) -> Tensor:
        arg = log_snr.unsqueeze(-1) * self.freqs.to(log_snr.dtype)
        feats = torch.cat([torch.sin(arg), torch.cos(arg), log_snr.unsqueeze(-1) / self.scale], dim=-1)
        return self.mlp(feats)


class EquivariantDenoiser(nn.Module):
    """SE(3)-equivariant, chirality-aware denoiser ``D(x (B, 3N), log_snr (B,)) -> (B, 3N)``.

    Returns ``E[x_0 | x_t]`` in model units (see the module docstring for the subspace,
    scaling and preconditioning). The molecular graph is fully connected (``graph="dense"``) or
    bonded hops plus a smooth distance cutoff (``graph="sparse"``); node features are
    learned embeddings of ``atom_types`` (e.g. AMBER atom types), static edge features are the
    one-hot bond-graph distance (1, 2, ..., ``max_hops`` or more bonds apart), and ``log_snr``
    enters through a Fourier-feature embedding added to the node features before every layer.

    Parameters
    ----------
    atom_types : sequence of str, length N
        One label per atom; atoms with equal labels share an embedding.
    bonds : sequence of (int, int)
        Covalent bonds (zero-based atom indices).
    hidden_channels, n_layers, n_rbf, rbf_cutoff, chirality, coord_gain
        Architecture (see :class:`EquivariantConv`); ``rbf_cutoff`` is in model units.
    sigma_data : float
        RMS of the centred training coordinates, model units.
    length_scale_nm : float
        The nm -> model-unit scale of :func:`to_model` used for the training data.
    atom_names : sequence of str, optional
        Stored for topology checks; not used by the network.
    max_hops : int
        Bond-graph distances at or beyond this share one edge class; with ``graph="sparse"``
        pairs up to ``max_hops`` bonds apart are always connected.
    graph : {"dense", "sparse"}
        All atom pairs, or bonded hops plus a smooth distance cutoff (module docstring).
    graph_cutoff_nm : float
        Distance cutoff of the sparse graph, nm at low noise (ignored by the dense graph).

    Notes
    -----
    The model computes in its parameters' dtype (``model.double()`` for float64); inputs of
    another dtype raise ``TypeError``. Twice differentiable in ``x`` (SiLU, smooth distances).
    """

    def __init__(
        self,
        atom_types: Sequence[str],
        bonds: Sequence[Sequence[int]],
        *,
        hidden_channels: int = 32,
        n_layers: int = 4,
        n_rbf: int = 16,
        rbf_cutoff: float = 6.0,
        chirality: bool = True,
        coord_gain: float = 1e-2,
        sigma_data: float = 1.0,
        length_scale_nm: float = DEFAULT_LENGTH_SCALE_NM,
        atom_names: Sequence[str] | None = None,
        max_hops: int = 3,
        graph: str = "dense",
        graph_cutoff_nm: float = DEFAULT_GRAPH_CUTOFF_NM,
    ):
        super().__init__()
        atom_types = [str(t) for t in atom_types]
        n_atoms = len(atom_types)
        if n_atoms < 2:
            raise ValueError(f"atom_types: expected at least 2 atoms, got {n_atoms}")
        if n_layers < 1:
            raise ValueError(f"n_layers: expected an integer >= 1, got {n_layers}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data: expected a number > 0, got {sigma_data}")
        if not length_scale_nm > 0:
            raise ValueError(f"length_scale_nm: expected a number > 0, got {length_scale_nm}")
        if max_hops < 1:
            raise ValueError(f"max_hops: expected an integer >= 1, got {max_hops}")
        if graph not in GRAPHS:
            raise ValueError(f"graph: expected one of {', '.join(GRAPHS)}, got {graph!r}")
        if (isinstance(graph_cutoff_nm, bool) or not isinstance(graph_cutoff_nm, (int, float))
                or not 0 < graph_cutoff_nm < math.inf):
            raise ValueError(f"graph_cutoff_nm: expected a finite number > 0, got {graph_cutoff_nm!r}")
        if atom_names is not None and len(atom_names) != n_atoms:
            raise ValueError(f"atom_names: expected {n_atoms} names, got {len(atom_names)}")
        self.n_atoms = n_atoms
        self.atom_types = atom_types
        self.atom_names = None if atom_names is None else [str(a) for a in atom_names]
        self.bonds = [(int(i), int(j)) for i, j in bonds]
        self.hidden_channels = int(hidden_channels)
        self.n_layers = int(n_layers)
        self.n_rbf = int(n_rbf)
        self.rbf_cutoff = float(rbf_cutoff)
        self.chirality = bool(chirality)
        self.coord_gain = float(coord_gain)
        self.sigma_data = float(sigma_data)
        self.length_scale_nm = float(length_scale_nm)
        self.max_hops = int(max_hops)
        self.graph = str(graph)
        self.graph_cutoff_nm = float(graph_cutoff_nm)
        #: Free-form information attached by :func:`~spacetime_md.molecular.load_checkpoint`.
        self.metadata: dict[str, Any] = {}

        vocab = sorted(set(atom_types))
        self.register_buffer(
            "type_index", torch.tensor([vocab.index(t) for t in atom_types]), persistent=False
        )
        hops = bond_graph_distances(n_atoms, self.bonds)
        # All ordered pairs i != j, sorted by target (EquivariantConv's ``degree`` fast path).
        dst, src = np.nonzero(~np.eye(n_atoms, dtype=bool))
        hop_class = np.clip(hops[src, dst], 1, max_hops) - 1
        edge_attr = np.eye(max_hops, dtype=np.float32)[hop_class]
        # PyG flow source_to_target: row 0 = source j, row 1 = target i.
        self.register_buffer(
            "_edge_index", torch.as_tensor(np.stack([src, dst]), dtype=torch.long), persistent=False
        )
        self.register_buffer("_edge_attr", torch.as_tensor(edge_attr), persistent=False)
        # Sparse graph: per-pair edge features and the always-connected (bonded) pairs.
        pair_class = np.clip(hops, 1, max_hops) - 1
        self.register_buffer(
            "_pair_attr", torch.as_tensor(np.eye(max_hops, dtype=np.float32)[pair_class]), persistent=False
        )
        self.register_buffer("_bonded", torch.as_tensor(hops <= max_hops), persistent=False)
        self._graph_cache: dict[tuple, tuple[Tensor, Tensor]] = {}

        H = self.hidden_channels
        self.atom_embedding = nn.Embedding(len(vocab), H)
        self.time_embedding = _TimeEmbedding(H)
        self.time_proj = nn.Linear(H, self.n_layers * H)
        self.convs = nn.ModuleList(
            EquivariantConv(
                H,
                max_hops,
                n_rbf=n_rbf,
                rbf_cutoff=rbf_cutoff,
                chirality=chirality,
                coord_gain=coord_gain,
            )
            for _ in range(self.n_layers)
        )

    # ----------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Flattened data dimension ``D = 3N``."""
        return 3 * self.n_atoms

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable); ``EquivariantDenoiser(**config)`` rebuilds
        the architecture."""
        return {
            "atom_types": list(self.atom_types),
            "bonds": [list(b) for b in self.bonds],
            "hidden_channels": self.hidden_channels,
            "n_layers": self.n_layers,
            "n_rbf": self.n_rbf,
            "rbf_cutoff": self.rbf_cutoff,
            "chirality": self.chirality,
            "coord_gain": self.coord_gain,
            "sigma_data": self.sigma_data,
            "length_scale_nm": self.length_scale_nm,
            "atom_names": None if self.atom_names is None else list(self.atom_names),
            "max_hops": self.max_hops,
            "graph": self.graph,
            "graph_cutoff_nm": self.graph_cutoff_nm,
        }

    def to_model(self, x_nm: Tensor | np.ndarray) -> Tensor:
        """nm ``(..., N, 3)`` -> model units ``(..., 3N)`` with this model's length scale."""
        return to_model(x_nm, self.length_scale_nm)

    def from_model(self, x_model: Tensor) -> Tensor:
        """Model units ``(..., 3N)`` -> nm ``(..., N, 3)`` with this model's length scale."""
        return from_model(x_model, self.length_scale_nm)

    def preconditioning(self, log_snr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_in, c_skip, c_out)``, each of shape ``(B,)``, for ``log_snr (B,)``."""
        alpha, sigma = alpha_sigma(log_snr)
        sd2 = self.sigma_data**2
        var = alpha**2 * sd2 + sigma**2
        c_in = var.rsqrt()
        return c_in, alpha * sd2 / var, sigma * self.sigma_data * c_in

    def _graph(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (batch_size, device, dtype)
        cached = self._graph_cache.get(key)
        if cached is not None:
            return cached
        n_edges = self._edge_index.shape[1]
        offsets = (torch.arange(batch_size, device=device) * self.n_atoms).repeat_interleave(n_edges)
        edge_index = self._edge_index.to(device).repeat(1, batch_size) + offsets
        edge_attr = self._edge_attr.to(device=device, dtype=dtype).repeat(batch_size, 1)
        if len(self._graph_cache) >= 8:
            self._graph_cache.pop(next(iter(self._graph_cache)))
        self._graph_cache[key] = (edge_index, edge_attr)
        return edge_index, edge_attr

    @property
    def graph_cutoff(self) -> float:
        """Sparse-graph cutoff in network-input units: ``graph_cutoff_nm / (length_scale_nm sigma_data)``."""
        return self.graph_cutoff_nm / (self.length_scale_nm * self.sigma_data)

    @property
    def graph_norm(self) -> float:
        """Divisor of the aggregated messages: ``N - 1`` (dense) or ``min(N - 1, SPARSE_NORM)``."""
        return float(self.n_atoms - 1) if self.graph == "dense" else min(float(self.n_atoms - 1), SPARSE_NORM)

    def edges(self, pos: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(edge_index (2, E), edge_attr (E, F_e), edge_weight (E, 1) or None)`` for
        network inputs ``pos (B, N, 3)``; the dense graph has no weights."""
        if self.graph == "dense":
            edge_index, edge_attr = self._graph(pos.shape[0], pos.device, pos.dtype)
            return edge_index, edge_attr, None
        edge_index, i, j, weight = sparse_edges(pos, self.graph_cutoff, self._bonded)
        return edge_index, self._pair_attr[i, j].to(pos.dtype), weight

    def _apply(self, fn, *args, **kwargs):  # device/dtype moves invalidate the graph cache
        self._graph_cache = {}
        return super()._apply(fn, *args, **kwargs)

    def network(self, pos: Tensor, log_snr: Tensor) -> Tensor:
        """Raw network ``F``: scaled positions ``(B, N, 3)`` -> displacement ``(B, N, 3)``."""
        B, N, _ = pos.shape
        H = self.hidden_channels
        edge_index, edge_attr, edge_weight = self.edges(pos)
        dense = edge_weight is None
        t = self.time_embedding(log_snr)
        t_layers = self.time_proj(t).reshape(B, 1, self.n_layers, H)
        h = self.atom_embedding(self.type_index).unsqueeze(0).expand(B, N, H)
        pos0 = pos.reshape(B * N, 3)
        p = pos0
        for layer, conv in enumerate(self.convs):
            h = (h + t_layers[:, :, layer]).reshape(B * N, H)
            h, p = conv(h, p, edge_index, edge_attr, norm=self.graph_norm, degree=N - 1 if dense else None,
                        edge_weight=edge_weight)
            h = h.reshape(B, N, H)
        return (p - pos0).reshape(B, N, 3)

    def forward(self, x: Tensor, log_snr: Tensor) -> Tensor:
        """Denoised ``E[x_0 | x_t]``.

        Parameters
        ----------
        x : Tensor, shape=(B, 3N)
            Noisy points in model units (any centre; the centre is removed).
        log_snr : Tensor, shape=(B,)

        Returns
        -------
        Tensor, shape=(B, 3N)
            Centred denoised coordinates, model units.
        """
        dims: dict[str, int] = {}
        check_tensor("x", x, ("B", self.dim), dims=dims, finite=False)
        check_tensor("log_snr", log_snr, ("B",), dims=dims, finite=False)
        dtype = self.atom_embedding.weight.dtype
        if x.dtype != dtype or log_snr.dtype != dtype:
            raise TypeError(
                f"x, log_snr: expected dtype {dtype} (the model's dtype; convert the model with "
                f".to(dtype)), got {x.dtype} and {log_snr.dtype}"
            )
        B = x.shape[0]
        x = center(x)
        c_in, c_skip, c_out = self.preconditioning(log_snr)
        pos = (c_in.unsqueeze(-1) * x).reshape(B, self.n_atoms, 3)
        out = center(self.network(pos, log_snr).reshape(B, self.dim))
        return c_skip.unsqueeze(-1) * x + c_out.unsqueeze(-1) * out

    def extra_repr(self) -> str:
        return (
            f"n_atoms={self.n_atoms}, sigma_data={self.sigma_data:.4g}, "
            f"length_scale_nm={self.length_scale_nm}"
            + (f", graph=sparse, graph_cutoff_nm={self.graph_cutoff_nm}" if self.graph == "sparse" else "")
        )
