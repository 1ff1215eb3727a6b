"""The run-level progress of an experiment: runs done, running, failed, left, and time left.

``run_experiment``'s callbacks keep the counts; :class:`ghnorth_cli.progress.Progress` (the one
progress style) draws them on stderr: one bar on a terminal with log lines above it, plain lines
otherwise, nothing under ``ghnorth -q``. The display starts after the preflight checks, so a
problem found there is reported as one error line.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from ghnorth_cli.experiment.plan import Run
from ghnorth_cli.experiment.runner import RunOutcome


class ExperimentProgress:
    """Callbacks for :func:`~ghnorth_cli.experiment.runner.run_experiment`; use as a context manager.

    ``enabled`` and ``console`` are passed on to :class:`ghnorth_cli.progress.Progress`.
    """

    def __init__(self, *, enabled: bool | None = None, console: Any = None) -> None:
        self.enabled, self.console = enabled, console
        self.total = self.pending = self.done = self.failed = self.running = 0
        self._progress: Any = None

    @property
    def left(self) -> int:
        """Runs not started yet."""
        return self.pending - self.done - self.failed - self.running

    def status(self) -> str:
        return f"{self.running} running, {self.failed} failed, {self.left} left"

    def __enter__(self) -> ExperimentProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is None:
            return
        if kind is None:
            self._progress.line(f"experiment: {self.done} of {self.pending} runs done, {self.failed} failed")
        self._progress.__exit__(kind, exc, tb)
        self._progress = None

    def on_plan(self, total: int, pending: int) -> None:
        from ghnorth_cli.progress import Progress

        self.total, self.pending = total, pending
        if pending:
            self._progress = Progress("experiment", total=pending, unit="runs", enabled=self.enabled,
                                      console=self.console).__enter__()
            self._refresh()

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
        if self._progress is not None:
            self._progress.update(completed=self.done + self.failed, status=self.status())
