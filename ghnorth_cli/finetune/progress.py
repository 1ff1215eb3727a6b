"""Fine-tuning progress in the project's one style (:mod:`ghnorth_cli.progress`): a bar over all steps, one line per epoch."""

from __future__ import annotations

from typing import Any

from ghnorth_cli.progress import Progress


def epoch_line(record: dict[str, Any], *, epochs: int) -> str:
    """``epoch 3/10 loss 0.4120 acc 85.2% [val_loss ... val_acc ...] lr 0.01 1234 img/s`` for one epoch record."""
    line = f"epoch {record['epoch']}/{epochs} loss {record['train_loss']:.4f} acc {record['train_acc']:.1f}%"
    if "val_acc" in record:
        line += f" val_loss {record['val_loss']:.4f} val_acc {record['val_acc']:.1f}%"
    return line + f" lr {record['lr']:.3g} {record['images_per_second']:.0f} img/s"


class FinetuneProgress(Progress):
    """A :class:`~ghnorth_cli.progress.Progress` whose ``on_step`` / ``on_epoch`` are
    :func:`ghnorth_cli.finetune.finetune`'s callbacks (the total, epochs x steps, is known at the first step)."""

    def __init__(self, *, epochs: int, **kwargs: Any) -> None:
        super().__init__("fine-tuning", total=None, **kwargs)
        self.epochs = epochs

    def on_step(self, epoch: int, step: int, steps: int, loss: float, acc: float) -> None:
        self.update(completed=(epoch - 1) * steps + step, total=self.epochs * steps,
                    status=f"epoch {epoch}/{self.epochs} loss {loss:.4f} acc {acc:.1f}%")

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.line(epoch_line(record, epochs=self.epochs))
