"""A small directed graph with ordered nodes, the data structure every capture step works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from torch import nn


@dataclass
class Node:
    """One node of a captured graph.

    ``name`` is the parameter name for parameter nodes, the autograd op name (``"AddBackward0"``)
    for op nodes and ``"input"`` for the input. ``primitive`` is ``None`` for ops the GHN-2 has
    no primitive for (they are removed by the filter step).
    """

    name: str
    primitive: str | None
    is_param: bool = False
    shape: tuple[int, ...] | None = None
    module: nn.Module | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def op(self) -> str:
        """The op name without its ``Backward<k>`` suffix (the name itself for non-op nodes)."""
        pos = self.name.find("Backward")
        return self.name if pos < 0 or self.is_param else self.name[:pos]


@dataclass
class DiGraph:
    """Nodes in a fixed order plus successor/predecessor sets (indices into ``nodes``)."""

    nodes: list[Node] = field(default_factory=list)
    succ: list[set[int]] = field(default_factory=list)
    pred: list[set[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.nodes)

    def add_node(self, node: Node) -> int:
        self.nodes.append(node)
        self.succ.append(set())
        self.pred.append(set())
        return len(self.nodes) - 1

    def add_edge(self, src: int, dst: int) -> None:
        self.succ[src].add(dst)
        self.pred[dst].add(src)

    def remove_edge(self, src: int, dst: int) -> None:
        self.succ[src].discard(dst)
        self.pred[dst].discard(src)

    def edges(self) -> list[tuple[int, int]]:
        """All edges, sorted by (source, target)."""
        return [(i, j) for i in range(len(self.nodes)) for j in sorted(self.succ[i])]

    def bypass(self, i: int) -> None:
        """Connect every predecessor of ``i`` to every successor of ``i`` (``i`` keeps its edges)."""
        for dst in self.succ[i]:
            for src in self.pred[i]:
                if src != dst:
                    self.add_edge(src, dst)

    def subgraph(self, keep: Iterable[int]) -> "DiGraph":
        """The graph induced by ``keep``, in the order given."""
        keep = list(keep)
        new_index = {old: new for new, old in enumerate(keep)}
        out = DiGraph()
        for old in keep:
            out.add_node(self.nodes[old])
        for old in keep:
            for dst in self.succ[old]:
                if dst in new_index:
                    out.add_edge(new_index[old], new_index[dst])
        return out

    def reachable_from(self, start: int) -> set[int]:
        """Indices reachable from ``start`` along edges (``start`` included)."""
        seen, stack = {start}, [start]
        while stack:
            for nxt in self.succ[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen
