"""A :class:`~ghnorth_cli.drawing.scene.Scene` as a PNG, drawn with matplotlib (Agg, imported here only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ghnorth_cli.drawing.scene import LEGEND_ROW, MARGIN, Scene, SceneEdge
from ghnorth_cli.drawing.svg import EDGE_COLOR, VIRTUAL_COLOR

_MPL_MARKERS = {"circle": "o", "square": "s", "diamond": "D", "triangle": "^", "triangle_down": "v",
                "hexagon": "h", "pentagon": "p", "star": "*"}
_MARKER_SCALE = {"diamond": 0.8, "star": 1.5, "square": 0.95}
PIXELS_PER_INCH = 100.0


def _marker_area(marker: str, radius_px: float) -> float:
    """scatter() size (points squared) of a marker whose radius is ``radius_px`` scene pixels."""
    diameter_pt = 2.0 * radius_px * 72.0 / PIXELS_PER_INCH * _MARKER_SCALE.get(marker, 1.0)
    return diameter_pt ** 2


def _mpl_path(edge: SceneEdge):
    from matplotlib.path import Path as MplPath

    code = {2: MplPath.LINETO, 3: MplPath.CURVE3, 4: MplPath.CURVE4}[len(edge.points)]
    return MplPath(edge.points, [MplPath.MOVETO] + [code] * (len(edge.points) - 1))


def _arrowhead(edge: SceneEdge, size: float = 5.0) -> np.ndarray:
    tip, before = np.array(edge.points[-1]), np.array(edge.points[-2])
    direction = tip - before
    direction /= max(float(np.linalg.norm(direction)), 1e-9)
    normal = np.array([-direction[1], direction[0]])
    base = tip - direction * size
    return np.stack([tip, base + normal * size * 0.45, base - normal * size * 0.45])


def _draw_edges(ax, scene: Scene) -> None:
    from matplotlib.collections import PatchCollection, PolyCollection
    from matplotlib.patches import PathPatch

    virtual = [PathPatch(_mpl_path(e)) for e in scene.edges if e.length != 1]
    if virtual:
        ax.add_collection(PatchCollection(virtual, facecolor="none", edgecolor=VIRTUAL_COLOR, linewidth=0.5,
                                          alpha=0.45, linestyle=(0, (3, 2))))
    real = [e for e in scene.edges if e.length == 1]
    ax.add_collection(PatchCollection([PathPatch(_mpl_path(e)) for e in real], facecolor="none",
                                      edgecolor=EDGE_COLOR, linewidth=0.8))
    ax.add_collection(PolyCollection([_arrowhead(e) for e in real], facecolor=EDGE_COLOR, edgecolor="none"))


def _draw_nodes(ax, scene: Scene, *, labels: bool) -> None:
    by_key: dict[str, list] = {}
    for n in scene.nodes:
        by_key.setdefault(n.key, []).append(n)
    for nodes in by_key.values():
        style = nodes[0].style
        ax.scatter([n.x for n in nodes], [n.y for n in nodes], s=[_marker_area(style.marker, n.radius) for n in nodes],
                   c=style.color, marker=_MPL_MARKERS[style.marker], edgecolors="#111111", linewidths=0.5, zorder=3)
    if labels:
        for n in scene.nodes:
            ax.text(n.x + n.radius + 3, n.y, n.label, fontsize=5, va="center", color="#333333", zorder=4)


def _draw_legend(ax, scene: Scene) -> None:
    x0, y = scene.legend_x, MARGIN + 40.0
    ax.text(x0, y, "primitive", fontsize=9, fontweight="bold", va="baseline")
    for entry in scene.legend:
        y += LEGEND_ROW
        radius = 6.5 * min(entry.style.size, 1.3)
        ax.scatter([x0 + 8], [y - 4], s=_marker_area(entry.style.marker, radius), c=entry.style.color,
                   marker=_MPL_MARKERS[entry.style.marker], edgecolors="#111111", linewidths=0.5)
        ax.text(x0 + 22, y, entry.text, fontsize=8.5, va="baseline")
    y += LEGEND_ROW * 1.5
    ax.plot([x0, x0 + 16], [y - 4, y - 4], color=EDGE_COLOR, linewidth=0.9)
    ax.text(x0 + 22, y, "edge", fontsize=8.5, va="baseline")
    y += LEGEND_ROW
    ax.plot([x0, x0 + 16], [y - 4, y - 4], color=VIRTUAL_COLOR, linewidth=0.9, linestyle=(0, (3, 2)))
    text = "virtual edge" if scene.show_virtual else f"virtual edges hidden ({scene.hidden_virtual})"
    ax.text(x0 + 22, y, text, fontsize=8.5, va="baseline")


def save_scene_png(scene: Scene, path: str | Path, *, dpi: float = 150.0, labels: bool = False) -> None:
    """Draw ``scene`` into the PNG file ``path`` (1 scene pixel = 1/100 inch, rendered at ``dpi``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(scene.width / PIXELS_PER_INCH, scene.height / PIXELS_PER_INCH))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)
    ax.set_axis_off()
    ax.text(MARGIN, MARGIN + 14, scene.title, fontsize=11, fontweight="bold", va="baseline")
    _draw_edges(ax, scene)
    _draw_nodes(ax, scene, labels=labels)
    _draw_legend(ax, scene)
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")
