"""TensorBoard logging for training runs (``--tensorboard DIR``): one run per subfolder of DIR.

Written with PyTorch's ``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard``
package: ``pip install "ghnorth[tensorboard]"``. Read the runs with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ghnorth_cli.errors import GhnorthError

INSTALL_HINT = 'pip install "ghnorth[tensorboard]"'


def require_tensorboard() -> None:
    """Raise :class:`GhnorthError` (one line, with the install command) when tensorboard is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise GhnorthError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}")


def run_dir(root: str | Path, *parts: Any) -> str:
    """``ROOT/<YYYYmmdd-HHMMSS>-<parts joined by '-'>``, the parts made safe for a folder name."""
    name = "-".join([time.strftime("%Y%m%d-%H%M%S"), *(str(p) for p in parts if p not in (None, ""))])
    return str(Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-"))


class ScalarLog:
    """Scalars of one run, written as TensorBoard event files into ``log_dir`` (created).

    Raises :class:`GhnorthError` (one line) when tensorboard is not installed or ``log_dir``
    cannot be made. Use as a context manager: the events are flushed and the file closed on exit.
    """

    def __init__(self, log_dir: str | Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        try:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GhnorthError(f"--tensorboard: cannot make {log_dir}: {exc.strerror or exc}") from None
        self.log_dir = str(log_dir)
        self.writer = SummaryWriter(log_dir=self.log_dir)

    def add(self, values: Mapping[str, float | int | None], *, step: int, prefix: str = "") -> None:
        """One scalar per ``prefix + name`` at ``step``; None values are left out."""
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(prefix + name, float(value), global_step=step)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
