"""A graph as Graphviz DOT text (``dot -Tsvg`` or any DOT viewer draws it; ghnorth does not need Graphviz)."""

from __future__ import annotations

from ghnorth_cli.drawing.style import STYLES, style_key
from ghnorth_cli.graph.types import ModelGraph

_DOT_SHAPES = {"circle": "circle", "square": "box", "diamond": "diamond", "triangle": "triangle",
               "triangle_down": "invtriangle", "hexagon": "hexagon", "pentagon": "pentagon", "star": "star"}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_to_dot(graph: ModelGraph, *, name: str = "model", virtual_edges: bool = False) -> str:
    """DOT for ``graph``: styled nodes (label = primitive, tooltip = parameter), real edges, and
    virtual edges (dashed, ``constraint=false``) when asked."""
    params = {n.index: n for n in graph.param_nodes}
    lines = [
        f"digraph {_quote(name)} {{",
        "  graph [rankdir=TB, nodesep=0.15, ranksep=0.25];",
        '  node [style=filled, fixedsize=true, width=0.3, height=0.3, fontsize=6, fontcolor="#000000"];',
        "  edge [arrowsize=0.5];",
    ]
    for i, primitive in enumerate(graph.node_types):
        node = params.get(i)
        shape = tuple(node.shape) if node is not None and node.shape else None
        style = STYLES[style_key(primitive, shape)]
        tooltip = f"{primitive}: {node.param} {'x'.join(map(str, shape or ()))}" if node else primitive
        lines.append(f"  n{i} [label={_quote(style_key(primitive, shape))}, "
                     f"shape={_DOT_SHAPES[style.marker]}, fillcolor={_quote(style.color)}, "
                     f"tooltip={_quote(tooltip.strip())}];")
    for s, t, length in graph.edges.tolist() if len(graph.edges) else []:
        if length == 1:
            lines.append(f"  n{s} -> n{t};")
        elif virtual_edges:
            lines.append(f'  n{s} -> n{t} [style=dashed, color="#9aa7c7", constraint=false, '
                         f"arrowhead=none, penwidth=0.3, label=\"\", tooltip=\"shortest path {length}\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"
