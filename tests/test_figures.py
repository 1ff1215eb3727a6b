"""Figures say what they show: identical curves flagged, legends off the data, labels apart, no empty plots."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

from ghnorth_cli.experiment import build_report
from ghnorth_cli.experiment import plot as experiment_plot
from test_experiment import experiment, run_all  # tests/ is on sys.path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(fig).get_renderer()


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    figures = []
    monkeypatch.setattr(experiment_plot, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_identical_curves_are_drawn_apart_and_named(tmp_path: Path, captured) -> None:
    run_all(experiment(), tmp_path)  # default and orth reach the same accuracies: identical curves
    assert experiment_plot.plot_curves(build_report([tmp_path]), tmp_path / "curves.png")
    (ax,) = captured[0].axes
    default, orth = ax.get_lines()
    assert list(default.get_ydata()) == list(orth.get_ydata())
    assert orth.get_linestyle() == "--" and orth.get_marker() == "o" and default.get_linestyle() == "-"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["default", "orth (same as default)"]
    assert any(t.get_text() == "identical curves: orth = default" for t in ax.texts)


def test_curve_legend_is_outside_the_axes(tmp_path: Path, captured) -> None:
    run_all(experiment(), tmp_path)
    experiment_plot.plot_curves(build_report([tmp_path]), tmp_path / "curves.png")
    fig = captured[0]
    (ax,) = fig.axes
    renderer = _renderer(fig)
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert legend_box.y1 <= ax.get_window_extent(renderer).y0  # below the panel, never on a curve


def test_empty_report_draws_nothing_and_warns_nothing(tmp_path: Path, captured) -> None:
    (tmp_path / "runs").mkdir()
    report = build_report([tmp_path])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert experiment_plot.plot_curves(report, tmp_path / "curves.png") is False
        assert experiment_plot.plot_bars(report, tmp_path / "bars.png") is False
    assert captured == [] and not list(tmp_path.glob("*.png"))


def test_empty_report_cli_writes_no_figures(cli, tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    result = cli("experiment", "report", tmp_path, "--plot")
    assert result.exit_code == 0, result.stderr
    assert not list(tmp_path.glob("*.png")) and "Warning" not in result.stderr


def test_latent_map_labels_do_not_overlap(tmp_path: Path, monkeypatch) -> None:
    from ghnorth_cli import latent_map

    figures = []
    monkeypatch.setattr(latent_map, "_save_figure", lambda fig, path, fmt: figures.append(fig))
    named = latent_map.read_embeddings(DOCS / "named_embeddings.json")
    reference = latent_map.read_embeddings(DOCS / "reference_embeddings.json")
    latent_map.plot_latent_map(tmp_path / "map.png", named=named, reference=reference)
    fig = figures[0]
    renderer = _renderer(fig)
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) >= len(named) + 20
    overlapping = [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]
    assert overlapping == []


def test_architectures_on_one_point_share_one_label() -> None:
    from ghnorth_cli.latent_map import _same_point_groups

    xy = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]])
    assert _same_point_groups(xy, ["a", "b", "c"]) == [(0.0, 1.0, "a = b"), (2.0, 3.0, "c")]
