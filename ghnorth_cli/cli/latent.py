"""``ghnorth analyze --embeddings``: the latent map (Figure 4) and the nearest-neighbour table.

Options and the adapter live here; ``ghnorth_cli/cli/analyze.py`` only adds them to its command and
hands over when ``--embeddings`` is given.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated, Optional

import typer

_logger = logging.getLogger(__name__)

EmbeddingsOption = Annotated[
    Optional[list[Path]], typer.Option("--embeddings", metavar="FILE", help="Embeddings from `ghnorth embed` "
                                       "(repeatable): draw the latent map (--plot) and print each model's "
                                       "nearest neighbours instead of analysing checkpoints.")
]
ReferenceOption = Annotated[
    Optional[list[Path]], typer.Option("--reference", metavar="FILE", help="With --embeddings: embeddings of "
                                       "the reference architectures (e.g. the GHN's held-out set); default: "
                                       "the other models of --embeddings.")
]
MetricCsvOption = Annotated[
    Optional[Path], typer.Option("--metric-csv", "--metrics", metavar="FILE", help="With --embeddings: colour "
                                 "the map by a column of this CSV (rows keyed by a name/arch/model/label "
                                 "column), or of a .json list or `ghnorth ghn eval --json` output.")
]
MetricOption = Annotated[
    Optional[str], typer.Option("--metric", help="Column of --metric-csv (default: accuracy if present, else "
                                "the first numeric one).")
]
NeighboursOption = Annotated[
    int, typer.Option("--neighbours", "-k", min=1, help="With --embeddings: nearest neighbours listed per model.")
]


def _read_sets(paths: list[Path]):
    from ghnorth_cli.latent_map import merge_sets, read_embeddings

    return merge_sets([read_embeddings(p) for p in paths])


def _print_neighbours(reports) -> None:
    k = max((len(r.neighbours) for r in reports), default=1)
    header = ["model", "nearest", "distance", "percentile", "outside"] + [f"neighbour {i}" for i in range(2, k + 1)]
    rows = [header]
    for r in reports:
        rest = [f"{n} ({d:.3g})" for n, d in r.neighbours[1:]]
        nearest, distance = r.neighbours[0] if r.neighbours else ("-", math.nan)
        pct = "-" if math.isnan(r.percentile) else f"{r.percentile:.0f}"
        rows.append([r.name, nearest, f"{distance:.4g}", pct, "yes" if r.outside else "no"] + rest)
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def run_latent_analysis(*, embeddings: list[Path], reference: list[Path] | None, plot: Path | None,
                        metric_csv: Path | None, metric: str | None, neighbours: int, as_json: bool) -> None:
    """Nearest-neighbour table (stdout; --json for JSON) and, with ``plot``, the PCA latent map."""
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.latent_map import OUTSIDE_PERCENTILE, nearest_neighbours, plot_latent_map, read_metric_csv
    from ghnorth_cli.plotting import figure_format

    if plot is not None:
        from ghnorth_cli.files import check_writable

        figure_format(plot)
        check_writable(plot)
    if metric is not None and metric_csv is None:
        raise GhnorthError("--metric needs --metric-csv")
    named = _read_sets(embeddings)
    ref = _read_sets(reference) if reference else named
    if reference and named.vectors.shape[1] != ref.vectors.shape[1]:
        raise GhnorthError("--embeddings and --reference were made by GHNs of different sizes")
    reports = nearest_neighbours(named, ref, k=neighbours)
    values, column = None, None
    if metric_csv is not None:
        column, values = read_metric_csv(metric_csv, column=metric)
    if plot is not None:
        plot_latent_map(plot, named=named, reference=ref if reference else None, metric=values,
                        metric_name=column or "metric")
        _logger.info("latent map of %d models (%d reference) -> %s", len(named), len(ref) if reference else 0, plot)
    if as_json:
        typer.echo(json.dumps({"reference": [str(p) for p in reference or embeddings],
                               "outside_percentile": OUTSIDE_PERCENTILE,
                               "models": [r.to_dict() for r in reports]}, indent=2))
    else:
        _print_neighbours(reports)
