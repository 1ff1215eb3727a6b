"""Reading and writing GHN files: the released formats and ghnorth's safetensors format.

Released GHN-2 files are ``torch.save({'state_dict', 'config', 'epoch', 'optimzer'})`` dictionaries
(the misspelt key is theirs); they are read with ``torch.load(weights_only=True)`` only.
Released GHN-3 files are ``joblib.dump(state_dict)`` pickles without a config; they are read by
:mod:`ghnorth_cli.ghn.safe_pickle` (no code from the file runs) and their config is inferred and
checked by :mod:`ghnorth_cli.ghn.ghn3_file`.
ghnorth's own format is a safetensors file of the state dict with the config as JSON in the
header metadata under ``ghnorth.ghn.config`` (``format`` = ``ghnorth.ghn``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from ghnorth_cli._version import __version__
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.config import GHNConfig, GHNConfigError

log = logging.getLogger(__name__)

FORMAT = "ghnorth.ghn"
FORMAT_VERSION = "1"
CONFIG_KEY = "ghnorth.ghn.config"
SOURCE_KEY = "ghnorth.ghn.source"


class GHNFileError(GhnorthError):
    """A GHN file is missing, unreadable or not a GHN."""


@dataclass
class GHNFile:
    """The contents of a GHN file, in either format."""

    config: GHNConfig
    state_dict: dict[str, torch.Tensor]
    sha256: str
    format: str  # "released" (GHN-2 torch.save) | "joblib" (GHN-3 pickle) | "safetensors"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the released file's epoch


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (size,) = struct.unpack("<Q", data[:8])
    return 0 < size <= len(data) - 8 and data[8:9] == b"{"


def _looks_like_torch_save(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"  # zip archive or legacy pickle


def _is_plain_pickle(head: bytes) -> bool:
    """A pickle stream (protocol 2+) that is not a legacy ``torch.save`` (whose first pickle is its magic
    number, after at most a protocol-4+ frame header)."""
    from ghnorth_cli.ghn.safe_pickle import LEGACY_MAGIC

    legacy_torch = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
    safetensors_header = head[8:9] == b"{"  # a header size whose low byte is 0x80 starts like a pickle
    return head[:1] == b"\x80" and not safetensors_header and legacy_torch not in head[:32]


def _read_ghn3_pickle(stream: IO[bytes], *, name: Path, sha256: str) -> GHNFile:
    """A released GHN-3 (``joblib.dump`` of its state dict), unpickled safely from ``stream``."""
    from ghnorth_cli.ghn.ghn3_file import infer_ghn3_config
    from ghnorth_cli.ghn.safe_pickle import UnsafePickleError, load_state_dict_pickle

    try:
        state = load_state_dict_pickle(stream)
        config = infer_ghn3_config(state)
    except (UnsafePickleError, GHNConfigError) as exc:
        raise GHNFileError(f"{name}: {exc}") from None
    return GHNFile(config=config, state_dict=state, sha256=sha256, format="joblib")


def _sha256_from_start(f: IO[bytes]) -> str:
    """sha256 of a seekable file's whole content, read in chunks; leaves it at the start."""
    digest = hashlib.sha256()
    f.seek(0)
    for chunk in iter(lambda: f.read(1 << 22), b""):
        digest.update(chunk)
    f.seek(0)
    return digest.hexdigest()


def _read_released(data: bytes, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    import io

    if not _looks_like_torch_save(data):
        raise GHNFileError(f"{name}: not a GHN file (neither safetensors nor torch.save output)")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        reason = f" ({detail[0]})" if detail and "WeightsUnpickler" in str(exc) else ""
        raise GHNFileError(f"{name}: refusing to load: it holds objects other than tensors and plain "
                           f"containers{reason}") from None
    except Exception as exc:  # torch raises several types for damaged files
        raise GHNFileError(f"{name}: unreadable torch.save file: {exc}") from None
    if not isinstance(obj, dict) or "state_dict" not in obj or "config" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise GHNFileError(f"{name}: not a GHN checkpoint: expected 'state_dict' and 'config', found {keys}")
    meta = {"epoch": obj["epoch"]} if isinstance(obj.get("epoch"), int) else {}
    return dict(obj["config"]), dict(obj["state_dict"]), meta


def _read_safetensors(data: bytes, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load as load_safetensors

    (size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + size])
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types
        raise GHNFileError(f"{name}: unreadable safetensors file: {exc}") from None
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT or CONFIG_KEY not in metadata:
        raise GHNFileError(f"{name}: a safetensors file without a GHN config ({CONFIG_KEY!r}); "
                           "convert a released GHN with `ghnorth ghn convert IN.pt OUT.safetensors`")
    try:
        config = json.loads(metadata[CONFIG_KEY])
        source = json.loads(metadata.get(SOURCE_KEY, "{}"))
    except ValueError as exc:
        raise GHNFileError(f"{name}: corrupt GHN metadata: {exc}") from None
    return config, dict(tensors), source


def read_ghn_file(path: str | Path) -> GHNFile:
    """Read a GHN file of any format (told by the content, not the name); nothing in it is executed.

    Raises :class:`GHNFileError` (one line) for a missing, unreadable, unsafe or ill-fitting file.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(32)
            if _is_plain_pickle(head) and p.is_file():  # streamed: the file may be gigabytes
                return _read_ghn3_pickle(f, name=p, sha256=_sha256_from_start(f))
            data = head + f.read()  # also a pipe or device, read once
        if _is_plain_pickle(data):
            return _read_ghn3_pickle(io.BytesIO(data), name=p, sha256=hashlib.sha256(data).hexdigest())
    except FileNotFoundError:
        raise GHNFileError(f"{p}: no such GHN file") from None
    except IsADirectoryError:
        raise GHNFileError(f"{p}: is a directory, not a GHN file") from None
    except OSError as exc:
        raise GHNFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise GHNFileError(f"{p}: empty file, not a GHN")
    fmt = "safetensors" if _is_safetensors(data) else "released"
    reader = _read_safetensors if fmt == "safetensors" else _read_released
    raw_config, state, meta = reader(data, str(p))
    try:
        config = GHNConfig.from_dict(raw_config)
        if config.is_ghn3:
            from ghnorth_cli.ghn.ghn3_file import check_ghn3_state_dict

            check_ghn3_state_dict(config, state)
    except GHNConfigError as exc:
        raise GHNFileError(f"{p}: {exc}") from None
    return GHNFile(config=config, state_dict=state, sha256=hashlib.sha256(data).hexdigest(), format=fmt, meta=meta)


def new_ghn(config: GHNConfig):
    """An untrained GHN of ``config``'s family: :class:`~ghnorth_cli.ghn.ghn3.GHN3` for a GHN-3
    (``config.is_ghn3``), :class:`~ghnorth_cli.ghn.network.GHN2` otherwise."""
    if config.is_ghn3:
        from ghnorth_cli.ghn.ghn3 import GHN3

        return GHN3(config)
    from ghnorth_cli.ghn.network import GHN2

    return GHN2(config)


def ghn_tensor_shapes(config: GHNConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state dict of a GHN with ``config`` (nothing allocated)."""
    with torch.device("meta"):
        network = new_ghn(config)
    return {name: tuple(t.shape) for name, t in network.state_dict().items()}


def build_ghn(ghn_file: GHNFile, *, name: str, device: torch.device | str = "cpu"):
    """A GHN (GHN-2 or GHN-3, from the file's config) in eval mode with the file's weights."""
    from ghnorth_cli.ghn.network import GHNInfo

    with torch.device("meta"):  # no init of weights about to be replaced (seconds for a GHN-3-XL)
        ghn = new_ghn(ghn_file.config)
    family = "GHN-3" if ghn_file.config.is_ghn3 else "GHN-2"
    missing, unexpected = _key_mismatch(ghn.state_dict(), ghn_file.state_dict)
    if missing or unexpected:
        detail = (f"missing {missing[:3]}" if missing else "") + (" " if missing and unexpected else "") + (
            f"unexpected {unexpected[:3]}" if unexpected else "")
        raise GHNFileError(f"{name}: weights do not fit a {family} with its config: {detail}")
    try:
        # assign: the file's tensors become the parameters (no second copy of a 2.6 GB GHN-3-XL)
        ghn.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ghn_file.state_dict.items()},
                            assign=True)
    except RuntimeError as exc:
        raise GHNFileError(f"{name}: weights do not fit a {family} with its config: {exc}") from None
    ghn.info = GHNInfo(name=name, sha256=ghn_file.sha256)
    return ghn.to(device).eval()


def _key_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))


def load_ghn(path: str | Path, *, name: str | None = None, device: torch.device | str = "cpu"):
    """Load a GHN (GHN-2 or GHN-3) from a file of either format."""
    return build_ghn(read_ghn_file(path), name=name or str(path), device=device)


def ghn_bytes(config: GHNConfig, state_dict: dict[str, torch.Tensor], *, source: dict[str, Any] | None = None) -> bytes:
    """A GHN in ghnorth's safetensors format."""
    from safetensors.torch import save as save_safetensors

    metadata = {
        "format": FORMAT,
        "ghnorth.ghn.format_version": FORMAT_VERSION,
        "ghnorth.version": __version__,
        CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
        SOURCE_KEY: json.dumps(source or {}, sort_keys=True),
    }
    seen: set[int] = set()
    tensors = {k: _standalone(v, seen) for k, v in sorted(state_dict.items())}
    return save_safetensors(tensors, metadata=metadata)


def _standalone(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """``t`` on the CPU as a tensor that owns its whole storage (safetensors refuses shared ones);
    copied only when it does not already (a GHN-3 the size of GHN-3-XL is 2.6 GB per copy)."""
    t = t.detach().to("cpu").contiguous()
    owns = t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    if not owns or t.untyped_storage().data_ptr() in seen:
        t = t.clone()
    seen.add(t.untyped_storage().data_ptr())
    return t


def convert_ghn(src: str | Path, dst: str | Path, *, config: GHNConfig | None = None,
                source: dict[str, Any] | None = None) -> GHNFile:
    """Convert a GHN file (normally a released ``.pt``) to ghnorth's safetensors format, atomically.

    ``config``, if given, is the config the file must have (a registry entry's); ``source`` adds
    provenance (e.g. the Hub revision) to the recorded file name, sha256 and format.
    Raises :class:`GHNFileError` before writing anything when the file is unsafe or does not fit.
    """
    from ghnorth_cli.checkpoint import write_bytes_atomic

    ghn_file = read_ghn_file(src)
    if config is not None and ghn_file.config != config:
        raise GHNFileError(f"{src}: its config {ghn_file.config.to_dict()} is not the expected {config.to_dict()}")
    if not ghn_file.config.is_ghn3:  # a GHN-3's tensors were checked against its config when read
        build_ghn(ghn_file, name=str(src))  # the weights must fit the config before we write anything
    provenance = {"file": Path(src).name, "sha256": ghn_file.sha256, "format": ghn_file.format, **ghn_file.meta,
                  **(source or {})}
    write_bytes_atomic(dst, ghn_bytes(ghn_file.config, ghn_file.state_dict, source=provenance))
    return ghn_file
