"""Writing a trained GHN in ghnorth's GHN file format, with its training provenance.

The format is the one :mod:`ghnorth_cli.ghn.io` reads (safetensors; ``format`` =
``ghnorth.ghn``; the config as JSON under ``ghnorth.ghn.config``), so ``predict --ghn FILE``
loads a trained GHN like a converted released one. A trained GHN adds to the header:

- ``ghnorth.ghn.source``: ``{"command": "train-ghn", ...}``, what made it
- ``ghnorth.history``: provenance entries (command, options, seed, library versions, time)
- ``ghnorth.training``: what it was trained on: dataset, classes and their names, image size and
  normalization, architecture space, steps, wall time, machine and device
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ghnorth_cli._version import __version__
from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.io import CONFIG_KEY, FORMAT, FORMAT_VERSION, SOURCE_KEY
from ghnorth_cli.ghn.network import GHN2

HISTORY_KEY = "ghnorth.history"
TRAINING_KEY = "ghnorth.training"


def ghn_metadata(config: GHNConfig, *, history: Sequence[Mapping[str, Any]],
                 training: Mapping[str, Any]) -> dict[str, str]:
    """The header of a trained GHN's file."""
    return {
        "format": FORMAT,
        "ghnorth.ghn.format_version": FORMAT_VERSION,
        "ghnorth.version": __version__,
        CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
        SOURCE_KEY: json.dumps({"command": "train-ghn", "data": training.get("data"),
                                "classes": training.get("classes")}, sort_keys=True),
        HISTORY_KEY: json.dumps(list(history), sort_keys=True),
        TRAINING_KEY: json.dumps(dict(training), sort_keys=True),
    }


def write_ghn(path: str | Path, ghn: GHN2, *, history: Sequence[Mapping[str, Any]],
              training: Mapping[str, Any]) -> None:
    """Write ``ghn``'s float32 weights atomically (deterministic bytes for the same inputs).

    Raises :class:`~ghnorth_cli.errors.CheckpointError` naming a weight with NaN or Inf values.
    """
    from ghnorth_cli.checkpoint import check_finite, serialize_safetensors, write_bytes_atomic

    tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in ghn.state_dict().items()}
    check_finite(tensors, what=f"refusing to write {path}")
    metadata = ghn_metadata(ghn.config, history=history, training=training)
    write_bytes_atomic(path, serialize_safetensors(tensors, metadata=metadata))


def read_training_info(path: str | Path) -> dict[str, Any]:
    """The ``ghnorth.training`` header of a GHN file (empty for GHNs not trained by ghnorth)."""
    from ghnorth_cli.errors import CheckpointError
    from ghnorth_cli.metadata import read_metadata

    try:
        return read_metadata(path).get(TRAINING_KEY, {})
    except CheckpointError:  # not safetensors (e.g. a released .pt): no training header
        return {}
