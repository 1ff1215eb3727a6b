"""Attention written out as softmax and matmuls: type its ``attn @ v`` product ``msa``.

DeepNets-1M finds attention by its own layout (a ``Clone`` eleven nodes after a softmax).
Attention in torchvision and timm models is either a fused kernel (typed ``msa`` directly,
see primitives.py) or ``softmax(q @ k^T) @ v``; for the latter the first matrix product
downstream of the softmax, reached through ops without a primitive, becomes the ``msa`` node,
so that q, k and v all flow through it.
"""

from __future__ import annotations

from ghnorth_cli.graph.digraph import DiGraph

_MATMUL_OPS = ("Bmm", "Mm", "Matmul", "Einsum")
_SOFTMAX_OPS = ("Softmax", "SafeSoftmax")


def attention_product(graph: DiGraph, softmax: int) -> int | None:
    """Index of the first matrix product after node ``softmax``, or ``None``."""
    frontier, seen = sorted(graph.succ[softmax]), {softmax}
    while frontier:
        nxt = []
        for i in frontier:
            if i in seen:
                continue
            seen.add(i)
            node = graph.nodes[i]
            if node.is_param or node.primitive is not None:
                continue
            if node.op in _MATMUL_OPS:
                return i
            nxt.extend(sorted(graph.succ[i]))
        frontier = nxt
    return None


def mark_attention(graph: DiGraph) -> DiGraph:
    """Type the product after each softmax as ``msa`` (in place), unless DeepNets-1M's own
    rule already applies (a ``Clone`` eleven nodes after the softmax)."""
    for i, node in enumerate(graph.nodes):
        if node.is_param or node.op not in _SOFTMAX_OPS:
            continue
        if i + 11 < len(graph) and graph.nodes[i + 11].op == "Clone":
            continue
        product = attention_product(graph, i)
        if product is not None:
            graph.nodes[product].primitive = "msa"
    return graph
