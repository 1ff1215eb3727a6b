"""Hyper-parameter grids: a union of cartesian products over fine-tuning options.

One grid is written ``"opt=sgd,adamw lr=0.01,0.005 wd=1e-4"`` (space-separated ``key=v1,v2``
terms) and stands for every combination of its values. Several grids make a union, which is how
conditional grids are said: SGD with its learning rates and AdamW with its own is

    --grid "opt=sgd lr=0.025,0.01" --grid "opt=adamw lr=0.004,0.001"

A grid file (``--grid @grid.json``) holds a JSON list of such grids as objects whose values are a
value or a list of values. Keys are fine-tuning options (dashes or underscores); options that a
grid does not name keep the experiment's fixed values.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.files import read_text

HParams = dict[str, Any]


class GridError(GhnorthError):
    """A grid that cannot be read: unknown option, bad value, empty list."""


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in allowed:
            raise ValueError(f"choose from {', '.join(allowed)}")
        return value

    return parse


def _bool(text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("expected true or false")
    return value in ("true", "1", "yes")


def _int(text: str) -> int:
    value = float(text)
    if value != int(value):
        raise ValueError("expected a whole number")
    return int(value)


def _int_from(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise ValueError(f"must be at least {low}")
        return value

    return parse


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


# The fine-tuning options a grid may vary, with the parser of one value (which also checks its range,
# so a bad value stops the experiment while planning, in the grid's own terms).
GRID_KEYS: dict[str, Callable[[str], Any]] = {
    "opt": _choice("sgd", "adamw"),
    "lr": _positive,
    "wd": float,
    "momentum": float,
    "epochs": _int_from(1),
    "batch_size": _int_from(1),
    "img_size": _int_from(8),
    "small_input": _bool,  # adapted stem for small images (default: img_size <= 32)
    "warmup_epochs": _int_from(0),
    "clip_grad": _optional_float,
    "label_smoothing": _fraction,
}
_ALIASES = {"batch": "batch_size", "optimizer": "opt", "weight_decay": "wd", "image_size": "img_size"}


def canonical_key(key: str) -> str:
    """``batch-size`` / ``batch`` -> ``batch_size``; unknown keys are a GridError."""
    name = key.strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in GRID_KEYS:
        raise GridError(f"unknown grid option {key!r}; known: {', '.join(GRID_KEYS)}")
    return name


def parse_value(key: str, value: Any) -> Any:
    """One grid value of option ``key`` (a canonical key) from text or JSON."""
    if isinstance(value, bool):
        value = str(value)
    elif value is None or isinstance(value, (int, float)):
        value = "none" if value is None else repr(value)
    try:
        return GRID_KEYS[key](str(value).strip())
    except ValueError as exc:
        raise GridError(f"grid option {key}: bad value {value!r} ({exc})") from None


def normalize_grid(grid: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Canonical keys (sorted) and parsed, de-duplicated value tuples."""
    out: dict[str, tuple[Any, ...]] = {}
    for key, values in grid.items():
        name = canonical_key(key)
        if name in out:
            raise GridError(f"grid option {name} given twice in one grid")
        listed = values if isinstance(values, (list, tuple)) else [values]
        if not listed:
            raise GridError(f"grid option {name} has no values")
        out[name] = tuple(dict.fromkeys(parse_value(name, v) for v in listed))
    return dict(sorted(out.items()))


def parse_grid(text: str) -> dict[str, tuple[Any, ...]]:
    """``"opt=sgd lr=0.01,0.005"`` -> ``{"lr": (0.01, 0.005), "opt": ("sgd",)}``."""
    grid: dict[str, list[str]] = {}
    for term in text.split():
        key, sep, values = term.partition("=")
        if not sep or not key or not values:
            raise GridError(f"grid term {term!r} is not KEY=V1,V2,...")
        if canonical_key(key) in {canonical_key(k) for k in grid}:
            raise GridError(f"grid option {key} given twice in {text!r}")
        grid[key] = [v for v in values.split(",") if v]
    return normalize_grid(grid)


def read_grid_file(path: str | Path) -> list[dict[str, tuple[Any, ...]]]:
    """A JSON file holding a grid object or a list of them."""
    try:
        data = json.loads(read_text(path))
    except OSError as exc:
        raise GridError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GridError(f"grid file {path} is not valid JSON: {exc}") from None
    grids = data if isinstance(data, list) else [data]
    if not grids or not all(isinstance(g, dict) for g in grids):
        raise GridError(f"grid file {path} must hold a JSON object or a non-empty list of objects")
    return [normalize_grid(g) for g in grids]


def parse_grids(specs: Iterable[str]) -> list[dict[str, tuple[Any, ...]]]:
    """Every ``--grid`` value: inline grids and ``@file.json`` grid files, in order."""
    grids: list[dict[str, tuple[Any, ...]]] = []
    for spec in specs:
        grids.extend(read_grid_file(spec[1:]) if spec.startswith("@") else [parse_grid(spec)])
    return grids


def expand(grids: Sequence[Mapping[str, Sequence[Any]]]) -> list[HParams]:
    """The union of the grids' cartesian products, in order, without repeats (an empty list: one {})."""
    seen: dict[str, HParams] = {}
    for grid in grids or [{}]:
        keys = sorted(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            combo = dict(zip(keys, values))
            seen.setdefault(json.dumps(combo, sort_keys=True), combo)
    return list(seen.values())


def grid_to_text(grid: Mapping[str, Sequence[Any]]) -> str:
    """The inline form of a grid (inverse of :func:`parse_grid`)."""
    return " ".join(f"{k}={','.join('none' if v is None else str(v) for v in vals)}" for k, vals in grid.items())
