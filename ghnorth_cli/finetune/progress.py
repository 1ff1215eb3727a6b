"""Training progress on stderr: a live bar on a terminal, otherwise one line per epoch."""

from __future__ import annotations

import sys
from typing import Any, TextIO


class ConsoleProgress:
    """Callbacks for :func:`ghnorth_cli.finetune.finetune` that report on ``stream`` (stderr)."""

    def __init__(self, *, epochs: int, stream: TextIO | None = None, live: bool | None = None, width: int = 24):
        self.epochs, self.width = epochs, width
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live

    def on_step(self, epoch: int, step: int, steps: int, loss: float, acc: float) -> None:
        if not self.live:
            return
        filled = round(self.width * step / steps)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\repoch {epoch}/{self.epochs} [{bar}] {step}/{steps} loss {loss:.4f} acc {acc:5.1f}%")
        self.stream.flush()

    def on_epoch(self, record: dict[str, Any]) -> None:
        line = (f"epoch {record['epoch']}/{self.epochs} loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.1f}%")
        if "val_acc" in record:
            line += f" val_loss {record['val_loss']:.4f} val_acc {record['val_acc']:.1f}%"
        line += f" lr {record['lr']:.3g} {record['images_per_second']:.0f} img/s"
        prefix = "\r\033[K" if self.live else ""
        self.stream.write(prefix + line + "\n")
        self.stream.flush()
