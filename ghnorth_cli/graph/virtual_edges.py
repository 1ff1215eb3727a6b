"""Step 5 of graph capture: edges with shortest-path lengths (virtual edges)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from ghnorth_cli.graph.digraph import DiGraph


def edge_table(graph: DiGraph, *, ve_cutoff: int = 50) -> torch.Tensor:
    """Rows ``(source, target, length)``: every real edge with length 1 and, when ``ve_cutoff > 1``,
    every pair ``i -> j`` joined by a directed path of length ``2..ve_cutoff``. Sorted by
    (source, target), the order DeepNets-1M lists them in."""
    n = len(graph)
    edges = graph.edges()
    if not edges:
        return torch.zeros((0, 3), dtype=torch.long)
    src, dst = (np.asarray(a, dtype=np.int64) for a in zip(*edges))
    if ve_cutoff <= 1:
        return torch.from_numpy(np.stack([src, dst, np.ones_like(src)], axis=1))
    adjacency = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    dist = shortest_path(adjacency, method="D", directed=True, unweighted=True)
    dist[~np.isfinite(dist)] = 0
    rows, cols = np.nonzero((dist > 0) & (dist <= ve_cutoff))
    lengths = dist[rows, cols].astype(np.int64)
    return torch.from_numpy(np.stack([rows, cols, lengths], axis=1).astype(np.int64))
