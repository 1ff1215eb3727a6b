"""Which graph node predicts which parameter, and how nodes are grouped for batched decoding.

Each parameter node of the graph predicts its parameter. A 1-D weight (a norm layer's scale)
also predicts its module's bias from the same node: norm biases have no node of their own.
Nodes are grouped by a decoding key, the shape the decoder produces before tiling, which is the
target shape capped at ``max_shape`` and rounded the way the GHN-2 was trained, so that one
decoder call serves every tensor of a group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from ghnorth_cli.graph.types import ModelGraph

Shape = tuple[int, ...]


class Kind(str, Enum):
    """How a group is decoded."""

    CONV = "conv"  # 2-D and 4-D weights: the convolutional decoder
    CLASSIFIER = "classifier"  # the classification layer's weight: decoder + class-layer predictor
    VECTOR = "vector"  # 1-D tensors: the 1-D decoder (row 0: weight, row 1: bias)
    CLASSIFIER_BIAS = "classifier_bias"  # the classification bias: 1-D decoder + class-bias layer
    TENSOR_3D = "tensor_3d"  # 3-D (C, 1, 1) weights (e.g. a layer scale): the 1-D decoder, tiled
    TOKEN_GRID = "token_grid"  # GHN-3: a (1, tokens, C) position embedding decoded as a (1, C, s, s) kernel


@dataclass(frozen=True)
class GroupKey:
    kind: Kind
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Target:
    """One parameter to predict: from ``node``'s decoded tensor (``row`` of it for 1-D outputs)."""

    name: str
    node: int
    shape: Shape
    is_weight: bool
    row: int = 0


@dataclass
class Plan:
    """Node shapes for the shape encoder and the decoding groups, in graph order."""

    node_shapes: list[Shape | None]
    groups: dict[GroupKey, list[Target]] = field(default_factory=dict)

    @property
    def targets(self) -> list[Target]:
        return [t for group in self.groups.values() for t in group]


def capped(size: int, limit: int) -> int:
    """A size capped at ``limit``; multiples of 3 become the next multiple of 4; half or more -> ``limit``."""
    n = min(size, limit)
    if n % 3 == 0:
        n = n // 3 * 4
    return limit if n >= limit / 2 else n


def is_token_grid(shape: Shape) -> bool:
    """A (1, tokens, channels) position embedding such as ViT's (1, 197, 768)."""
    return len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1


def group_key(shape: Shape, *, max_shape: tuple[int, int, int, int], last_weight: bool, last_bias: bool,
              token_grids: bool = False) -> GroupKey:
    """The decoding group of a parameter of ``shape``.

    With ``token_grids`` (GHN-3) a (1, T, C) position embedding is decoded as a (1, C, s, s)
    tensor with ``s = floor(sqrt(T))``, uncapped (ghn3/nn.py ``_map_net_params``).
    """
    def cap(j: int) -> int:
        return capped(shape[j], max_shape[j])

    if token_grids and is_token_grid(shape) and not last_weight:
        side = int(shape[1] ** 0.5)
        return GroupKey(Kind.TOKEN_GRID, (1, shape[2], side, side))
    if len(shape) == 1:
        return GroupKey(Kind.CLASSIFIER_BIAS if last_bias else Kind.VECTOR, (cap(0),))
    if last_weight:
        return GroupKey(Kind.CLASSIFIER, (cap(0), cap(1), 1, 1))
    if len(shape) == 2:
        return GroupKey(Kind.CONV, (cap(0), cap(1), 1, 1))
    if len(shape) == 3:
        return GroupKey(Kind.TENSOR_3D, (cap(0), cap(1), cap(2)))
    if len(shape) == 4:
        return GroupKey(Kind.CONV, (cap(0), cap(1), shape[2], shape[3]))
    raise ValueError(f"cannot predict a {len(shape)}-D tensor of shape {shape}")


def predictable(shape: Shape, *, token_grids: bool = False) -> bool:
    """Whether a GHN can fit a tensor of this shape: 1-, 2- and 4-D, and 3-D ``(C, 1, 1)``; with
    ``token_grids`` (GHN-3) also (1, T, C) position embeddings (see :func:`is_token_grid`).

    Other 3-D tensors (GHN-2: position embeddings; class tokens) would come out constant along
    their token axes (the GHN-2 reference fails on them); they keep the model's own init.
    """
    return (len(shape) in (1, 2, 4) or (len(shape) == 3 and shape[1:] == (1, 1))
            or (token_grids and is_token_grid(shape)))


def _module(name: str) -> str:
    return name.rpartition(".")[0]


def _resolve(param: str, shapes: Mapping[str, Shape]) -> str | None:
    """The parameter a node names (nodes may name a module whose ``weight`` is meant)."""
    if param in shapes:
        return param
    if f"{param}.weight" in shapes:
        return f"{param}.weight"
    return None


def plan_prediction(graph: ModelGraph, shapes: Mapping[str, Shape], *,
                    max_shape: tuple[int, int, int, int], token_grids: bool = False) -> Plan:
    """Match graph nodes to the parameters in ``shapes`` (name -> shape) and group them.

    The class-layer predictors decode the graph's last weight and bias nodes, the convention
    the GHN was trained with (DeepNets-1M); which tensors *are* the classifier, kept or
    predicted together, is ``models.classifier_tensor_names``'s decision. A parameter with a
    node at several uses is predicted once, from its first node in graph order.
    ``token_grids``: also predict (1, T, C) position embeddings (a GHN-3 does, a GHN-2 does not).
    """
    plan = Plan(node_shapes=[None] * graph.n_nodes)
    nodes_named = {n.param for n in graph.param_nodes}
    matched: set[str] = set()
    for node in graph.param_nodes:
        name = _resolve(node.param, shapes)
        if name is None or name in matched or not predictable(tuple(shapes[name]), token_grids=token_grids):
            # e.g. a pooling kernel or a position embedding: its shape still informs the graph
            plan.node_shapes[node.index] = tuple(node.shape) if 0 < len(node.shape) <= 4 else None
            continue
        matched.add(name)
        shape = tuple(shapes[name])
        plan.node_shapes[node.index] = shape
        key = group_key(shape, max_shape=max_shape, last_weight=node.last_weight, last_bias=node.last_bias,
                        token_grids=token_grids)
        is_weight = not name.endswith("bias")
        targets = plan.groups.setdefault(key, [])
        targets.append(Target(name, node.index, shape, is_weight, row=0 if is_weight else 1))
        bias = f"{_module(name)}.bias"
        if (len(shape) == 1 and is_weight and bias in shapes and bias not in nodes_named
                and tuple(shapes[bias]) == shape):
            targets.append(Target(bias, node.index, shape, is_weight=False, row=1))
            matched.add(bias)
    return plan
