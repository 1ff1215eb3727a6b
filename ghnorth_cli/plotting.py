"""Figure 2 of the GHN-orth paper: channel correlations of several checkpoints, side by side.

Top row: the distribution of the off-diagonal correlation values of a few selected layers, one colour per
checkpoint. Bottom: the std of the correlation of every layer across depth. matplotlib is imported only
when a figure is drawn (Agg backend, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ghnorth_cli.analysis import LayerStats, histogram_edges
from ghnorth_cli.errors import GhnorthError

FIGURE_FORMATS = ("png", "svg", "pdf")


def figure_format(path: str | Path) -> str:
    """The image format named by the file's suffix; anything but png/svg/pdf is a GhnorthError."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise GhnorthError(f"cannot tell the figure format of {path}: use a .png, .svg or .pdf file name")
    return suffix


def default_plot_layers(runs: Sequence[Sequence[LayerStats]], *, count: int = 3) -> list[int]:
    """``count`` layer indices spread over the depth, among layers every run has (the classifier excluded)."""
    common = set.intersection(*({s.index for s in stats if not s.classifier} for stats in runs)) if runs else set()
    indices = sorted(common) or sorted(set.intersection(*({s.index for s in stats} for stats in runs)))
    if len(indices) <= count:
        return indices
    return [indices[round((len(indices) - 1) * (i + 1) / (count + 1))] for i in range(count)]


def _draw_distributions(axes, runs, labels, layers, colors) -> None:
    edges = histogram_edges().numpy()
    centers = (edges[:-1] + edges[1:]) / 2
    for ax, index in zip(axes, layers):
        title = f"layer {index}"
        for stats, label, color in zip(runs, labels, colors):
            layer = next((s for s in stats if s.index == index), None)
            if layer is None or not sum(layer.histogram):
                continue
            density = [c / sum(layer.histogram) for c in layer.histogram]
            ax.step(centers, density, where="mid", color=color, label=label)
            title = f"layer {index}: {layer.name}\n{'x'.join(map(str, layer.shape))}"
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlim(-1.02, 1.02)
        ax.set_xlabel("correlation r")
    axes[0].set_ylabel("fraction of channel pairs")


def _draw_depth(ax, runs, labels, colors) -> None:
    for stats, label, color in zip(runs, labels, colors):
        ax.plot([s.index for s in stats], [s.std_corr for s in stats], marker=".", color=color, label=label)
    ax.set_xlabel("layer (module order)")
    ax.set_ylabel("std of correlation")
    ax.legend(fontsize=8)


def plot_figure2(
    runs: Sequence[Sequence[LayerStats]],
    path: str | Path,
    *,
    labels: Sequence[str],
    layers: Sequence[int] | None = None,
) -> list[int]:
    """Draw Figure 2 for several checkpoints into ``path`` (.png/.svg/.pdf, written atomically).

    ``runs[i]`` are the layer statistics of checkpoint ``labels[i]``; ``layers`` are the 1-based indices
    shown in the top row (default: three spread over the depth). Returns the layers shown.
    """
    fmt = figure_format(path)
    if len(runs) != len(labels) or not runs:
        raise ValueError("plot_figure2 needs one label per run and at least one run")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(layers) if layers is not None else default_plot_layers(runs)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    fig = plt.figure(figsize=(4 * max(len(layers), 2), 7), layout="constrained")
    grid = fig.add_gridspec(2, max(len(layers), 1))
    top = [fig.add_subplot(grid[0, i]) for i in range(max(len(layers), 1))]
    _draw_distributions(top, runs, labels, layers, colors)
    top[0].legend(fontsize=8)
    _draw_depth(fig.add_subplot(grid[1, :]), runs, labels, colors)
    try:
        _save_atomic(fig, Path(path), fmt=fmt)
    finally:
        plt.close(fig)
    return layers


def _save_atomic(fig, path: Path, *, fmt: str) -> None:
    import io

    from ghnorth_cli.files import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    write_bytes_atomic(path, buffer.getvalue())
