"""CPU thread settings: the measured default every computing command uses, and scoped changes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# The default of `--threads`, chosen by benchmarks/bench_threads.py (results in
# benchmarks/results/threads.md): on a 2-core machine one thread was never much slower than
# two when the machine was idle, and many times faster when the other core was busy.
DEFAULT_THREADS = 1
THREADS_ENV = "OMP_NUM_THREADS"


def default_threads() -> int | None:
    """The thread count a command uses without ``--threads``: None (torch's own) when the user set
    ``OMP_NUM_THREADS``, which torch already follows, else :data:`DEFAULT_THREADS`."""
    return None if os.environ.get(THREADS_ENV) else DEFAULT_THREADS


def apply_threads(n: int | None) -> int:
    """Set torch's intra-op threads for the rest of the process to ``n`` (None: the default).

    Returns the thread count in effect, which commands record in their history. Raises
    ``ValueError`` for ``n < 1``.
    """
    import torch

    if n is not None and n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    wanted = n if n is not None else default_threads()
    if wanted is not None and wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore torch's setting (None: no change).

    Small tensor work (a GHN forward, a LAPACK solve on a few-thousand-row matrix, tiny sampled
    networks) gains little from threads and slows down 10-100x with them when the cores are shared.
    """
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
