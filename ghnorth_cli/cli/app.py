"""The Typer application and the error handling every command shares."""

from __future__ import annotations

import copy
import logging
import os
import sys
import warnings
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from ghnorth_cli._version import __version__
from ghnorth_cli.errors import GhnorthError

DEBUG_ENV = "GHNORTH_DEBUG"


def report_error(message: str) -> None:
    """Print one error line on stderr."""
    typer.echo(f"ghnorth: error: {message}", err=True)


def set_verbosity(*, verbose: bool = False, quiet: bool = False) -> None:
    """Route log records and Python warnings to stderr: -q errors only, -v debug detail, else info.

    Library warnings (``warnings.warn``) become log records, so -q silences them too.
    """
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    logging.captureWarnings(True)
    if quiet:
        warnings.simplefilter("ignore")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def is_quiet() -> bool:
    """True under -q: nothing but errors may reach stderr (progress bars included)."""
    return logging.getLogger().getEffectiveLevel() > logging.WARNING


def _verbosity_callback(flag: str):
    def callback(ctx, param, value: bool) -> None:
        if value:
            set_verbosity(**{flag: True})

    return callback


def _add_verbosity_options(command, root_params) -> None:
    """Give a subcommand the root's -q/-v, so that they work after the subcommand's name too."""
    if hasattr(command, "commands"):  # a group: its subcommands
        for sub in command.commands.values():
            _add_verbosity_options(sub, root_params)
        return
    if any("--quiet" in p.opts for p in command.params):
        return
    for root in root_params:  # copies of the root's own flags, handled here instead of passed on
        flag = copy.copy(root)
        flag.expose_value = False
        flag.callback = _verbosity_callback(root.name)
        flag.help = f"{root.help} (Also accepted before the command.)"
        command.params.append(flag)


class GhnorthGroup(TyperGroup):
    """Turns known errors into one line on stderr and exit code 1 (a traceback only in debug)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        root_params = [p for p in self.params if p.name in ("verbose", "quiet")]
        for command in self.commands.values():
            _add_verbosity_options(command, root_params)

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
    help="Graph HyperNetwork (GHN-2) initialization with GHN-orth post-processing, as safetensors checkpoints.",
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr: no progress, info or "
                                        "warnings.")] = False,
) -> None:
    set_verbosity(verbose=verbose, quiet=quiet)
