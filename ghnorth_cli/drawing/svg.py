"""A :class:`~ghnorth_cli.drawing.scene.Scene` as a standalone SVG document (plain text, no dependencies).

Every node is a ``<g class="node">`` with a ``<title>`` (index, primitive, parameter name and shape) that
viewers show on hover; legend entries are ``<g class="legend-entry" data-key=...>``.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape, quoteattr

from ghnorth_cli.drawing.scene import LEGEND_ROW, MARGIN, Scene, SceneEdge
from ghnorth_cli.drawing.style import NodeStyle

EDGE_COLOR = "#404040"
VIRTUAL_COLOR = "#6f83b8"
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def _polygon(x: float, y: float, r: float, corners: int, *, rotation: float = -90.0, inner: float | None = None) -> str:
    points = []
    steps = corners * 2 if inner else corners
    for k in range(steps):
        radius = r * inner if inner and k % 2 else r
        angle = math.radians(rotation + 360.0 * k / steps)
        points.append(f"{x + radius * math.cos(angle):.1f},{y + radius * math.sin(angle):.1f}")
    return " ".join(points)


def marker_svg(style: NodeStyle, x: float, y: float, r: float) -> str:
    """One SVG shape element for a node marker centred at (x, y) with radius ``r``."""
    paint = f'fill="{style.color}" stroke="#111111" stroke-width="0.8"'
    if style.marker == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {paint}/>'
    if style.marker == "square":
        side = r * 1.7
        return f'<rect x="{x - side / 2:.1f}" y="{y - side / 2:.1f}" width="{side:.1f}" height="{side:.1f}" {paint}/>'
    shapes = {"diamond": (4, -90.0, None), "triangle": (3, -90.0, None), "triangle_down": (3, 90.0, None),
              "hexagon": (6, 0.0, None), "pentagon": (5, -90.0, None), "star": (5, -90.0, 0.45)}
    corners, rotation, inner = shapes[style.marker]
    scale = 1.25 if style.marker in ("diamond", "triangle", "triangle_down", "star") else 1.1
    return f'<polygon points="{_polygon(x, y, r * scale, corners, rotation=rotation, inner=inner)}" {paint}/>'


def _path_d(edge: SceneEdge) -> str:
    p = edge.points
    head = f"M{p[0][0]:.1f},{p[0][1]:.1f}"
    rest = " ".join(f"{x:.1f},{y:.1f}" for x, y in p[1:])
    return head + {2: " L", 3: " Q", 4: " C"}[len(p)] + rest


def _edge_svg(edge: SceneEdge) -> str:
    ends = f'data-source="{edge.source}" data-target="{edge.target}"'
    if edge.length == 1:
        return f'<path class="edge" d="{_path_d(edge)}" marker-end="url(#arrow)" {ends}/>'
    return f'<path class="virtual-edge" d="{_path_d(edge)}" {ends} data-length="{edge.length}"/>'


def _legend_svg(scene: Scene) -> list[str]:
    x0, y = scene.legend_x, MARGIN + 40.0
    heading = f'<text x="{x0:.1f}" y="{y:.1f}" font-weight="bold" font-size="13" {FONT}>primitive</text>'
    out = ['<g class="legend">', heading]
    for entry in scene.legend:
        y += LEGEND_ROW
        out.append(f'<g class="legend-entry" data-key={quoteattr(entry.key)}>'
                   + marker_svg(entry.style, x0 + 8, y - 4, 6.5 * min(entry.style.size, 1.3))
                   + f'<text x="{x0 + 22:.1f}" y="{y:.1f}" font-size="12" {FONT}>{escape(entry.text)}</text></g>')
    y += LEGEND_ROW * 1.5
    out.append(f'<line x1="{x0:.1f}" y1="{y - 4:.1f}" x2="{x0 + 16:.1f}" y2="{y - 4:.1f}" stroke="{EDGE_COLOR}" '
               f'stroke-width="1.2"/><text x="{x0 + 22:.1f}" y="{y:.1f}" font-size="12" {FONT}>edge</text>')
    y += LEGEND_ROW
    virtual = "virtual edge" if scene.show_virtual else f"virtual edges hidden ({scene.hidden_virtual})"
    out.append(f'<line x1="{x0:.1f}" y1="{y - 4:.1f}" x2="{x0 + 16:.1f}" y2="{y - 4:.1f}" stroke="{VIRTUAL_COLOR}" '
               f'stroke-width="1.2" stroke-dasharray="3,2"/><text x="{x0 + 22:.1f}" y="{y:.1f}" font-size="12" '
               f'{FONT}>{escape(virtual)}</text>')
    out.append("</g>")
    return out


def scene_to_svg(scene: Scene, *, labels: bool = False) -> str:
    """The SVG document; ``labels`` writes each node's short parameter name beside it."""
    w, h = scene.width, scene.height
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}">',
        f"<title>{escape(scene.title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="5" markerHeight="5" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{EDGE_COLOR}"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN:.1f}" y="{MARGIN + 14:.1f}" font-size="16" font-weight="bold" {FONT}>'
        f"{escape(scene.title)}</text>",
        f'<g class="virtual-edges" fill="none" stroke="{VIRTUAL_COLOR}" stroke-width="0.6" stroke-opacity="0.45" '
        'stroke-dasharray="3,2">',
        *(_edge_svg(e) for e in scene.edges if e.length != 1),
        "</g>",
        f'<g class="edges" fill="none" stroke="{EDGE_COLOR}" stroke-width="1.1">',
        *(_edge_svg(e) for e in scene.edges if e.length == 1),
        "</g>",
        '<g class="nodes">',
    ]
    for n in scene.nodes:
        text = ""
        if labels:
            text = (f'<text x="{n.x + n.radius + 3:.1f}" y="{n.y + 3:.1f}" font-size="8" fill="#333333" '
                    f'{FONT}>{escape(n.label)}</text>')
        out.append(f'<g class="node" data-index="{n.index}" data-key={quoteattr(n.key)}>'
                   f"<title>{escape(n.tooltip)}</title>{marker_svg(n.style, n.x, n.y, n.radius)}{text}</g>")
    out.append("</g>")
    out.extend(_legend_svg(scene))
    out.append("</svg>")
    return "\n".join(out) + "\n"
