"""The gated graph neural network that propagates node features through a model's graph.

Nodes are updated one after another, first in node order over incoming edges, then in reverse
order over outgoing edges. A node's message is the sum of an MLP of each 1-hop neighbour's
current features plus, with virtual edges, a second MLP of every neighbour's features divided
by its shortest-path distance; a GRU cell then updates the node.

The sequential order is kept exactly, but nodes whose updates cannot see each other are updated
together: a :class:`Schedule` groups them into levels once per graph, and each neighbour's MLP
outputs are computed once when it changes instead of once per edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ghnorth_cli.ghn.mlp import MLP

Index = slice | torch.Tensor


@dataclass(frozen=True)
class Level:
    """Nodes updated together, and how their messages sum rows of the message table."""

    nodes: Index
    sources: torch.Tensor  # rows of the flattened message table
    weights: torch.Tensor  # (n_nodes, n_sources): message = weights @ table[sources]


@dataclass(frozen=True)
class Schedule:
    """The levels of the forward sweep and of the backward sweep over one graph."""

    sweeps: tuple[tuple[Level, ...], ...]


def _levels(sender: np.ndarray, receiver: np.ndarray, order: np.ndarray, n_nodes: int) -> np.ndarray:
    """Level of each node so that batching by level reproduces the sequential ``order``.

    A node must come after the neighbours it reads that the sequence updates before it, and must
    not come after those that the sequence updates after it (it reads their old features).
    """
    pos = np.full(n_nodes, -1, dtype=np.int64)
    pos[order] = np.arange(len(order))
    valid = (pos[sender] >= 0) & (pos[receiver] >= 0) & (sender != receiver)
    s, r = sender[valid], receiver[valid]
    later_is_receiver = pos[r] > pos[s]
    later = np.where(later_is_receiver, r, s)
    earlier = np.where(later_is_receiver, s, r)
    step = later_is_receiver.astype(np.int64)
    by_later = np.argsort(pos[later], kind="stable")
    later, earlier, step = later[by_later], earlier[by_later], step[by_later]
    bounds = np.searchsorted(pos[later], np.arange(len(order) + 1))
    level = np.zeros(n_nodes, dtype=np.int64)
    for p, node in enumerate(order):
        a, b = bounds[p], bounds[p + 1]
        if b > a:
            level[node] = int((level[earlier[a:b]] + step[a:b]).max())
    return level


def _message_edges(sender: np.ndarray, receiver: np.ndarray, dist: np.ndarray, *, ve: bool):
    """(message-table row, receiver, coefficient) per message: ``2u`` is u's 1-hop MLP output and
    ``2u+1`` its virtual-edge MLP output (divided by the distance); without ve, row ``u``."""
    one_hop = dist == 1
    if not ve:
        return sender[one_hop], receiver[one_hop], np.ones(int(one_hop.sum()), np.float32)
    rows = np.concatenate([2 * sender[one_hop], 2 * sender + 1])
    into = np.concatenate([receiver[one_hop], receiver])
    coef = np.concatenate([np.ones(int(one_hop.sum())), 1.0 / dist]).astype(np.float32)
    return rows, into, coef


def _sweep(sender: np.ndarray, receiver: np.ndarray, dist: np.ndarray, order: np.ndarray, *,
           n_nodes: int, ve: bool, device: torch.device) -> tuple[Level, ...]:
    """The levels of one sweep that visits ``order`` and passes messages ``sender -> receiver``."""
    level = _levels(sender, receiver, order, n_nodes)
    rows, into, coef = _message_edges(sender, receiver, dist, ve=ve)
    keep = np.isin(into, order)
    # Messages by (level, receiver) and nodes by (level, node): a level's rows are its nodes in order.
    by_level = np.lexsort((into[keep], level[into[keep]]))
    rows, into, coef = rows[keep][by_level], into[keep][by_level], coef[keep][by_level]
    nodes = order[np.lexsort((order, level[order]))]
    n_levels = int(level[order].max()) + 1 if len(order) else 0
    node_bounds = np.searchsorted(level[nodes], np.arange(n_levels + 1))
    edge_bounds = np.searchsorted(level[into], np.arange(n_levels + 1))
    weights = _level_weights(level, nodes, into, coef, node_bounds, edge_bounds, n_nodes=n_nodes)
    return _pack_levels(nodes, rows, weights, node_bounds, edge_bounds, device=device)


def _level_weights(level, nodes, into, coef, node_bounds, edge_bounds, *, n_nodes: int) -> np.ndarray:
    """Every level's (n_nodes x n_messages) weight matrix, flattened one after another."""
    n_per_level, k_per_level = np.diff(node_bounds), np.diff(edge_bounds)
    offsets = np.concatenate([[0], np.cumsum(n_per_level * k_per_level)])
    rank = np.zeros(n_nodes, dtype=np.int64)
    rank[nodes] = np.arange(len(nodes)) - node_bounds[level[nodes]]
    edge_level = level[into]
    column = np.arange(len(into)) - edge_bounds[edge_level]
    flat = np.zeros(int(offsets[-1]), dtype=np.float32)
    flat[offsets[edge_level] + rank[into] * k_per_level[edge_level] + column] = coef
    return flat


def _pack_levels(nodes, rows, weights, node_bounds, edge_bounds, *, device: torch.device) -> tuple[Level, ...]:
    """Level records as views into three tensors (one transfer each to the device)."""
    all_rows = torch.from_numpy(rows).to(device)
    all_weights = torch.from_numpy(weights).to(device)
    all_nodes = torch.from_numpy(nodes).to(device)
    node_list, nb, eb = nodes.tolist(), node_bounds.tolist(), edge_bounds.tolist()
    out, offset = [], 0
    for lv in range(len(nb) - 1):
        n, k = nb[lv + 1] - nb[lv], eb[lv + 1] - eb[lv]
        first, last = node_list[nb[lv]], node_list[nb[lv + 1] - 1]
        index: Index = slice(first, last + 1) if last - first + 1 == n else all_nodes[nb[lv] : nb[lv + 1]]
        out.append(Level(nodes=index, sources=all_rows[eb[lv] : eb[lv + 1]],
                         weights=all_weights[offset : offset + n * k].view(n, k)))
        offset += n * k
    return tuple(out)


def build_schedule(edges: torch.Tensor, *, n_nodes: int, ve: bool, device: torch.device | str = "cpu") -> Schedule:
    """Plan both sweeps over a graph with ``edges`` rows (source, target, shortest-path length)."""
    e = edges.detach().cpu().numpy().astype(np.int64).reshape(-1, 3)
    src, dst, dist = e[:, 0], e[:, 1], e[:, 2]
    n_steps = int(dst.max()) + 1 if len(e) else n_nodes  # the sweeps visit nodes up to the last target
    forward_order = np.arange(n_steps)
    device = torch.device(device)
    forward = _sweep(src, dst, dist, forward_order, n_nodes=n_nodes, ve=ve, device=device)
    backward = _sweep(dst, src, dist, forward_order[::-1].copy(), n_nodes=n_nodes, ve=ve, device=device)
    return Schedule(sweeps=(forward, backward))


class GatedGNN(nn.Module):
    """One forward and one backward sweep of GRU updates, with optional virtual-edge messages."""

    def __init__(self, *, hid: int, ve: bool) -> None:
        super().__init__()
        self.hid = hid
        self.ve = ve
        self.mlp = MLP(hid, (hid // 2 if ve else hid, hid), last_relu=True)
        if ve:
            self.mlp_ve = MLP(hid, (hid // 2, hid), last_relu=True)
        self.gru = nn.GRUCell(hid, hid)

    def messages(self, h: torch.Tensor) -> torch.Tensor:
        """(n, hid) or, with virtual edges, (n, 2 * hid): what each node sends its neighbours."""
        if not self.ve:
            return self.mlp(h)
        return torch.cat([self.mlp(h), self.mlp_ve(h)], dim=1)

    def _fused_message_weights(self) -> tuple[torch.Tensor, ...]:
        """Both message MLPs as one: first layers stacked, second layers block-diagonal."""
        first = [self.mlp.fc[0]] + ([self.mlp_ve.fc[0]] if self.ve else [])
        second = [self.mlp.fc[2]] + ([self.mlp_ve.fc[2]] if self.ve else [])
        w1 = torch.cat([m.weight for m in first])
        b1 = torch.cat([m.bias for m in first])
        w2 = torch.block_diag(*[m.weight for m in second])
        b2 = torch.cat([m.bias for m in second])
        return w1, b1, w2, b2

    def forward(self, x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        """Node features after the forward and backward sweeps (no autograd: inference only)."""
        w1, b1, w2, b2 = self._fused_message_weights()
        gru = (self.gru.weight_ih, self.gru.weight_hh, self.gru.bias_ih, self.gru.bias_hh)

        def messages(h: torch.Tensor) -> torch.Tensor:
            return F.relu(F.linear(F.relu(F.linear(h, w1, b1)), w2, b2))

        h = x.clone()
        for sweep in schedule.sweeps:
            table = messages(h)
            flat = table.view(-1, self.hid)
            for level in sweep:
                msg = level.weights @ flat.index_select(0, level.sources)
                new = torch.gru_cell(msg, h[level.nodes], *gru)
                h[level.nodes] = new
                table[level.nodes] = messages(new)
        return h
