"""One model, its optimizer, scheduler and random generators, and one epoch of training."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.augment import random_crop_flip, to_model_input
from ghnorth_cli.finetune.config import FinetuneConfig
from ghnorth_cli.finetune.data import Split

StepCallback = Callable[[int, int, int, float, float], None]  # epoch, step, steps, mean loss, mean acc %
# global step, {"loss", "acc" (%), "lr", "grad_norm", "images_per_second"} of that one batch
BatchCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(GhnorthError):
    """The training loss became NaN or infinite."""

    def __init__(self, *, epoch: int, step: int, value: float):
        super().__init__(f"loss is {value} at epoch {epoch}, step {step}; stopped before updating the weights")
        self.epoch, self.step = epoch, step


def timm_optimizer_name(opt: str) -> str:
    """SGD here is plain SGD with momentum (the paper's), which timm calls "momentum"."""
    return {"sgd": "momentum", "adamw": "adamw"}[opt]


class Trainer:
    """Trains ``model`` on a training split held on ``device``; evaluates any split in large batches."""

    def __init__(
        self,
        model: nn.Module,
        *,
        config: FinetuneConfig,
        train: Split,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        img_size: int,
        device: torch.device,
    ):
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        self.config, self.device, self.img_size = config, device, img_size
        self.mean, self.std = mean, std
        cuda = device.type == "cuda"
        self.autocast = cuda and config.amp
        self.channels_last = cuda and config.channels_last
        self.model = model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.train_x, self.train_y = train.images.to(device), train.labels.to(device)
        if len(train) < 2:
            raise GhnorthError(f"the training set has {len(train)} image(s); at least 2 are needed")
        self.batch_size = min(config.batch_size, len(train))
        full, rest = divmod(len(train), self.batch_size)
        self.steps_per_epoch = full + (1 if rest >= 2 else 0)  # a last batch of 1 would break batch norm
        self.optimizer = create_optimizer_v2(
            self.model, opt=timm_optimizer_name(config.opt), lr=config.lr, weight_decay=config.wd,
            momentum=config.momentum, filter_bias_and_bn=False,
        )
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched="cosine", num_epochs=config.epochs - config.warmup_epochs,
            warmup_epochs=config.warmup_epochs, warmup_prefix=True, warmup_lr=config.lr * 0.01, min_lr=0.0,
            step_on_epochs=False, updates_per_epoch=self.steps_per_epoch,
        )  # linear warm-up, then a cosine from lr to 0 over the remaining epochs
        self.shuffle_gen = torch.Generator().manual_seed(config.seed)
        self.augment_gen = torch.Generator(device=device).manual_seed(config.seed)
        self.step = 0

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_input(images, mean=self.mean, std=self.std, img_size=self.img_size,
                              channels_last=self.channels_last)

    def _loss_and_correct(self, images: torch.Tensor, labels: torch.Tensor, *, smoothing: float = 0.0):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.forward(self._inputs(images))
        logits = logits.float()
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        return loss, (logits.argmax(1) == labels).sum()

    def train_epoch(self, epoch: int, *, on_step: StepCallback | None = None,
                    on_batch: BatchCallback | None = None) -> dict[str, float]:
        """One pass over the shuffled, augmented training set; mean loss and accuracy (%).

        ``on_batch`` also gets each batch's gradient norm (before clipping), which costs a pass
        over the gradients: it is computed only when clipping or when ``on_batch`` is given.
        """
        cfg = self.config
        self.model.train()
        order = torch.randperm(len(self.train_y), generator=self.shuffle_gen).to(self.device)
        loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
        for i in range(self.steps_per_epoch):
            batch_start = time.perf_counter()
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            images = random_crop_flip(self.train_x[index], padding=cfg.crop_padding, flip=cfg.hflip,
                                      generator=self.augment_gen)
            labels = self.train_y[index]
            loss, hits = self._loss_and_correct(images, labels, smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(epoch=epoch, step=i + 1, value=value)
            grad_norm = None
            if cfg.clip_grad or on_batch is not None:  # an infinite threshold only measures the norm
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad or math.inf)
            lr = self.lr()
            self.optimizer.step()
            self.step += 1
            self.scheduler.step_update(num_updates=self.step)
            n = len(labels)
            loss_sum, correct, seen = loss_sum + value * n, correct + int(hits), seen + n
            if on_step is not None:
                on_step(epoch, i + 1, self.steps_per_epoch, loss_sum / seen, 100.0 * correct / seen)
            if on_batch is not None:
                on_batch(self.step, {"loss": value, "acc": 100.0 * int(hits) / n, "lr": lr,
                                     "grad_norm": float(grad_norm),
                                     "images_per_second": n / max(time.perf_counter() - batch_start, 1e-9)})
        seconds = time.perf_counter() - start
        return {"train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
                "train_images": seen, "train_seconds": seconds}

    @torch.inference_mode()
    def evaluate(self, split: Split) -> dict[str, float]:
        """Mean cross-entropy and accuracy (%) of the model on ``split`` (no augmentation)."""
        self.model.eval()
        loss_sum, correct = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        for start in range(0, len(split), self.config.eval_batch_size):
            images = split.images[start : start + self.config.eval_batch_size].to(self.device, non_blocking=True)
            labels = split.labels[start : start + self.config.eval_batch_size].to(self.device, non_blocking=True)
            loss, hits = self._loss_and_correct(images, labels)
            loss_sum += loss * len(labels)
            correct += hits
        n = max(len(split), 1)
        return {"loss": float(loss_sum) / n, "acc": 100.0 * float(correct) / n}

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"shuffle": self.shuffle_gen.get_state(), "augment": self.augment_gen.get_state(),
                    "torch": torch.get_rng_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.step_update(num_updates=self.step)
        rng = state["rng"]
        self.shuffle_gen.set_state(rng["shuffle"])
        self.augment_gen.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
