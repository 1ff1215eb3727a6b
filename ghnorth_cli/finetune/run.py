"""``finetune(config) -> FinetuneResult``: data, model, training, evaluation and outputs."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.files import check_distinct, check_writable
from ghnorth_cli.finetune.config import FinetuneConfig
from ghnorth_cli.finetune.data import load_dataset

from ghnorth_cli.finetune.model import (DEFAULT_IMG_SIZE, StartingModel, build_starting_model,
                                        check_pretrained_available)
from ghnorth_cli.finetune.splits import FinetuneSplits, make_splits
from ghnorth_cli.finetune.state import check_same_run, default_state_path, save_state, saved_state_or_none
from ghnorth_cli.finetune.trainer import NonFiniteLossError, StepCallback, Trainer
from ghnorth_cli.models import ModelSpec, resolve_spec

if TYPE_CHECKING:
    from ghnorth_cli.tensorboard_log import ScalarLog

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class FinetuneResult:
    """The fine-tuned model and the numbers that describe the run (``metrics`` as in --metrics)."""

    model: nn.Module
    spec: ModelSpec
    metrics: dict[str, Any]
    epochs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Progress:
    """What a resumable state carries besides the trainer's own state."""

    epoch: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "val_acc", "val_loss"}
    best_model: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    train_images: int = 0


def _scalar_log(log_dir: str | None) -> contextlib.AbstractContextManager[ScalarLog | None]:
    """TensorBoard scalars into ``log_dir`` (``--tensorboard``), or nothing."""
    if log_dir is None:
        return contextlib.nullcontext()
    from ghnorth_cli.tensorboard_log import ScalarLog

    return ScalarLog(log_dir)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GhnorthError(f"--device {name}: CUDA is not available here")
    return device


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` (warn only) for the duration, then as before."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def _state_path(config: FinetuneConfig) -> str | None:
    return config.state or default_state_path(config.output)


def _check_outputs(config: FinetuneConfig) -> None:
    if (config.save_every or config.resume) and _state_path(config) is None:
        raise GhnorthError("--save-every and --resume need --state FILE (or -o OUT, whose state is OUT.state.pt)")
    outputs = {"output": config.output, "metrics": config.metrics, "log": config.log,
               "state": _state_path(config) if config.save_every else None}
    for what, path in outputs.items():
        check_writable(path, what=what)
    check_distinct(outputs)


def _write_text_atomic(path: str, text: str) -> None:
    from ghnorth_cli.checkpoint import write_bytes_atomic

    write_bytes_atomic(path, text.encode())


def _append_log(path: str | None, record: dict[str, Any]) -> None:
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def _save_progress(path: str, trainer: Trainer, progress: _Progress, config: FinetuneConfig) -> None:
    save_state(path, {
        **trainer.state_dict(), "config": config.to_dict(), "epoch": progress.epoch, "records": progress.records,
        "best": progress.best, "best_model": progress.best_model, "train_seconds": progress.train_seconds,
        "train_images": progress.train_images,
    })
    log.debug("saved training state after epoch %d to %s", progress.epoch, path)


def _resume(path: str, trainer: Trainer, config: FinetuneConfig) -> _Progress:
    state = saved_state_or_none(path)
    if state is None:
        return _Progress()
    check_same_run(state["config"], config.to_dict(), path=path)
    trainer.load_state_dict(state)
    log.info("resuming after epoch %d from %s", state["epoch"], path)
    return _Progress(int(state["epoch"]), list(state["records"]), state["best"], state["best_model"],
                     float(state["train_seconds"]), int(state["train_images"]))


def _epoch_record(epoch: int, trainer: Trainer, train: dict[str, float], val: dict[str, float] | None) -> dict:
    record = {"epoch": epoch, "step": trainer.step, "lr": trainer.lr(), "train_loss": train["train_loss"],
              "train_acc": train["train_acc"], "train_seconds": train["train_seconds"],
              "images_per_second": train["train_images"] / max(train["train_seconds"], 1e-9)}
    if val is not None:
        record.update(val_loss=val["loss"], val_acc=val["acc"])
    return record


def _train_epochs(config: FinetuneConfig, trainer: Trainer, splits: FinetuneSplits, progress: _Progress, *,
                  state_path: str | None, on_step: StepCallback | None, on_epoch: EpochCallback | None,
                  scalars: ScalarLog | None = None) -> None:
    on_batch = (lambda step, values: scalars.add(values, step=step, prefix="step/")) if scalars else None
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        try:
            train = trainer.train_epoch(epoch, on_step=on_step, on_batch=on_batch)
        except NonFiniteLossError as exc:
            saved = progress.epoch - progress.epoch % config.save_every if config.save_every else 0
            kept = (f"the last good state (epoch {saved}) is kept in {state_path}" if saved
                    else "no output was written")
            raise GhnorthError(f"{exc}; {kept}") from None
        val = trainer.evaluate(splits.val) if splits.val is not None else None
        record = _epoch_record(epoch, trainer, train, val)
        progress.epoch = epoch
        progress.records.append(record)
        progress.train_seconds += train["train_seconds"]
        progress.train_images += int(train["train_images"])
        if val is not None and (progress.best is None or val["acc"] > progress.best["val_acc"]):
            progress.best = {"epoch": epoch, "val_acc": val["acc"], "val_loss": val["loss"]}
            progress.best_model = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
        _append_log(config.log, record)
        if scalars is not None:
            scalars.add({k: v for k, v in record.items() if k not in ("epoch", "step")}, step=epoch, prefix="epoch/")
        if config.save_every and (epoch % config.save_every == 0 or epoch == config.epochs):
            _save_progress(state_path, trainer, progress, config)
        if on_epoch is not None:
            on_epoch(record)


def _final_metrics(trainer: Trainer, splits: FinetuneSplits, progress: _Progress) -> dict[str, Any]:
    last = progress.records[-1] if progress.records else {}
    test = trainer.evaluate(splits.test)
    final = {"epoch": progress.epoch, "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
             "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
             "test_loss": test["loss"], "test_acc": test["acc"]}
    best = None
    if progress.best is not None and progress.best["epoch"] == progress.epoch:
        # The best weights are the last ones: a second pass over the test set (10,000 images for
        # Fashion-MNIST, most of a few-shot run's time on a CPU) would give the same numbers.
        best = {**progress.best, "test_loss": test["loss"], "test_acc": test["acc"]}
    elif progress.best is not None:
        last_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.model.load_state_dict(progress.best_model)
        best_test = trainer.evaluate(splits.test)
        trainer.model.load_state_dict(last_weights)
        best = {**progress.best, "test_loss": best_test["loss"], "test_acc": best_test["acc"]}
    return {"final": final, "best": best}


def _image_size(config: FinetuneConfig, start: StartingModel) -> int:
    return start.spec.img_size or config.img_size or DEFAULT_IMG_SIZE


def _write_outputs(config: FinetuneConfig, result: FinetuneResult, start: StartingModel) -> None:
    from ghnorth_cli.checkpoint import model_tensors, provenance, write_checkpoint

    if config.output is not None:
        tensors, order = model_tensors(result.model)
        metrics = result.metrics
        chosen = metrics["best"] if config.save_model == "best" and metrics["best"] else metrics["final"]
        entry = provenance(
            command="finetune", options=config.to_dict(), seed=config.seed, inputs=start.inputs,
            data=metrics["dataset"], weights=f"epoch {chosen['epoch']}", test_acc=chosen["test_acc"],
            classifier=start.classifier,
        )
        write_checkpoint(config.output, tensors, spec=result.spec, order=order, history=[*start.history, entry])
    if config.metrics is not None:
        _write_text_atomic(config.metrics, json.dumps(result.metrics, indent=2, sort_keys=True) + "\n")


def _describe_data(config: FinetuneConfig, dataset, splits: FinetuneSplits) -> dict[str, Any]:
    return {"name": dataset.name, "classes": dataset.num_classes, "train": len(splits.train),
            "val": len(splits.val) if splits.val is not None else 0, "test": len(splits.test),
            "labels_per_class": config.labels_per_class, "data_seed": config.data_seed}


def finetune(
    config: FinetuneConfig, *, on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None
) -> FinetuneResult:
    """Fine-tune ``config.arch`` from ``config.init`` on ``config.data``; write the outputs it names."""
    from ghnorth_cli.checkpoint import library_versions

    wall_start = time.perf_counter()
    _check_outputs(config)
    device = resolve_device(config.device)
    if config.init == "pretrained" and config.arch is not None:
        check_pretrained_available(resolve_spec(config.arch))  # before the data: offline fails at once
    config = config.effective(device.type)  # records say what ran, not what was asked
    dataset = load_dataset(config.data, data_dir=config.data_dir, download=config.download,
                           img_size=config.img_size or DEFAULT_IMG_SIZE)
    splits = make_splits(dataset, labels_per_class=config.labels_per_class, val_size=config.val_size,
                         seed=config.data_seed, test_size=config.test_size)
    start = build_starting_model(config, num_classes=dataset.num_classes, data_name=dataset.name)
    log.info("%s", start.describe(config.init))
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with _deterministic(config.deterministic), torch.random.fork_rng(devices=cuda_devices), \
            _scalar_log(config.tensorboard) as scalars:
        torch.manual_seed(config.seed)
        trainer = Trainer(start.model, config=config, train=splits.train, mean=dataset.mean, std=dataset.std,
                          img_size=_image_size(config, start), device=device)
        state_path = _state_path(config)
        progress = _resume(state_path, trainer, config) if config.resume else _Progress()
        if config.log is not None:
            _write_text_atomic(config.log, "".join(json.dumps(r, sort_keys=True) + "\n" for r in progress.records))
        _train_epochs(config, trainer, splits, progress, state_path=state_path, on_step=on_step, on_epoch=on_epoch,
                      scalars=scalars)
        evaluation = _final_metrics(trainer, splits, progress)
        if scalars is not None:
            final, best = evaluation["final"], evaluation["best"] or {}
            scalars.add({"test_loss": final["test_loss"], "test_acc": final["test_acc"],
                         "best_test_acc": best.get("test_acc")}, step=progress.epoch, prefix="epoch/")
    model = trainer.model.to("cpu")
    if config.save_model == "best" and progress.best_model is not None:
        model.load_state_dict(progress.best_model)
    metrics = {
        **evaluation,
        "best_epoch": progress.best["epoch"] if progress.best else None,
        "epochs": progress.epoch,
        "train_seconds": progress.train_seconds,
        "images_per_second": progress.train_images / max(progress.train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - wall_start,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "dataset": _describe_data(config, dataset, splits),
        "model": start.spec.to_dict(),
        "init": {"method": config.init_method, **start.report()},
        "config": config.to_dict(),
        "versions": library_versions(),
    }
    result = FinetuneResult(model, start.spec, metrics, progress.records)
    _write_outputs(config, result, start)
    return result
