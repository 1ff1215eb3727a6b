"""GHN files on the Hugging Face Hub, fetched with ``huggingface_hub``.

``huggingface_hub`` owns the download: its cache (``HF_HOME`` / ``HF_HUB_CACHE``), its offline
mode (``HF_HUB_OFFLINE=1``; ghnorth's ``GHNORTH_OFFLINE=1`` means the same here), resumption and
progress bar. ghnorth adds a pinned revision, checks of the size and sha256 where the registry
knows them, and one-line errors.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ghnorth_cli.errors import GhnorthError

log = logging.getLogger(__name__)

HUB_URL = "https://huggingface.co"
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"


class HubDownloadError(GhnorthError):
    """A file could not be fetched from the Hub (or its cache) or is not the expected one."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub model repository at a fixed revision, with what is known of its content."""

    repo_id: str
    filename: str
    revision: str  # a commit sha, or a branch when no sha is known
    size: int | None = None  # bytes, where known exactly
    sha256: str | None = None

    @property
    def url(self) -> str:
        """The file's direct download URL."""
        return f"{HUB_URL}/{self.repo_id}/resolve/{self.revision}/{self.filename}"



def hf_offline() -> bool:
    """``HF_HUB_OFFLINE`` read now (huggingface_hub reads it once, when imported)."""
    return os.environ.get(HF_OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def hub_download(file: HubFile, *, local_files_only: bool = False, progress: bool = True) -> Path:
    """The file's path in the Hugging Face cache, downloading it first when needed, then verified.

    Raises :class:`HubDownloadError` (one line) when it is neither cached nor downloadable
    (offline, missing, network or HTTP error) or its size or sha256 differs from the known ones.
    """
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from ghnorth_cli._version import __version__

    local_only = local_files_only or hf_offline()
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id=file.repo_id, filename=file.filename, revision=file.revision, local_files_only=local_only,
            library_name="ghnorth", library_version=__version__, tqdm_class=None if progress else _silent_tqdm())
    except hf_errors.LocalEntryNotFoundError:
        why = "offline and not in the Hugging Face cache" if local_only else "the Hub could not be reached"
        raise HubDownloadError(why) from None
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError, hf_errors.EntryNotFoundError):
        raise HubDownloadError(f"{file.url} does not exist on the Hub") from None
    except Exception as exc:  # HTTP, network and disk errors come in many types
        raise HubDownloadError(f"{type(exc).__name__}: {_first_line(exc)}") from None
    path = Path(path)
    verify_file(path, size=file.size, sha256=file.sha256, repo_id=file.repo_id)
    return path


def verify_file(path: Path, *, size: int | None, sha256: str | None, repo_id: str) -> None:
    """Raise :class:`HubDownloadError` unless ``path`` has the given size and sha256 (``None``: unchecked)."""
    hint = f"delete it (`hf cache rm model/{repo_id}`) to download it again"
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise HubDownloadError(f"{path} has {got_size} bytes, not the released file's {size}; {hint}")
    if sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise HubDownloadError(f"{path} has sha256 {digest.hexdigest()}, not the released file's {sha256}; "
                                   f"{hint}")


def snapshot_commit(path: Path) -> str | None:
    """The commit a file in the Hugging Face cache came from (``.../snapshots/<commit>/<file>``)."""
    parent = path.parent
    return parent.name if parent.parent.name == "snapshots" else None


def _silent_tqdm() -> type:
    """huggingface_hub's progress bar class, drawing nothing (``progress=False``)."""
    from huggingface_hub.utils import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
