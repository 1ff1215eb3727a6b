"""Output files: refuse unwritable paths before any work, and write atomically.

What ``-o PATH`` does to what is already at ``PATH``:

* a regular file (or nothing): replaced atomically (a temporary file in the same folder, then a rename);
* a symbolic link: the file it points to is replaced the same way; the link stays a link;
* a character device (``/dev/null``) or a FIFO: written through, in place; the node stays;
* a directory, a block device or a socket: refused before any work.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ghnorth_cli.errors import GhnorthError

STDIO = "-"
#: Prefix and suffixes of the temporary files this module and the downloader leave while writing.
TMP_PREFIX = "."
TMP_SUFFIXES = (".tmp", ".part")


def output_target(path: str | Path) -> Path:
    """The file a write to ``path`` really changes: symbolic links followed (the link itself is kept)."""
    p = Path(path)
    if not p.is_symlink():
        return p
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            return p  # e.g. /dev/fd/63 from `-o >(cmd)`: opened through the link, written in place
    except OSError:
        pass  # a dangling link: its target is created
    return Path(os.path.realpath(p))


def _kind(mode: int) -> str | None:
    """``None`` for a regular file, else the name of the special file type."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


_WRITE_THROUGH = ("a character device", "a FIFO")


def _existing_kind(target: Path) -> str | None | bool:
    """``False`` when nothing is at ``target``, else :func:`_kind` of what is there."""
    try:
        return _kind(target.stat().st_mode)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise GhnorthError(f"cannot write {target}: {exc.strerror or exc}") from None


def check_writable(path: str | Path | None, *, what: str = "") -> None:
    """Fail early, with one clear line, when ``path`` cannot become a file (``None`` and ``"-"`` pass)."""
    if path is None or str(path) == STDIO:
        return
    label = f"{what} {path}" if what else str(path)
    if str(path).endswith(("/", os.sep)):  # a model folder (``-o DIR/``): the folder or its parent must be writable
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        if Path(path).exists() and not Path(path).is_dir():
            raise GhnorthError(f"cannot write {label}: exists and is not a folder")
        if not folder.is_dir():
            raise GhnorthError(f"cannot write {label}: no such directory {folder}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise GhnorthError(f"cannot write {label}: directory {folder} is not writable")
        return
    target = output_target(path)
    kind = _existing_kind(target)
    if kind in _WRITE_THROUGH:
        if not os.access(target, os.W_OK):
            raise GhnorthError(f"cannot write {label}: {kind} without write permission")
        return
    if kind:
        raise GhnorthError(f"cannot write {label}: is {kind}" if kind != "a directory"
                           else f"cannot write {label}: is a directory")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise GhnorthError(f"cannot write {label}: no such directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GhnorthError(f"cannot write {label}: directory {folder} is not writable")


def read_text(path: str | Path, *, limit: int | None = None) -> str:
    """A UTF-8 text input (JSON, CSV, a list of names), refused past ``limit`` bytes before it is all read.

    ``/dev/zero``, an endless FIFO or a huge file fails with one line instead of filling memory.
    Raises :class:`OSError` as :meth:`Path.read_text` does, :class:`ValueError` for bad UTF-8 and
    :class:`GhnorthError` past the limit (default :data:`~ghnorth_cli.limits.MAX_TEXT_BYTES`).
    """
    from ghnorth_cli.limits import MAX_TEXT_BYTES

    limit = MAX_TEXT_BYTES if limit is None else limit
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise GhnorthError(f"{path}: more than {limit} bytes; not a file ghnorth reads as text")
    return data.decode("utf-8")


def same_output(a: str | Path, b: str | Path) -> bool:
    """True when writing ``a`` and ``b`` would change the same file (``"-"`` is stdout)."""
    if STDIO in (str(a), str(b)):
        return str(a) == str(b)
    ta, tb = output_target(a), output_target(b)
    try:
        return os.path.samefile(ta, tb)
    except OSError:
        return os.path.abspath(ta) == os.path.abspath(tb)


def check_distinct(outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before any work, two outputs of one command that would land on one file (``{what: path}``)."""
    seen: list[tuple[str, str | Path]] = []
    for what, path in outputs.items():
        if path is None:
            continue
        for other, earlier in seen:
            if same_output(earlier, path):
                raise GhnorthError(f"{what} {path} is also the {other} output; give each output its own file")
        seen.append((what, path))
def refuse_binary_terminal(path: str | Path | None) -> None:
    """Refuse ``-`` (stdout) for binary output when stdout is a terminal, as gzip does: the
    bytes would flood the screen. Raises :class:`GhnorthError`; any other path passes."""
    if path is not None and str(path) == STDIO and sys.stdout.isatty():
        raise GhnorthError("refusing to write binary data to a terminal: redirect stdout (> FILE, | ghnorth ...) "
                           "or pass -o FILE")


def current_umask() -> int:
    """The process's file-creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``, waiting whenever a non-blocking pipe is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


def write_stdout(data: bytes) -> None:
    """All of ``data`` on stdout, or an error: short writes to pipes are retried until done."""
    stream = sys.stdout.buffer
    stream.flush()
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stdout (tests, notebooks)
        stream.write(data)
        stream.flush()
        return
    write_all(fd, data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_stale(folder: str | Path, name: str) -> list[Path]:
    """Remove temporary files of ``name`` left in ``folder`` by a ghnorth process that no longer runs.

    Temporary names are ``.NAME.PID.RANDOM.tmp`` (or ``.part``); those whose process is gone were
    left by a SIGKILL or a power cut. Returns what was removed.
    """
    removed = []
    prefix = f"{TMP_PREFIX}{name}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.name.endswith(TMP_SUFFIXES):
            continue
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def temp_path(target: Path, *, suffix: str = TMP_SUFFIXES[0]) -> tuple[int, str]:
    """A new temporary file beside ``target`` (fd, name), named so :func:`sweep_stale` can find it later."""
    folder = target.parent if str(target.parent) else Path(".")
    sweep_stale(folder, target.name)
    return tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{target.name}.{os.getpid()}.", suffix=suffix)


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file object whose content appears at ``path`` only once the block ends without error.

    Regular files (and symlink targets) are written via a temporary file in the same folder and a
    rename; a character device or FIFO is written in place; ``"-"`` is stdout (bytes collected, then
    written whole). ``mode`` defaults to the usual ``0o666 & ~umask``. Raises :class:`GhnorthError`
    for directories, block devices, sockets and failed writes.
    """
    if str(path) == STDIO:
        buffer = io.BytesIO()
        yield buffer
        write_stdout(buffer.getvalue())
        return
    target = output_target(path)
    kind = _existing_kind(target)
    if kind in _WRITE_THROUGH:
        buffer = io.BytesIO()
        yield buffer
        try:
            fd = os.open(target, os.O_WRONLY)
            try:
                write_all(fd, buffer.getvalue())
            finally:
                os.close(fd)
        except OSError as exc:
            raise GhnorthError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    if kind:
        raise GhnorthError(f"cannot write {path}: is {kind}")
    tmp_name = None
    try:
        fd, tmp_name = temp_path(target)
        with os.fdopen(fd, "wb") as tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, (0o666 & ~current_umask()) if mode is None else mode)  # mkstemp makes 0600 files
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise GhnorthError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to ``path`` as :func:`atomic_writer` does; ``"-"`` is stdout."""
    with atomic_writer(path) as f:
        f.write(data)


def write_chunks_atomic(path: str | Path, chunks: Iterable[bytes | memoryview]) -> None:
    """Write the concatenation of ``chunks`` as :func:`write_bytes_atomic` does, without joining them
    first (a large checkpoint's tensors go to the file straight from their memory)."""
    with atomic_writer(path) as f:
        for chunk in chunks:
            f.write(chunk)
