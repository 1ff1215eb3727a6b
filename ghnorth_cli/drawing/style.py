"""How each GHN-2 primitive is drawn: a fill colour and a marker shape (the idea of the paper's Figure 3).

Convolutions are circles (1x1 convolutions and linear layers triangles), norm layers squares, biases
diamonds, pooling hexagons, merges (sum, concat) small markers of their own. Colours are grouped:
blues and greens for the parametric layers, warm colours for the operations between them.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKERS = ("circle", "square", "diamond", "triangle", "triangle_down", "hexagon", "pentagon", "star")


@dataclass(frozen=True)
class NodeStyle:
    """Fill colour (``#rrggbb``), marker (one of :data:`MARKERS`) and relative size (1 = a plain node)."""

    color: str
    marker: str
    size: float = 1.0


# Legend key -> style, in legend order. "conv_1x1" is a drawing variant of the "conv" primitive.
STYLES: dict[str, NodeStyle] = {
    "input": NodeStyle("#222222", "square", 1.6),
    "conv": NodeStyle("#1f5fbf", "circle"),
    "conv_1x1": NodeStyle("#5aa7e6", "triangle"),
    "sep_conv": NodeStyle("#17a2a8", "circle"),
    "dil_conv": NodeStyle("#6a3db8", "circle"),
    "bias": NodeStyle("#e040c8", "diamond", 0.8),
    "bn": NodeStyle("#3aa845", "square", 0.85),
    "ln": NodeStyle("#f2d40f", "square", 0.85),
    "pos_enc": NodeStyle("#9c6b30", "square"),
    "msa": NodeStyle("#111111", "star", 1.3),
    "cse": NodeStyle("#b8860b", "pentagon"),
    "sum": NodeStyle("#e8492c", "circle", 0.7),
    "concat": NodeStyle("#f08a24", "triangle_down"),
    "max_pool": NodeStyle("#8b1a1a", "hexagon", 1.3),
    "avg_pool": NodeStyle("#c76b6b", "hexagon", 1.3),
    "glob_avg": NodeStyle("#7a7a7a", "hexagon", 1.6),
}

LABELS: dict[str, str] = {"conv_1x1": "conv 1x1 / linear", "glob_avg": "global avg pool"}



def style_key(primitive: str, shape: tuple[int, ...] | None) -> str:
    """The legend key of a node: its primitive, or ``conv_1x1`` for a convolution with a 1x1 (or no) kernel."""
    if primitive == "conv" and shape is not None and (len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))):
        return "conv_1x1"
    return primitive


def legend_label(key: str) -> str:
    return LABELS.get(key, key)
