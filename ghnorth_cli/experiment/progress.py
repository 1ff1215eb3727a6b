"""One progress display on stderr for a whole experiment: runs done, running, failed, left, time left.

Drawn with rich (https://rich.readthedocs.io) as one bar on a terminal, with log lines printed
above it; when stderr is not a terminal only the log lines appear, plus a final summary line.
Nothing is drawn when the ``ghnorth_cli`` logger is not enabled for INFO (``ghnorth -q``).
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

from ghnorth_cli.experiment.plan import Run
from ghnorth_cli.experiment.runner import RunOutcome

log = logging.getLogger(__name__)


class ExperimentProgress:
    """Callbacks for :func:`~ghnorth_cli.experiment.runner.run_experiment` that keep the counts and the bar.

    Use as a context manager; ``on_plan``, ``on_start`` and ``on_run`` are run_experiment's
    callbacks. ``enabled=None`` follows the ``ghnorth_cli`` logger (off under ``-q``).
    """

    def __init__(self, *, enabled: bool | None = None, console: Any = None) -> None:
        self.enabled = logging.getLogger("ghnorth_cli").isEnabledFor(logging.INFO) if enabled is None else enabled
        self.console = console
        self.total = self.pending = self.done = self.failed = self.running = 0
        self._bar: Any = None
        self._task: Any = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []

    @property
    def left(self) -> int:
        return self.pending - self.done - self.failed - self.running

    def status(self) -> str:
        return f"{self.running} running, {self.failed} failed, {self.left} left"

    def __enter__(self) -> ExperimentProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            for handler, stream in self._handlers:
                handler.setStream(stream)
            self._bar = None
        if self.enabled and self.pending:
            log.info("experiment: %d of %d runs done, %d failed", self.done, self.pending, self.failed)

    def on_plan(self, total: int, pending: int) -> None:
        self.total, self.pending = total, pending
        if not self.enabled or not pending:
            return
        from rich.console import Console

        console = self.console or Console(file=sys.stderr, highlight=False)
        if console.is_terminal:
            self._start_bar(console)

    def on_start(self, run: Run) -> None:
        self.running += 1
        self._refresh()

    def on_run(self, outcome: RunOutcome) -> None:
        if outcome.status == "skipped":
            return
        self.running = max(0, self.running - 1)
        if outcome.status == "failed":
            self.failed += 1
        else:
            self.done += 1
        self._refresh()

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done + self.failed, status=self.status())

    def _start_bar(self, console: Any) -> None:
        from rich import progress as rp
        from rich.file_proxy import FileProxy

        self._bar = rp.Progress(
            rp.TextColumn("experiment"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn("{task.fields[status]}"),
            rp.TimeElapsedColumn(), rp.TextColumn("left"), rp.TimeRemainingColumn(), console=console,
        )
        self._task = self._bar.add_task("runs", total=self.pending, status=self.status())
        self._bar.start()
        # Log records go above the bar instead of through it.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (console.file, sys.__stderr__):
                self._handlers.append((handler, handler.setStream(FileProxy(console, console.file))))
