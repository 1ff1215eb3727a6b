"""GHN-3's graph transformer: Graphormer-style layers over a model's dense shortest-path matrix.

Each layer is a pre-norm transformer block: ``x + attn(ln1(x))`` then ``x + ff(ln2(x))``, with
multi-head self-attention without qkv bias and a GELU feed-forward of ``mlp_ratio`` times the width.
Attention between nodes ``i`` and ``j`` gets a learned per-head bias from the pair of shortest-path
lengths ``(d(i, j), d(j, i))`` (0: no path within the cutoff), computed once by the first layer
and added in every layer (Ying et al., "Do Transformers Really Perform Bad for Graph
Representation?", NeurIPS 2021; GHN-3: Knyazev et al., ICML 2023, ghn3/graphormer.py).

Module names follow the released GHN-3 files (``gnn.<i>.attn.to_qkv``, ``gnn.0.attn.proj_e``, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Edge-embedding table size of the released GHN-3s (path lengths up to 254, plus 2 offsets).
EDGE_VOCAB = 257


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
    """(n, dim) sinusoidal position table of "Attention Is All You Need", row 0 zeroed.

    The initial value of the edge embeddings (then learned); ``dim`` must be even.
    """
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    table[0] = 0
    return table


class EdgeEmbedding(nn.Module):
    """One learned vector per edge value (shortest-path length + 2); the weight lives in ``embed``."""

    def __init__(self, dim: int, n: int = EDGE_VOCAB) -> None:
        super().__init__()
        self.embed = nn.Embedding(n, dim)
        with torch.no_grad():
            self.embed.weight.copy_(sinusoid_table(n, dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.embed(values)


class FeedForward(nn.Module):
    """``Linear -> GELU -> Linear`` (``net.0`` and ``net.3``, as in the released files)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim),
                                 nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EdgeAttention(nn.Module):
    """Multi-head self-attention with an additive (heads, n, n) bias; the first layer's also owns
    the edge embeddings and their projection to one bias per head (``edge_embed``, ``proj_e``)."""

    def __init__(self, dim: int, *, heads: int, edge_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Identity())
        if edge_bias:
            self.edge_embed = EdgeEmbedding(dim)
            self.proj_e = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, heads))

    def edge_bias(self, dist: torch.Tensor) -> torch.Tensor:
        """(heads, n, n) attention bias from the (n, n) shortest-path matrix ``dist``.

        The bias of ``(i, j)`` depends only on ``(dist[i, j], dist[j, i])``; a graph has few
        distinct pairs, so the projection runs once per distinct pair (not n^2 times), with the
        same result as projecting every pair.
        """
        vocab = self.edge_embed.embed.num_embeddings
        forward = (dist + 2).clamp(max=vocab - 1)
        pair = forward * vocab + forward.t()
        unique, inverse = torch.unique(pair, return_inverse=True)
        feats = torch.cat([self.edge_embed(unique // vocab), self.edge_embed(unique % vocab)], dim=1)
        table = self.proj_e(feats)  # (n_pairs, heads)
        return table[inverse].permute(2, 0, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(n, dim) node features attended with the (heads, n, n) ``bias``."""
        n, dim = x.shape
        q, k, v = self.to_qkv(x).view(n, 3, self.heads, dim // self.heads).permute(1, 2, 0, 3)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (heads, n, head_dim)
        return self.to_out(out.transpose(0, 1).reshape(n, dim))


class GraphormerLayer(nn.Module):
    """A pre-norm transformer block over graph nodes (the ``TransformerLayer`` of ghn3/graphormer.py)."""

    def __init__(self, dim: int, *, heads: int, mlp_ratio: int = 4, edge_bias: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = EdgeAttention(dim, heads=heads, edge_bias=edge_bias)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), bias)
        return x + self.ff(self.ln2(x))


#: Largest in-/out-degree and input distance with their own embedding (larger ones are clipped).
MAX_DEGREE = 100
MAX_INPUT_DIST = 1000


def dense_distances(edges: torch.Tensor, *, n_nodes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, n) int64 matrix of a graph's ``(source, target, length)`` rows; 0 where there is no row."""
    dist = torch.zeros(n_nodes, n_nodes, dtype=torch.long, device=device)
    if len(edges):
        e = edges.to(device)
        dist[e[:, 0], e[:, 1]] = e[:, 2]
    return dist


def structure_indices(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In-degree, out-degree (real edges, i.e. length 1) and distance from the input node (row 0;
    0 where unreachable within the cutoff) of every node, clipped to the embedding tables."""
    real = (dist == 1).long()
    return (real.sum(0).clamp(max=MAX_DEGREE), real.sum(1).clamp(max=MAX_DEGREE),
            dist[0].clamp(min=0, max=MAX_INPUT_DIST))
