"""The computational graph a GHN-2 reads: typed nodes, parameter nodes and (virtual) edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# The GHN-2's 15 primitives, in the order of their embedding ids (DeepNets-1M's order).
PRIMITIVES: tuple[str, ...] = (
    "max_pool",
    "avg_pool",
    "sep_conv",
    "dil_conv",
    "conv",
    "msa",
    "cse",
    "sum",
    "concat",
    "input",
    "bias",
    "bn",
    "ln",
    "pos_enc",
    "glob_avg",
)
PRIMITIVE_IDS: dict[str, int] = {name: i for i, name in enumerate(PRIMITIVES)}


@dataclass(frozen=True)
class ParamNode:
    """A graph node that the GHN predicts a tensor for (or, for pooling, a node with a kernel shape).

    ``param`` is the model's parameter name (``"layer1.0.conv1.weight"``) or, for pooling nodes,
    the primitive name (``"max_pool"``). ``last_weight``/``last_bias`` mark the classifier.

    Conventions of :func:`ghnorth_cli.graph.capture_graph` (those of the reference, DeepNets-1M):

    - a norm layer (``bn``/``ln``) has one node, for its weight; its bias has no node of its own
      and is predicted together with the weight;
    - parameters without a primitive (layer scale, relative position bias tables, GRN gamma/beta,
      recurrent weights, ...) have no node: they keep the model's own init;
    - pooling nodes have ``shape == (1, 1, kh, kw)``;
    - ``last_weight``/``last_bias`` are set on the second-to-last and the last node of the graph
      (for a classifier, its weight and bias), whatever those nodes are;
    - class, distillation and register tokens and position embeddings are ``pos_enc`` nodes
      with their own shape (e.g. ``(1, 197, 384)``), each feeding a ``sum``/``concat``;
    - a parameter used by several ops (a module shared between blocks) has a node at each use,
      so the same ``param`` can appear more than once.
    """

    index: int
    param: str
    op: str
    shape: tuple[int, ...]
    last_weight: bool = False
    last_bias: bool = False


@dataclass
class ModelGraph:
    """A model's graph as the GHN-2 sees it.

    ``node_types[i]`` is the primitive of node ``i``; ``edges`` is an int64 tensor of rows
    ``(source, target, shortest_path_length)`` where length 1 is a real edge and larger
    lengths are virtual edges.

    Node 0 is the ``input``; nodes are in the reference's topological order and the last node
    is the output. ``edges`` rows are sorted by (source, target). ``meta`` holds the capture
    settings (``img_size``, ``ve_cutoff``) when the graph comes from ``capture_graph``.
    """

    node_types: list[str]
    param_nodes: list[ParamNode]
    edges: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.node_types)

    @property
    def node_type_ids(self) -> torch.Tensor:
        return torch.tensor([PRIMITIVE_IDS[t] for t in self.node_types], dtype=torch.long)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelGraph":
        """Build from the parity fixtures' JSON layout (``graphs/<case>.json``)."""
        nodes = [
            ParamNode(
                index=int(n["index"]),
                param=n["param"],
                op=n["op"],
                shape=tuple(int(s) for s in n["shape"]),
                last_weight=bool(n["last_weight"]),
                last_bias=bool(n["last_bias"]),
            )
            for n in data["nodes"]
        ]
        edges = torch.tensor(data["edges"], dtype=torch.long).reshape(-1, 3)
        return cls(node_types=list(data["node_types"]), param_nodes=nodes, edges=edges)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_nodes": self.n_nodes,
            "node_types": list(self.node_types),
            "nodes": [
                {
                    "index": n.index,
                    "param": n.param,
                    "op": n.op,
                    "shape": list(n.shape),
                    "last_weight": n.last_weight,
                    "last_bias": n.last_bias,
                }
                for n in self.param_nodes
            ],
            "edges": self.edges.tolist(),
        }
