"""Step 4 of graph capture: remove the ops the GHN-2 does not see, connecting their neighbours.

The passes and their conditions are DeepNets-1M's, in its order:

1. ``Mul`` is a channel gate (``cse``) only after a hard sigmoid/swish (checked two nodes back);
2. ``Clone`` is attention (``msa``) only eleven nodes after a softmax (its own MSA layout);
3. every op without a primitive goes;
4. ``Mean`` is a global pooling only with ``keepdim=True`` (a mean without that argument is kept);
   ghnorth adds: only if it reduces two or more dims (a mean over channels, as in ConvNeXt-V2's
   GRN, is no pooling), and always if it is the output of a global-pooling module (timm's
   ``FastAdaptiveAvgPool``, the counterpart of ``nn.AdaptiveAvgPool2d``);
5. ``Add`` (``sum``) and 6. ``Cat`` (``concat``) stay only with two or more inputs.

Within a pass, removed nodes keep their edges until the pass ends; inputs are counted with
them, as DeepNets-1M does.
"""

from __future__ import annotations

from typing import Callable

from ghnorth_cli.graph import ghn3_rules
from ghnorth_cli.graph.digraph import DiGraph

KeepRule = Callable[[DiGraph, int], bool]


def _keep_mul(graph: DiGraph, i: int) -> bool:
    return graph.nodes[i - 2].name.startswith("Hard")


def _keep_clone(graph: DiGraph, i: int) -> bool:
    return graph.nodes[i - 11].name.startswith("Softmax")


def _keep_mean(graph: DiGraph, i: int) -> bool:
    attrs = graph.nodes[i].attrs
    if attrs.get("global_pool"):
        return True
    keepdim = attrs.get("keepdim")
    if keepdim is not None:
        return keepdim and attrs.get("reduced_dims", 2) >= 2
    return i < len(graph) - 1 and not graph.nodes[i + 1].name.startswith("cells.")


def _keep_multi_input(graph: DiGraph, i: int) -> bool:
    return len(graph.pred[i]) > 1


def _never(graph: DiGraph, i: int) -> bool:
    return False


def _is_op(op: str) -> Callable[[DiGraph, int], bool]:
    return lambda graph, i: not graph.nodes[i].is_param and graph.nodes[i].op == op


def _is_unsupported(graph: DiGraph, i: int) -> bool:
    return graph.nodes[i].primitive is None


PASSES: tuple[tuple[str, Callable[[DiGraph, int], bool], KeepRule], ...] = (
    ("Mul", _is_op("Mul"), _keep_mul),
    ("Clone", _is_op("Clone"), _keep_clone),
    ("unsupported", _is_unsupported, _never),
    ("Mean", _is_op("Mean"), _keep_mean),
    ("Add", _is_op("Add"), _keep_multi_input),
    ("Cat", _is_op("Cat"), _keep_multi_input),
)


def filter_pass(graph: DiGraph, *, select: Callable[[DiGraph, int], bool], keep: KeepRule) -> DiGraph:
    """Remove the selected nodes that ``keep`` rejects; returns the compacted graph."""
    kept = []
    for i in range(len(graph)):
        if select(graph, i) and not keep(graph, i):
            graph.bypass(i)
        else:
            kept.append(i)
    return graph if len(kept) == len(graph) else graph.subgraph(kept)


def _ghn3_keep_mean(graph: DiGraph, i: int) -> bool:
    decided = ghn3_rules.is_head_pool(graph, i)
    return _keep_mean(graph, i) if decided is None else decided


# GHN-3's rules where they differ (see ghn3_rules.py); the nodes carry what they need in ``attrs``.
GHN3_KEEP: dict[str, KeepRule] = {"Mul": ghn3_rules.keep_mul, "Mean": _ghn3_keep_mean,
                                  "Add": ghn3_rules.keep_multi_input, "Cat": ghn3_rules.keep_multi_input}


def filter_graph(graph: DiGraph, *, ghn3: bool = False) -> DiGraph:
    """Run all passes of :data:`PASSES` in order (with :data:`GHN3_KEEP`'s rules if ``ghn3``)."""
    for name, select, keep in PASSES:
        graph = filter_pass(graph, select=select, keep=GHN3_KEEP.get(name, keep) if ghn3 else keep)
    if ghn3:  # the reference filters sums and concatenations again after fixing attention edges
        graph = ghn3_rules.fix_softmax_edges(graph)
        for name, select, keep in PASSES:
            if name in ("Add", "Cat"):
                graph = filter_pass(graph, select=select, keep=keep)
    return graph
