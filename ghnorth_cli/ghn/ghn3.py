"""The GHN-3 network: GHN-2's embeddings and decoders around a graph transformer.

GHN-3 (Knyazev, Hwang, Lacoste-Julien, "Can We Scale Transformers to Predict Parameters of
Diverse ImageNet Models?", ICML 2023; SamsungSAILMontreal/ghn3, ghn3/nn.py) keeps GHN-2's
primitive and shape embeddings, its 1-D and classifier-bias decoders, fan-in normalization and
tiling, and changes three things:

- node features pass through :class:`~ghnorth_cli.ghn.graphormer.GraphormerLayer` s instead of a
  gated GNN; before the first layer each node gets embeddings of its in- and out-degree and of
  its distance from the input node, and attention is biased by the shortest-path lengths;
- the convolutional decoder (:class:`~ghnorth_cli.ghn.decoder.ConvDecoder3`) reads small kernels
  from the centre of its map and interpolates large ones, and fitting cuts kernels around
  their centre;
- (1, T, C) position embeddings are predicted: as a (1, C, s, s) kernel whose s*s positions
  become token rows, after one class-token row drawn from N(0, 0.02) (a GHN is trained on
  models without class tokens), then tiled along the channels.

The state dict has exactly the released files' keys (``ghn3tm8.pt`` ... ``ghn3xlm16.pt``).
"""

from __future__ import annotations

import torch
from torch import nn

from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.decoder import ConvDecoder3
from ghnorth_cli.ghn.fit import crop_to_shape, normalize, tile_to_shape
from ghnorth_cli.ghn.graphormer import (
    MAX_DEGREE,
    MAX_INPUT_DIST,
    GraphormerLayer,
    dense_distances,
    structure_indices,
)
from ghnorth_cli.ghn.network import GraphHyperNetwork
from ghnorth_cli.ghn.plan import Plan, Target, is_token_grid
from ghnorth_cli.graph.types import ModelGraph

#: Standard deviation of the class-token row of a predicted position embedding (ghn3/nn.py).
CLASS_TOKEN_STD = 0.02
#: Seed of the class-token row when ``predict`` is given no generator.
DEFAULT_SEED = 0


class GHN3(GraphHyperNetwork):
    """Graph HyperNetwork GHN-3. :meth:`predict` returns ``{parameter name: tensor}``.

    ``config.layers`` transformer layers of width ``config.hid`` with ``config.heads`` heads and
    an MLP ratio of 4; the first layer turns the graph's shortest-path matrix into attention biases.
    """

    predicts_token_grids = True

    def __init__(self, config: GHNConfig) -> None:
        if not config.is_ghn3:
            raise ValueError(f"GHN3 needs hypernet='transformer', got {config.hypernet!r}")
        super().__init__(config)
        hid = config.hid
        layers = nn.ModuleList(GraphormerLayer(hid, heads=config.heads, mlp_ratio=4, edge_bias=i == 0)
                               for i in range(config.layers))
        self._add_modules(gnn=layers, decoder=ConvDecoder3(hid=hid, max_shape=config.max_shape,
                                                           num_classes=config.num_classes))
        self.centrality_embed_in = nn.Embedding(MAX_DEGREE + 1, hid)
        self.centrality_embed_out = nn.Embedding(MAX_DEGREE + 1, hid)
        self.input_dist_embed = nn.Embedding(MAX_INPUT_DIST + 1, hid)

    def node_features(self, graph: ModelGraph, plan: Plan) -> torch.Tensor:
        """(n_nodes, hid) node embeddings after the transformer layers (and layer norm)."""
        device = self.device
        x = self.embed(graph.node_type_ids.to(device))
        x = x + self.shape_enc(self.shape_enc.shape_indices(plan.node_shapes).to(device))
        dist = dense_distances(graph.edges, n_nodes=graph.n_nodes, device=device)
        in_degree, out_degree, input_dist = structure_indices(dist)
        x = x + self.centrality_embed_in(in_degree)
        x = x + self.centrality_embed_out(out_degree)
        x = x + self.input_dist_embed(input_dist)
        bias = self.gnn[0].attn.edge_bias(dist)
        for layer in self.gnn:
            x = layer(x, bias)
        return self.ln(x) if self.config.layernorm else x

    def fit(self, w: torch.Tensor, target: Target, *, out: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """A decoded tensor cut around its kernel centre, normalized and tiled to ``target``'s shape."""
        if is_token_grid(target.shape) and w.dim() == 4:
            w = self.token_rows(w, target.shape, generator=generator)
        else:
            w = crop_to_shape(w, target.shape, centred=True)
        if self.config.weight_norm:
            w = normalize(w, shape=target.shape, is_weight=target.is_weight)
        w = tile_to_shape(w, target.shape, out=out)
        return w if (out is not None or w._base is None) else w.clone()

    @staticmethod
    def token_rows(w: torch.Tensor, shape: tuple[int, ...], *, generator: torch.Generator | None) -> torch.Tensor:
        """(1, rows, c) token rows from a decoded (1, c, s, s) kernel: a class-token row drawn from
        N(0, ``CLASS_TOKEN_STD``), then the s*s positions in row-major order, cut to ``shape``.

        The row is drawn on the CPU from ``generator`` (default: seeded with ``DEFAULT_SEED``),
        so a prediction does not depend on the device or on torch's global random state.
        """
        _, tokens, channels = shape
        grid = w[:1, : min(channels, w.shape[1])].flatten(2).transpose(1, 2)  # (1, s*s, c)
        gen = generator if generator is not None else torch.Generator().manual_seed(DEFAULT_SEED)
        row = torch.normal(0.0, CLASS_TOKEN_STD, size=(1, 1, grid.shape[2]), generator=gen)
        return torch.cat([row.to(device=w.device, dtype=w.dtype), grid[:, : tokens - 1]], dim=1)
