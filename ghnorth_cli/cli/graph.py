"""``ghnorth graph``: draw a model's graph exactly as the GHN-2 sees it (SVG, PNG, DOT or the graph as JSON)."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import (ArchOption, ImgSizeOption, NumClassesOption, SmallInputOption, ThreadsOption,
                                      output_path)

_logger = logging.getLogger(__name__)

GraphOutputOption = Annotated[
    str, typer.Option("--output", "-o", metavar="FILE", callback=output_path, help="Output file: .svg, .png, .dot or .json "
                      "(the graph itself); '-' writes to stdout (with --format).")
]
FormatOption = Annotated[
    Optional[str], typer.Option("--format", "-f", help="svg, png, dot or json (default: from the file name).")
]
VirtualEdgesOption = Annotated[
    bool, typer.Option("--virtual-edges", help="Also draw the virtual edges (shortest paths > 1) the GHN-2 "
                       "passes messages along; hidden by default. JSON output always holds them.")
]
VeCutoffOption = Annotated[
    int, typer.Option("--ve-cutoff", min=1, help="Longest shortest path that becomes a virtual edge "
                      "(50 as the GHN-2 uses; 1 = real edges only).")
]
RowsOption = Annotated[
    Optional[int], typer.Option("--rows", min=4, help="Layers per column of the folded layout "
                                "(default: chosen for a roughly landscape picture).")
]
LabelsOption = Annotated[bool, typer.Option("--labels", help="Write each node's parameter name beside it.")]
Ghn3Option = Annotated[bool, typer.Option("--ghn3", help="The graph as a GHN-3 reads it (its reference's rules "
                                          "for channel gates, attention and tokens; see docs/ghn3.md).")]


@app.command("graph")
def graph_command(
    arch: ArchOption,
    output: GraphOutputOption,
    fmt: FormatOption = None,
    img_size: ImgSizeOption = None,
    small_input: SmallInputOption = None,
    num_classes: NumClassesOption = None,
    virtual_edges: VirtualEdgesOption = False,
    ve_cutoff: VeCutoffOption = 50,
    rows: RowsOption = None,
    labels: LabelsOption = False,
    threads: ThreadsOption = None,
    ghn3: Ghn3Option = False,
) -> None:
    """Draw the model's graph as the GHN-2 sees it: nodes coloured and shaped by primitive, with a legend."""
    from ghnorth_cli.files import check_writable, refuse_binary_terminal
    from ghnorth_cli.drawing import graph_format, graph_summary, write_graph
    from ghnorth_cli.graph import capture_graph
    from ghnorth_cli.models import create_model, resolve_spec
    from ghnorth_cli.threads import apply_threads

    apply_threads(threads)
    if fmt is None and output != "-":
        graph_format(output)  # refuse an unknown suffix before any work
    if fmt == "png":
        refuse_binary_terminal(output)
    check_writable(output)
    spec = resolve_spec(arch, num_classes=num_classes, img_size=img_size, small_input=small_input)
    model = create_model(spec, seed=0)
    graph = capture_graph(model, img_size=spec.img_size, ve_cutoff=ve_cutoff, ghn3=ghn3)
    written = write_graph(graph, output, fmt=fmt, name=spec.arch, virtual_edges=virtual_edges, rows=rows,
                          labels=labels)
    counts = graph_summary(graph)
    _logger.info("%s (%d px): %d nodes, %d edges, %d virtual edges -> %s (%s)", spec.arch, spec.img_size,
                 counts["nodes"], counts["edges"], counts["virtual_edges"], output, written)
