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


def _sweep(sender: np.ndarray, receiver: np.ndarray, dist: np.ndarray, order: np.ndarray, *,
           n_nodes: int, ve: bool, device: torch.device) -> tuple[Level, ...]:
    """Levels of one sweep; message rows are ``2u`` (1-hop MLP) and ``2u+1`` (virtual MLP) with ve."""
    level = _levels(sender, receiver, order, n_nodes)
    processed = np.zeros(n_nodes, dtype=bool)
    processed[order] = True
    one_hop = dist == 1
    if ve:
        rows = np.concatenate([2 * sender[one_hop], 2 * sender + 1])
        into = np.concatenate([receiver[one_hop], receiver])
        coef = np.concatenate([np.ones(int(one_hop.sum())), 1.0 / dist]).astype(np.float32)
    else:
        rows, into, coef = sender[one_hop], receiver[one_hop], np.ones(int(one_hop.sum()), np.float32)
    keep = processed[into]
    rows, into, coef = rows[keep], into[keep], coef[keep]
    by_level = np.argsort(level[into], kind="stable")
    rows, into, coef = rows[by_level], into[by_level], coef[by_level]
    n_levels = int(level[order].max()) + 1 if len(order) else 0
    nodes_at = [[] for _ in range(n_levels)]
    for node in order:
        nodes_at[level[node]].append(int(node))
    edge_bounds = np.searchsorted(level[into], np.arange(n_levels + 1))
    out = []
    for lv, nodes in enumerate(nodes_at):
        a, b = edge_bounds[lv], edge_bounds[lv + 1]
        out.append(_level(nodes, rows[a:b], into[a:b], coef[a:b], device=device))
    return tuple(out)


def _level(nodes: list[int], rows: np.ndarray, into: np.ndarray, coef: np.ndarray, *,
           device: torch.device) -> Level:
    nodes_arr = np.asarray(nodes, dtype=np.int64)
    local = np.searchsorted(np.sort(nodes_arr), into)
    sorted_nodes = np.sort(nodes_arr)
    sources, column = np.unique(rows, return_inverse=True)
    weights = np.zeros((len(nodes), len(sources)), dtype=np.float32)
    np.add.at(weights, (local, column), coef)
    if len(nodes) == 1 or (sorted_nodes[-1] - sorted_nodes[0] + 1 == len(nodes)):
        index: Index = slice(int(sorted_nodes[0]), int(sorted_nodes[-1]) + 1)
    else:
        index = torch.from_numpy(sorted_nodes).to(device)
    return Level(nodes=index, sources=torch.from_numpy(sources).to(device),
                 weights=torch.from_numpy(weights).to(device))


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

    def forward(self, x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        h = x.clone()
        for sweep in schedule.sweeps:
            table = self.messages(h)
            flat = table.view(-1, self.hid)
            for level in sweep:
                msg = level.weights @ flat.index_select(0, level.sources)
                new = self.gru(msg, h[level.nodes])
                h[level.nodes] = new
                table[level.nodes] = self.messages(new)
        return h
