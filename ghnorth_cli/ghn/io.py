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
from ghnorth_cli.limits import MAX_STREAM_BYTES
from ghnorth_cli.metadata import decode_metadata, header_size, parse_header, read_safetensors

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


KEYS_SHOWN = 5  # names listed in an error before "... (N in all)"


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
    config, state = obj["config"], obj["state_dict"]
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise GHNFileError(f"{name}: not a GHN checkpoint: 'config' and 'state_dict' must be dictionaries")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise GHNFileError(f"{name}: not a GHN checkpoint: 'state_dict' holds something other than named tensors")
    meta = {"epoch": obj["epoch"]} if type(obj.get("epoch")) is int else {}
    return dict(config), dict(state), meta


def _read_safetensors(data: bytes, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load as load_safetensors

    size = header_size(data[:8], name, file_size=len(data))
    header, body = parse_header(data[8 : 8 + size], name)
    if body > len(data) - 8 - size:
        raise GHNFileError(f"{name}: truncated safetensors file ({len(data) - 8 - size} of {body} data bytes)")
    metadata = header.get("__metadata__") or {}
    decoded = decode_metadata(metadata, name)
    if metadata.get("format") != FORMAT or CONFIG_KEY not in metadata:
        raise GHNFileError(f"{name}: a safetensors file without a GHN config ({CONFIG_KEY!r}); "
                           "convert a released GHN with `ghnorth ghn convert IN.pt OUT.safetensors`")
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types
        raise GHNFileError(f"{name}: unreadable safetensors file: {exc}") from None
    return decoded[CONFIG_KEY], dict(tensors), decoded.get(SOURCE_KEY, {})


def _read_bytes(p: Path) -> bytes:
    """A GHN file's bytes; a pipe or device is read only when it starts like a GHN file, and bounded."""
    if p.is_file() or not p.exists():
        return p.read_bytes()
    with p.open("rb") as f:
        prefix = f.read(8)
        if _looks_like_torch_save(prefix):
            data = prefix + f.read(MAX_STREAM_BYTES + 1)
            if len(data) > MAX_STREAM_BYTES:
                raise GHNFileError(f"{p}: more than {MAX_STREAM_BYTES} bytes; not a GHN file")
            return data
    data, _, _ = read_safetensors(p)  # checks the header as it reads
    return data


def read_ghn_file(path: str | Path) -> GHNFile:
    """Read a GHN file of any format (told by the content, not the name); nothing in it is executed.

    Raises :class:`GHNFileError` (one line) for a missing, unreadable, unsafe or ill-fitting file.
    """
    p = Path(path)
    try:
        if p.is_file():
            with p.open("rb") as f:
                if _is_plain_pickle(f.read(32)):  # streamed: the file may be gigabytes
                    return _read_ghn3_pickle(f, name=p, sha256=_sha256_from_start(f))
        data = _read_bytes(p)  # a pipe or a device is read once, and bounded
        if _is_plain_pickle(data[:32]):
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
            check_weights_fit(config, state)
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
    """A GHN (GHN-2 or GHN-3, from the file's config) in eval mode with the file's weights.

    Raises :class:`GHNFileError` (one line) when the weights do not fit the config or hold NaN/Inf.
    """
    from ghnorth_cli.checkpoint import first_nonfinite
    from ghnorth_cli.ghn.network import GHNInfo

    family = "GHN-3" if ghn_file.config.is_ghn3 else "GHN-2"
    try:
        check_weights_fit(ghn_file.config, ghn_file.state_dict)
    except GHNConfigError as exc:
        raise GHNFileError(f"{name}: {exc}") from None
    bad = first_nonfinite(ghn_file.state_dict)
    if bad is not None:
        raise GHNFileError(f"{name}: GHN weight {bad!r} holds NaN or Inf values")
    with torch.device("meta"):  # no init of weights about to be replaced (seconds for a GHN-3-XL)
        ghn = new_ghn(ghn_file.config)
    try:
        # assign: the file's tensors become the parameters (no second copy of a 2.6 GB GHN-3-XL)
        ghn.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ghn_file.state_dict.items()},
                            assign=True)
    except RuntimeError as exc:
        raise GHNFileError(f"{name}: weights do not fit a {family} with its config: {exc}") from None
    ghn.info = GHNInfo(name=name, sha256=ghn_file.sha256)
    return ghn.to(device).eval()


def check_ghn_file(path: str | Path) -> None:
    """Raise :class:`GHNFileError` unless ``path`` loads as a GHN whose weights fit its config (downloads use this)."""
    build_ghn(read_ghn_file(path), name=str(path))


def check_weights_fit(config: GHNConfig, state: dict[str, torch.Tensor]) -> None:
    """Raise :class:`GHNConfigError` unless ``state`` has exactly the tensors of a GHN with ``config``.

    The expected names and shapes come from the network built on the meta device, so nothing is
    allocated until they match: a config that asks for a huge network fails here, in one line.
    Long name lists are capped (``..., (N in all)``).
    """
    expected = ghn_tensor_shapes(config)
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    family = "GHN-3" if config.is_ghn3 else "GHN-2"
    brief = f"hid={config.hid}, max_shape={config.max_shape}"
    if config.is_ghn3:
        brief += f", layers={config.layers}, heads={config.heads}"
    if missing or unexpected:
        detail = "; ".join(f"{what} {_some(names, 3)}" for what, names in (("missing", missing),
                                                                          ("unexpected", unexpected)) if names)
        raise GHNConfigError(f"weights do not fit a {family} with {brief}: {detail}")
    for name, shape in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise GHNConfigError(f"weights do not fit a {family} with {brief}: {name} has shape "
                                 f"{list(tensor.shape)}, the config says {list(shape)}")
        if not tensor.is_floating_point():
            raise GHNConfigError(f"weights do not fit a {family} with {brief}: {name} is {tensor.dtype}, "
                                 "not floating-point")


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
