"""Reading and writing GHN files: the released ``.pt`` format and ghnorth's safetensors format.

Released files are ``torch.save({'state_dict', 'config', 'epoch', 'optimzer'})`` dictionaries
(the misspelt key is theirs); they are read with ``torch.load(weights_only=True)`` only.
ghnorth's own format is a safetensors file of the state dict with the config as JSON in the
header metadata under ``ghnorth.ghn.config`` (``format`` = ``ghnorth.ghn``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    format: str  # "released" | "safetensors"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the released file's epoch


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (size,) = struct.unpack("<Q", data[:8])
    return 0 < size <= len(data) - 8 and data[8:9] == b"{"


def _looks_like_torch_save(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"  # zip archive or legacy pickle


# torch.save's legacy (non-zip) format starts with a pickled magic number (after the protocol header).
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
KEYS_SHOWN = 5  # names listed in an error before "... (N in all)"


def _is_plain_pickle(data: bytes) -> bool:
    """A pickle stream that is not torch.save output (``pickle.dump`` or ``joblib.dump`` of a state_dict)."""
    return data[:1] == b"\x80" and _LEGACY_MAGIC not in data[:32]


def _some(names, shown: int = KEYS_SHOWN) -> str:
    """The first ``shown`` of ``names``, and how many there are in all."""
    names = list(names)
    head = ", ".join(map(str, names[:shown]))
    return head if len(names) <= shown else f"{head}, ... ({len(names)} in all)"


def _resave(name: str) -> str:
    """One line of Python that keeps only what a GHN file holds: the weights and the config."""
    return (f"python -c \"import torch; d = torch.load('{name}', weights_only=False); torch.save({{k: d[k] for k "
            f"in ('state_dict', 'config')}}, '{Path(name).stem}-ghn.pt')\"")


def _refusal(exc: Exception, name: str) -> str:
    """Why torch.load(weights_only=True) refused ``name``, and what to do (never torch's allowlisting advice)."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found is None and "Unsupported operand" in str(exc):
        return (f"{name}: refusing to load: an old torch.save format (pickle protocol > 2) that safe loading "
                f"cannot read. If you trust the file, re-save it: {_resave(name)}")
    what = found.group(1) if found else "objects other than tensors"
    return (f"{name}: refusing to load: it holds {what} besides the GHN, and ghnorth never unpickles that. If "
            f"you trust the file, keep just the weights and config: {_resave(name)}")


def _not_a_ghn(obj: Any, name: str) -> str:
    if not isinstance(obj, dict):
        return (f"{name}: not a GHN checkpoint: it holds a {type(obj).__name__}, not a dict with 'state_dict' "
                "and 'config'")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return (f"{name}: a bare state_dict of {len(obj)} tensors ({_some(obj)}) without a config; a GHN file "
                "holds both: torch.save({'state_dict': ghn.state_dict(), 'config': config}, PATH)")
    return f"{name}: not a GHN checkpoint: expected 'state_dict' and 'config', found {_some(sorted(map(str, obj)))}"


def _read_released(data: bytes, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    import io
    import warnings

    if not _looks_like_torch_save(data):
        raise GHNFileError(f"{name}: not a GHN file (neither safetensors nor torch.save output)")
    if _is_plain_pickle(data):
        raise GHNFileError(f"{name}: refusing to load: a plain pickle (pickle.dump or joblib.dump), not torch.save "
                           f"output, and ghnorth never unpickles one. If you trust it, re-save it with "
                           f"torch.save({{'state_dict': ..., 'config': ...}}, PATH) and pass that file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of legacy files; not the user's concern
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise GHNFileError(_refusal(exc, name)) from None
    except Exception as exc:  # torch raises several types for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GHNFileError(f"{name}: unreadable torch.save file: {first}") from None
    if not isinstance(obj, dict) or "state_dict" not in obj or "config" not in obj:
        raise GHNFileError(_not_a_ghn(obj, name))
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
    """Read a GHN file of either format (the format is told by the content, not the name)."""
    p = Path(path)
    try:
        data = p.read_bytes()
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
    except GHNConfigError as exc:
        raise GHNFileError(f"{p}: {exc}") from None
    return GHNFile(config=config, state_dict=state, sha256=hashlib.sha256(data).hexdigest(), format=fmt, meta=meta)


def build_ghn(ghn_file: GHNFile, *, name: str, device: torch.device | str = "cpu"):
    """A :class:`~ghnorth_cli.ghn.network.GHN2` in eval mode with the file's weights."""
    from ghnorth_cli.ghn.network import GHN2, GHNInfo

    ghn = GHN2(ghn_file.config)
    missing, unexpected = _key_mismatch(ghn.state_dict(), ghn_file.state_dict)
    if missing or unexpected:
        pairs = (("missing", missing), ("unexpected", unexpected))
        detail = "; ".join(f"{what} {_some(keys, 3)}" for what, keys in pairs if keys)
        raise GHNFileError(f"{name}: weights do not fit a GHN-2 with its config: {detail}")
    for key, value in ghn.state_dict().items():
        got = tuple(ghn_file.state_dict[key].shape)
        if got != tuple(value.shape):
            raise GHNFileError(f"{name}: weights do not fit a GHN-2 with its config: {key} has shape {list(got)}, "
                               f"the config says {list(value.shape)}")
    ghn.load_state_dict(ghn_file.state_dict)
    ghn.info = GHNInfo(name=name, sha256=ghn_file.sha256)
    return ghn.to(device).eval()


def _key_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))


def load_ghn(path: str | Path, *, name: str | None = None, device: torch.device | str = "cpu"):
    """Load a GHN-2 from a file of either format."""
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
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sorted(state_dict.items())}
    return save_safetensors(tensors, metadata=metadata)


def convert_ghn(src: str | Path, dst: str | Path) -> GHNFile:
    """Convert a GHN file (normally a released ``.pt``) to ghnorth's safetensors format, atomically."""
    from ghnorth_cli.checkpoint import write_bytes_atomic

    ghn_file = read_ghn_file(src)
    build_ghn(ghn_file, name=str(src))  # the weights must fit the config before we write anything
    source = {"file": Path(src).name, "sha256": ghn_file.sha256, "format": ghn_file.format, **ghn_file.meta}
    write_bytes_atomic(dst, ghn_bytes(ghn_file.config, ghn_file.state_dict, source=source))
    return ghn_file
