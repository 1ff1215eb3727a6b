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

try:  # typer >= 0.24 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_exceptions

from ghnorth_cli._version import __version__
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.signals import Terminated, handle_termination

DEBUG_ENV = "GHNORTH_DEBUG"
#: Prefix of the line for an exception ghnorth did not foresee (the fuzz tests look for it).
INTERNAL_ERROR = "internal error"


#: Longest error line; the whole message is logged first at debug level (``-v``).
MAX_ERROR_CHARS = 400
#: ``HF_HUB_VERBOSITY`` as the user set it (ghnorth sets it from -q / -v otherwise).
_USER_HUB_VERBOSITY = os.environ.get("HF_HUB_VERBOSITY")


def one_line(message: str, *, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` on one line: line breaks become "; ", and past ``limit`` characters it is cut."""
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "unknown error"
    if len(text) > limit:
        text = text[: limit - 40].rstrip() + " ... (-v shows the whole message)"
    return text


def report_error(message: str) -> None:
    """Print one error line on stderr (the full text goes to the debug log first)."""
    logging.getLogger("ghnorth_cli").debug("error in full: %s", message)
    typer.echo(f"ghnorth: error: {one_line(message)}", err=True)


def _usage_message(exc: click_exceptions.ClickException) -> str:
    message = exc.format_message().replace("Value error, ", "")  # pydantic's prefix on parser errors
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click_exceptions.UsageError) and ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


def set_verbosity(*, verbose: bool = False, quiet: bool = False) -> None:
    """Route log records and Python warnings to stderr: -q errors only, -v debug detail, else info.

    Library warnings (``warnings.warn``) become log records, so -q silences them too.
    """
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    logging.captureWarnings(True)
    _route_hub_logs(verbose=verbose)
    if quiet:
        warnings.simplefilter("ignore")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _route_hub_logs(*, verbose: bool) -> None:
    """Show huggingface_hub's own log lines once, and only under -v.

    huggingface_hub gives its logger a handler of its own when imported and lets records reach the
    root handler too, so every line came twice, and -q did not silence it; offline, a download
    printed ~40 retry warnings before ghnorth's one error line. Its retries and network warnings
    are detail: ghnorth reports the failure itself. ``HF_HUB_VERBOSITY`` (read when
    huggingface_hub is imported, usually later) is set only when the user has not set it.
    """
    chosen = _USER_HUB_VERBOSITY or ("warning" if verbose else "error")
    os.environ["HF_HUB_VERBOSITY"] = chosen
    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.propagate = False  # its own handler prints it; the root one would print it again
    level = logging.getLevelName(chosen.upper())
    if "huggingface_hub" in sys.modules and isinstance(level, int):  # imported already: the variable was read
        hub_logger.setLevel(level)


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
    """Turns every error into one line on stderr and exit code 1 (a traceback only in debug).

    Known errors (:class:`GhnorthError`) and click's usage errors exit with 1, SIGINT with 130,
    SIGTERM with 143, a closed stdout reader with 141.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        with handle_termination():
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click_exceptions.NoArgsIsHelpError as exc:
                exc.show()
                code = 0
            except click_exceptions.ClickException as exc:
                report_error(_usage_message(exc))
                code = 1
            except typer.Abort:
                report_error("interrupted")
                code = 130
            except Terminated:
                report_error("terminated (SIGTERM)")
                code = Terminated.exit_code
        sys.exit(code if isinstance(code, int) else 0)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            report_error("interrupted")
            raise typer.Exit(130) from None

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
        except Terminated:
            report_error("terminated (SIGTERM)")
            raise typer.Exit(Terminated.exit_code) from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): nothing more to say.
            raise typer.Exit(141) from None
        except (click_exceptions.ClickException, typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug or an unforeseen failure: still one line, the traceback on request
            if os.environ.get(DEBUG_ENV):
                raise
            report_error(f"{INTERNAL_ERROR}: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)")
            raise typer.Exit(1) from None

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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr: no progress, info or "
                                        "warnings.")] = False,
) -> None:
    set_verbosity(verbose=verbose, quiet=quiet)
