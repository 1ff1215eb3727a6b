"""Where GHN-3's graphs differ from GHN-2's: the rules of GHN-3's reference graph builder.

GHN-3's reference (SamsungSAILMontreal/ghn3, ghn3/graph.py) builds graphs with DeepNets-1M's
steps plus its own rules, which change some graphs (none of the models without channel gates or
attention). ``capture_graph(..., ghn3=True)`` applies them:

- **channel gates** (squeeze-excitation): in a model with a sigmoid or swish op, a ``Mul`` is a
  ``cse`` node when a neighbour in the autograd walk is a (hard) sigmoid, ReLU or mean, and a
  ``Mean`` is kept only when it pools for the classifier; GHN-2 instead keeps a gate's ``Mean``
  as ``glob_avg`` and its ``Mul`` only after a hard sigmoid. (Without a sigmoid or swish op, GHN-3
  keeps every ``Mean``; ghnorth keeps GHN-2's stricter rule there, which agrees on the fixtures.)

The walk-order neighbours are read before the nodes are sorted, as the reference reads them.
"""

from __future__ import annotations

from ghnorth_cli.graph.digraph import DiGraph

_HEAD_PREFIXES = ("classifier", "fc", "head")
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


def keep_mul(graph: DiGraph, i: int) -> bool:
    return bool(graph.nodes[i].attrs.get(CSE_ATTR))


def is_head_pool(graph: DiGraph, i: int) -> bool | None:
    """Whether GHN-3 keeps this ``Mean`` (None: not decided here, GHN-2's rule applies)."""
    return graph.nodes[i].attrs.get(HEAD_POOL_ATTR)
