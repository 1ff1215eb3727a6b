"""Output files: refuse unwritable paths before any work, and write atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ghnorth_cli.errors import GhnorthError

STDIO = "-"


def check_writable(path: str | Path | None, *, what: str = "") -> None:
    """Fail early, with one clear line, when ``path`` cannot become a file (``None`` and ``"-"`` pass)."""
    if path is None or str(path) == STDIO:
        return
    label = f"{what} {path}" if what else str(path)
    target = Path(path)
    if target.is_dir():
        raise GhnorthError(f"cannot write {label}: is a directory")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise GhnorthError(f"cannot write {label}: no such directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GhnorthError(f"cannot write {label}: directory {folder} is not writable")


def refuse_binary_terminal(path: str | Path | None) -> None:
    """Refuse ``-`` (stdout) for binary output when stdout is a terminal, as gzip does: the
    bytes would flood the screen. Raises :class:`GhnorthError`; any other path passes."""
    if path is not None and str(path) == STDIO and sys.stdout.isatty():
        raise GhnorthError("refusing to write binary data to a terminal: redirect stdout (> FILE, | ghnorth ...) "
                           "or pass -o FILE")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to ``path`` via a temporary file in the same folder; ``"-"`` is stdout."""
    write_chunks_atomic(path, [data])


def write_chunks_atomic(path: str | Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Write the concatenation of ``chunks`` like :func:`write_bytes_atomic`, without joining them
    first (a large checkpoint's tensors go to the file straight from their memory)."""
    if str(path) == STDIO:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise GhnorthError(f"cannot write {target}: is a directory")
    folder = target.parent if str(target.parent) else Path(".")
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".tmp",
                                         delete=False) as tmp:
            tmp_name = tmp.name
            for chunk in chunks:
                tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise GhnorthError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
