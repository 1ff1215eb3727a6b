"""The ``ghnorth`` command line: one module per command, each a thin wrapper over the library."""

from __future__ import annotations

from ghnorth_cli.cli.app import app

# Each module registers its command(s) on ``app`` when imported; the order here is the help order.
from ghnorth_cli.cli import commands as _commands  # noqa: F401,E402


def main() -> None:
    app(prog_name="ghnorth")
