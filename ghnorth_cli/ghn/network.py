"""The GHN interface and the GHN-2 network: from a model's graph to a tensor for every parameter.

Pipeline: primitive embedding + shape embedding per node, graph propagation (GHN-2: a gated GNN
over (virtual) edges; GHN-3: graph transformer layers, see ``ghn3.py``), layer norm, then batched
decoding per group of same-keyed nodes, fitting to each target shape and fan-in normalization.
The module names match the released checkpoints' keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Collection, Mapping

import torch
from torch import nn

from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.decoder import ConvDecoder
from ghnorth_cli.ghn.fit import crop_to_shape, normalize, tile_to_shape
from ghnorth_cli.ghn.gnn import GatedGNN, build_schedule
from ghnorth_cli.ghn.mlp import MLP
from ghnorth_cli.ghn.plan import GroupKey, Kind, Plan, Shape, Target, plan_prediction
from ghnorth_cli.ghn.shape_encoder import ShapeEncoder
from ghnorth_cli.graph.types import PRIMITIVES, ModelGraph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GHNInfo:
    """Where a GHN's weights came from (recorded in the checkpoints it predicts)."""

    name: str  # registry name, file path or URL
    sha256: str  # of the GHN file


class GraphHyperNetwork(nn.Module):
    """What every GHN offers (GHN-2: :class:`GHN2`, GHN-3: :class:`~ghnorth_cli.ghn.ghn3.GHN3`).

    A GHN maps a model's graph to node features (:meth:`node_features`), decodes each group of
    same-keyed nodes (:meth:`decode`) and fits each decoded tensor to its parameter (:meth:`fit`);
    :meth:`predict` runs the three and returns ``{parameter name: tensor}``. Subclasses build
    their modules with the released checkpoints' names and implement ``node_features``/``decode``.
    """

    #: Whether (1, tokens, channels) position embeddings are predicted (GHN-3) or kept (GHN-2).
    predicts_token_grids = False

    def __init__(self, config: GHNConfig) -> None:
        super().__init__()
        self.config = config
        self.info: GHNInfo | None = None

    def _add_modules(self, *, gnn: nn.Module, decoder: nn.Module) -> None:
        """Register the modules every GHN has, around its own ``gnn`` and ``decoder``, in the
        released files' order: ln, embed, shape_enc, gnn, decoder, decoder_1d, bias_class."""
        hid, max_ch, config = self.config.hid, self.config.max_channels, self.config
        if config.layernorm:
            self.ln = nn.LayerNorm(hid)
        self.embed = nn.Embedding(len(PRIMITIVES), hid)
        self.shape_enc = ShapeEncoder(hid=hid, num_classes=config.num_classes, max_kernel=config.max_shape[3])
        self.gnn = gnn
        self.decoder = decoder
        self.decoder_1d = MLP(hid, (hid * 2, 2 * max_ch), last_relu=False)
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(max_ch, config.num_classes))

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def capture_graph(self, model: nn.Module, *, img_size: int = 224) -> ModelGraph:
        """``model``'s graph as this GHN reads it (:func:`ghnorth_cli.graph.capture_graph` with its
        virtual-edge cutoff, and GHN-3's graph rules for a GHN-3)."""
        from ghnorth_cli.graph import capture_graph

        return capture_graph(model, img_size=img_size, ve_cutoff=self.config.ve_cutoff, ghn3=self.config.is_ghn3)

    def plan(self, graph: ModelGraph, shapes: Mapping[str, Shape]) -> Plan:
        """Which node predicts which of ``shapes`` (name -> shape), grouped for decoding."""
        return plan_prediction(graph, shapes, max_shape=self.config.max_shape,
                               token_grids=self.predicts_token_grids)

    def node_features(self, graph: ModelGraph, plan: Plan) -> torch.Tensor:
        """(n_nodes, hid) node embeddings, as the decoders receive them."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor, key: GroupKey) -> torch.Tensor:
        """Decoded tensors (one per row of ``x``) for a group; see :class:`~ghnorth_cli.ghn.plan.Kind`."""
        if key.kind in (Kind.CONV, Kind.TOKEN_GRID):
            return self.decoder(x, key.dims)
        if key.kind is Kind.CLASSIFIER:
            return self.decoder(x, key.dims, classifier=True)
        out = self.decoder_1d(x)
        if key.kind is Kind.TENSOR_3D:
            return out.view(len(x), -1, 1, 1)
        out = out.view(len(x), 2, -1)
        return self.bias_class(out) if key.kind is Kind.CLASSIFIER_BIAS else out

    def fit(self, w: torch.Tensor, target: Target, *, out: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """A decoded tensor cropped, normalized and tiled to ``target``'s shape (into ``out`` if given)."""
        w = crop_to_shape(w, target.shape)
        if self.config.weight_norm:  # element-wise, so cheaper before tiling
            w = normalize(w, shape=target.shape, is_weight=target.is_weight)
        w = tile_to_shape(w, target.shape, out=out)
        # No result may be a view of the decoded batch (or of another result).
        return w if (out is not None or w._base is None) else w.clone()

    def decode_targets(self, x: torch.Tensor, plan: Plan, *, skip: Collection[str] = ()):
        """Yield ``(target, decoded tensor)`` for the plan's targets, one decoder call per shape group.

        The decoded tensor is the GHN's raw output for the target's node (the right row for
        norm weights/biases), before cropping, normalization and tiling (:meth:`fit`).
        """
        for key, group in plan.groups.items():
            targets = [t for t in group if t.name not in skip]
            if not targets:
                continue
            nodes = list(dict.fromkeys(t.node for t in targets))
            position = {node: i for i, node in enumerate(nodes)}
            decoded = self.decode(x[torch.tensor(nodes, device=x.device)], key)
            for t in targets:
                w = decoded[position[t.node]]
                yield t, (w[t.row] if key.kind in (Kind.VECTOR, Kind.CLASSIFIER_BIAS) else w)

    @torch.no_grad()
    def predict(self, graph: ModelGraph, shapes: Mapping[str, Shape], *,
                out: Mapping[str, torch.Tensor] | None = None, skip: Collection[str] = (),
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Predict every parameter of ``shapes`` (name -> shape) that has a node in ``graph``.

        Returns ``{name: tensor}`` in graph order: new float32 tensors on the GHN's device, or,
        for names in ``out``, those tensors overwritten in place (e.g. a model's parameters:
        no extra copy). Parameters without a node, and those in ``skip``, are absent: the caller
        keeps its own values (skipped ones still shape the graph's node features). ``generator``
        draws what a GHN draws at random (GHN-3: a ViT's class-token row); default: seed 0.
        """
        plan = self.plan(graph, shapes)
        x = self.node_features(graph, plan)
        out = out or {}
        predicted = {t.name: self.fit(w, t, out=out.get(t.name), generator=generator)
                     for t, w in self.decode_targets(x, plan, skip=skip)}
        order = {t.name: i for i, t in enumerate(sorted(plan.targets, key=lambda t: t.node))}
        return dict(sorted(predicted.items(), key=lambda item: order[item[0]]))


class GHN2(GraphHyperNetwork):
    """Graph HyperNetwork (GHN-2). :meth:`predict` returns ``{parameter name: tensor}``."""

    def __init__(self, config: GHNConfig) -> None:
        super().__init__(config)
        self._add_modules(gnn=GatedGNN(hid=config.hid, ve=config.ve),
                          decoder=ConvDecoder(hid=config.hid, max_shape=config.max_shape,
                                              num_classes=config.num_classes))

    def node_features(self, graph: ModelGraph, plan: Plan) -> torch.Tensor:
        """(n_nodes, hid) node embeddings after graph propagation (and layer norm)."""
        device = self.device
        x = self.embed(graph.node_type_ids.to(device))
        x = x + self.shape_enc(self.shape_enc.shape_indices(plan.node_shapes).to(device))
        schedule = build_schedule(graph.edges, n_nodes=graph.n_nodes, ve=self.config.ve, device=device)
        x = self.gnn(x, schedule)
        return self.ln(x) if self.config.layernorm else x
