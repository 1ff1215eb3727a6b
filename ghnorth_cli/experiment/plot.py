"""Figures of an experiment report: test accuracy bars with error bars, and accuracy-versus-epoch curves.

matplotlib is imported only when a figure is drawn (Agg backend, no display needed).
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path

from ghnorth_cli.experiment.report import Report, RunRecord
from ghnorth_cli.plotting import figure_format


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from ghnorth_cli.checkpoint import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format=figure_format(path), bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def plot_bars(report: Report, path: str | Path) -> bool:
    """One group of bars per architecture, one bar per init: test mean with std error bars.

    Returns False, writing nothing, when no selection has a test accuracy (no finished runs).
    """
    if not any((s := report.selection(a, i)) is not None and s.test_mean is not None
               for a in report.archs for i in report.inits):
        return False
    plt = _pyplot()
    width = 0.8 / max(len(report.inits), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(report.archs) * max(1, len(report.inits) / 3), 3.6))
    for k, init in enumerate(report.inits):
        xs, means, stds = [], [], []
        for a, arch in enumerate(report.archs):
            chosen = report.selection(arch, init)
            if chosen is not None and chosen.test_mean is not None:
                xs.append(a + (k - (len(report.inits) - 1) / 2) * width)
                means.append(chosen.test_mean)
                stds.append(chosen.test_std)
        ax.bar(xs, means, width=width * 0.95, yerr=stds, capsize=3, label=init)
    ax.set_xticks(range(len(report.archs)), report.archs)
    ax.set_ylabel(f"test accuracy (%), {report.at} epoch")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not on them
    ax.grid(axis="y", alpha=0.3)
    _save(fig, Path(path))
    plt.close(fig)
    return True


def _mean_curve(runs: list[RunRecord], key: str) -> tuple[list[int], list[float], list[float]]:
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for record in run.curve():
            if record.get(key) is not None:
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def _curves(report: Report, arch: str, key: str) -> list[tuple[str, list[int], list[float], list[float]]]:
    runs_by_id = {r.run_id: r for r in report.records}
    curves = []
    for init in report.inits:
        chosen = report.selection(arch, init)
        if chosen is None or not chosen.run_ids:
            continue
        epochs, means, stds = _mean_curve([runs_by_id[i] for i in chosen.run_ids], key)
        if epochs:
            curves.append((init, epochs, means, stds))
    return curves


def plot_curves(report: Report, path: str | Path, *, key: str = "val_acc") -> bool:
    """Per architecture, the selected configuration's ``key`` per epoch for every init (mean ± std band).

    A curve identical to an earlier one is drawn dashed with markers, labelled "(same as X)" and
    listed under the panel, so that it cannot hide. The legend sits below each panel, off the
    curves. Returns False, writing nothing, when no run logged ``key`` (no finished runs).
    """
    panels = {arch: _curves(report, arch, key) for arch in report.archs}
    panels = {arch: curves for arch, curves in panels.items() if curves}
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (arch, curves) in zip(axes[0], panels.items()):
        first: dict[tuple, str] = {}
        same: list[str] = []
        for init, epochs, means, stds in curves:
            twin = first.setdefault((tuple(epochs), tuple(means), tuple(stds)), init)
            style = {} if twin == init else {"linestyle": "--", "marker": "o", "markersize": 4}
            label = init if twin == init else f"{init} (same as {twin})"
            if twin != init:
                same.append(f"{init} = {twin}")
            (line,) = ax.plot(epochs, means, label=label, **style)
            ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=line.get_color(), alpha=0.2)
        ax.set_title(arch)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(key.replace("_acc", " accuracy (%)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
        if same:
            ax.text(0.01, 0.01, "identical curves: " + "; ".join(same), transform=ax.transAxes, fontsize="x-small",
                    va="bottom", color="#444444")
    _save(fig, Path(path))
    plt.close(fig)
    return True
