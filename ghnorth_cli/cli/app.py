"""The Typer application and the error handling every command shares."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from ghnorth_cli._version import __version__
from ghnorth_cli.errors import GhnorthError

DEBUG_ENV = "GHNORTH_DEBUG"


def report_error(message: str) -> None:
    """Print one error line on stderr."""
    typer.echo(f"ghnorth: error: {message}", err=True)


class GhnorthGroup(TyperGroup):
    """Turns known errors into one line on stderr and exit code 1 (a traceback only in debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GhnorthError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            report_error(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            report_error("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): nothing more to say.
            raise typer.Exit(141) from None

    def list_commands(self, ctx) -> list[str]:
        # Keep the order in which commands were registered (the README's order).
        return list(self.commands)


app = typer.Typer(
    name="ghnorth",
    cls=GhnorthGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Graph HyperNetwork (GHN-2, GHN-3) initialization with GHN-orth post-processing, as safetensors checkpoints.",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"ghnorth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More log output on stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
