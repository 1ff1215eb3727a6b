"""``ghnorth archs``: the model names that ``--arch`` accepts."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import JsonOption


@app.command("archs")
def archs_command(
    pattern: Annotated[Optional[str], typer.Argument(help="Substring or shell pattern, e.g. 'resnet*'.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List architecture names (timm's and torchvision's classifiers)."""
    import json

    from ghnorth_cli.models import list_archs

    names = list_archs(pattern)
    if as_json:
        typer.echo(json.dumps(names))
    else:
        for name in names:
            typer.echo(name)
