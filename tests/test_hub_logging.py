"""huggingface_hub's log lines: once, and only under -v (offline they were ~40 doubled retry lines)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EMIT = ("from huggingface_hub.utils import logging as hub_logging; "
        "hub_logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')")


def _stderr(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_VERBOSITY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.parametrize("import_first", [False, True])
@pytest.mark.parametrize("flags, lines", [("", 0), ("quiet=True", 0), ("verbose=True", 1)])
def test_hub_warnings_once_and_only_verbose(import_first: bool, flags: str, lines: int) -> None:
    pre = "import huggingface_hub; " if import_first else ""
    code = f"{pre}from ghnorth_cli.cli.app import set_verbosity; set_verbosity({flags}); {EMIT}"
    assert _stderr(code).splitlines() == ["Retrying in 1s [Retry 1/5]."] * lines
