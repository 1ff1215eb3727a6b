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


def plot_bars(report: Report, path: str | Path) -> None:
    """One group of bars per architecture, one bar per init: test mean with std error bars."""
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


def plot_curves(report: Report, path: str | Path, *, key: str = "val_acc") -> None:
    """Per architecture, the selected configuration's ``key`` per epoch for every init (mean ± std band)."""
    plt = _pyplot()
    runs_by_id = {r.run_id: r for r in report.records}
    fig, axes = plt.subplots(1, max(len(report.archs), 1), figsize=(4.2 * max(len(report.archs), 1), 3.4),
                             squeeze=False)
    for ax, arch in zip(axes[0], report.archs):
        for init in report.inits:
            chosen = report.selection(arch, init)
            if chosen is None or not chosen.run_ids:
                continue
            epochs, means, stds = _mean_curve([runs_by_id[i] for i in chosen.run_ids], key)
            if not epochs:
                continue
            (line,) = ax.plot(epochs, means, label=init)
            ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=line.get_color(), alpha=0.2)
        ax.set_title(arch)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(key.replace("_acc", " accuracy (%)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, Path(path))
    plt.close(fig)
