"""Resumable training state: saved atomically, loaded with ``weights_only=True``.

Everything in the file is a tensor or a plain container of numbers and strings, so that it loads
without unpickling arbitrary objects. Random number generator states are stored as the uint8
tensors that ``torch.Generator.get_state()`` returns.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ghnorth_cli.errors import GhnorthError

STATE_VERSION = 1
# Options that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"resume", "save_every", "state", "output", "metrics", "log", "compile", "device",
                               "tensorboard"})


def default_state_path(output: str | None) -> str | None:
    """Where ``--save-every`` keeps its state when ``--state`` is not given: next to the output."""
    if output is None or output == "-":
        return None
    return f"{output}.state.pt"


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` to a temporary file in the same folder, then rename it."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": STATE_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (``weights_only=True``)."""
    target = Path(path)
    if not target.is_file():
        raise GhnorthError(f"nothing to resume: no training state at {target} (it is written by --save-every)")
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, disallowed content
        raise GhnorthError(f"cannot resume from {target}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise GhnorthError(f"cannot resume from {target}: not a ghnorth finetune state (version {STATE_VERSION})")
    return state


def check_same_run(saved: dict[str, Any], current: dict[str, Any], *, path: str | Path) -> None:
    """Refuse to resume with options that would change the result."""
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        if saved.get(key) != current.get(key):
            raise GhnorthError(
                f"cannot resume from {path}: option {key} was {saved.get(key)!r} there, now {current.get(key)!r}"
            )
