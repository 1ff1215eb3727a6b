"""The one progress style: a rich bar on a terminal, plain lines elsewhere, nothing under -q."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from ghnorth_cli.progress import Progress, progress_enabled


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100), buf


@pytest.fixture
def info_level(caplog):
    caplog.set_level(logging.INFO, logger="ghnorth_cli")


def test_plain_lines_when_not_a_terminal(info_level) -> None:
    console, buf = _console(terminal=False)
    with Progress("fine-tuning", total=4, console=console) as progress:
        assert not progress.live
        for _ in range(4):
            progress.advance(status="loss 0.1")
        progress.line("epoch 1/1 loss 0.1000")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "fine-tuning: 4 steps"
    assert lines[1] == "epoch 1/1 loss 0.1000"
    assert lines[2].startswith("fine-tuning: done, 4 steps in ") and len(lines) == 3
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()


def test_plain_download_sizes(info_level) -> None:
    console, buf = _console(terminal=False)
    with Progress("downloading a.pt", total=2_500_000, unit="bytes", console=console) as progress:
        progress.advance(2_500_000)
    assert buf.getvalue().splitlines() == ["downloading a.pt: 2.5 MB", buf.getvalue().splitlines()[1]]
    assert buf.getvalue().splitlines()[1].startswith("downloading a.pt: done, 2.5 MB in ")


def test_live_bar_on_a_terminal_with_lines_and_logs_above_it(info_level) -> None:
    console, buf = _console(terminal=True)
    root = logging.getLogger()
    handler = logging.StreamHandler(console.file)
    root.addHandler(handler)
    try:
        with Progress("training GHN", total=10, console=console) as progress:
            assert progress.live
            progress.update(completed=10, status="loss 0.5")
            progress.line("step 10/10 loss 0.5")
            logging.getLogger("ghnorth_cli.test").warning("a log record")
            assert handler.stream is not buf  # routed through the live display while it runs
            with Progress("downloading b.pt", total=1000, unit="bytes") as inner:  # joins the live display
                assert inner.live
                inner.advance(1000)
        assert handler.stream is buf
    finally:
        root.removeHandler(handler)
    text = buf.getvalue()
    assert "training GHN" in text and "━" in text and "10/10" in text and "loss 0.5" in text
    assert "step 10/10 loss 0.5\n" in text and "a log record\n" in text
    assert "downloading b.pt" in text and "1.0 kB" in text


def test_silent_when_quiet_or_disabled(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ghnorth_cli")
    assert not progress_enabled()
    for enabled, terminal in ((None, True), (None, False), (False, True)):
        console, buf = _console(terminal=terminal)
        with Progress("x", total=2, console=console, enabled=enabled) as progress:
            progress.advance(2, status="s")
            progress.line("a line")
        assert buf.getvalue() == ""
    caplog.set_level(logging.INFO, logger="ghnorth_cli")
    assert progress_enabled()


def test_cli_finetune_plain_progress_and_quiet(cli, tmp_path) -> None:
    from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir

    data = make_fashion_dir(tmp_path / "fashion")
    args = ["finetune", "--data", "fashion-mnist", "--data-dir", str(data), "--arch", TINY_ARCH, "--img-size",
            str(TINY_SIZE), "--no-small-input", "--labels-per-class", "2", "--val-size", "0", "--batch-size", "6",
            "--epochs", "1"]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "fine-tuning" in lines and any(line.startswith("epoch 1/1 loss ") for line in lines)
    assert any(line.startswith("fine-tuning: done, ") for line in lines)
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # CliRunner's stderr is not a terminal
    quiet = cli("-q", *args)
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
