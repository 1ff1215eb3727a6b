"""ghnorth's GHN file: a GHN-2's weights in safetensors, its config and provenance in the header.

Header metadata (flat ``str -> str``, JSON inside):

- ``format``: ``ghnorth.ghn``; ``ghnorth.format_version``: ``1``; ``ghnorth.version``
- ``ghnorth.ghn_config``: :meth:`GHNConfig.to_dict` (what network to build; never guessed)
- ``ghnorth.order``: tensor names in ``state_dict`` order
- ``ghnorth.history``: provenance entries (command, options, seed, versions, time)
- ``ghnorth.training``: what the GHN was trained on: dataset, classes and their names, image size
  and normalization, architecture space, steps, wall time, machine and device
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ghnorth_cli._version import __version__
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.network import GHN2

GHN_FORMAT = "ghnorth.ghn"
GHN_FORMAT_VERSION = "1"


class GHNFileError(GhnorthError):
    """A GHN file that is missing, damaged or not in ghnorth's GHN format."""


@dataclass
class GHNFile:
    """A loaded GHN file: the network (in eval mode, on the CPU) and its header."""

    ghn: GHN2
    config: GHNConfig
    training: dict[str, Any]
    history: list[dict[str, Any]]
    metadata: dict[str, str]


def ghn_metadata(config: GHNConfig, *, order: Sequence[str], history: Sequence[Mapping[str, Any]],
                 training: Mapping[str, Any]) -> dict[str, str]:
    """The header of a GHN file."""
    return {
        "format": GHN_FORMAT,
        "ghnorth.format_version": GHN_FORMAT_VERSION,
        "ghnorth.version": __version__,
        "ghnorth.ghn_config": json.dumps(config.to_dict(), sort_keys=True),
        "ghnorth.order": json.dumps(list(order)),
        "ghnorth.history": json.dumps(list(history), sort_keys=True),
        "ghnorth.training": json.dumps(dict(training), sort_keys=True),
    }


def write_ghn(path: str | Path, ghn: GHN2, *, history: Sequence[Mapping[str, Any]],
              training: Mapping[str, Any]) -> None:
    """Write ``ghn`` (float32 weights) atomically; same weights and header give the same bytes."""
    from ghnorth_cli.checkpoint import serialize_safetensors, write_bytes_atomic

    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in ghn.state_dict().items()}
    metadata = ghn_metadata(ghn.config, order=list(tensors), history=history, training=training)
    write_bytes_atomic(path, serialize_safetensors(tensors, metadata=metadata))


def _json(metadata: Mapping[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        raise GHNFileError(f"{path}: GHN file without a valid {key!r} header entry") from None


def read_ghn(path: str | Path) -> GHNFile:
    """Load a GHN file written by :func:`write_ghn` (refuses anything else with one clear line)."""
    from safetensors import SafetensorsError, safe_open

    path = Path(path)
    if not path.is_file():
        raise GHNFileError(f"GHN file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorsError, OSError, ValueError) as exc:
        raise GHNFileError(f"{path}: not a safetensors file ({exc})") from None
    if metadata.get("format") != GHN_FORMAT:
        raise GHNFileError(f"{path}: not a ghnorth GHN file (format {metadata.get('format')!r}, "
                           f"expected {GHN_FORMAT!r})")
    if metadata.get("ghnorth.format_version") != GHN_FORMAT_VERSION:
        raise GHNFileError(f"{path}: GHN format version {metadata.get('ghnorth.format_version')!r} "
                           f"is not {GHN_FORMAT_VERSION}")
    config = GHNConfig.from_dict(_json(metadata, "ghnorth.ghn_config", path))
    ghn = GHN2(config)
    try:
        ghn.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise GHNFileError(f"{path}: weights do not fit its GHN config: {str(exc).splitlines()[0]}") from None
    return GHNFile(ghn=ghn.eval(), config=config, training=_json(metadata, "ghnorth.training", path),
                   history=_json(metadata, "ghnorth.history", path), metadata=metadata)
