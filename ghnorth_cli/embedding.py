"""One latent vector per architecture from a GHN (GHN-2 or GHN-3): its node embeddings after propagation, pooled.

The GHN-2 paper (and the GHN-orth paper's Figure 4, which places ResNet-50 and ConvNeXt in this
space) takes the node embeddings after the last graph propagation step and the final layer norm,
and averages them over all nodes of the graph: the same embeddings the decoder turns into
parameters. :func:`graph_embedding` does exactly that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ghnorth_cli.ghn.network import GraphHyperNetwork
from ghnorth_cli.ghn.plan import Shape
from ghnorth_cli.graph.types import ModelGraph

_logger = logging.getLogger(__name__)

EMBEDDINGS_FORMAT = "ghnorth.embeddings"
POOLING = "mean over all graph nodes of the GHN node embeddings after the last propagation step and layer norm"


@dataclass(frozen=True)
class ArchEmbedding:
    """The latent vector of one architecture, with what identifies it."""

    name: str
    vector: list[float]
    n_nodes: int
    info: dict[str, Any] = field(default_factory=dict)  # arch, img_size, num_classes, graph file, ...

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.info, "n_nodes": self.n_nodes, "embedding": self.vector}


def node_embeddings(ghn: GraphHyperNetwork, graph: ModelGraph, *, shapes: Mapping[str, Shape] | None = None) -> torch.Tensor:
    """(n_nodes, hid) node embeddings after propagation and layer norm, as the decoder receives them.

    ``shapes`` (parameter name -> shape) defaults to the shapes recorded in the graph's nodes.
    """
    if shapes is None:
        shapes = {n.param: tuple(n.shape) for n in graph.param_nodes}
    plan = ghn.plan(graph, shapes)
    with torch.no_grad():
        return ghn.node_features(graph, plan).detach().cpu()


def graph_embedding(ghn: GraphHyperNetwork, graph: ModelGraph, *, shapes: Mapping[str, Shape] | None = None) -> torch.Tensor:
    """(hid,) latent vector of an architecture: the mean of :func:`node_embeddings` over all nodes."""
    return node_embeddings(ghn, graph, shapes=shapes).mean(dim=0)


def embed_graph(ghn: GraphHyperNetwork, graph: ModelGraph, *, name: str, shapes: Mapping[str, Shape] | None = None,
                info: Mapping[str, Any] | None = None) -> ArchEmbedding:
    """:func:`graph_embedding` as an :class:`ArchEmbedding` (float32 values as Python floats)."""
    vector = graph_embedding(ghn, graph, shapes=shapes)
    return ArchEmbedding(name=name, vector=[float(v) for v in vector.to(torch.float32)], n_nodes=graph.n_nodes,
                         info=dict(info or {}))


def embeddings_document(embeddings: list[ArchEmbedding], *, ghn: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document ``ghnorth embed`` writes and ``ghnorth analyze --embeddings`` reads."""
    dims = {len(e.vector) for e in embeddings}
    return {
        "format": EMBEDDINGS_FORMAT,
        "format_version": 1,
        "ghn": dict(ghn),
        "pooling": POOLING,
        "dim": dims.pop() if len(dims) == 1 else None,
        "models": [e.to_dict() for e in embeddings],
    }


def dumps_embeddings(document: Mapping[str, Any]) -> str:
    """The document as JSON text with one line per model (vectors stay on their model's line)."""
    head = {k: v for k, v in document.items() if k != "models"}
    text = json.dumps(head, indent=1)[:-2]
    models = ",\n  ".join(json.dumps(m) for m in document["models"])
    return f'{text},\n "models": [\n  {models}\n ]\n}}\n'
