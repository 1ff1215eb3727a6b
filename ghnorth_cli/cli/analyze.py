"""``ghnorth analyze``: channel correlations of conv/linear layers (Section 2 and Figure 2 of the paper)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.latent import (EmbeddingsOption, MetricCsvOption, MetricOption, NeighboursOption,
                                    ReferenceOption, run_latent_analysis)
from ghnorth_cli.cli.options import (ImgSizeOption, JsonOption, NumClassesOption, OptionalArchOption, ThreadsOption,
                                      output_path)

_logger = logging.getLogger(__name__)

FilesArgument = Annotated[list[str], typer.Argument(help="Checkpoints (.safetensors); '-' reads stdin (once).")]
LabelOption = Annotated[
    Optional[list[str]], typer.Option("--label", "-l", help="Name of each checkpoint in the table and legend "
                                      "(repeat once per file; default: the file names).")
]
PlotOption = Annotated[
    Optional[Path], typer.Option("--plot", metavar="FILE", callback=output_path, help="Draw Figure 2 into FILE (.png, .svg or .pdf); "
                                 "with --embeddings the latent map (Figure 4).")
]
PlotLayersOption = Annotated[
    Optional[str], typer.Option("--plot-layers", metavar="I,J,...", help="1-based layers whose correlation "
                                "distribution the plot shows (default: three spread over the depth).")
]

_COLUMNS = ("idx", "layer", "shape", "K", "mean|r|", "std(r)", "|r|>0.5", "dups", "sigma_max", "eff_rank")


def _labels(files: list[str], labels: list[str] | None) -> list[str]:
    from ghnorth_cli.errors import GhnorthError

    if labels:
        if len(labels) != len(files):
            raise GhnorthError(f"got {len(labels)} --label for {len(files)} files; give one per file or none")
        return list(labels)
    return ["stdin" if f == "-" else Path(f).name for f in files]


def _parse_layers(text: str | None) -> list[int] | None:
    from ghnorth_cli.errors import GhnorthError

    if text is None:
        return None
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GhnorthError(f"--plot-layers takes 1-based layer numbers separated by commas, got {text!r}") from None
    if not layers or min(layers) < 1:
        raise GhnorthError(f"--plot-layers takes 1-based layer numbers separated by commas, got {text!r}")
    return layers


def _order(ckpt) -> list[str]:
    """Module order: ghnorth metadata or --arch; else a plain file's own ``order`` key, else its tensor order."""
    if ckpt.spec is not None:
        return ckpt.order
    try:
        order = json.loads(ckpt.metadata.get("order", "null"))
    except ValueError:
        order = None
    if isinstance(order, list) and sorted(order) == sorted(ckpt.tensors):
        return order
    _logger.warning("warning: %s has no module order (no ghnorth metadata, no --arch); layers are numbered "
                    "in the file's tensor order", ckpt.source)
    return ckpt.order


def _format_row(s) -> list[str]:
    def num(v: float, fmt: str) -> str:
        return "nan" if v != v else format(v, fmt)

    return [str(s.index), s.name, "x".join(map(str, s.shape)), str(s.channels), num(s.mean_abs_corr, ".4f"),
            num(s.std_corr, ".4f"), num(s.frac_high, ".4f"), str(s.duplicate_channels),
            num(s.max_singular_value, ".4g"), num(s.effective_rank, ".1f")]


def _print_table(label: str, source: str, stats) -> None:
    rows = [list(_COLUMNS)] + [_format_row(s) for s in stats]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    typer.echo(f"# {label} ({source})")
    for row in rows:
        cells = [c.ljust(w) if i in (1, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        typer.echo("  ".join(cells).rstrip())


def _analyze_file(path: str, *, arch, num_classes, img_size):
    from ghnorth_cli.analysis import analyze_tensors
    from ghnorth_cli.checkpoint import check_nonempty_layers, read_checkpoint

    ckpt = read_checkpoint(path, arch=arch, num_classes=num_classes, img_size=img_size, require_spec=False)
    check_nonempty_layers(ckpt.tensors, _order(ckpt), what=ckpt.source)
    stats = analyze_tensors(ckpt.tensors, _order(ckpt), classifier=ckpt.classifier() if ckpt.spec else None)
    return ckpt, stats


@app.command("analyze")
def analyze_command(
    files: FilesArgument = None,
    labels: LabelOption = None,
    as_json: JsonOption = False,
    plot: PlotOption = None,
    plot_layers: PlotLayersOption = None,
    arch: OptionalArchOption = None,
    num_classes: NumClassesOption = None,
    img_size: ImgSizeOption = None,
    embeddings: EmbeddingsOption = None,
    reference: ReferenceOption = None,
    metric_csv: MetricCsvOption = None,
    metric: MetricOption = None,
    neighbours: NeighboursOption = 3,
    threads: ThreadsOption = None,
) -> None:
    """Correlation between the output channels of every conv/linear layer: a table, --json, --plot (Fig. 2).

    With --embeddings instead: where architectures land in a GHN's latent space (--plot, Fig. 4) and how far
    each is from its nearest reference architectures.
    """
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.files import check_writable
    from ghnorth_cli.plotting import figure_format, plot_figure2
    from ghnorth_cli.threads import apply_threads

    apply_threads(threads)
    if embeddings:  # the latent map (Figure 4) instead of channel correlations
        return run_latent_analysis(embeddings=embeddings, reference=reference, plot=plot, metric_csv=metric_csv,
                                   metric=metric, neighbours=neighbours, as_json=as_json)
    if not files:
        raise GhnorthError("give checkpoints to analyze, or --embeddings FILE")
    if files.count("-") > 1:
        raise GhnorthError("'-' (stdin) can be given only once")
    names = _labels(files, labels)
    layers = _parse_layers(plot_layers)
    if plot is not None:
        figure_format(plot)
        check_writable(plot)
    runs: list[dict[str, Any]] = []
    for path, label in zip(files, names):
        ckpt, stats = _analyze_file(path, arch=arch, num_classes=num_classes, img_size=img_size)
        runs.append({"label": label, "file": ckpt.source, "sha256": ckpt.sha256, "stats": stats})
        if not as_json:
            _print_table(label, ckpt.source, stats)
    if plot is not None:
        shown = plot_figure2([r["stats"] for r in runs], plot, labels=names, layers=layers)
        _logger.info("figure 2 (layers %s) -> %s", ", ".join(map(str, shown)), plot)
    if as_json:
        out = [{"label": r["label"], "file": r["file"], "sha256": r["sha256"],
                "layers": [s.to_dict() for s in r["stats"]]} for r in runs]
        typer.echo(json.dumps({"checkpoints": out}, indent=2))
