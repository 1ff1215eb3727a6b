"""A layered layout for long, chain-like graphs, folded into a snake of columns.

1. Ranks: every node sits one layer below its deepest real-edge predecessor (node order is
   topological); sources other than the first node (e.g. position embeddings) move down to just
   above their first consumer.
2. Order and x within a rank: nodes are ordered by the mean position of their predecessors and then
   placed as close as possible to it with one unit between neighbours, so the main chain stays
   straight and branches (downsampling shortcuts, attention heads) step to the side.
3. Folding: ranks are cut into bands of ``rows`` layers laid out as columns side by side, read
   top-down in even columns and bottom-up in odd ones, so an edge that leaves a column enters the
   next one right beside it.

Coordinates are in node units (one unit between neighbouring nodes); renderers scale them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ghnorth_cli.graph.types import ModelGraph

COLUMN_GAP = 1.2  # empty units between two columns


@dataclass(frozen=True)
class GraphLayout:
    """Node positions (``x``, ``y`` grow right and down), each node's rank and column, the extent."""

    x: np.ndarray
    y: np.ndarray
    rank: np.ndarray
    column: np.ndarray
    rows: int
    width: float
    height: float

    @property
    def n_columns(self) -> int:
        return int(self.column.max()) + 1 if len(self.column) else 0


def real_edges(graph: ModelGraph) -> np.ndarray:
    """(E, 2) source/target rows of the edges of shortest-path length 1."""
    edges = graph.edges.numpy() if len(graph.edges) else np.zeros((0, 3), dtype=np.int64)
    return edges[edges[:, 2] == 1, :2]


def node_ranks(n_nodes: int, edges: np.ndarray) -> np.ndarray:
    """Longest-path layer of every node, with late-used sources moved down next to their consumers."""
    preds: list[list[int]] = [[] for _ in range(n_nodes)]
    succs: list[list[int]] = [[] for _ in range(n_nodes)]
    for s, t in edges:
        preds[t].append(s)
        succs[s].append(t)
    rank = np.zeros(n_nodes, dtype=np.int64)
    for node in _topological_order(n_nodes, preds, succs):
        if preds[node]:
            rank[node] = max(rank[p] for p in preds[node]) + 1
    for node in range(1, n_nodes):
        if not preds[node] and succs[node]:
            rank[node] = max(min(rank[s] for s in succs[node]) - 1, 0)
    return rank


def _topological_order(n_nodes: int, preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """Kahn's order (node order breaks ties); nodes on a cycle, if any, come last in index order."""
    indegree = [len(p) for p in preds]
    ready = deque(i for i in range(n_nodes) if indegree[i] == 0)
    order: list[int] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for s in succs[node]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
    seen = set(order)
    return order + [i for i in range(n_nodes) if i not in seen]


def _place_rank(nodes: list[int], desired: dict[int, float]) -> dict[int, float]:
    """x for each node of one rank: ordered by desired x, one unit apart, as close to desired as possible."""
    nodes = sorted(nodes, key=lambda n: (desired[n], n))
    want = np.array([desired[n] for n in nodes])
    x = want.copy()
    for i in range(1, len(x)):
        x[i] = max(x[i], x[i - 1] + 1.0)
    x += float(np.mean(want - x))
    return dict(zip(nodes, x.tolist()))


def node_offsets(n_nodes: int, edges: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Within-rank x of every node (before folding), rank by rank from the top."""
    preds: list[list[int]] = [[] for _ in range(n_nodes)]
    for s, t in edges:
        preds[t].append(s)
    x = np.zeros(n_nodes)
    by_rank: dict[int, list[int]] = {}
    for node in range(n_nodes):
        by_rank.setdefault(int(rank[node]), []).append(node)
    for r in sorted(by_rank):
        nodes = by_rank[r]
        desired = {n: float(np.mean([x[p] for p in preds[n]])) if preds[n] else 0.0 for n in nodes}
        for node, value in _place_rank(nodes, desired).items():
            x[node] = value
    return x


def default_rows(n_ranks: int, *, aspect: float = 1.2) -> int:
    """Rows per column so that the folded drawing is about ``aspect`` times as wide as tall (at least 12).

    A column of a chain-like graph is about 3.4 row heights wide once drawn (about 2.6 node units,
    and a node unit is 1.3 row heights in the renderers), so ``columns ~ sqrt(aspect * ranks / 3.4)``.
    """
    columns = max(1, round(math.sqrt(aspect * n_ranks / 3.4)))
    return max(12, math.ceil(n_ranks / columns))


def layout_graph(graph: ModelGraph, *, rows: int | None = None) -> GraphLayout:
    """Positions for every node of ``graph``; ``rows`` ranks per column (default: :func:`default_rows`)."""
    edges = real_edges(graph)
    rank = node_ranks(graph.n_nodes, edges)
    offset = node_offsets(graph.n_nodes, edges, rank)
    n_ranks = int(rank.max()) + 1 if graph.n_nodes else 0
    rows = rows or default_rows(n_ranks)
    column = rank // rows
    row = rank % rows
    y = np.where(column % 2 == 0, row, rows - 1 - row).astype(float)
    x = np.zeros(graph.n_nodes)
    left = 0.0
    for c in range(int(column.max()) + 1 if graph.n_nodes else 0):
        members = column == c
        if not members.any():
            continue
        x[members] = offset[members] - offset[members].min() + left
        left = x[members].max() + 1.0 + COLUMN_GAP
    width = max(left - 1.0 - COLUMN_GAP, 0.0)
    height = float(min(rows, n_ranks) - 1) if n_ranks else 0.0
    return GraphLayout(x=x, y=y, rank=rank, column=column, rows=rows, width=width, height=height)
