"""Downloading a file atomically, with progress on stderr and a git-blob integrity check."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.files import temp_path
from ghnorth_cli.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 30
#: Below this mean rate (bytes/s) after :data:`GRACE_S` seconds a download is given up (a 50 MB GHN at
#: 20 kB/s still arrives in 42 minutes; a server dripping a byte every few seconds is stopped in a minute).
MIN_RATE = 20_000
GRACE_S = 60.0


class DownloadError(GhnorthError):
    """A download failed or gave a file other than the expected one."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot download {url}: {reason}")
        self.url, self.reason = url, reason


def git_blob_id(path: str | Path) -> str:
    """The id git gives a file's content: sha1 of ``b"blob <size>\\0" + content``."""
    p = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % p.stat().st_size)
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_to(response, out: IO[bytes], progress: Progress, *, url: str, min_rate: float, grace_s: float) -> int:
    """Copy the body; fail when, after ``grace_s`` seconds, the mean rate falls below ``min_rate`` bytes/s."""
    start, done = time.monotonic(), 0
    read = getattr(response, "read1", response.read)  # read1: whatever arrived, so a trickle cannot stall one call
    while chunk := read(CHUNK):
        out.write(chunk)
        done += len(chunk)
        progress.advance(len(chunk))
        elapsed = time.monotonic() - start
        if elapsed > grace_s and done < min_rate * elapsed:
            raise DownloadError(url, f"too slow ({done} bytes in {elapsed:.0f} s, below {min_rate:.0f} bytes/s); "
                                     "nothing was kept")
    return done


def _open(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    return urllib.request.urlopen(request, timeout=timeout)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GhnorthError(f"cannot use the download folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GhnorthError(f"cannot use the download folder {folder}: not writable")


def download(url: str, dest: str | Path, *, git_blob: str | None = None, progress: bool = True,
             timeout: float = TIMEOUT_S, verify: Callable[[Path], None] | None = None,
             min_rate: float = MIN_RATE, grace_s: float = GRACE_S) -> Path:
    """Download ``url`` to ``dest`` via a temporary file beside it; verify it before it appears.

    The body must be as long as the server's Content-Length, not content-encoded, match
    ``git_blob`` if given, and pass ``verify(temporary_path)`` (e.g. load as a GHN) if given: a
    file that fails any check is never kept. A server slower than ``min_rate`` bytes/s on average
    after ``grace_s`` seconds, or silent for ``timeout`` seconds, is given up on. Raises
    :class:`DownloadError` with the reason (:class:`GhnorthError` for an unusable ``dest`` folder).
    """
    dest = Path(dest)
    _make_folder(dest.parent)
    fd, tmp = temp_path(dest, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with _open(url, timeout) as response:
                    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                    if encoding not in ("", "identity"):
                        raise DownloadError(url, f"the server sent {encoding}-encoded content; nothing was kept")
                    total = _content_length(response.headers.get("Content-Length"))
                    with Progress(f"downloading {dest.name}", total=total, unit="bytes",
                                  enabled=None if progress else False) as bar:
                        done = _stream_to(response, out, bar, url=url, min_rate=min_rate, grace_s=grace_s)
            except urllib.error.HTTPError as exc:
                raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(url, f"{str(reason) or type(exc).__name__}; nothing was kept") from None
        if total is not None and done != total:
            raise DownloadError(url, f"truncated: {done} of {total} bytes arrived; nothing was kept")
        if git_blob is not None:
            got = git_blob_id(tmp)
            if got != git_blob:
                raise DownloadError(url, f"the download is corrupt (git blob id {got}, expected {git_blob}); "
                                         "nothing was kept")
        if verify is not None:
            try:
                verify(Path(tmp))
            except GhnorthError as exc:
                reason = str(exc).replace(tmp, "the download")
                raise DownloadError(url, f"{reason}; nothing was kept") from None
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a shared cache unreadable to others
        os.replace(tmp, dest)
        tmp = None
        log.info("saved %s", dest)
        return dest
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None and int(value) >= 0 else None
    except ValueError:
        return None
