"""What ``--init`` may name in an experiment, and GHN-orth settings per architecture.

``default`` / ``orth`` / ``pretrained`` are fine-tuning's own inits; ``ghn:G`` predicts the
parameters with the GHN ``G`` (a known GHN name or a file); ``ghn-orth:G`` then applies GHN-orth
post-processing; ``weight-selection:T`` selects weights of the larger model ``T`` (a checkpoint file
or a pretrained model name) as fine-tuning's ``--init weight-selection:T`` does; anything else is a
checkpoint file, which serves the architecture it holds.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.config import WEIGHT_SELECTION

BUILTIN_INITS = ("default", "orth", "pretrained")
GHN_KINDS = ("ghn", "ghn-orth")


class InitSpecError(GhnorthError):
    """An ``--init`` value that names nothing ghnorth can start from."""


@dataclass(frozen=True)
class InitSpec:
    """One initialization to compare: ``kind`` plus the GHN or checkpoint it needs."""

    kind: str  # "default" | "orth" | "pretrained" | "ghn" | "ghn-orth" | "weight-selection" | "checkpoint"
    source: str | None = None  # GHN name/file for ghn kinds, the teacher for weight selection, the file for "checkpoint"

    @property
    def label(self) -> str:
        """The name used in tables and run ids, e.g. ``ghn-orth:ghn2-imagenet``."""
        if self.kind in BUILTIN_INITS:
            return self.kind
        if self.kind == "checkpoint":
            return f"ckpt:{Path(self.source).stem}"
        name = Path(self.source).stem if _looks_like_file(self.source) else self.source
        return f"{self.kind}:{name}"

    @property
    def slug(self) -> str:
        """``label`` made safe for a file name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-")

    @property
    def needs_materializing(self) -> bool:
        return self.kind in GHN_KINDS

    @property
    def finetune_init(self) -> str:
        """What fine-tuning's ``--init`` gets for an init that needs no materializing."""
        if self.kind == "checkpoint":
            return str(self.source)
        return f"{self.kind}:{self.source}" if self.kind == WEIGHT_SELECTION else self.kind

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def _looks_like_file(text: str | None) -> bool:
    return text is not None and ("/" in text or text.endswith((".pt", ".pth", ".safetensors")))


def parse_init(text: str) -> InitSpec:
    """``"ghn-orth:ghn2-imagenet"`` -> ``InitSpec("ghn-orth", "ghn2-imagenet")``; files must exist."""
    value = text.strip()
    if value in BUILTIN_INITS:
        return InitSpec(value)
    kind, sep, source = value.partition(":")
    if sep and kind in GHN_KINDS:
        if not source:
            raise InitSpecError(f"--init {value}: name a GHN after the colon, e.g. {kind}:ghn2-imagenet")
        return InitSpec(kind, source)
    if sep and kind == WEIGHT_SELECTION:
        if not source:
            raise InitSpecError(f"--init {value}: name a larger model after the colon, e.g. {kind}:resnet50")
        return InitSpec(kind, source)
    if Path(value).is_file():
        return InitSpec("checkpoint", value)
    raise InitSpecError(
        f"--init {value!r} is neither default, orth, pretrained, ghn:G, ghn-orth:G, weight-selection:T "
        "nor an existing checkpoint file"
    )


def parse_inits(values: list[str]) -> list[InitSpec]:
    """Every ``--init`` (repeatable, comma-separated) in order, without repeats."""
    specs = [parse_init(v) for value in values for v in value.split(",") if v.strip()]
    if not specs:
        raise InitSpecError("no --init given")
    return list(dict.fromkeys(specs))


@dataclass(frozen=True)
class OrthSettings:
    """GHN-orth post-processing options; ``orth_from`` may differ per architecture."""

    preset: str | None = None
    beta: float | None = None
    orth_from: int | None = None
    orth_from_per_arch: dict[str, int] = field(default_factory=dict)
    noise_layers: str | None = None

    def for_arch(self, model_name: str) -> dict[str, Any]:
        """beta / orth_from / noise_layers for model ``model_name`` (e.g. "resnet50").

        Order of precedence: ``ARCH=L`` values, then explicit options, then ``preset``, then the
        published preset made for this architecture. Without any ``orth_from`` it is an error.
        """
        from ghnorth_cli.postprocess import PRESETS

        preset = self.preset or next((p.name for p in PRESETS.values() if p.arch == model_name), None)
        if preset is not None and preset not in PRESETS:
            raise InitSpecError(f"unknown post-processing preset {preset!r}; known: {', '.join(PRESETS)}")
        settings: dict[str, Any] = {"preset": preset, "beta": 0.0, "orth_from": None, "noise_layers": "all"}
        if preset is not None:
            settings.update(beta=PRESETS[preset].beta, orth_from=PRESETS[preset].orth_from)
        explicit = {"beta": self.beta, "orth_from": self.orth_from_per_arch.get(model_name, self.orth_from),
                    "noise_layers": self.noise_layers}
        settings.update({k: v for k, v in explicit.items() if v is not None})
        if settings["orth_from"] is None:
            raise InitSpecError(
                f"ghn-orth for {model_name}: no published preset; pass --orth-from L (or {model_name}=L) "
                f"and --beta, or --pp-preset one of {', '.join(PRESETS)}"
            )
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_orth_from(values: list[str]) -> tuple[int | None, dict[str, int]]:
    """``--orth-from`` values ``L`` (all archs) or ``ARCH=L`` -> (L or None, {arch name: L})."""
    default: int | None = None
    per_arch: dict[str, int] = {}
    for value in values:
        arch, sep, layer = value.rpartition("=")
        try:
            number = int(layer)
        except ValueError:
            raise InitSpecError(f"--orth-from {value!r}: expected L or ARCH=L with L a layer number") from None
        if sep:
            per_arch[arch.split(":")[-1]] = number
        else:
            default = number
    return default, per_arch
