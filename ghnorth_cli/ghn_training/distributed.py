"""Training one GHN on several processes with PyTorch's DistributedDataParallel, launched by torchrun.

``torchrun --nproc_per_node N -m ghnorth_cli train-ghn ...`` starts N processes (ranks) with the
usual environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); several
nodes use torchrun's own ``--nnodes``/``--rdzv-*`` options. Every rank draws the same global
meta-batch of architectures and the same images (the same seeds), takes its own contiguous share
of the architectures (:func:`share_sizes`), and back-propagates the sum of its losses scaled by
``world_size / meta_batch``; DDP then averages the gradients over the ranks, which gives every
rank the gradient a single process computes for the whole meta-batch (the mean over it). Rank 0
alone writes the state, the GHN file and the log. NCCL on CUDA devices, gloo on CPUs.

Reference: PyTorch's DDP tutorial and ``torch.nn.parallel.DistributedDataParallel`` (gradient
accumulation with ``no_sync``), https://pytorch.org/docs/stable/notes/ddp.html.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

from ghnorth_cli.errors import GhnorthError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks of one training run (one rank: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous part of ``items`` (sizes as :func:`share_sizes`)."""
        sizes = share_sizes(len(items), self.world_size)
        start = sum(sizes[: self.rank])
        return list(items[start:start + sizes[self.rank]])

    def device(self, name: str) -> str:
        """The rank's device: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` where CUDA is, else as given."""
        if not self.enabled or name == "cpu":
            return name
        if name in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return "cpu" if name == "auto" else name


def share_sizes(total: int, world_size: int) -> list[int]:
    """Architectures per rank: ``[3, 3, 2]`` for 8 over 3 ranks (the first ranks take the remainder)."""
    return [total // world_size + (r < total % world_size) for r in range(world_size)]


def from_environment() -> Distributed:
    """The ranks torchrun describes in the environment (none set: a single process)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise GhnorthError("WORLD_SIZE, RANK and LOCAL_RANK must be numbers (torchrun sets them)") from None
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


@contextmanager
def process_group(dist: Distributed, *, device: str, meta_batch: int) -> Iterator[Distributed]:
    """Join the ranks (NCCL for CUDA, gloo otherwise) for the block; a no-op for one process."""
    if not dist.enabled:
        yield dist
        return
    if meta_batch < dist.world_size:
        raise GhnorthError(f"--meta-batch {meta_batch} is smaller than the {dist.world_size} processes: "
                           f"every process needs at least one architecture per step")
    import torch.distributed as td

    on_cuda = dist.device(device).startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group(backend="nccl" if on_cuda else "gloo")
    log.info("rank %d of %d (%s), %s architectures per step here", dist.rank, dist.world_size,
             td.get_backend(), dist.share(list(range(meta_batch))).__len__())
    try:
        yield dist
    finally:
        td.destroy_process_group()


def all_sum(values: list[float], *, device: torch.device) -> list[float]:
    """Sum ``values`` over the ranks (for the logged loss and accuracy of the whole meta-batch)."""
    import torch.distributed as td

    tensor = torch.tensor(values, dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    td.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    import torch.distributed as td

    if td.is_initialized():
        td.barrier()
