"""Step 3 of graph capture: attach the input, drop data-free ops, straighten linear layers, sort.

Each function takes a :class:`DiGraph` and returns a new one (or the same, changed in place
where noted); together they turn the raw parameter/op graph into the node order the GHN-2
was trained on.
"""

from __future__ import annotations

from ghnorth_cli.graph.digraph import DiGraph, Node
from ghnorth_cli.graph.errors import GraphCaptureError

_WEIGHT_PRIMITIVES = ("conv", "sep_conv", "dil_conv")


def add_input(graph: DiGraph, *, users: list[int]) -> DiGraph:
    """Prepend the ``input`` node with an edge to every node that reads the input.

    Placed first, so that it also comes first among the sources of the topological sort
    (position embeddings and class tokens are sources too).
    """
    if not users:
        raise GraphCaptureError("the model's output does not depend on its input")
    index = graph.add_node(Node(name="input", primitive="input"))
    for user in users:
        graph.add_edge(index, user)
    return graph.subgraph([index, *range(index)])


def drop_data_free_ops(graph: DiGraph, *, input_index: int) -> DiGraph:
    """Remove op nodes that the input does not reach (they only transform parameters, e.g. weight
    standardization or relative position bias lookups), connecting their neighbours.

    Parameter nodes stay: a standardized conv weight becomes a source that
    :func:`straighten_weights` moves onto the data path.
    """
    reached = graph.reachable_from(input_index)
    drop = [i for i, node in enumerate(graph.nodes) if i not in reached and not node.is_param]
    if not drop:
        return graph
    for i in drop:
        graph.bypass(i)
    dropped = set(drop)
    return graph.subgraph(i for i in range(len(graph)) if i not in dropped)


def needs_straightening(graph: DiGraph, i: int) -> bool:
    """A conv/linear weight that is not on the data path: it reaches its op from the side
    (a linear weight through a transpose, a standardized conv weight through its normalization)."""
    node = graph.nodes[i]
    return node.is_param and node.primitive in _WEIGHT_PRIMITIVES and not graph.pred[i]


def straighten_weights(graph: DiGraph) -> DiGraph:
    """Put side-entering weights on the data path: ``x -> op <- W`` becomes ``x -> W -> op``.

    In place. Same rewiring as DeepNets-1M applies to linear layers (``x -> W -> b``).
    """
    for i in range(len(graph)):
        if not needs_straightening(graph, i):
            continue
        for out in sorted(graph.succ[i]):
            for src in list(graph.pred[out]):
                graph.add_edge(src, i)
            for src in list(graph.pred[out]):
                graph.remove_edge(src, out)
            graph.add_edge(i, out)
            graph.remove_edge(i, i)
    return graph


def topological_order(graph: DiGraph) -> list[int]:
    """Kahn's algorithm by generations, nodes and successors in index order.

    This is the order ``networkx.topological_sort`` gives (networkx >= 2.6), which fixes the
    node order of every DeepNets-1M graph.
    """
    indegree = [len(p) for p in graph.pred]
    generation = [i for i, d in enumerate(indegree) if d == 0]
    order: list[int] = []
    while generation:
        order.extend(generation)
        following = []
        for i in generation:
            for j in sorted(graph.succ[i]):
                indegree[j] -= 1
                if indegree[j] == 0:
                    following.append(j)
        generation = following
    if len(order) != len(graph):
        raise GraphCaptureError("the captured graph has a cycle")
    return order


def sort_nodes(graph: DiGraph) -> DiGraph:
    """The graph with its nodes in topological order (the input first, the output last)."""
    return graph.subgraph(topological_order(graph))


def split_pos_enc(graph: DiGraph) -> DiGraph:
    """Give every ``pos_enc`` node a ``sum`` node right after it that takes over its edges.

    A position embedding is added to the tokens, so the GHN-2 sees it as a source feeding
    a sum: ``x -> pos_enc -> y`` becomes ``x -> sum -> y`` with ``pos_enc -> sum``.
    """
    if not any(node.primitive == "pos_enc" for node in graph.nodes):
        return graph
    order: list[tuple[int, bool]] = []  # (old index, is the new sum node)
    for i, node in enumerate(graph.nodes):
        order.append((i, False))
        if node.primitive == "pos_enc":
            order.append((i, True))
    out = DiGraph()
    new_of: dict[int, int] = {}
    for old, is_sum in order:
        if is_sum:
            new_of[old] = out.add_node(Node(name="AddBackward0", primitive="sum"))
        else:
            index = out.add_node(graph.nodes[old])
            new_of.setdefault(old, index)
    for old, is_sum in order:
        if is_sum:
            out.add_edge(new_of[old] - 1, new_of[old])
    for src in range(len(graph)):
        for dst in graph.succ[src]:
            out.add_edge(new_of[src], new_of[dst])
    return out


def join_outputs(graph: DiGraph) -> DiGraph:
    """Make the last node the only sink: outputs of several heads (averaged by an op the
    filter removed) are joined by a ``sum`` node appended at the end. In place."""
    sinks = [i for i in range(len(graph)) if not graph.succ[i]]
    if len(sinks) > 1:
        index = graph.add_node(Node(name="AddBackward0", primitive="sum"))
        for sink in sinks:
            graph.add_edge(sink, index)
    return graph
