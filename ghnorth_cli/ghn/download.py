"""Downloading a file atomically, with progress on stderr and a git-blob integrity check."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 30


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


def _stream_to(response, out: IO[bytes], progress: Progress) -> None:
    for chunk in iter(lambda: response.read(CHUNK), b""):
        out.write(chunk)
        progress.advance(len(chunk))


def download(url: str, dest: str | Path, *, git_blob: str | None = None, progress: bool = True,
             timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` via a temporary file beside it; verify ``git_blob`` if given.

    ``dest`` appears only complete and verified: an interrupted or corrupt download leaves
    nothing behind. Raises :class:`DownloadError` with the reason.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = response.headers.get("Content-Length")
                    with Progress(f"downloading {dest.name}", total=int(total) if total else None, unit="bytes",
                                  enabled=None if progress else False) as bar:
                        _stream_to(response, out, bar)
            except urllib.error.HTTPError as exc:
                raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(url, str(reason)) from None
        if git_blob is not None:
            got = git_blob_id(tmp)
            if got != git_blob:
                raise DownloadError(url, f"the download is corrupt (git blob id {got}, expected {git_blob}); "
                                         "nothing was kept")
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
