"""Known GHNs and the local cache: a typed entry per released GHN, resolved to a file on disk.

``--ghn`` takes a registry name, a local file, or an http(s) URL (downloaded into the cache).
GHN-2 entries are downloaded once into the cache and verified by their git blob id. GHN-3
entries live on the Hugging Face Hub: ``huggingface_hub`` fetches them into its own cache
(:mod:`ghnorth_cli.ghn.hub`), ghnorth reads the pickle safely once and keeps a safetensors
conversion, so later loads never unpickle. The cache lives in ``$GHNORTH_HOME`` or else
``$XDG_CACHE_HOME/ghnorth`` (default ``~/.cache/ghnorth``). ``GHNORTH_OFFLINE=1`` (or
``HF_HUB_OFFLINE=1`` for Hub files) forbids downloads.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.hub import HubFile

log = logging.getLogger(__name__)

REFERENCE_REPO = "https://github.com/facebookresearch/ppuda"
REFERENCE_COMMIT = "4673a42507a9dcd0a5ae04e74599e8c92af689b9"
DEFAULT_GHN = "ghn2-imagenet"
OFFLINE_ENV = "GHNORTH_OFFLINE"


@dataclass(frozen=True)
class PretrainedGHN:
    """A released GHN: where to get it, how to check it, and what it is."""

    name: str
    filename: str
    url: str
    git_blob_id: str | None  # GitHub releases are plain git blobs: sha1(b"blob <size>\0" + content)
    config: GHNConfig
    dataset: str
    img_size: int  # input size of the training images
    description: str
    bundled: bool = False  # shipped inside the package (ghnorth_cli/data/<filename>): never downloaded
    hub: HubFile | None = None  # on the Hugging Face Hub: fetched by huggingface_hub, kept as safetensors

    @property
    def family(self) -> str:
        return "GHN-3" if self.config.is_ghn3 else "GHN-2"

    @property
    def size(self) -> int | None:
        """Bytes of the released file, where known exactly."""
        return self.hub.size if self.hub else None

    @property
    def n_params(self) -> int:
        """Parameters of the network its config describes."""
        return parameter_count(self.config)


def _released(filename: str) -> str:
    return f"{REFERENCE_REPO}/raw/{REFERENCE_COMMIT}/checkpoints/{filename}"


_GHN2 = dict(hid=32, hypernet="gatedgnn", decoder="conv", weight_norm=True, ve=True, layernorm=True)

# GHN-3 (Knyazev, Hwang, Lacoste-Julien, ICML 2023; SamsungSAILMontreal/ghn3). The Hub repository's
# commit sha could not be looked up when these entries were written, so the revision is the branch
# the reference itself loads ("main"); every file is checked against its explicit config, tensor by
# tensor, and by its exact size where that is known.
GHN3_HUB_REPO = "SamsungSAILMontreal/ghn3"
GHN3_HUB_REVISION = "main"
_GHN3 = dict(num_classes=1000, hypernet="transformer", decoder="conv", weight_norm=True, ve=True, layernorm=True)


def _ghn3(name: str, filename: str, *, hid: int, layers: int, heads: int, size: int | None,
          label: str) -> PretrainedGHN:
    hub = HubFile(GHN3_HUB_REPO, filename, GHN3_HUB_REVISION, size=size)
    return PretrainedGHN(
        name=name, filename=filename, url=hub.url, git_blob_id=None,
        config=GHNConfig(max_shape=(hid, hid, 16, 16), hid=hid, layers=layers, heads=heads, **_GHN3),
        dataset="imagenet", img_size=224, hub=hub,
        description=f"{label} trained on DeepNets-1M for ImageNet (Knyazev et al. 2023)")


REGISTRY: dict[str, PretrainedGHN] = {
    entry.name: entry
    for entry in (
        PretrainedGHN(
            name="ghn2-imagenet",
            filename="ghn2_imagenet.pt",
            url=_released("ghn2_imagenet.pt"),
            git_blob_id="7b5d6733e9fdf0069bc6186cad3a0b1b54fda68d",
            config=GHNConfig(max_shape=(64, 64, 16, 16), num_classes=1000, **_GHN2),
            dataset="imagenet",
            img_size=224,
            description="GHN-2 trained on DeepNets-1M for ImageNet (Knyazev et al. 2021)",
        ),
        PretrainedGHN(
            name="ghn2-cifar10",
            filename="ghn2_cifar10.pt",
            url=_released("ghn2_cifar10.pt"),
            git_blob_id="4f290e0fad1b73066eeabb50be52e0c377d0b15b",
            config=GHNConfig(max_shape=(64, 64, 11, 11), num_classes=10, **_GHN2),
            dataset="cifar10",
            img_size=32,
            description="GHN-2 trained on DeepNets-1M for CIFAR-10 (Knyazev et al. 2021)",
        ),
        PretrainedGHN(
            name="ghn2-fmnist-tiny",
            filename="ghn2-fmnist-tiny.safetensors",
            url="",
            git_blob_id="817b3d2be84d40d87d86d5d10c357ea618792886",
            config=GHNConfig(max_shape=(64, 64, 7, 7), num_classes=5, **_GHN2),
            dataset="fashion-mnist",
            img_size=32,
            description="small GHN-2 bundled with ghnorth (train-ghn, Fashion-MNIST classes 0-4): offline use, "
                        "tests, demos",
            bundled=True,
        ),
        _ghn3("ghn3-t", "ghn3tm8.pt", hid=64, layers=3, heads=8, size=None, label="GHN-3-T/m8"),
        _ghn3("ghn3-s", "ghn3sm8.pt", hid=128, layers=5, heads=16, size=143_269_744, label="GHN-3-S/m8"),
        _ghn3("ghn3-l", "ghn3lm8.pt", hid=256, layers=12, heads=16, size=858_730_839, label="GHN-3-L/m8"),
        _ghn3("ghn3-xl", "ghn3xlm16.pt", hid=384, layers=24, heads=16, size=None, label="GHN-3-XL/m16"),
    )
}


def parameter_count(config: GHNConfig) -> int:
    """Parameters of a GHN with ``config`` (counted without allocating them)."""
    import math

    from ghnorth_cli.ghn.io import ghn_tensor_shapes

    return sum(math.prod(shape) for shape in ghn_tensor_shapes(config).values())


class GHNNotAvailableError(GhnorthError):
    """A GHN is neither cached nor downloadable."""


def cache_dir() -> Path:
    """``$GHNORTH_HOME``, else ``$XDG_CACHE_HOME/ghnorth``, else ``~/.cache/ghnorth``."""
    home = os.environ.get("GHNORTH_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ghnorth"


def ghn_cache_dir() -> Path:
    return cache_dir() / "ghns"


def cached_file(entry: PretrainedGHN) -> Path:
    """Where a registry GHN lives once downloaded (inside the package for a bundled one)."""
    if entry.bundled:
        from importlib.resources import files

        return Path(str(files("ghnorth_cli") / "data" / entry.filename))
    if entry.hub is not None:  # the safetensors conversion; the released pickle stays in the HF cache
        return ghn_cache_dir() / f"{entry.name}.safetensors"
    return ghn_cache_dir() / entry.filename


def _is_url(spec: str) -> bool:
    return urlparse(spec).scheme in ("http", "https")


def _url_cache_file(url: str) -> Path:
    tail = Path(urlparse(url).path).name or "ghn.pt"
    return ghn_cache_dir() / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{tail}"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ResolvedGHN:
    """A GHN file on disk and what it was asked for as."""

    path: Path
    name: str  # registry name, URL or the path as given
    entry: PretrainedGHN | None = None


def resolve_ghn(spec: str | None = None, *, registry: Mapping[str, PretrainedGHN] = REGISTRY,
                progress: bool = True) -> ResolvedGHN:
    """Turn a registry name, local path or URL into a verified local file (downloading if needed)."""
    spec = spec or DEFAULT_GHN
    if spec in registry:
        entry = registry[spec]
        if entry.bundled:
            return ResolvedGHN(cached_file(entry), entry.name, entry)
        if entry.hub is not None:
            return ResolvedGHN(_fetch_hub(entry, progress=progress), entry.name, entry)
        return ResolvedGHN(_fetch(entry.url, cached_file(entry), git_blob=entry.git_blob_id, name=entry.name,
                                  progress=progress), entry.name, entry)
    if _is_url(spec):
        known = next((e for e in registry.values() if e.url == spec), None)
        if known is not None:
            return resolve_ghn(known.name, registry=registry, progress=progress)
        return ResolvedGHN(_fetch(spec, _url_cache_file(spec), git_blob=None, name=spec, progress=progress), spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return ResolvedGHN(path, spec)
    if path.exists():  # a folder, a FIFO, ...: "no such file" would send the user looking for a typo
        from ghnorth_cli.files import _kind

        raise GHNNotAvailableError(f"GHN {spec!r}: is {_kind(path.stat().st_mode)}, not a GHN file")
    names = ", ".join(registry)
    # No option name here either (see _fetch).
    raise GHNNotAvailableError(f"GHN {spec!r}: no such file, and not a known GHN ({names}) or an http(s) URL")


def _fetch(url: str, dest: Path, *, git_blob: str | None, name: str, progress: bool) -> Path:
    """The cached file, downloading it first when absent."""
    from ghnorth_cli.ghn.download import DownloadError, download
    from ghnorth_cli.ghn.io import check_ghn_file

    if dest.is_file():
        _check_cached(dest, git_blob=git_blob, name=name)
        return dest
    # No option name here: predict and embed take --ghn, ghn eval a GHN argument, experiment --init ghn:G.
    how = f"get {url} on a machine with internet access and give its path instead of {name!r}, or copy it to {dest}"
    if offline():
        raise GHNNotAvailableError(f"GHN {name!r} is not cached and {OFFLINE_ENV} is set; {how}")
    log.info("GHN %s is not cached; downloading it to %s", name, dest)
    try:
        quiet = logging.getLogger().getEffectiveLevel() > logging.WARNING  # -q: no progress bar either
        return download(url, dest, git_blob=git_blob, progress=progress and not quiet, verify=check_ghn_file)
    except DownloadError as exc:
        raise GHNNotAvailableError(f"GHN {name!r} is not cached and could not be downloaded ({exc.reason}); "
                                   f"{how}") from None


def _fetch_hub(entry: PretrainedGHN, *, progress: bool) -> Path:
    """The cached safetensors conversion of a Hub GHN, made once from the (safely read) released file."""
    from ghnorth_cli.ghn.hub import HubDownloadError, hf_offline, hub_download, snapshot_commit
    from ghnorth_cli.ghn.io import GHNFileError, convert_ghn

    dest = cached_file(entry)
    hub = entry.hub
    if dest.is_file() and _converted_from(dest, hub):
        return dest
    how = (f"download {hub.url} on a machine with internet access and give its path instead of {entry.name!r} "
           f"(it is read safely), or convert it once with `ghnorth ghn convert {hub.filename} {dest}`")
    if offline():
        raise GHNNotAvailableError(f"GHN {entry.name!r} is not cached and {OFFLINE_ENV} is set; {how}")
    if not hf_offline():  # said first: with no network, huggingface_hub retries for about half a minute
        log.info("GHN %r: fetching %s from the Hugging Face Hub (%s@%s)", entry.name, hub.filename,
                 hub.repo_id, hub.revision)
    try:
        released = hub_download(hub, progress=progress)
    except HubDownloadError as exc:
        raise GHNNotAvailableError(f"GHN {entry.name!r} is not cached and could not be fetched ({exc}); "
                                   f"{how}") from None
    source = {"hub_repo": hub.repo_id, "hub_revision": hub.revision, "hub_commit": snapshot_commit(released)}
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        convert_ghn(released, dest, config=entry.config, source=source)
    except OSError as exc:
        raise GHNNotAvailableError(f"cannot write the GHN cache {dest.parent}: {exc.strerror or exc}") from None
    except GHNFileError as exc:
        raise GHNNotAvailableError(f"GHN {entry.name!r}: the downloaded file is not the released one ({exc}); delete "
                                   f"it from the Hugging Face cache (`hf cache rm model/{hub.repo_id}`) to download "
                                   "it again") from None
    log.info("GHN %s converted once to %s", entry.name, dest)
    return dest


def _converted_from(path: Path, hub: HubFile) -> bool:
    """Whether a cached conversion may stand for ``hub``: not from another revision, same sha256 where known."""
    import json

    from safetensors import safe_open

    from ghnorth_cli.ghn.io import SOURCE_KEY

    try:
        with safe_open(str(path), framework="pt") as f:
            source = json.loads((f.metadata() or {}).get(SOURCE_KEY, "{}"))
    except Exception:  # unreadable: make it again
        return False
    # A conversion made by hand (`ghnorth ghn convert`, e.g. offline) records no Hub revision.
    if "hub_revision" in source and (source.get("hub_repo"), source["hub_revision"]) != (hub.repo_id, hub.revision):
        log.info("cached %s was converted from another revision; fetching %s", path, hub.url)
        return False
    return hub.sha256 is None or source.get("sha256") == hub.sha256


def _check_cached(path: Path, *, git_blob: str | None, name: str) -> None:
    """A cached registry file must still be the released one (it may have been copied in by hand)."""
    from ghnorth_cli.ghn.download import git_blob_id

    if git_blob is not None and (got := git_blob_id(path)) != git_blob:
        raise GHNNotAvailableError(f"cached GHN {name!r} at {path} is not the released file (git blob id "
                                   f"{got}, expected {git_blob}); delete it to download it again")


def load_pretrained(spec: str | None = None, *, device: str = "cpu",
                    registry: Mapping[str, PretrainedGHN] = REGISTRY, progress: bool = True):
    """Resolve and load a GHN (registry name, path or URL); registry files must match their config."""
    from ghnorth_cli.ghn.io import GHNFileError, build_ghn, read_ghn_file

    resolved = resolve_ghn(spec, registry=registry, progress=progress)
    ghn_file = read_ghn_file(resolved.path)
    if resolved.entry is not None and ghn_file.config != resolved.entry.config:
        found, expected = ghn_file.config.to_dict(), resolved.entry.config.to_dict()
        key = next(k for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k))
        raise GHNFileError(f"{resolved.path}: its config differs from the registry's for {resolved.name} ({key} "
                           f"{found.get(key)!r}, expected {expected.get(key)!r}); delete the file to download it again")
    return build_ghn(ghn_file, name=resolved.name, device=device)


@dataclass(frozen=True)
class CacheStatus:
    entry: PretrainedGHN
    path: Path
    cached: bool


def list_ghns(registry: Mapping[str, PretrainedGHN] = REGISTRY) -> list[CacheStatus]:
    """Every registry GHN with its cache file and whether it is there."""
    return [CacheStatus(e, cached_file(e), cached_file(e).is_file()) for e in registry.values()]
