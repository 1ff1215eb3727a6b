"""Where architectures land in a GHN's latent space (the GHN-orth paper's Figure 4).

Embeddings come from ``ghnorth embed``. A 2-D PCA map shows them, optionally coloured by a metric;
a nearest-neighbour table says, for each named model, how far it is from the closest architectures of
a reference set (e.g. the architectures the GHN was trained or validated on) compared with how far
reference architectures are from each other: a model farther than almost all of them is out of the
GHN's distribution, and its predicted parameters deserve less trust.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.files import read_text

EMBEDDINGS_FORMAT = "ghnorth.embeddings"
OUTSIDE_PERCENTILE = 95.0  # farther than this share of the reference's own neighbour distances = outside
KEY_COLUMNS = ("name", "arch", "model", "label")
MAX_REFERENCE_LABELS = 40


@dataclass(frozen=True)
class EmbeddingSet:
    """Named latent vectors (``vectors[i]`` belongs to ``names[i]``) and where they came from."""

    names: list[str]
    vectors: np.ndarray
    sources: list[str] = field(default_factory=list)
    archs: list[str | None] = field(default_factory=list)  # resolved arch (e.g. "torchvision:resnet50") if any

    def __len__(self) -> int:
        return len(self.names)


def _parse_embeddings(data: Any, source: str) -> EmbeddingSet:
    if not isinstance(data, Mapping) or data.get("format") != EMBEDDINGS_FORMAT:
        raise GhnorthError(f"{source} is not an embeddings file written by `ghnorth embed`")
    models = data.get("models") or []
    try:
        names = [str(m["name"]) for m in models]
        vectors = np.array([[float(v) for v in m["embedding"]] for m in models], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise GhnorthError(f"{source}: malformed model entry ({exc})") from None
    if vectors.ndim != 2 or not len(names):
        raise GhnorthError(f"{source} holds no embeddings of one common size")
    archs = [m.get("arch") for m in models]
    return EmbeddingSet(names=names, vectors=vectors, sources=[source] * len(names), archs=archs)


def read_embeddings(path: str | Path) -> EmbeddingSet:
    """The embeddings in a ``ghnorth embed`` JSON file."""
    try:
        data = json.loads(read_text(path))
    except OSError as exc:
        raise GhnorthError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GhnorthError(f"{path} is not JSON: {exc}") from None
    return _parse_embeddings(data, str(path))


def merge_sets(sets: Sequence[EmbeddingSet]) -> EmbeddingSet:
    """One set from several; all vectors must have the same size (i.e. come from the same GHN)."""
    dims = {s.vectors.shape[1] for s in sets}
    if len(dims) > 1:
        raise GhnorthError(f"embeddings of different sizes {sorted(dims)}: were they made by different GHNs?")
    return EmbeddingSet(names=[n for s in sets for n in s.names], vectors=np.concatenate([s.vectors for s in sets]),
                        sources=[src for s in sets for src in s.sources], archs=[a for s in sets for a in s.archs])


@dataclass(frozen=True)
class PCA2D:
    """A 2-D principal-component projection: ``(x - mean) @ components.T``."""

    mean: np.ndarray
    components: np.ndarray  # (2, d)
    explained: np.ndarray  # (2,) share of the variance along each axis

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.components.T


def fit_pca(vectors: np.ndarray) -> PCA2D:
    """PCA by SVD; each axis's sign is fixed (largest loading positive) so results are reproducible."""
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = np.zeros((2, x.shape[1]))
    components[: min(2, len(vt))] = vt[:2]
    for row in components:
        j = int(np.argmax(np.abs(row)))
        if row[j] < 0:
            row *= -1
    variance = s ** 2
    total = float(variance.sum())
    explained = np.zeros(2)
    explained[: min(2, len(s))] = variance[:2] / total if total > 0 else 0.0
    return PCA2D(mean=mean, components=components, explained=explained)


@dataclass(frozen=True)
class NeighbourReport:
    """A named model's nearest reference architectures (Euclidean, in the full latent space).

    ``percentile``: the share (in %) of reference architectures whose own nearest other reference
    architecture is closer than this model's nearest one; ``outside`` when it exceeds
    :data:`OUTSIDE_PERCENTILE` (nan/False when the reference has fewer than 2 architectures).
    """

    name: str
    neighbours: list[tuple[str, float]]
    percentile: float
    outside: bool

    @property
    def distance(self) -> float:
        return self.neighbours[0][1] if self.neighbours else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distance": self.distance, "percentile": self.percentile, "outside": self.outside,
                "neighbours": [{"name": n, "distance": d} for n, d in self.neighbours]}


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances."""
    diff = np.asarray(a, dtype=np.float64)[:, None, :] - np.asarray(b, dtype=np.float64)[None, :, :]
    return np.sqrt((diff ** 2).sum(axis=-1))


def reference_spacing(reference: EmbeddingSet) -> np.ndarray:
    """Each reference architecture's distance to its nearest other reference architecture."""
    if len(reference) < 2:
        return np.zeros(0)
    d = pairwise_distances(reference.vectors, reference.vectors)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def nearest_neighbours(named: EmbeddingSet, reference: EmbeddingSet, *, k: int = 3) -> list[NeighbourReport]:
    """The ``k`` nearest reference architectures of every named model (a model never counts as its own
    neighbour: reference entries with the model's name are skipped)."""
    spacing = np.sort(reference_spacing(reference))
    d = pairwise_distances(named.vectors, reference.vectors)
    reports = []
    for i, name in enumerate(named.names):
        order = [j for j in np.argsort(d[i], kind="stable") if reference.names[j] != name][:k]
        neighbours = [(reference.names[j], float(d[i, j])) for j in order]
        if len(spacing) and neighbours:
            percentile = 100.0 * float(np.searchsorted(spacing, neighbours[0][1], side="left")) / len(spacing)
        else:
            percentile = math.nan
        reports.append(NeighbourReport(name=name, neighbours=neighbours, percentile=percentile,
                                       outside=bool(percentile > OUTSIDE_PERCENTILE)))
    return reports


def _metric_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV file, or of a JSON file: a list of objects, or ``ghnorth ghn eval --json`` output."""
    try:
        text = read_text(path)
        if Path(path).suffix.lower() != ".json":
            return list(csv.DictReader(io.StringIO(text, newline="")))
        data = json.loads(text)
    except OSError as exc:
        raise GhnorthError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GhnorthError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, Mapping):
        data = [*data.get("heldout", []), *data.get("named", [])]
    if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
        raise GhnorthError(f"{path}: expected a list of objects or `ghnorth ghn eval --json` output")
    return [dict(r) for r in data]


def read_metric_csv(path: str | Path, *, column: str | None = None) -> tuple[str, dict[str, float]]:
    """``(column, {model name: value})`` from a CSV (or JSON, see :func:`_metric_rows`) whose rows name
    models in a name/arch/model/label column.

    ``column`` defaults to ``accuracy`` when present, else the first other column holding numbers;
    rows without a number are skipped.
    """
    rows = _metric_rows(path)
    header = list(dict.fromkeys(k for row in rows for k in row))
    key = next((c for c in KEY_COLUMNS if c in header), None)
    if key is None:
        raise GhnorthError(f"{path} needs a column naming the models: one of {', '.join(KEY_COLUMNS)}")
    if column is None:
        numeric = [c for c in header if c != key and _number(rows[0].get(c)) is not None]
        if not numeric:
            raise GhnorthError(f"{path} has no numeric column to colour by")
        column = "accuracy" if "accuracy" in numeric else numeric[0]
    elif column not in header:
        raise GhnorthError(f"{path} has no column {column!r} (columns: {', '.join(header)})")
    values = {str(row.get(key)): _number(row.get(column)) for row in rows}
    return column, {name: v for name, v in values.items() if v is not None}


def _number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    try:
        value = float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return value if value is None or math.isfinite(value) else None


def metric_values(models: EmbeddingSet, metric: Mapping[str, float]) -> np.ndarray:
    """Each model's metric, looked up by its name, then by its resolved arch (nan when absent)."""
    archs = models.archs or [None] * len(models)
    return np.array([metric.get(n, metric.get(a or "", math.nan)) for n, a in zip(models.names, archs)],
                    dtype=np.float64)


class _MetricColours:
    """Point colours from a metric (viridis over its range; grey without a value) or a fallback."""

    def __init__(self, metric: Mapping[str, float] | None) -> None:
        import matplotlib

        self.metric = metric or {}
        values = list(self.metric.values())
        self.norm = matplotlib.colors.Normalize(min(values), max(values)) if values else None
        self.cmap = matplotlib.colormaps["viridis"]

    def __call__(self, models: EmbeddingSet, fallback: list) -> list:
        if self.norm is None:
            return fallback
        return [self.cmap(self.norm(v)) if math.isfinite(v) else "#c8c8c8" for v in metric_values(models, self.metric)]


def _same_point_groups(xy: np.ndarray, names: Sequence[str]) -> list[tuple[float, float, str]]:
    """One label per distinct point: architectures that land on the same spot share it ("a = b")."""
    groups: dict[tuple[float, float], list[str]] = {}
    for (x, y), name in zip(xy, names):
        groups.setdefault((round(float(x), 6), round(float(y), 6)), []).append(name)
    return [(x, y, " = ".join(group)) for (x, y), group in groups.items()]


def _draw_reference(ax, xy: np.ndarray, reference: EmbeddingSet, colours: _MetricColours, *, labels: bool) -> list:
    ax.scatter(xy[:, 0], xy[:, 1], s=12, c=colours(reference, ["#9a9a9a"] * len(reference)), linewidths=0,
               alpha=0.8, label=f"reference ({len(reference)})")
    if not labels:
        return []
    short = [name.rpartition(":")[2] for name in reference.names]
    return [ax.text(x, y, text, fontsize=6, color="#555555") for x, y, text in _same_point_groups(xy, short)]


def _draw_named(ax, xy: np.ndarray, named: EmbeddingSet, colours: _MetricColours) -> list:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    fills = colours(named, [palette(i % 10) for i in range(len(named))])
    ax.scatter(xy[:, 0], xy[:, 1], s=90, c=fills, marker="*", edgecolors="black", linewidths=0.8, zorder=3,
               label="named models")
    return [ax.text(x, y, text, fontsize=8, zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})
            for x, y, text in _same_point_groups(xy, named.names)]


def _place_labels(ax, texts: list, points: np.ndarray) -> None:
    """Move labels off each other and off the points (adjustText), with a thin line to their point."""
    if not texts:
        return
    from adjustText import adjust_text

    adjust_text(texts, x=points[:, 0], y=points[:, 1], ax=ax, expand=(1.1, 1.3), time_lim=5,
                arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5})


def plot_latent_map(path: str | Path, *, named: EmbeddingSet, reference: EmbeddingSet | None = None,
                    metric: Mapping[str, float] | None = None, metric_name: str = "metric",
                    title: str | None = None, label_reference: bool | None = None) -> PCA2D:
    """Draw the 2-D PCA map into ``path`` (.png, .svg or .pdf) and return the projection.

    The PCA is fitted on the reference set when one is given (the map's axes are the reference's main
    directions, as in the paper), else on the named models. Reference architectures are small dots,
    named models large labelled markers; with ``metric`` both are coloured by it (grey: no value).
    ``label_reference`` names the reference dots too (default: when there are at most
    :data:`MAX_REFERENCE_LABELS` of them).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ghnorth_cli.plotting import figure_format

    fmt = figure_format(path)
    has_reference = reference is not None and len(reference) > 0
    pca = fit_pca(reference.vectors if has_reference and len(reference) >= 2 else named.vectors)
    fig = Figure(figsize=(7.5, 6.0))
    ax = fig.add_subplot()
    colours = _MetricColours(metric)
    texts, points = [], [pca.transform(named.vectors)]
    if has_reference:
        labels = label_reference if label_reference is not None else len(reference) <= MAX_REFERENCE_LABELS
        points.append(pca.transform(reference.vectors))
        texts += _draw_reference(ax, points[-1], reference, colours, labels=labels)
    texts += _draw_named(ax, points[0], named, colours)
    if colours.norm is not None:
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=colours.norm, cmap=colours.cmap), ax=ax, label=metric_name)
    ax.set_xlabel(f"PC 1 ({100 * pca.explained[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * pca.explained[1]:.0f}% of variance)")
    ax.set_title(title or "architectures in the GHN's latent space (PCA of mean node embeddings)", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)  # a canvas to measure the labels with
    _place_labels(ax, texts, np.concatenate(points))
    _save_figure(fig, path, fmt=fmt)
    return pca


def _save_figure(fig, path: str | Path, *, fmt: str) -> None:
    from io import BytesIO

    from ghnorth_cli.checkpoint import write_bytes_atomic

    buffer = BytesIO()
    fig.savefig(buffer, format=fmt, dpi=150)
    write_bytes_atomic(path, buffer.getvalue())
