"""What a drawing of a graph contains, in pixels: styled nodes, edge curves, a legend and a title.

The SVG and PNG renderers both draw a :class:`Scene`, so the two outputs always agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ghnorth_cli.drawing.layout import GraphLayout
from ghnorth_cli.drawing.style import STYLES, NodeStyle, legend_label, style_key
from ghnorth_cli.graph.types import ModelGraph

X_UNIT = 34.0  # pixels between neighbouring nodes of a rank
Y_UNIT = 26.0  # pixels between ranks
RADIUS = 6.5  # pixels, for a node of size 1
MARGIN = 24.0
TITLE_HEIGHT = 34.0
LEGEND_WIDTH = 190.0
LEGEND_ROW = 19.0

Point = tuple[float, float]


@dataclass(frozen=True)
class SceneNode:
    index: int
    x: float
    y: float
    radius: float
    key: str  # legend key (a primitive, or "conv_1x1")
    style: NodeStyle
    tooltip: str
    label: str


@dataclass(frozen=True)
class SceneEdge:
    """An edge as a polyline/Bezier: 2 points = line, 3 = quadratic, 4 = cubic curve."""

    source: int
    target: int
    length: int  # shortest-path length: 1 = real edge, more = virtual
    points: tuple[Point, ...]


@dataclass(frozen=True)
class LegendEntry:
    key: str
    text: str
    style: NodeStyle


@dataclass(frozen=True)
class Scene:
    width: float
    height: float
    title: str
    nodes: list[SceneNode]
    edges: list[SceneEdge]
    legend: list[LegendEntry]
    legend_x: float
    show_virtual: bool
    hidden_virtual: int


def _node_names(graph: ModelGraph) -> dict[int, tuple[str, tuple[int, ...] | None]]:
    return {n.index: (n.param, tuple(n.shape) or None) for n in graph.param_nodes}


def _tooltip(index: int, primitive: str, name: str | None, shape: tuple[int, ...] | None) -> str:
    text = f"#{index} {primitive}"
    if name and name != primitive:
        text += f": {name}"
    if shape:
        text += f" {'x'.join(map(str, shape))}"
    return text


def _short_label(name: str | None, primitive: str) -> str:
    if not name or name == primitive:
        return primitive
    parts = name.split(".")
    if parts[-1] in ("weight", "bias"):
        parts = parts[:-1]
    return ".".join(parts[-2:])


def build_nodes(graph: ModelGraph, layout: GraphLayout, *, left: float, top: float) -> list[SceneNode]:
    names = _node_names(graph)
    nodes = []
    for i, primitive in enumerate(graph.node_types):
        name, shape = names.get(i, (None, None))
        key = style_key(primitive, shape)
        style = STYLES[key]
        nodes.append(SceneNode(
            index=i, x=left + float(layout.x[i]) * X_UNIT, y=top + float(layout.y[i]) * Y_UNIT,
            radius=RADIUS * style.size, key=key, style=style,
            tooltip=_tooltip(i, primitive, name, shape), label=_short_label(name, primitive),
        ))
    return nodes


def _flow(column: int) -> float:
    """+1 where a column is read downwards, -1 upwards."""
    return 1.0 if column % 2 == 0 else -1.0


def edge_points(s: SceneNode, t: SceneNode, *, span: int, same_column: bool, flow_s: float,
                flow_t: float, virtual: bool) -> tuple[Point, ...]:
    """The control points of one edge: straight between adjacent ranks, arcs for skips, U-turns between columns."""
    if not same_column:
        reach = Y_UNIT * (1.2 + 0.15 * min(span, 10))
        return ((s.x, s.y), (s.x, s.y + flow_s * reach), (t.x, t.y - flow_t * reach), (t.x, t.y))
    if span == 1 and not virtual:
        return ((s.x, s.y), (t.x, t.y))
    side = 1.0 if (t.x >= s.x) != virtual else -1.0
    bulge = X_UNIT * (0.45 + 0.08 * min(span, 12))
    mid = ((s.x + t.x) / 2 + side * bulge, (s.y + t.y) / 2)
    return ((s.x, s.y), mid, (t.x, t.y))


def _toward(p: Point, q: Point, distance: float) -> Point:
    """``p`` moved ``distance`` pixels toward ``q`` (not past it)."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    norm = float(np.hypot(dx, dy))
    if norm <= distance or norm == 0.0:
        return p
    return (p[0] + dx * distance / norm, p[1] + dy * distance / norm)


def trim_ends(points: tuple[Point, ...], *, start: float, end: float) -> tuple[Point, ...]:
    """Shorten a curve at both ends so it starts and stops at the nodes' rims (room for an arrowhead)."""
    first, last = _toward(points[0], points[1], start), _toward(points[-1], points[-2], end)
    return (first, *points[1:-1], last)


def build_edges(graph: ModelGraph, layout: GraphLayout, nodes: list[SceneNode], *,
                show_virtual: bool) -> tuple[list[SceneEdge], int]:
    """Scene edges (virtual ones only when asked, drawn first) and the number of hidden virtual edges."""
    rows = graph.edges.tolist() if len(graph.edges) else []
    real = [r for r in rows if r[2] == 1]
    virtual = [r for r in rows if r[2] != 1]
    shown = (virtual if show_virtual else []) + real
    edges = []
    for s, t, length in shown:
        cs, ct = int(layout.column[s]), int(layout.column[t])
        points = edge_points(nodes[s], nodes[t], span=abs(int(layout.rank[t] - layout.rank[s])),
                             same_column=cs == ct, flow_s=_flow(cs), flow_t=_flow(ct), virtual=length != 1)
        points = trim_ends(points, start=nodes[s].radius, end=nodes[t].radius + 1.0)
        edges.append(SceneEdge(source=s, target=t, length=length, points=points))
    return edges, 0 if show_virtual else len(virtual)


def build_legend(nodes: list[SceneNode]) -> list[LegendEntry]:
    """One entry per legend key present, in the styles' order, with node counts."""
    counts = Counter(n.key for n in nodes)
    return [LegendEntry(key, f"{legend_label(key)} ({counts[key]})", STYLES[key]) for key in STYLES if counts[key]]


def build_scene(graph: ModelGraph, layout: GraphLayout, *, title: str, show_virtual: bool = False) -> Scene:
    """Everything to draw, in pixels, with the legend in a panel right of the graph."""
    left, top = MARGIN + X_UNIT * 0.6, MARGIN + TITLE_HEIGHT + 1.5 * Y_UNIT  # room for U-turns above
    nodes = build_nodes(graph, layout, left=left, top=top)
    edges, hidden = build_edges(graph, layout, nodes, show_virtual=show_virtual)
    legend = build_legend(nodes)
    legend_x = left + layout.width * X_UNIT + X_UNIT * 1.2
    legend_height = (len(legend) + 4) * LEGEND_ROW
    height = top + max(layout.height * Y_UNIT, legend_height) + MARGIN + 2.0 * Y_UNIT
    width = legend_x + LEGEND_WIDTH + MARGIN
    return Scene(width=float(np.ceil(width)), height=float(np.ceil(height)), title=title, nodes=nodes,
                 edges=edges, legend=legend, legend_x=legend_x, show_virtual=show_virtual, hidden_virtual=hidden)
