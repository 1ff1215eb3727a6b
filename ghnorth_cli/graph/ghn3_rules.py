"""Where GHN-3's graphs differ from GHN-2's: the rules of GHN-3's reference graph builder.

GHN-3's reference (SamsungSAILMontreal/ghn3, ghn3/graph.py) builds graphs with DeepNets-1M's
steps plus its own rules, which change some graphs (none of the models without channel gates or
attention). ``capture_graph(..., ghn3=True)`` applies them:

- **channel gates** (squeeze-excitation): in a model with a sigmoid or swish op, a ``Mul`` is a
  ``cse`` node when a neighbour in the autograd walk is a (hard) sigmoid, ReLU or mean, and a
  ``Mean`` is kept only when it pools for the classifier; GHN-2 instead keeps a gate's ``Mean``
  as ``glob_avg`` and its ``Mul`` only after a hard sigmoid. (Without a sigmoid or swish op, GHN-3
  keeps every ``Mean``; ghnorth keeps GHN-2's stricter rule there, which agrees on the fixtures.)
- **attention**: an explicit ``softmax`` is the ``msa`` node; fused attention kernels (and the
  ``_safe_softmax`` of their decomposition on the meta device) have no primitive, so torchvision's
  ``nn.MultiheadAttention`` (a fused kernel on CPU) gets no ``msa`` node; GHN-2 types the fused
  kernel, or the product after a softmax, as ``msa``.
- **attention edges**: every other input of the node after a softmax is moved onto the softmax
  (or dropped when it also reaches that node through the softmax), so that q, k and v all flow
  through the ``msa`` node.
- **tokens**: class, distillation and register tokens get no node (GHN-3 was trained on models
  without them); position embeddings stay ``pos_enc`` nodes.
- **sums and concatenations** stay when they have two or more inputs in the walked graph and
  still two or more once the graph is filtered and the attention edges fixed (GHN-2 counts the
  inputs while filtering).
- **recorded shapes**: a (1, T, C) position embedding is recorded as (1, C, s, s), s = floor(sqrt(T)).

The walk-order neighbours are read before the nodes are sorted, as the reference reads them.
"""

from __future__ import annotations

import re

from ghnorth_cli.graph.digraph import DiGraph
from ghnorth_cli.graph.primitives import op_primitive

_TOKEN_NAME = re.compile(r"(^|_)(cls_token|class_token|dist_token|reg_token)$")

_HEAD_PREFIXES = ("classifier", "fc", "head")
RAW_INPUTS_ATTR = "ghn3_raw_inputs"  # inputs of a sum/concat in the walked graph
CSE_ATTR = "ghn3_cse"  # a Mul kept as a channel gate
HEAD_POOL_ATTR = "ghn3_head_pool"  # a Mean kept as the classifier's global pooling


def _lower_names(graph: DiGraph) -> list[str]:
    return [node.name.lower() for node in graph.nodes]


def _near_head(names: list[str], i: int) -> bool:
    """One of the two nodes walked just before ``i`` (its consumers) belongs to the classifier.

    As in the reference, a node without a successor in the list counts as in the head, and
    the first nodes' predecessors wrap around to the end of the list.
    """
    if i + 1 >= len(names):
        return True
    return any(names[i - k].startswith(_HEAD_PREFIXES) for k in (1, 2))


def annotate_channel_gates(graph: DiGraph) -> DiGraph:
    """Mark (in ``attrs``) which ``Mul`` and ``Mean`` ops GHN-3 keeps; in place, in walk order.

    ``Mul`` is judged among all walked ops; ``Mean`` among the ops that have a primitive, once
    the ``Mul`` ops that are no gate are gone (the reference's filter order).
    """
    names = _lower_names(graph)
    gated = any("sigmoid" in name or "swish" in name for name in names)
    for i, node in enumerate(graph.nodes):
        if node.is_param or node.op != "Mul":
            continue
        if not gated or _near_head(names, i):
            node.attrs[CSE_ATTR] = False
            continue
        node.attrs[CSE_ATTR] = (names[i - 2].startswith(("hard", "sigmoid"))
                                or names[i - 3].startswith(("relu", "mean"))
                                or names[i + 1].startswith(("hard", "sigmoid", "relu")))
    if not gated:
        return graph  # Mean ops follow GHN-2's rule
    kept = [i for i, node in enumerate(graph.nodes)
            if node.primitive is not None and (node.op != "Mul" or node.attrs.get(CSE_ATTR))]
    kept_names = [names[i] for i in kept]
    for position, i in enumerate(kept):
        node = graph.nodes[i]
        if not node.is_param and node.op == "Mean":
            node.attrs[HEAD_POOL_ATTR] = _near_head(kept_names, position)
    return graph


def retype_nodes(graph: DiGraph) -> DiGraph:
    """GHN-3's primitives for attention ops and learned tokens (see the module docstring); in place."""
    for node in graph.nodes:
        if node.is_param:
            if _TOKEN_NAME.search(node.name.rpartition(".")[2]):
                node.primitive = None
        elif node.op == "Softmax":
            node.primitive = "msa"
        elif node.op in ("SafeSoftmax", "Clone") or op_primitive(node.op) == "msa":
            node.primitive = None
    return graph


def count_inputs(graph: DiGraph) -> DiGraph:
    """Record each ``Add``/``Cat`` op's number of inputs in the walked graph; in place."""
    for i, node in enumerate(graph.nodes):
        if not node.is_param and node.op in ("Add", "Cat"):
            node.attrs[RAW_INPUTS_ATTR] = len(graph.pred[i])
    return graph


def apply_rules(graph: DiGraph) -> DiGraph:
    """Everything GHN-3 decides on the walked graph, before it is rewired and sorted; in place."""
    return count_inputs(annotate_channel_gates(retype_nodes(graph)))


def keep_multi_input(graph: DiGraph, i: int) -> bool:
    """The first filter's rule for sums and concatenations: two or more inputs when walked."""
    return graph.nodes[i].attrs.get(RAW_INPUTS_ATTR, len(graph.pred[i])) > 1


def _more_than_one_path(graph: DiGraph, src: int, dst: int, memo: dict[int, int]) -> int:
    """Number of paths ``src`` -> ``dst`` in a DAG, capped at 2."""
    if src == dst:
        return 1
    if src not in memo:
        memo[src] = 0  # no cycles in a captured graph; guards anyway
        memo[src] = min(2, sum(_more_than_one_path(graph, nxt, dst, memo) for nxt in graph.succ[src]))
    return memo[src]


def fix_softmax_edges(graph: DiGraph) -> DiGraph:
    """Route the other inputs of each node after a softmax through the softmax; in place.

    For ``softmax -> o`` and another input ``j -> o``: the edge ``j -> o`` goes, and ``j -> softmax``
    comes when ``o`` had only the one path from ``j``. Paths are counted on the graph as it was
    before any change (ghn3/graph.py ``fix_softmax_edges``). Where that would leave ``j`` without
    a path to ``o`` (attention laid out otherwise, e.g. timm's EfficientViT), ``j -> o`` stays.
    """
    snapshot = DiGraph(nodes=graph.nodes, succ=[set(s) for s in graph.succ], pred=[set(p) for p in graph.pred])
    for i, node in enumerate(graph.nodes):
        if node.is_param or node.op != "Softmax":
            continue
        for out in sorted(snapshot.succ[i]):
            memo: dict[int, int] = {}
            for j in sorted(snapshot.pred[out] - {i}):
                paths = _more_than_one_path(snapshot, j, out, memo) if j not in memo else memo[j]
                direct = j in snapshot.succ[i]
                if paths > 1 or not direct:
                    graph.remove_edge(j, out)
                if paths == 1 and not direct:
                    graph.add_edge(j, i)
                if out not in graph.reachable_from(j):  # ghnorth: never cut a node off the output
                    graph.add_edge(j, out)
    return graph


def keep_mul(graph: DiGraph, i: int) -> bool:
    return bool(graph.nodes[i].attrs.get(CSE_ATTR))


def is_head_pool(graph: DiGraph, i: int) -> bool | None:
    """Whether GHN-3 keeps this ``Mean`` (None: not decided here, GHN-2's rule applies)."""
    return graph.nodes[i].attrs.get(HEAD_POOL_ATTR)


def recorded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A parameter's shape as GHN-3's graphs record it: (1, T, C) token grids as (1, C, s, s)."""
    if len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1:
        side = int(shape[1] ** 0.5)
        return (1, shape[2], side, side)
    return tuple(shape)
