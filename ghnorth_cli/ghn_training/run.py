"""``train_ghn``: a whole GHN training run, resumable, writing a GHN file and a JSONL log."""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.files import check_distinct, check_writable
from ghnorth_cli.ghn.network import GHN2
from ghnorth_cli.ghn_training.config import RESUMABLE_CHANGES, GHNTrainConfig
from ghnorth_cli.ghn_training.data import TaskData, load_task
from ghnorth_cli.ghn_training.distributed import Distributed, share_sizes
from ghnorth_cli.ghn_training.ghnfile import write_ghn
from ghnorth_cli.ghn_training.loop import (
    Generators,
    RunState,
    StepCallback,
    ghn_config_for,
    new_ghn,
    run_steps,
)

log = logging.getLogger(__name__)
STATE_VERSION = 1


@dataclass
class GHNTrainResult:
    """What a finished run produced."""

    output: str
    steps: int
    seconds: float
    last: dict[str, Any]
    training: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GhnorthError(f"--device {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GhnorthError("--device cuda: no CUDA device is available")
    return device


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where training ran: host, CPU, threads and the device's name."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": str(device), "device_name": name, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def training_metadata(config: GHNTrainConfig, task: TaskData, state: RunState, device: torch.device,
                      dist: Distributed | None = None) -> dict:
    """The ``ghnorth.training`` header: what this GHN learned from, how long it took, where.

    ``world_size`` is the number of processes that trained it (torchrun), ``meta_batch_per_rank``
    how many of each step's ``meta_batch`` architectures each of them computed.
    """
    dist = dist or Distributed()
    return {
        "data": task.name, "classes": list(task.classes), "class_names": list(task.class_names),
        "img_size": config.img_size, "mean": list(task.mean), "std": list(task.std),
        "arch_space": config.arch_space, "extra_archs": list(config.extra_archs), "heldout": config.heldout,
        "steps": state.step, "meta_batch": config.meta_batch, "batch_size": config.batch_size,
        "train_images": len(task.train), "seconds": round(state.seconds, 1),
        "last_loss": state.history[-1]["loss"] if state.history else None,
        "world_size": dist.world_size, "meta_batch_per_rank": share_sizes(config.meta_batch, dist.world_size),
        "machine": machine_info(device), "amp": bool(config.amp), "channels_last": device.type == "cuda",
    }


def _save_state(config: GHNTrainConfig, ghn: GHN2, optimizer: torch.optim.Optimizer, gens: Generators,
                state: RunState) -> None:
    from ghnorth_cli.finetune.state import save_state

    save_state(config.state_path, {
        "kind": "ghnorth.train-ghn", "version_ghn": STATE_VERSION, "options": json.dumps(config.result_options()),
        "ghn": ghn.state_dict(), "optimizer": optimizer.state_dict(), "generators": gens.state(),
        "step": state.step, "seconds": state.seconds, "history": json.dumps(state.history),
    })


def _resume(config: GHNTrainConfig, ghn: GHN2, optimizer: torch.optim.Optimizer, gens: Generators) -> RunState:
    from ghnorth_cli.finetune.state import saved_state_or_none

    saved = saved_state_or_none(config.state_path)
    if saved is None:
        return RunState()
    if saved.get("kind") != "ghnorth.train-ghn":
        raise GhnorthError(f"cannot resume from {config.state_path}: not a train-ghn state")
    before, now = json.loads(saved["options"]), config.result_options()
    for key in sorted(set(before) | set(now)):
        if key not in RESUMABLE_CHANGES and before.get(key) != now.get(key):
            raise GhnorthError(f"cannot resume from {config.state_path}: option {key} was {before.get(key)!r} "
                               f"there, now {now.get(key)!r}")
    ghn.load_state_dict(saved["ghn"])
    optimizer.load_state_dict(saved["optimizer"])
    gens.load(saved["generators"])
    log.info("resuming at step %d of %d", saved["step"], config.steps)
    return RunState(step=saved["step"], seconds=saved["seconds"], history=json.loads(saved["history"]))


def _append_log(path: str | None, record: dict[str, Any]) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _check_output(config: GHNTrainConfig, *, resume: bool) -> None:
    check_writable(config.output)
    check_writable(config.log, what="log")
    check_distinct({"output": config.output, "log": config.log, "state": config.state_path})


def train_ghn(config: GHNTrainConfig, *, resume: bool = False, on_step: StepCallback | None = None,
              task: TaskData | None = None, dist: Distributed | None = None) -> GHNTrainResult:
    """Train a GHN-2 as ``config`` says (resuming from its state file when ``resume``); write the GHN file.

    ``dist``: this process's rank when torchrun started several (the process group joined, see
    :mod:`ghnorth_cli.ghn_training.distributed`); only rank 0 writes files, logs and calls ``on_step``.
    """
    from ghnorth_cli.checkpoint import provenance

    dist = dist or Distributed()
    _check_output(config, resume=resume)
    task = task or load_task(config.data, data_dir=config.data_dir, classes=config.classes, img_size=config.img_size)
    device = resolve_device(dist.device(config.device))
    if config.amp and device.type != "cuda":
        log.warning("warning: --amp applies on CUDA only; this %s run goes without it", device.type)
    config = config.replace(amp=device.type == "cuda" and config.amp is not False)  # recorded as used
    ghn = new_ghn(ghn_config_for(config, num_classes=task.num_classes), seed=config.seed).to(device)
    optimizer = torch.optim.AdamW(ghn.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gens = Generators.seeded(config.seed)
    state = _resume(config, ghn, optimizer, gens) if resume else RunState()
    log.info("training a GHN-2 (%d parameters) on %s (%d images, %d classes), space %s, device %s",
             sum(p.numel() for p in ghn.parameters()), task.name, len(task.train), task.num_classes,
             config.arch_space, device)

    def checkpoint() -> None:
        _save_state(config, ghn, optimizer, gens, state)
        history = [provenance(command="train-ghn", options=config.result_options(), seed=config.seed)]
        write_ghn(config.output, ghn, history=history,
                  training=training_metadata(config, task, state, device, dist))

    def step_done(record: dict[str, Any]) -> None:
        if not dist.is_main:
            return
        if record["step"] % config.log_every == 0 or record["step"] == config.steps:
            _append_log(config.log, record)
        if on_step is not None:
            on_step(record)

    run_steps(ghn, optimizer, task, config, gens=gens, state=state, device=device, checkpoint=checkpoint,
              on_step=step_done, dist=dist)
    return GHNTrainResult(config.output, state.step, state.seconds, state.history[-1] if state.history else {},
                          training_metadata(config, task, state, device, dist))
