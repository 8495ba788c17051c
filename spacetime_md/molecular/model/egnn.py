"""One E(n)-style equivariant message-passing layer with a chirality-aware pseudo-vector term.

The layer follows EGNN (Satorras, Hoogeboom, Welling, 2021): messages are built from
*invariant* quantities only (node features, static edge features, a radial expansion of the
current distance), and coordinates move only along relative vectors ``pos_i - pos_j`` scaled
by functions of those invariants. That makes the layer equivariant to rotations,
reflections and translations (E(3)).

L-alanine and D-alanine are mirror images, so an E(3)-equivariant denoiser trained on
L-alanine samples would generate both with equal probability. The layer therefore adds a
*pseudo-vector* displacement: two extra aggregated vectors ``v_i`` and ``w_i`` (built like
the ordinary displacement) are combined with a cross product ``v_i x w_i``. Under a proper
rotation ``R`` the cross product rotates with ``R``; under an improper one (``det R = -1``)
it picks up an extra sign. In addition, three aggregated "frame" vectors ``f1, f2, f3`` per
node (ordinary initialisation, so they are O(1) from the start) give the pseudo-scalar
``chi_i = f1 . (f2 x f3) / (|f1| |f2| |f3|)`` (norms softened by ``(|f|^2 + 0.01^2)^(1/2)``),
a signed volume in [-1, 1] that flips sign under reflection; it is fed to the
node update, so the invariant features can tell a structure from its mirror image from the
first training step on. The layer is then equivariant to SE(3) only, which is what a chiral
molecule needs.

Everything is built from ``Linear`` + SiLU, so the layer is smooth and can be differentiated
twice with respect to ``pos`` (the divergence used by the geometry needs that).

Units: the layer is unit-agnostic; the denoiser feeds it dimensionless model coordinates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

__all__ = ["EquivariantConv", "GaussianRBF", "silu"]


class _SiLUGrad(torch.autograd.Function):
    """``grad * silu'(x)`` from the saved ``s = sigmoid(x)`` and ``d1 = silu'(x)``; its own
    backward is closed-form (once differentiable)."""

    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor, s: Tensor, d1: Tensor) -> Tensor:
        ctx.save_for_backward(grad, x, s, d1)
        return grad * d1

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gg: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        grad, x, s, d1 = ctx.saved_tensors
        d_grad = gg * d1 if ctx.needs_input_grad[0] else None
        d_x = None
        if ctx.needs_input_grad[1]:  # silu''(x) = s (1 - s) (2 + x (1 - 2 s))
            d_x = torch.ops.aten.sigmoid_backward(gg * grad, s)
            d_x.mul_(torch.addcmul(x.new_tensor(2.0), torch.rsub(s, 1.0, alpha=2.0), x))
        return d_grad, d_x, None, None


class _SiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        if ctx.needs_input_grad[0]:
            # silu'(x) = s (1 + x (1 - s)) = s + x s (1 - s), once; used by every backward.
            ctx.save_for_backward(x, s, torch.ops.aten.sigmoid_backward(x, s).add_(s))
        return x * s

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, s, d1 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiable once more
            return _SiLUGrad.apply(grad, x, s, d1)
        return grad * d1


def silu(x: Tensor) -> Tensor:
    """``x sigmoid(x)``, twice differentiable with cheap closed-form derivatives.

    The same values and first and second derivatives as :func:`torch.nn.functional.silu`,
    but a double backward (the divergence's gradient) costs a few fused element-wise
    operations instead of differentiating autograd's composite SiLU backward; a third
    derivative raises. Used on the ``(|E|, H)`` messages, where these operations dominate.
    """
    return _SiLU.apply(x)


class GaussianRBF(nn.Module):
    r"""Gaussian radial basis ``exp(max(-gamma (d - mu_k)^2, -80))`` on ``n_rbf`` evenly spaced centres.

    Parameters
    ----------
    n_rbf : int
        Number of basis functions.
    cutoff : float
        Last centre (model units); centres are ``linspace(0, cutoff, n_rbf)``.

    Shapes:
        - **input:** distances :math:`(E, 1)`
        - **output:** features :math:`(E, n_{rbf})`
    """

    def __init__(self, n_rbf: int, cutoff: float):
        super().__init__()
        if n_rbf < 1:
            raise ValueError(f"n_rbf: expected an integer >= 1, got {n_rbf}")
        if not cutoff > 0:
            raise ValueError(f"cutoff: expected a number > 0, got {cutoff}")
        self.n_rbf = n_rbf
        self.cutoff = float(cutoff)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf), persistent=False)
        spacing = cutoff / max(n_rbf - 1, 1)
        self.gamma = 0.5 / spacing**2

    def forward(self, dist: Tensor) -> Tensor:
        centers = self.centers.to(dist.dtype)
        # The exponent is floored at -80 (exp = 1.8e-35): below about -87, float32 results are
        # subnormal, and subnormal arithmetic made the backward pass of large molecules 2x slower
        # on CPU. The change of at most 1.8e-35 per feature leaves float32 outputs bit-identical.
        return torch.exp((-self.gamma * (dist - centers) ** 2).clamp(min=-80.0))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(n_rbf={self.n_rbf}, cutoff={self.cutoff})"


class EquivariantConv(MessagePassing):
    r"""EGNN-style layer: invariant messages, coordinate updates along relative vectors.

    For every edge ``j -> i`` (PyG convention: ``_i`` target, ``_j`` source)

    .. math::
        r_{ij} &= pos_i - pos_j, \quad d_{ij} = \sqrt{|r_{ij}|^2 + \epsilon} \\
        m_{ij} &= \phi_m\big(A h_i + B h_j + C\,[e_{ij}, \mathrm{rbf}(d_{ij}), d_{ij} / d_c]\big) \\
        (c^u, c^v, c^w, c^{f1}, c^{f2}, c^{f3})_{ij} &= W_x m_{ij}
        \quad\text{(small-gain init for } c^u, c^v, c^w) \\
        u_i &= \tfrac{1}{k}\sum_j c^u_{ij}\, r_{ij} / (d_{ij} + 1)
        \quad(\text{same for } v_i, w_i, f^1_i, f^2_i, f^3_i) \\
        pos_i' &= pos_i + u_i + v_i \times w_i \\
        h_i' &= h_i + \phi_h\big(h_i, \tfrac{1}{k}\sum_j m_{ij}, \hat f^1_i\cdot(\hat f^2_i\times \hat f^3_i)\big),
        \quad \hat f = f / (|f|^2 + 10^{-4})^{1/2}

    with ``k`` the (fixed) number of neighbours used for normalisation. The first linear
    layer of the edge network is split into node parts ``A h``, ``B h`` computed once per
    node and gathered per edge, which saves one ``(E, 2H) x (2H, H)`` product.
    With ``chirality=False`` the ``v``, ``w``, ``f`` terms and the pseudo-scalar are dropped and the
    layer is E(3)-equivariant (it cannot tell mirror images apart).

    Parameters
    ----------
    hidden_channels : int
        Width ``H`` of node features and messages.
    edge_channels : int
        Number of static edge features ``e_ij`` (for example one-hot bond-graph distance).
    n_rbf : int
        Radial basis functions of the current distance.
    rbf_cutoff : float
        Largest radial centre, in the units of ``pos``.
    chirality : bool
        Add the pseudo-vector (cross-product) displacement and pseudo-scalar feature.
    coord_gain : float
        Gain of the Xavier initialisation of the coordinate head (the pseudo-vector pair gets
        ``sqrt(coord_gain)`` each); small values start the layer close to the identity on
        coordinates.
    eps : float
        Added to squared distances before the square root (keeps it smooth at ``r = 0``).

    Shapes:
        - **input:** node features ``h`` :math:`(|V|, H)`, positions ``pos`` :math:`(|V|, 3)`,
          ``edge_index`` :math:`(2, |E|)`, static edge features ``edge_attr``
          :math:`(|E|, F_e)`, neighbour count ``norm`` (float), optional ``edge_weight``
          :math:`(|E|, 1)`
        - **output:** node features :math:`(|V|, H)`, positions :math:`(|V|, 3)`
    """

    def __init__(
        self,
        hidden_channels: int,
        edge_channels: int,
        *,
        n_rbf: int = 16,
        rbf_cutoff: float = 6.0,
        chirality: bool = True,
        coord_gain: float = 1e-2,
        eps: float = 1e-6,
    ):
        super().__init__(aggr="sum", node_dim=0)
        if hidden_channels < 1:
            raise ValueError(f"hidden_channels: expected an integer >= 1, got {hidden_channels}")
        if edge_channels < 0:
            raise ValueError(f"edge_channels: expected an integer >= 0, got {edge_channels}")
        self.hidden_channels = hidden_channels
        self.edge_channels = edge_channels
        self.chirality = bool(chirality)
        self.coord_gain = float(coord_gain)
        self.eps = float(eps)
        self.n_vectors = 6 if self.chirality else 1
        self.frame_eps = 1e-2

        self.rbf = GaussianRBF(n_rbf, rbf_cutoff)
        self.lin_node = nn.Linear(hidden_channels, 2 * hidden_channels)
        self.lin_edge = nn.Linear(edge_channels + n_rbf + 1, hidden_channels, bias=False)
        self.lin_message = nn.Linear(hidden_channels, hidden_channels)
        self.coord_out = nn.Linear(hidden_channels, self.n_vectors, bias=False)
        n_in = 2 * hidden_channels + (1 if self.chirality else 0)
        self.node_mlp = nn.Sequential(
            nn.Linear(n_in, hidden_channels),
            nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_node, self.lin_edge, self.lin_message):
            lin.reset_parameters()
        for module in self.node_mlp:
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        # Small-gain coordinate head. The two pseudo-vector channels enter through a product,
        # so each gets the square root of the gain and their cross product starts at the
        # same magnitude as the ordinary displacement. The three frame channels only feed the
        # pseudo-scalar and keep the ordinary gain.
        with torch.no_grad():
            nn.init.xavier_uniform_(self.coord_out.weight[:1], gain=self.coord_gain)
            if self.chirality:
                nn.init.xavier_uniform_(self.coord_out.weight[1:3], gain=math.sqrt(self.coord_gain))
                nn.init.xavier_uniform_(self.coord_out.weight[3:], gain=1.0)

    def forward(
        self,
        h: Tensor,
        pos: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        norm: float,
        degree: int | None = None,
        edge_weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Update node features and positions.

        Parameters
        ----------
        h : Tensor, shape=(|V|, H)
        pos : Tensor, shape=(|V|, 3)
        edge_index : LongTensor, shape=(2, |E|)
            Row 0 source ``j``, row 1 target ``i``.
        edge_attr : Tensor, shape=(|E|, F_e)
        norm : float
            Aggregated messages and vectors are divided by ``norm`` (e.g. the neighbour count).
        degree : int, optional
            Promise that the edges are sorted by target and every node has exactly ``degree``
            incoming edges (a complete graph built by :class:`EquivariantDenoiser`). Enables
            block-wise messages and a reshape-and-sum aggregation instead of a scatter
            (:meth:`_dense_messages`); the result is the same up to float rounding.
        edge_weight : Tensor, shape=(|E|, 1), optional
            Invariant per-edge weight multiplying the edge's message and its vector
            contributions (a smooth cutoff envelope that vanishes where an edge enters or
            leaves a sparse graph, so the layer stays continuous and twice differentiable).
        """
        H = self.hidden_channels
        ab = self.lin_node(h)
        a, b = ab[:, :H], ab[:, H:]
        if edge_weight is not None and edge_weight.shape != (edge_index.shape[1], 1):
            raise ValueError(
                f"edge_weight: expected shape ({edge_index.shape[1]}, 1), got {tuple(edge_weight.shape)}"
            )
        if degree is not None:
            if edge_index.shape[1] != degree * h.shape[0]:
                raise ValueError(
                    f"degree: expected |E| = degree * |V| = {degree * h.shape[0]}, "
                    f"got |E| = {edge_index.shape[1]}"
                )
            m_agg, vec = self._dense_messages(a, b, pos, edge_index[0], edge_attr, degree, edge_weight)
            return self._update(h, pos, m_agg / norm, vec / norm)
        a_edge = a.index_select(0, edge_index[1])
        # Passed through propagate (not stored on the layer), so that threads can share the model.
        out = self.propagate(edge_index, a_edge=a_edge, b=b, pos=pos, edge_attr=edge_attr, edge_weight=edge_weight)
        out = out / norm
        return self._update(h, pos, out[:, :H], out[:, H:].reshape(-1, self.n_vectors, 3))

    def _update(self, h: Tensor, pos: Tensor, m_agg: Tensor, vec: Tensor) -> tuple[Tensor, Tensor]:
        """Node update from the normalised aggregates ``m_agg (|V|, H)`` and ``vec (|V|, n_vectors, 3)``."""
        disp = vec[:, 0]
        if self.chirality:
            pseudo = torch.linalg.cross(vec[:, 1], vec[:, 2], dim=-1)
            disp = disp + pseudo
            # Signed volume of the three (softly) normalised frame vectors, in [-1, 1].
            frame = vec[:, 3:] * torch.rsqrt((vec[:, 3:] ** 2).sum(-1, keepdim=True) + self.frame_eps**2)
            pseudo_scalar = (frame[:, 0] * torch.linalg.cross(frame[:, 1], frame[:, 2], dim=-1)).sum(-1, keepdim=True)
            node_in = torch.cat([h, m_agg, pseudo_scalar], dim=-1)
        else:
            node_in = torch.cat([h, m_agg], dim=-1)
        h = h + self.node_mlp(node_in)
        return h, pos + disp

    def _dense_messages(self, a: Tensor, b: Tensor, pos: Tensor, source: Tensor, edge_attr: Tensor, degree: int,
                        edge_weight: Tensor | None) -> tuple[Tensor, Tensor]:
        """:meth:`message` + sum aggregation for edges sorted by target, ``degree`` per node.

        The same function as ``propagate`` (up to float rounding), laid out as ``(|V|, degree, .)``
        blocks: the target's terms broadcast instead of being copied per edge, the first edge
        layer's product is fused with its sum (``addmm``), the vector contributions are summed
        by one batched matrix product ``coef^T unit`` per node instead of an outer product per
        edge, and the SiLUs use :func:`silu` (cheaper second derivatives). Returns the
        unnormalised aggregates ``(|V|, H)`` and ``(|V|, n_vectors, 3)``.
        """
        n, H = a.shape[0], self.hidden_channels
        n_edges = n * degree
        rel = pos.unsqueeze(1) - pos.index_select(0, source).view(n, degree, 3)
        dist = torch.sqrt((rel * rel).sum(-1, keepdim=True) + self.eps)
        edge_in = torch.cat([edge_attr.view(n, degree, -1), self.rbf(dist), dist / self.rbf.cutoff], dim=-1)
        pre = (a.unsqueeze(1) + b.index_select(0, source).view(n, degree, H)).view(n_edges, H)
        m = silu(torch.addmm(pre, edge_in.view(n_edges, -1), self.lin_edge.weight.t()))
        m = silu(self.lin_message(m))
        coef = self.coord_out(m)
        unit = rel / (dist + 1.0)
        if edge_weight is not None:
            m = m * edge_weight
            coef = coef * edge_weight
        m_agg = m.view(n, degree, H).sum(1)
        vec = torch.bmm(coef.view(n, degree, self.n_vectors).transpose(1, 2), unit)
        return m_agg, vec

    def message(self, a_edge: Tensor, b_j: Tensor, pos_i: Tensor, pos_j: Tensor, edge_attr: Tensor,
                edge_weight: Tensor | None = None) -> Tensor:
        rel = pos_i - pos_j
        dist = torch.sqrt((rel * rel).sum(-1, keepdim=True) + self.eps)
        edge_in = torch.cat([edge_attr, self.rbf(dist), dist / self.rbf.cutoff], dim=-1)
        m = silu(a_edge + b_j + self.lin_edge(edge_in))
        m = silu(self.lin_message(m))
        coef = self.coord_out(m)
        unit = rel / (dist + 1.0)
        vec = coef.unsqueeze(-1) * unit.unsqueeze(-2)
        out = torch.cat([m, vec.flatten(1)], dim=-1)
        return out if edge_weight is None else out * edge_weight

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Tensor | None = None, dim_size: int | None = None) -> Tensor:
        # Sum aggregation with index_add_ (faster than scatter_add_ with a broadcast index on
        # CPU; deterministic on CPU, atomics on CUDA).
        size = int(index.max()) + 1 if dim_size is None else dim_size
        return inputs.new_zeros((size, inputs.shape[-1])).index_add_(0, index, inputs)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.hidden_channels}, edge_channels="
            f"{self.edge_channels}, n_rbf={self.rbf.n_rbf}, chirality={self.chirality})"
        )

