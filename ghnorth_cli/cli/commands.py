"""Imports every command module so that each registers itself on the app (in help order)."""

# isort: off
from ghnorth_cli.cli import init  # noqa: F401
from ghnorth_cli.cli import predict  # noqa: F401
from ghnorth_cli.cli import ghn  # noqa: F401
from ghnorth_cli.cli import info  # noqa: F401
from ghnorth_cli.cli import export  # noqa: F401
from ghnorth_cli.cli import archs  # noqa: F401
from ghnorth_cli.cli import postprocess  # noqa: F401
from ghnorth_cli.cli import analyze  # noqa: F401
from ghnorth_cli.cli import graph  # noqa: F401
from ghnorth_cli.cli import embed  # noqa: F401
from ghnorth_cli.cli import experiment  # noqa: F401
from ghnorth_cli.cli import finetune  # noqa: F401
from ghnorth_cli.cli import train_ghn  # noqa: F401
from ghnorth_cli.cli import ghn_eval  # noqa: F401
