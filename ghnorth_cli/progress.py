"""One progress style for every long-running step: downloads, fine-tuning, GHN training, experiments.

Everything goes to stderr (stdout is for data), drawn by `rich <https://rich.readthedocs.io>`_:

- on a terminal, a live bar (description, bar, done/total, elapsed and remaining time, a status
  text); :meth:`Progress.line` prints a permanent line above it, and ordinary log records are
  routed above it too, so the bar is never torn;
- when stderr is not a terminal (a file, a pipe, CI logs, ``TERM=dumb``), plain lines only: one when a task
  starts (held back until its first report, so a task that fails at once leaves only its error),
  the permanent lines, one when it ends. No control characters.
- nothing when the ``ghnorth_cli`` logger is not enabled for INFO (``ghnorth -q``), or when a
  caller passes ``enabled=False``.

A task started while another is live (a GHN download inside an experiment) becomes a second bar
of the same display.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

_LOGGER = "ghnorth_cli"

# The rich display of the outermost live task, shared by tasks started inside it.
_live: Any = None


def progress_enabled() -> bool:
    """Whether progress is shown: the ``ghnorth_cli`` logger passes INFO records (not ``-q``)."""
    return logging.getLogger(_LOGGER).isEnabledFor(logging.INFO)


def format_amount(amount: float | None, unit: str) -> str:
    """``12.3 MB`` for bytes, ``40 steps`` (``1 step``) otherwise; ``?`` when unknown."""
    if amount is None:
        return "?"
    if unit == "bytes":
        from rich.filesize import decimal

        return decimal(int(amount))
    return f"{amount:g} {unit[:-1] if amount == 1 and unit.endswith('s') else unit}"


class Progress:
    """A progress report for one task, used as a context manager.

    ``total`` is in ``unit`` ("bytes" shows sizes and speed; any other word counts items), or
    None when unknown. ``console`` defaults to a console on the current ``sys.stderr``;
    ``enabled=None`` follows :func:`progress_enabled`.
    """

    def __init__(self, description: str, *, total: float | None, unit: str = "steps",
                 enabled: bool | None = None, console: Console | None = None) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0.0
        self.enabled = progress_enabled() if enabled is None else enabled
        self.console = console
        self._rich: Any = None  # the rich Progress drawing this task when live
        self._task: Any = None
        self._owner = False  # this task started the live display and stops it
        self._started = False  # the task's clock runs (rich starts it once the total is known)
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._start = 0.0
        self._start_line: str | None = None

    @property
    def live(self) -> bool:
        """Whether a bar is drawn (a terminal) rather than plain lines."""
        return self._rich is not None

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if not self.enabled:
            return self
        from rich.console import Console

        console = self.console or Console(file=sys.stderr, highlight=False)
        if _live is not None and _live.live.is_started:
            self._rich = _live
        elif console.is_terminal and not console.is_dumb_terminal:  # TERM=dumb cannot redraw a line
            self._rich = _new_display(console)
            self._owner = True
            self._start_display()
        else:
            self._console = console
            size = "" if self.total is None else f": {format_amount(self.total, self.unit)}"
            self._start_line = self.description + size  # printed with the first line: a task that fails
            # before it reports anything (a check at start-up) leaves just its error on stderr
            return self
        # A task whose total is not known yet (fine-tuning before its first step) starts its clock later.
        self._started = self.total is not None
        self._task = self._rich.add_task(self.description, total=self.total, status="", unit=self.unit,
                                         start=self._started)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.enabled:
            return
        if not self.live:
            if kind is None:
                seconds = time.perf_counter() - self._start
                self._plain(f"{self.description}: done, {format_amount(self.completed, self.unit)} "
                            f"in {seconds:.1f} s")
            return
        if self._owner:
            self._stop_display()
        else:
            self._rich.remove_task(self._task)

    def advance(self, amount: float = 1, *, status: str | None = None) -> None:
        """Move the bar on by ``amount``; ``status`` replaces the text after it."""
        self.update(completed=self.completed + amount, status=status)

    def update(self, *, completed: float | None = None, total: float | None = None,
               status: str | None = None) -> None:
        """Set how much is done (absolute), the total, or the status text."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if self.live:
            fields = {} if status is None else {"status": status}
            if self.total is not None and not self._started:
                self._rich.start_task(self._task)
                self._started = True
            self._rich.update(self._task, completed=self.completed, total=self.total, **fields)

    def line(self, text: str) -> None:
        """A permanent line: above the bar on a terminal, a plain line otherwise."""
        if not self.enabled:
            return
        if self.live:
            self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._plain(text)

    def _plain(self, text: str) -> None:
        if self._start_line is not None:
            start, self._start_line = self._start_line, None
            self._plain(start)
        self._console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _start_display(self) -> None:
        global _live
        from rich.file_proxy import FileProxy

        self._rich.start()
        _live = self._rich
        # Log records written to the terminal while the bar is live go above it, not through it.
        stderr = self._rich.console.file
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (stderr, sys.__stderr__):
                self._handlers.append((handler, handler.setStream(FileProxy(self._rich.console, stderr))))

    def _stop_display(self) -> None:
        global _live
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        self._rich.stop()
        _live = None


def _new_display(console: Console) -> Any:
    from rich import progress as rp
    from rich.text import Text

    class AmountColumn(rp.ProgressColumn):
        """Sizes and speed for a task counted in bytes, ``done/total`` for the others."""

        size, speed, count = rp.DownloadColumn(), rp.TransferSpeedColumn(), rp.MofNCompleteColumn()

        def render(self, task: rp.Task) -> Text:
            if task.fields.get("unit") == "bytes":
                return Text.assemble(self.size.render(task), " ", self.speed.render(task))
            return self.count.render(task)

    return rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), AmountColumn(), rp.TimeElapsedColumn(),
                       rp.TextColumn("eta"), rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[status]}"),
                       console=console)
