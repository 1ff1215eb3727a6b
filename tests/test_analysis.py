"""Channel-correlation analysis: exact statistics on constructed weights, and the Figure 2 plot."""

from __future__ import annotations

import math

import pytest
import torch

import ghnorth_cli.analysis as analysis
from ghnorth_cli.analysis import (
    HIST_BINS,
    analyze_tensors,
    channel_correlation,
    duplicate_rows,
    layer_names,
    layer_stats,
    singular_value_stats,
)
from ghnorth_cli.errors import GhnorthError


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _off_diagonal(corr: torch.Tensor) -> torch.Tensor:
    return corr[~torch.eye(corr.shape[0], dtype=torch.bool)]


def test_channel_correlation_matches_corrcoef():
    w = _randn(48, 8, 3, 3)
    torch.testing.assert_close(channel_correlation(w), torch.corrcoef(w.reshape(48, -1).double()), atol=1e-12, rtol=0)
    assert channel_correlation(w).shape == (48, 48)  # K x K even though K < CHW


def test_channel_correlation_marks_constant_channels_nan():
    w = _randn(6, 10)
    w[2] = 0.5
    corr = channel_correlation(w)
    assert corr[2].isnan().all() and corr[:, 2].isnan().all()
    assert not corr[[0, 1, 3, 4, 5]][:, [0, 1, 3, 4, 5]].isnan().any()


def test_layer_stats_match_a_direct_computation():
    w = _randn(40, 6, 3, 3)
    w[10:20] = w[0:10]  # ten exact copies, like a GHN's tiling
    s = layer_stats("conv.weight", w, index=3)
    r = _off_diagonal(torch.corrcoef(w.reshape(40, -1).double()))
    assert (s.index, s.name, s.shape, s.channels) == (3, "conv.weight", (40, 6, 3, 3), 40)
    assert s.mean_abs_corr == pytest.approx(r.abs().mean().item(), abs=1e-6)
    assert s.std_corr == pytest.approx(r.std(unbiased=False).item(), abs=1e-6)
    assert s.frac_high == pytest.approx((r.abs() > 0.5).double().mean().item(), abs=1e-12)
    assert s.duplicate_channels == 10 and s.constant_channels == 0
    assert sum(s.histogram) == 40 * 39 // 2 and len(s.histogram) == HIST_BINS
    assert s.histogram[-1] == 10  # the ten copied pairs in the r = 1 bin
    assert s.max_singular_value == pytest.approx(torch.linalg.svdvals(w.reshape(40, -1)).max().item(), rel=1e-4)


def test_row_blocks_give_the_same_statistics(monkeypatch):
    w = _randn(50, 30, seed=1)
    whole = layer_stats("w", w, index=1)
    monkeypatch.setattr(analysis, "_ROW_BLOCK", 7)
    blocked = layer_stats("w", w, index=1)
    assert blocked.histogram == whole.histogram
    for field in ("mean_abs_corr", "std_corr", "frac_high"):
        assert getattr(blocked, field) == pytest.approx(getattr(whole, field), abs=1e-6)


def test_constant_channels_are_counted_and_left_out():
    w = _randn(12, 20)
    w[[4, 7]] = 0.0
    s = layer_stats("w", w, index=1)
    assert s.constant_channels == 2 and s.duplicate_channels == 1  # the two zero rows are also copies
    assert sum(s.histogram) == 10 * 9 // 2 and math.isfinite(s.std_corr)


def test_duplicates_count_copies_not_groups_and_ignore_the_sign_of_zero():
    rows = _randn(4, 5)
    mat = torch.cat([rows, rows[:1], rows[:1], rows[1:2]])
    assert duplicate_rows(mat) == 3
    assert duplicate_rows(torch.tensor([[0.0, 1.0], [-0.0, 1.0]])) == 1


def test_singular_value_stats_of_an_orthogonal_matrix():
    q, _ = torch.linalg.qr(_randn(64, 16).double())
    sigma, rank = singular_value_stats(q.float())
    assert sigma == pytest.approx(1.0, abs=1e-5) and rank == pytest.approx(16.0, abs=1e-3)
    assert singular_value_stats(torch.zeros(4, 3)) == (0.0, 0.0)


def test_analyze_tensors_walks_the_layers_in_module_order():
    tensors = {"b.weight": _randn(8, 4, 3, 3), "b.bias": _randn(8), "a.norm.weight": _randn(8), "a.weight": _randn(5, 8)}
    order = ["b.weight", "b.bias", "a.norm.weight", "a.weight"]
    assert layer_names(tensors, order) == ["b.weight", "a.weight"]
    stats = analyze_tensors(tensors, order)
    assert [(s.index, s.name, s.channels) for s in stats] == [(1, "b.weight", 8), (2, "a.weight", 5)]
    assert [s.index for s in analyze_tensors(tensors, order, layers=["a.weight"])] == [2]
    with pytest.raises(KeyError):
        layer_names(tensors, ["missing.weight"])


def test_to_dict_is_json_ready():
    d = layer_stats("w", _randn(1, 9), index=1).to_dict()  # one channel: no pairs, NaN stats -> None
    assert d["std_corr"] is None and d["shape"] == [1, 9] and "histogram" not in d
    assert len(layer_stats("w", _randn(3, 9), index=1).to_dict(with_histogram=True)["histogram"]) == HIST_BINS


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plot_figure2_writes_the_figure(tmp_path, suffix):
    from ghnorth_cli.plotting import plot_figure2

    tensors = {f"l{i}.weight": _randn(16, 8, seed=i) for i in range(6)}
    copies = {k: v.repeat(1, 1) for k, v in tensors.items()}
    copies["l2.weight"][8:] = copies["l2.weight"][:8]
    runs = [analyze_tensors(tensors, list(tensors)), analyze_tensors(copies, list(copies))]
    path = tmp_path / f"fig.{suffix}"
    shown = plot_figure2(runs, path, labels=["a", "b"])
    assert len(shown) == 3 and 6 not in shown  # spread over the depth, classifier left out
    assert path.stat().st_size > 1000 and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_plot_figure2_rejects_unknown_formats(tmp_path):
    from ghnorth_cli.plotting import plot_figure2

    with pytest.raises(GhnorthError, match="png"):
        plot_figure2([[]], tmp_path / "fig.jpg", labels=["a"])


def test_row_correlation_std_without_forming_the_matrix():
    from ghnorth_cli.analysis import row_correlation_std

    for shape in [(30, 200), (200, 30)]:
        mat = _randn(*shape, seed=2)
        mat[5] = 1.0  # constant row: left out, as NaN entries would be
        values = torch.corrcoef(mat.double()).flatten()
        expected = values[~values.isnan()].std().item()
        assert row_correlation_std(mat) == pytest.approx(expected, rel=1e-5)
    assert row_correlation_std(torch.ones(3, 4)) == 0.0
