"""SIGTERM handled like SIGINT, and sections of work that an interrupt must not split.

``timeout``, Slurm preemption and ``docker stop`` send SIGTERM; Python's default ends the process
at once, leaving temporary files behind. :func:`handle_termination` turns it into a
:class:`Terminated` exception instead, so that ``finally`` blocks remove temporary files and the
CLI reports one line and exits with 143 (128 + 15, the shell's code for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(BaseException):
    """SIGTERM arrived (a :class:`BaseException`, like :class:`KeyboardInterrupt`, so ``except Exception`` passes it)."""

    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handle_termination() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; the previous handler comes back after."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then act on the first that came.

    For short sections that must finish once begun (writing a resumable state): an interrupt
    inside them becomes a clean interruption right after, never a half-done write or a
    library's error about one.
    """
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        sig, handler = caught[0], previous[caught[0]]
        if callable(handler):
            handler(sig, None)
        elif handler == signal.SIG_DFL:
            raise KeyboardInterrupt if sig == signal.SIGINT else Terminated()
