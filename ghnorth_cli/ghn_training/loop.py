"""Training a GHN-2 over an architecture space (issue 6).

Each step draws a meta-batch of architectures and one batch of images. For every architecture
the GHN predicts all its parameters differentiably, the model runs on the images with those
parameters (``torch.func.functional_call``, batch norm in training mode), and the cross-entropy,
averaged over the meta-batch, back-propagates into the GHN only. AdamW, a cosine / step /
constant learning rate with optional linear warm-up, gradient-norm clipping; bf16 autocast and
channels-last on CUDA. Every ``save_every`` steps the state (GHN, optimizer, random generators)
and the GHN file are written, so an interrupted run resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ghnorth_cli.archspace import ArchSample, ArchSampler, build_arch, get_space, heldout_archs
from ghnorth_cli.finetune.augment import random_crop_flip, to_model_input
from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.network import GHN2
from ghnorth_cli.ghn_training.config import GHNTrainConfig
from ghnorth_cli.ghn_training.data import TaskData
from ghnorth_cli.ghn_training.distributed import Distributed, all_sum
from ghnorth_cli.ghn_training.functional import parameter_shapes, predict_tensors
from ghnorth_cli.graph import capture_graph

log = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]


def ghn_config_for(config: GHNTrainConfig, *, num_classes: int) -> GHNConfig:
    """The GHN-2 a run trains: the paper's GHN-2 settings at the chosen size."""
    return GHNConfig(max_shape=config.max_shape, num_classes=num_classes, hid=config.hid, weight_norm=True,
                     ve=config.virtual_edges, layernorm=True)


def new_ghn(config: GHNConfig, *, seed: int) -> GHN2:
    """A freshly initialized GHN-2, seeded without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GHN2(config)


def lr_at(step: int, config: GHNTrainConfig) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up, then the schedule."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "step":  # x0.1 at 50% and 75% of training
        return config.lr * 0.1 ** sum(progress >= m for m in (0.5, 0.75))
    return config.lr


@dataclass
class Generators:
    """The run's random streams: architectures, image batches and augmentation."""

    archs: torch.Generator
    batches: torch.Generator
    augment: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> "Generators":
        return cls(*(torch.Generator().manual_seed(seed * 3 + i) for i in range(3)))

    def state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).get_state() for name in ("archs", "batches", "augment")}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).set_state(value)


@dataclass
class RunState:
    """Where a run is: steps done, time spent, recent metrics."""

    step: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def image_batch(task: TaskData, config: GHNTrainConfig, gens: Generators, *,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented training batch, normalized, at ``img_size``."""
    n = len(task.train) if config.train_limit is None else min(config.train_limit, len(task.train))
    index = torch.randint(n, (config.batch_size,), generator=gens.batches)
    images = random_crop_flip(task.train.images[index], padding=2, generator=gens.augment)
    x = to_model_input(images.to(device), mean=task.mean, std=task.std, img_size=config.img_size,
                       channels_last=device.type == "cuda")
    return x, task.train.labels[index].to(device)


def arch_loss(ghn: GHN2, sample: ArchSample, x: torch.Tensor, y: torch.Tensor, *,
              config: GHNTrainConfig) -> tuple[torch.Tensor, float]:
    """Cross-entropy of ``sample`` with GHN-predicted parameters on (x, y), and its accuracy."""
    model = build_arch(sample, num_classes=ghn.config.num_classes, img_size=config.img_size)
    model.requires_grad_(False).train()
    graph = capture_graph(model, img_size=config.img_size, ve_cutoff=ghn.config.ve_cutoff)
    model.to(x.device, memory_format=torch.channels_last if x.device.type == "cuda" else torch.preserve_format)
    use_bf16 = config.amp is not False and x.device.type == "cuda"
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        params = predict_tensors(ghn, graph, parameter_shapes(model))
        logits = torch.func.functional_call(model, params, (x,), strict=False)
    loss = F.cross_entropy(logits.float(), y)
    return loss, float((logits.argmax(1) == y).float().mean())


class MetaBatchLoss(torch.nn.Module):
    """``(sample, x, y) -> (loss, accuracy)`` of one architecture with GHN-predicted parameters.

    A module so that DistributedDataParallel can wrap it: DDP averages gradients of what runs
    through a module's forward.
    """

    def __init__(self, ghn: GHN2, config: GHNTrainConfig) -> None:
        super().__init__()
        self.ghn, self.config = ghn, config

    def forward(self, sample: ArchSample, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, acc = arch_loss(self.ghn, sample, x, y, config=self.config)
        return loss, torch.tensor(acc)


def _synchronized_last(model: torch.nn.Module, index: int, count: int):
    """DDP's ``no_sync`` for every share member but the last (gradients are averaged once per step)."""
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if no_sync is not None and index < count - 1 else contextlib.nullcontext()


def train_step(ghn: GHN2, optimizer: torch.optim.Optimizer, samples: list[ArchSample], x: torch.Tensor,
               y: torch.Tensor, *, config: GHNTrainConfig, model: torch.nn.Module | None = None,
               dist: Distributed | None = None) -> dict[str, Any]:
    """One meta-batch update; returns loss, accuracy and gradient norm (skips non-finite updates).

    ``model`` is :class:`MetaBatchLoss` over ``ghn`` (wrapped in DDP when ``dist`` has several
    ranks; this rank then computes only its share of ``samples``, see :mod:`.distributed`).
    """
    dist = dist or Distributed()
    model = model or MetaBatchLoss(ghn, config)
    optimizer.zero_grad(set_to_none=True)
    mine = dist.share(samples)
    losses, accs = [], []
    for i, sample in enumerate(mine):
        with _synchronized_last(model, i, len(mine)):
            loss, acc = model(sample, x, y)
            if not torch.isfinite(loss):
                log.warning("non-finite loss for %s; left out of this step", sample.label)
                if not dist.enabled:
                    continue
                loss = loss.nan_to_num(0.0, 0.0, 0.0) * 0.0  # every rank must still join the gradient average
            else:
                losses.append(loss.item())
                accs.append(float(acc))
            # One backward per model keeps memory to one model; DDP divides by world_size: the mean.
            (loss * dist.world_size / len(samples)).backward()
    count = len(losses)
    if dist.enabled:
        total_loss, total_acc, count = all_sum([sum(losses), sum(accs), len(losses)], device=x.device)
        count = int(count)
    else:
        total_loss, total_acc = sum(losses), sum(accs)
    clip = config.grad_clip if config.grad_clip > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(ghn.parameters(), clip)) if count else float("nan")
    if count and math.isfinite(norm):
        optimizer.step()
    else:
        log.warning("skipped an update: gradient norm %s", norm)
    return {"loss": total_loss / count if count else float("nan"), "acc": total_acc / count if count else float("nan"),
            "grad_norm": norm, "archs": [s.label for s in samples]}


def make_sampler(config: GHNTrainConfig, gens: Generators) -> ArchSampler:
    space = get_space(config.arch_space)
    exclude = frozenset(a.key for a in heldout_archs(space, count=config.heldout)) if config.heldout else frozenset()
    return ArchSampler(space, generator=gens.archs, extra_archs=config.extra_archs, exclude=exclude)


def run_steps(ghn: GHN2, optimizer: torch.optim.Optimizer, task: TaskData, config: GHNTrainConfig, *,
              gens: Generators, state: RunState, device: torch.device, checkpoint: Callable[[], None],
              on_step: StepCallback | None = None, dist: Distributed | None = None) -> None:
    """Train from ``state.step`` to ``config.steps``, checkpointing every ``save_every`` steps.

    With several ranks (``dist``), every rank draws the same architectures and images and trains
    its share of them under DistributedDataParallel; ``checkpoint`` is then rank 0's to do.
    """
    dist = dist or Distributed()
    sampler = make_sampler(config, gens)
    model: torch.nn.Module = MetaBatchLoss(ghn, config)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: an architecture need not reach every GHN part (e.g. virtual edges).
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
    ghn.train()
    while state.step < config.steps:
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state.step, config)
        samples = [sampler.sample() for _ in range(config.meta_batch)]
        x, y = image_batch(task, config, gens, device=device)
        record = train_step(ghn, optimizer, samples, x, y, config=config, model=model, dist=dist)
        state.step += 1
        state.seconds += time.perf_counter() - start
        record = {"step": state.step, "lr": optimizer.param_groups[0]["lr"], **record,
                  "seconds": round(state.seconds, 3)}
        state.history = (state.history + [record])[-50:]
        if (state.step % config.save_every == 0 or state.step == config.steps) and dist.is_main:
            checkpoint()
        if on_step is not None:
            on_step(record)
