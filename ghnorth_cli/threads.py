"""Scoped control of torch's intra-op thread count."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore torch's setting (None: no change).

    Small tensor work (a GHN forward, a LAPACK solve on a few-thousand-row matrix, tiny sampled
    networks) gains little from threads and slows down 10-100x with them when the cores are shared.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
