"""Graph capture: a model in, the graph a GHN-2 reads out.

    trace_model -> build_graph -> add_input -> drop_data_free_ops -> straighten_weights
    -> sort_nodes -> split_pos_enc -> mark_attention -> filter_graph -> join_outputs
    -> edge_table -> ModelGraph
"""

from __future__ import annotations

import logging
import time

from torch import nn

from ghnorth_cli.graph import ghn3_rules
from ghnorth_cli.graph.attention import mark_attention
from ghnorth_cli.graph.build import build_graph
from ghnorth_cli.graph.digraph import DiGraph
from ghnorth_cli.graph.errors import GraphCaptureError
from ghnorth_cli.graph.filter import filter_graph
from ghnorth_cli.graph.rewire import (
    add_input,
    drop_data_free_ops,
    join_outputs,
    sort_nodes,
    split_pos_enc,
    straighten_weights,
)
from ghnorth_cli.graph.trace import trace_model
from ghnorth_cli.graph.types import ModelGraph, ParamNode
from ghnorth_cli.graph.virtual_edges import edge_table

log = logging.getLogger(__name__)


def param_nodes(graph: DiGraph, *, ghn3: bool = False) -> list[ParamNode]:
    """Nodes with a parameter or a pooling kernel, in node order.

    As in DeepNets-1M, the last two nodes are flagged as the classifier's weight and bias.
    With ``ghn3`` a (1, T, C) position embedding's shape is recorded as GHN-3's graphs do.
    """
    n = len(graph)
    out = []
    for i, node in enumerate(graph.nodes):
        if node.is_param:
            param, shape = node.name, node.shape
            if ghn3:
                shape = ghn3_rules.recorded_shape(shape)
        elif node.primitive in ("max_pool", "avg_pool"):
            param, shape = node.primitive, (1, 1, *node.attrs["kernel_size"])
        else:
            continue
        out.append(
            ParamNode(
                index=i,
                param=param,
                op=node.primitive,
                shape=tuple(shape),
                last_weight=i == n - 2,
                last_bias=i == n - 1,
            )
        )
    return out


def check_graph(graph: DiGraph) -> None:
    """Every node has a primitive, the input comes first and every node reaches the output."""
    if not graph.nodes or graph.nodes[0].primitive != "input":
        raise GraphCaptureError("captured graph does not start at the input")
    untyped = [node.name for node in graph.nodes if node.primitive is None]
    if untyped:
        raise GraphCaptureError(f"captured graph has ops without a primitive: {untyped[:3]}")
    reversed_graph = DiGraph(nodes=graph.nodes, succ=graph.pred, pred=graph.succ)
    reaching = reversed_graph.reachable_from(len(graph) - 1)
    if len(reaching) != len(graph):
        raise GraphCaptureError("captured graph has nodes that do not reach the output")


def node_graph(model: nn.Module, *, img_size: int = 224, ghn3: bool = False) -> DiGraph:
    """The filtered node graph of ``model`` (real edges only), nodes in GHN-2 order
    (with ``ghn3``, as GHN-3's reference builds it: see ghn3_rules.py)."""
    trace = trace_model(model, img_size=img_size)
    graph, users = build_graph(trace)
    if ghn3:
        graph = ghn3_rules.apply_rules(graph)
    graph = add_input(graph, users=users)
    graph = drop_data_free_ops(graph, input_index=0)
    graph = straighten_weights(graph)
    graph = sort_nodes(graph)
    graph = split_pos_enc(graph)
    if not ghn3:
        graph = mark_attention(graph)
    graph = join_outputs(filter_graph(graph, ghn3=ghn3))
    check_graph(graph)
    return graph


def capture_graph(model: nn.Module, *, img_size: int = 224, ve_cutoff: int = 50, ghn3: bool = False) -> ModelGraph:
    """Capture ``model``'s graph as the GHN-2 sees it (with ``ghn3``: as the GHN-3 sees it).

    Runs one forward pass on a dummy 2 x 3 x ``img_size`` x ``img_size`` input in the model's
    current train/eval mode without changing its parameters, buffers or mode. Edges carry
    shortest-path lengths up to ``ve_cutoff`` (1: real edges only). Raises
    :class:`GraphCaptureError` for a model whose graph cannot be captured.
    """
    start = time.perf_counter()
    graph = node_graph(model, img_size=img_size, ghn3=ghn3)
    edges = edge_table(graph, ve_cutoff=ve_cutoff)
    result = ModelGraph(
        node_types=[node.primitive for node in graph.nodes],
        param_nodes=param_nodes(graph, ghn3=ghn3),
        edges=edges,
        meta={"img_size": img_size, "ve_cutoff": ve_cutoff, **({"ghn3": True} if ghn3 else {})},
    )
    log.debug("captured %d nodes, %d edges in %.3f s", result.n_nodes, len(edges), time.perf_counter() - start)
    return result
