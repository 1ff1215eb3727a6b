"""Pictures of a model's graph as the GHN sees it: layout, styles, and SVG / PNG / DOT / JSON output.

``write_graph(graph, path)`` picks the format from the file name. SVG and DOT are plain text written
here; PNG is drawn with matplotlib; no system Graphviz is involved.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ghnorth_cli.drawing.dot import graph_to_dot
from ghnorth_cli.drawing.layout import GraphLayout, layout_graph
from ghnorth_cli.drawing.scene import Scene, build_scene
from ghnorth_cli.drawing.svg import scene_to_svg
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.graph.types import ModelGraph

__all__ = ["GRAPH_FORMATS", "GraphLayout", "Scene", "build_scene", "graph_format", "graph_summary",
           "graph_to_dot", "layout_graph", "render_graph", "scene_to_svg", "write_graph"]

_logger = logging.getLogger(__name__)

GRAPH_FORMATS = ("svg", "png", "dot", "json")


def graph_format(path: str | Path) -> str:
    """The output format named by the file's suffix; anything else is a GhnorthError."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in GRAPH_FORMATS:
        raise GhnorthError(f"cannot tell the output format of {path}: use a .svg, .png, .dot or .json file name")
    return suffix


def graph_summary(graph: ModelGraph) -> dict[str, int]:
    """Node and edge counts: ``nodes``, ``edges`` (real), ``virtual_edges``."""
    lengths = graph.edges[:, 2] if len(graph.edges) else graph.edges.new_zeros(0)
    real = int((lengths == 1).sum())
    return {"nodes": graph.n_nodes, "edges": real, "virtual_edges": int(len(lengths) - real)}


def default_title(graph: ModelGraph, name: str) -> str:
    counts = graph_summary(graph)
    return f"{name}: {counts['nodes']} nodes, {counts['edges']} edges, {counts['virtual_edges']} virtual edges"


def render_graph(graph: ModelGraph, fmt: str, *, name: str = "model", virtual_edges: bool = False,
                 rows: int | None = None, labels: bool = False, title: str | None = None) -> bytes:
    """The file content of ``graph`` drawn as ``fmt`` (svg, png, dot or json)."""
    if fmt == "json":
        return (json.dumps(graph.to_json()) + "\n").encode()
    if fmt == "dot":
        return graph_to_dot(graph, name=name, virtual_edges=virtual_edges).encode()
    scene = build_scene(graph, layout_graph(graph, rows=rows), title=title or default_title(graph, name),
                        show_virtual=virtual_edges)
    if fmt == "svg":
        return scene_to_svg(scene, labels=labels).encode()
    from io import BytesIO

    from ghnorth_cli.drawing.png import save_scene_png

    buffer = BytesIO()
    save_scene_png(scene, buffer, labels=labels)
    return buffer.getvalue()


def write_graph(graph: ModelGraph, path: str | Path, *, fmt: str | None = None, **options) -> str:
    """Draw ``graph`` into ``path`` (``"-"``: stdout) atomically; returns the format.

    ``fmt`` defaults to the file's suffix; ``options`` are :func:`render_graph`'s keyword arguments.
    """
    from ghnorth_cli.checkpoint import write_bytes_atomic

    if fmt is None:
        if str(path) == "-":
            raise GhnorthError("writing to stdout ('-') needs --format svg, png, dot or json")
        fmt = graph_format(path)
    elif fmt not in GRAPH_FORMATS:
        raise GhnorthError(f"unknown graph format {fmt!r}: use svg, png, dot or json")
    write_bytes_atomic(path, render_graph(graph, fmt, **options))
    _logger.debug("%s graph -> %s", fmt, path)
    return fmt
