"""The one schema of ghnorth's safetensors headers: framing, tensor entries and every ``ghnorth.*`` key.

Headers and metadata are untrusted input. Everything a command reads from them passes through
here first, so that a wrong type, a value out of range or broken JSON is one clear
:class:`~ghnorth_cli.errors.CheckpointError` line in every command (checkpoints and GHN files alike).

Safetensors layout: 8 bytes little-endian header size N, N bytes of JSON header (an object whose
entries are ``{"dtype", "shape", "data_offsets"}`` plus an optional ``__metadata__`` map of
``str -> str``), then the tensor data.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ghnorth_cli.errors import CheckpointError
from ghnorth_cli.limits import MAX_HEADER_BYTES, MAX_STREAM_BYTES

STDIO = "-"

#: ``ghnorth.*`` keys stored as plain strings (everything else under ``ghnorth.`` is JSON).
PLAIN_KEYS = frozenset({"ghnorth.format_version", "ghnorth.version", "ghnorth.ghn.format_version"})

#: The JSON type each known key must have; other ``ghnorth.*`` keys only need to be valid JSON.
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "ghnorth.model": dict,
    "ghnorth.order": list,
    "ghnorth.history": list,
    "ghnorth.ghn": dict,
    "ghnorth.unpredicted": list,
    "ghnorth.classifier": dict,
    "ghnorth.buffers": str,
    "ghnorth.training": dict,
    "ghnorth.ghn.config": dict,
    "ghnorth.ghn.source": dict,
}

_JSON_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _fail(name: str, message: str) -> CheckpointError:
    return CheckpointError(f"{name}: {message}")


# --- framing ------------------------------------------------------------------------------------


def header_size(prefix: bytes, name: str, *, file_size: int | None) -> int:
    """The header length from the first 8 bytes, checked against the file size and :data:`MAX_HEADER_BYTES`."""
    if not prefix:
        raise _fail(name, "empty file, not a safetensors file")
    if len(prefix) < 8:
        raise _fail(name, f"not a safetensors file (only {len(prefix)} bytes)")
    (size,) = struct.unpack("<Q", prefix[:8])
    if size < 2:
        raise _fail(name, "not a safetensors file (empty header)")
    if file_size is not None and size > file_size - 8:
        raise _fail(name, f"not a safetensors file, or truncated (header of {size} bytes in a {file_size}-byte file)")
    if size > MAX_HEADER_BYTES:
        raise _fail(name, f"not a safetensors file (header of {size} bytes; the limit is {MAX_HEADER_BYTES})")
    return size


def _entry_end(key: str, entry: Any, name: str) -> int:
    if not isinstance(entry, dict):
        raise _fail(name, f"corrupt safetensors header: entry {key!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise _fail(name, f"corrupt safetensors header: entry {key!r} has no dtype string")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise _fail(name, f"corrupt safetensors header: entry {key!r} has shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _fail(name, f"corrupt safetensors header: entry {key!r} has data_offsets {offsets!r}")
    return offsets[1]


def parse_header(raw: bytes, name: str) -> tuple[dict[str, Any], int]:
    """The header JSON (checked entry by entry) and the number of data bytes it describes."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(name, f"not a safetensors file (bad header: {exc})") from None
    if not isinstance(header, dict):
        raise _fail(name, "not a safetensors file (the header is not a JSON object)")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise _fail(name, "corrupt safetensors header: __metadata__ is not a map of strings")
    ends = [_entry_end(k, v, name) for k, v in header.items() if k != "__metadata__"]
    return header, max(ends, default=0)


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_safetensors(path: str | Path) -> tuple[bytes, dict[str, Any], str]:
    """Read a safetensors file (``"-"`` = stdin) as ``(bytes, header, name)``, sizes checked before reading.

    A regular file is read whole once its header fits its size; a pipe or device is read only as
    far as its header says (never more than :data:`MAX_STREAM_BYTES`), so ``/dev/zero`` or an
    endless stdin fails at once instead of filling memory.
    """
    if str(path) == STDIO:
        return _read_stream(sys.stdin.buffer, "<stdin>", file_size=None)
    p = Path(path)
    if not p.exists():
        raise _fail(str(p), "no such file")
    if p.is_dir() and (p / "model.safetensors").is_file():  # a model folder (``ghnorth export``)
        p = p / "model.safetensors"
    elif p.is_dir():
        raise _fail(str(p), "is a directory, not a checkpoint file (nor a model folder with model.safetensors)")
    try:
        with p.open("rb") as f:
            regular = p.is_file()
            return _read_stream(f, str(p), file_size=p.stat().st_size if regular else None)
    except OSError as exc:
        raise _fail(str(p), f"cannot read: {exc.strerror or exc}") from None


def _read_stream(stream: IO[bytes], name: str, *, file_size: int | None) -> tuple[bytes, dict[str, Any], str]:
    prefix = _read_exact(stream, 8)
    size = header_size(prefix, name, file_size=file_size)
    raw = _read_exact(stream, size)
    if len(raw) < size:
        raise _fail(name, f"truncated safetensors file (header of {size} bytes, {len(raw)} read)")
    header, body = parse_header(raw, name)
    if file_size is not None:
        if body > file_size - 8 - size:
            raise _fail(name, f"truncated safetensors file ({file_size - 8 - size} of {body} data bytes)")
        return prefix + raw + stream.read(), header, name
    if body > MAX_STREAM_BYTES:
        raise _fail(name, f"header describes {body} data bytes; more than the {MAX_STREAM_BYTES} read from a stream")
    data = _read_exact(stream, body)
    if len(data) < body:
        raise _fail(name, f"truncated safetensors file ({len(data)} of {body} data bytes)")
    return prefix + raw + data, header, name


# --- ghnorth.* metadata ---------------------------------------------------------------------------


def decode_metadata(metadata: Mapping[str, str], name: str) -> dict[str, Any]:
    """Every ``ghnorth.*`` key decoded and type-checked (plain-string keys kept as strings).

    Raises :class:`CheckpointError` naming the key for broken JSON or a value of the wrong type.
    """
    decoded: dict[str, Any] = {}
    for key, raw in metadata.items():
        if not key.startswith("ghnorth."):
            continue
        if key in PLAIN_KEYS:
            decoded[key] = raw
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise _fail(name, f"corrupt ghnorth metadata {key!r}: {exc}") from None
        expected = JSON_TYPES.get(key)
        if expected is not None and not isinstance(value, expected):
            raise _fail(name, f"corrupt ghnorth metadata {key!r}: expected {_JSON_NAMES[expected]}, "
                              f"got {type(value).__name__}")
        decoded[key] = value
    if "ghnorth.history" in decoded and not all(isinstance(e, dict) for e in decoded["ghnorth.history"]):
        raise _fail(name, "corrupt ghnorth metadata 'ghnorth.history': every entry must be an object")
    if "ghnorth.order" in decoded:
        order = decoded["ghnorth.order"]
        if not all(isinstance(k, str) for k in order) or len(set(order)) != len(order):
            raise _fail(name, "corrupt ghnorth metadata 'ghnorth.order': expected distinct tensor names")
    return decoded


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded ``ghnorth.*`` keys of a safetensors file, reading only its header (see :func:`decode_metadata`)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            file_size = p.stat().st_size if p.is_file() else None
            size = header_size(_read_exact(f, 8), str(p), file_size=file_size)
            header, _ = parse_header(_read_exact(f, size), str(p))
    except OSError as exc:
        raise _fail(str(p), f"cannot read: {exc.strerror or exc}") from None
    return decode_metadata(header.get("__metadata__") or {}, str(p))
