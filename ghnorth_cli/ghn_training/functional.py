"""Differentiable parameter prediction, for training a GHN.

:meth:`GHN2.predict` runs without gradients (it serves inference). Training needs the same
computation with the autograd graph kept, from the GHN's weights to every predicted tensor, so
that a loss of the model that uses them back-propagates into the GHN. This module repeats the
decoding loop on top of the network's public pieces (node features, group decoding, fitting);
a test checks that both give the same tensors.

The network's own graph propagation updates node states in place (fast, but not something
autograd can differentiate), so :func:`propagate` runs the same level schedule with
out-of-place row updates.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ghnorth_cli.ghn.fit import crop_to_shape, normalize, tile_to_shape
from ghnorth_cli.ghn.gnn import GatedGNN, Schedule, build_schedule
from ghnorth_cli.ghn.network import GHN2
from ghnorth_cli.ghn.plan import Plan, Shape, plan_prediction
from ghnorth_cli.graph.types import ModelGraph


def _rows(index: slice | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(index, slice):
        return torch.arange(index.start, index.stop, device=device)
    return index


def propagate(gnn: GatedGNN, x: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """:meth:`GatedGNN.forward` with out-of-place updates, so gradients flow through every level."""
    h = x
    for sweep in schedule.sweeps:
        table = gnn.messages(h)
        for level in sweep:
            rows = _rows(level.nodes, h.device)
            flat = table.view(-1, gnn.hid)
            msg = level.weights @ flat.index_select(0, level.sources)
            new = gnn.gru(msg, h.index_select(0, rows))
            h = h.index_copy(0, rows, new)
            table = table.index_copy(0, rows, gnn.messages(new))
    return h


def node_features(ghn: GHN2, graph: ModelGraph, plan: Plan) -> torch.Tensor:
    """:meth:`GHN2.node_features`, differentiable."""
    device = ghn.device
    x = ghn.embed(graph.node_type_ids.to(device))
    x = x + ghn.shape_enc(ghn.shape_enc.shape_indices(plan.node_shapes).to(device))
    schedule = build_schedule(graph.edges, n_nodes=graph.n_nodes, ve=ghn.config.ve, device=device)
    x = propagate(ghn.gnn, x, schedule)
    return ghn.ln(x) if ghn.config.layernorm else x


def predict_tensors(ghn: GHN2, graph: ModelGraph, shapes: Mapping[str, Shape]) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` for every parameter of ``shapes`` the GHN predicts, with gradients kept."""
    plan = plan_prediction(graph, shapes, max_shape=ghn.config.max_shape)
    x = node_features(ghn, graph, plan)
    predicted: dict[str, torch.Tensor] = {}
    for t, w in ghn.decode_targets(x, plan):
        w = crop_to_shape(w, t.shape)
        if ghn.config.weight_norm:
            w = normalize(w, shape=t.shape, is_weight=t.is_weight)
        predicted[t.name] = tile_to_shape(w, t.shape)
    return predicted


def parameter_shapes(model: nn.Module) -> dict[str, Shape]:
    """``{name: shape}`` of the model's parameters, in module order."""
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@torch.no_grad()
def load_predicted_(model: nn.Module, predicted: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy predicted tensors into ``model``'s parameters in place; returns the names written."""
    params = dict(model.named_parameters())
    for name, value in predicted.items():
        params[name].copy_(value)
    return list(predicted)
