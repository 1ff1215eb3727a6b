"""Shared fixtures: the parity data beside the checkout, and a CLI runner that keeps streams apart."""

from __future__ import annotations

from pathlib import Path

import pytest

PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ghn2-parity"
GHN3_PARITY_DIR = PARITY_DIR.parent / "ghn3-parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """``../shared/fixtures/ghn2-parity`` (present in the team's checkouts and CI, not on users' machines)."""
    if not PARITY_DIR.is_dir():
        pytest.skip(f"GHN-2 parity fixtures not found at {PARITY_DIR} (they live beside the team's checkout)")
    return PARITY_DIR


@pytest.fixture(scope="session")
def ghn3_parity_dir() -> Path:
    """``../shared/fixtures/ghn3-parity`` (present in the team's checkouts and CI, not on users' machines)."""
    if not GHN3_PARITY_DIR.is_dir():
        pytest.skip(f"GHN-3 parity fixtures not found at {GHN3_PARITY_DIR} (they live beside the team's checkout)")
    return GHN3_PARITY_DIR


@pytest.fixture
def cli():
    """Invoke the ``ghnorth`` app in-process; returns a function ``(*args, input=None) -> Result``."""
    from typer.testing import CliRunner

    from ghnorth_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """An empty ghnorth cache (``GHNORTH_HOME``), downloads allowed, no proxy (loopback servers only)."""
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GHNORTH_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"
