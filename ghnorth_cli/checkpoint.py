"""ghnorth checkpoints: safetensors files with a model's full state_dict and namespaced JSON metadata.

Layout of the header metadata (a flat ``str -> str`` map, JSON inside where structured):

* ``format``: ``"ghnorth.checkpoint"``
* ``ghnorth.format_version``: ``"1"``
* ``ghnorth.version``: the ghnorth version that wrote the file
* ``ghnorth.model``: the :class:`~ghnorth_cli.models.ModelSpec` as JSON
* ``ghnorth.order``: tensor names in module order (safetensors keeps no order)
* ``ghnorth.history``: provenance entries, one per step that made or changed the file
* further ``ghnorth.*`` keys that a command adds (JSON values)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import struct
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ghnorth_cli._version import __version__
from ghnorth_cli.errors import CheckpointError, ModelResolutionError
from ghnorth_cli.files import STDIO, write_bytes_atomic, write_chunks_atomic  # noqa: F401  (re-exported)
from ghnorth_cli.metadata import decode_metadata, read_safetensors
from ghnorth_cli.models import (
    ModelSpec,
    classifier_tensor_names,
    model_args_for,
    model_shapes,
    resolve_name,
    resolve_spec,
    tied_tensor_names,
    weight_layer_names,
)

_logger = logging.getLogger(__name__)

FORMAT = "ghnorth.checkpoint"
FORMAT_VERSION = "1"
_RESERVED = ("format", "ghnorth.format_version", "ghnorth.version", "ghnorth.model", "ghnorth.order",
             "ghnorth.history")


@dataclass
class Checkpoint:
    """A checkpoint read from disk or stdin."""

    tensors: dict[str, torch.Tensor]
    spec: ModelSpec | None
    order: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    source: str = ""

    def weight_layers(self) -> list[str]:
        """The paper's layers: 2+-D tensors named ``weight``, in module order."""
        return weight_layer_names([(n, tuple(self.tensors[n].shape)) for n in self.order])

    def classifier(self) -> list[str]:
        """The classifier's tensor names (every head) of the model the file holds; see
        ``models.classifier_tensor_names`` (the last layer for a file without a model spec)."""
        if self.spec is not None:
            return [n for n in classifier_tensor_names(self.spec) if n in self.tensors]
        return classifier_tensor_names({n: tuple(self.tensors[n].shape) for n in self.order})

    def tied(self) -> dict[str, str]:
        """``{alias: first name}`` of entries that are one tensor in the model (shared modules, tied
        weights); empty for a file without a model spec."""
        if self.spec is None:
            return {}
        return {a: n for a, n in tied_tensor_names(self.spec).items() if a in self.tensors and n in self.tensors}

    def extra(self, key: str, default: Any = None) -> Any:
        """A namespaced metadata value decoded from JSON."""
        raw = self.metadata.get(key)
        return default if raw is None else json.loads(raw)


# --- reading -----------------------------------------------------------------------------------


def read_checkpoint(
    path: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    require_spec: bool = True,
    allow_nonfinite: bool = False,
) -> Checkpoint:
    """Read a checkpoint (``"-"`` = stdin); a file without ghnorth metadata needs ``arch``.

    Tensors with NaN or Inf values are refused (naming the tensor) unless ``allow_nonfinite``.

    The header and every ``ghnorth.*`` key are validated first (:mod:`ghnorth_cli.metadata`); then
    the tensors must fit the model the file names (or ``arch``, ``num_classes``, ``img_size`` when
    given) exactly, in that model's order. With ``require_spec=False`` a plain safetensors file is
    returned as it is (``spec`` None, the file's own tensor order). Raises :class:`CheckpointError`.
    """
    from safetensors.torch import load as load_safetensors

    data, header, name = read_safetensors(path)
    metadata = dict(header.get("__metadata__") or {})
    decoded = decode_metadata(metadata, name)
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{name}: cannot decode safetensors data: {exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    del data
    if not allow_nonfinite:
        check_finite(tensors, what=name)

    ghnorth = metadata.get("format") == FORMAT
    spec = _stored_spec(decoded, tensors, name) if ghnorth else None
    if arch is not None:
        spec = _spec_for(arch, tensors, num_classes=num_classes, img_size=img_size, base=spec)
    elif spec is None and not require_spec:
        return Checkpoint(tensors=dict(tensors), spec=None, order=list(tensors), metadata=metadata,
                          sha256=sha, source=name)
    elif spec is None:
        raise CheckpointError(f"{name}: has no ghnorth metadata; pass --arch to say which model it holds")
    elif num_classes is not None or img_size is not None:
        spec = _spec_for(spec.arch, tensors, num_classes=num_classes or spec.num_classes,
                         img_size=img_size or spec.img_size, base=spec)

    if model_args_for(spec, tensors).get("aux_logits") and not spec.aux_logits:
        spec = dataclasses.replace(spec, aux_logits=True)  # a file with GoogLeNet's / Inception's aux heads
    shapes = model_shapes(spec)
    check_shapes(shapes, tensors, what=f"{name} does not fit {spec.arch} ({spec.num_classes} classes, "
                                      f"{spec.img_size}px)")
    if ghnorth:
        order, history = decoded["ghnorth.order"], decoded["ghnorth.history"]
        if order != list(shapes):
            raise CheckpointError(f"{name}: corrupt ghnorth metadata 'ghnorth.order': not {spec.arch}'s module order")
    else:
        order, history = list(shapes), []
    ordered = {k: tensors[k] for k in order}
    return Checkpoint(tensors=ordered, spec=spec, order=order, history=history, metadata=metadata,
                      sha256=sha, source=name)


def _stored_spec(decoded: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], name: str) -> ModelSpec:
    """The model a ghnorth checkpoint names, its metadata checked against the schema and its tensors."""
    version = decoded.get("ghnorth.format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{name}: ghnorth checkpoint format {version!r}; this ghnorth reads format "
                              f"{FORMAT_VERSION}")
    missing = [k for k in ("ghnorth.model", "ghnorth.order", "ghnorth.history") if k not in decoded]
    if missing:
        raise CheckpointError(f"{name}: ghnorth checkpoint without {', '.join(missing)}")
    try:
        spec = ModelSpec.from_dict(decoded["ghnorth.model"])
        if resolve_name(spec.arch) != (spec.source, spec.name):
            raise ModelResolutionError(f"{spec.arch} resolves to another model")
    except ModelResolutionError as exc:
        raise CheckpointError(f"{name}: corrupt ghnorth metadata 'ghnorth.model': {exc}") from None
    if sorted(decoded["ghnorth.order"]) != sorted(tensors):
        raise CheckpointError(f"{name}: metadata order does not list the file's tensors")
    return spec


def _spec_for(arch: str, tensors: Mapping[str, torch.Tensor], *, num_classes: int | None,
              img_size: int | None, base: ModelSpec | None) -> ModelSpec:
    """Resolve ``arch``; the class count defaults to the checkpoint's classifier width."""
    if num_classes is None:
        probe = resolve_spec(arch, img_size=img_size)
        heads = [n for n in classifier_tensor_names(probe) if n in tensors and tensors[n].dim() >= 2]
        if heads:
            num_classes = int(tensors[heads[0]].shape[0])
    small = base.small_input if base is not None and img_size in (None, base.img_size) else None
    return resolve_spec(arch, num_classes=num_classes, img_size=img_size or (base.img_size if base else None),
                        small_input=small)


# --- finite values -------------------------------------------------------------------------------


def first_nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or Inf, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def check_finite(tensors: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor with NaN or Inf values."""
    bad = first_nonfinite(tensors)
    if bad is not None:
        t = tensors[bad]
        nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        raise CheckpointError(f"{what}: tensor {bad!r} holds non-finite values ({nan} NaN, {inf} Inf of {t.numel()})")


def check_nonempty_layers(tensors: Mapping[str, torch.Tensor], order: Sequence[str], *, what: str) -> None:
    """Raise :class:`CheckpointError` naming the first weight layer with no values (a zero in its shape)."""
    for name in weight_layer_names([(n, tuple(tensors[n].shape)) for n in order]):
        if tensors[name].numel() == 0:
            raise CheckpointError(f"{what}: layer {name!r} has shape {list(tensors[name].shape)}, no values")


# --- fitting tensors to a model -------------------------------------------------------------------


def check_shapes(expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor], *,
                 what: str = "checkpoint does not fit the model", skip: Collection[str] = ()) -> None:
    """Raise naming the first tensor (in model order) that is missing, unexpected or of another shape."""
    for key, shape in expected.items():
        if key in skip:
            continue
        if key not in tensors:
            raise CheckpointError(f"{what}: tensor {key!r} {list(shape)} is missing")
        got = tuple(tensors[key].shape)
        if got != tuple(shape):
            raise CheckpointError(f"{what}: tensor {key!r} has shape {list(got)}, the model expects {list(shape)}")
    extra = [k for k in tensors if k not in expected and k not in skip]
    if extra:
        raise CheckpointError(f"{what}: unexpected tensor {extra[0]!r} {list(tensors[extra[0]].shape)}")


def check_fits(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, skip: Collection[str] = ()) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_shapes(expected, tensors, skip=skip)


def load_tensors_into(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, strict: bool = True,
                      skip: Collection[str] = ()) -> None:
    """Copy tensors into the model; strict unless names in ``skip`` (e.g. the classifier) are left out."""
    if strict:
        check_fits(model, tensors, skip=skip)
    own = model.state_dict()
    kept = OrderedDict((k, v) for k, v in tensors.items() if k not in skip)
    if hasattr(own, "_metadata"):  # module versions (torchvision's MNASNet refuses a state_dict without)
        kept._metadata = own._metadata  # type: ignore[attr-defined]
    model.load_state_dict(kept, strict=strict and not skip)


def model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's state_dict as contiguous, unshared CPU tensors, and its module order."""
    state = model.state_dict()
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    return tensors, list(state)


# --- writing -----------------------------------------------------------------------------------


def _utc_now() -> str:
    # SOURCE_DATE_EPOCH (reproducible-builds convention) pins the time, so whole files can be byte-identical.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"ghnorth": __version__, "python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm", "safetensors"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


def provenance(*, command: str, options: Mapping[str, Any], seed: int | None,
               inputs: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """One history entry: what ran, with which options, seed and inputs (name -> sha256)."""
    entry: dict[str, Any] = {
        "command": command,
        "options": dict(options),
        "seed": seed,
        "inputs": dict(inputs or {}),
        "versions": library_versions(),
        "threads": torch.get_num_threads(),  # CPU threads in effect (--threads): float sums depend on them
        "time": _utc_now(),
    }
    entry.update(extra)
    return entry


def checkpoint_metadata(*, spec: ModelSpec, order: Sequence[str], history: Sequence[Mapping[str, Any]],
                        extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    metadata = {
        "format": FORMAT,
        "ghnorth.format_version": FORMAT_VERSION,
        "ghnorth.version": __version__,
        "ghnorth.model": json.dumps(spec.to_dict(), sort_keys=True),
        "ghnorth.order": json.dumps(list(order)),
        "ghnorth.history": json.dumps(list(history), sort_keys=True, default=str),
    }
    for key, value in (extra or {}).items():
        if key in _RESERVED or not key.startswith("ghnorth."):
            raise ValueError(f"metadata key {key!r} must be namespaced 'ghnorth.*' and not reserved")
        metadata[key] = json.dumps(value, sort_keys=True, default=str)
    return metadata


def write_checkpoint(path: str | Path, tensors: Mapping[str, torch.Tensor], *, spec: ModelSpec,
                     order: Sequence[str], history: Sequence[Mapping[str, Any]],
                     extra: Mapping[str, Any] | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename); ``"-"`` writes to stdout.

    A path ending in ``/`` (``-o DIR/``) writes a model folder in timm's layout instead
    (``model.safetensors`` + ``config.json``, see :mod:`ghnorth_cli.export`).
    Raises :class:`CheckpointError` naming the first tensor with NaN or Inf values: nothing is written.
    """
    if sorted(order) != sorted(tensors):
        raise ValueError("order must list exactly the checkpoint's tensors")
    check_finite(tensors, what=f"refusing to write {path}")
    metadata = checkpoint_metadata(spec=spec, order=order, history=history, extra=extra)
    from ghnorth_cli.export import is_folder_output, write_model_folder

    ordered = {k: tensors[k] for k in order}
    if is_folder_output(path):
        data = serialize_safetensors(ordered, metadata=metadata)
        _logger.info("%s", write_model_folder(path, data, spec=spec, tensor_names=order, history=history).describe())
        return
    write_chunks_atomic(path, safetensors_chunks(ordered, metadata=metadata))


_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def serialize_safetensors(tensors: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str]) -> bytes:
    """The safetensors encoding, made deterministic: sorted header keys, data in the given order.

    ``safetensors.torch.save`` writes the metadata map in a random (hash) order, so two saves of the
    same tensors differ in bytes; this writer gives identical bytes for identical inputs. Data is
    grouped by element size (largest first, order kept within a size) so every tensor stays aligned.
    """
    return b"".join(safetensors_chunks(tensors, metadata=metadata))


def safetensors_chunks(tensors: Mapping[str, torch.Tensor], *,
                       metadata: Mapping[str, str]) -> list[bytes | memoryview]:
    """:func:`serialize_safetensors`'s bytes as pieces to write in order: the header, then each
    tensor's memory itself (no copy of contiguous CPU tensors)."""
    items = [(k, v.detach().to("cpu").contiguous()) for k, v in tensors.items()]
    items.sort(key=lambda kv: -kv[1].element_size())  # stable: module order within a size
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name, tensor in items:
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        raw = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())  # keeps the tensor alive
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + raw.nbytes]}
        chunks.append(raw)
        offset += raw.nbytes
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    encoded += b" " * (-(8 + len(encoded)) % 8)
    return [struct.pack("<Q", len(encoded)), encoded, *chunks]
