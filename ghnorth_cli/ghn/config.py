"""The hyperparameters of a GHN (GHN-2 or GHN-3), as stored with its weights.

GHN-2 (Knyazev et al., NeurIPS 2021; facebookresearch/ppuda) stores this as ``config`` in its
released ``.pt`` files. GHN-3 (Knyazev et al., ICML 2023; SamsungSAILMontreal/ghn3) stores no
config: it is inferred from the tensor names and shapes (see ``ghnorth_cli.ghn.io``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.limits import MAX_GHN_HID, MAX_GHN_LAYERS, MAX_GHN_SHAPE, MAX_NUM_CLASSES

# Keys of the released files' ``config`` that do not change the network (accepted and dropped).
_IGNORED_KEYS = frozenset({"debug_level"})

_TYPE_NAMES = {"int": "an integer", "bool": "true or false", "str": "a string",
               "tuple[int, int, int, int]": "a list of 4 integers"}

#: ``hypernet`` of each GHN family: GHN-2's gated GNN, GHN-3's Graphormer-style transformer.
HYPERNETS = ("gatedgnn", "transformer")


class GHNConfigError(GhnorthError):
    """A GHN configuration that ghnorth cannot build."""


@dataclass(frozen=True)
class GHNConfig:
    """What a GHN network looks like.

    ``max_shape`` is the largest (out, in, h, w) tensor the decoder predicts before tiling;
    ``num_classes`` is the class count of the dataset the GHN was trained on.
    ``hypernet`` is ``"gatedgnn"`` for a GHN-2 and ``"transformer"`` for a GHN-3, whose
    ``layers`` transformer layers use ``heads`` attention heads (both ignored by a GHN-2).
    """

    max_shape: tuple[int, int, int, int]
    num_classes: int
    hid: int = 32
    hypernet: str = "gatedgnn"
    decoder: str = "conv"
    weight_norm: bool = False
    ve: bool = False
    layernorm: bool = False
    layers: int = 1
    heads: int = 8

    def __post_init__(self) -> None:
        self._check_types()
        object.__setattr__(self, "max_shape", tuple(self.max_shape))
        if len(self.max_shape) != 4 or min(self.max_shape) < 1:
            raise GHNConfigError(f"GHN max_shape must be 4 positive sizes, got {self.max_shape}")
        if any(s > bound for s, bound in zip(self.max_shape, MAX_GHN_SHAPE)):
            raise GHNConfigError(f"GHN max_shape {self.max_shape} exceeds the limit {MAX_GHN_SHAPE}")
        if self.hid > MAX_GHN_HID or self.num_classes > MAX_NUM_CLASSES or self.layers > MAX_GHN_LAYERS:
            raise GHNConfigError(f"GHN config too large: hid {self.hid} (limit {MAX_GHN_HID}), num_classes "
                                 f"{self.num_classes} (limit {MAX_NUM_CLASSES}), layers {self.layers} "
                                 f"(limit {MAX_GHN_LAYERS})")
        if self.max_shape[2] != self.max_shape[3]:
            raise GHNConfigError(f"GHN max_shape must have a square kernel, got {self.max_shape}")
        if self.hid < 4 or self.hid % 4:
            raise GHNConfigError(f"GHN hidden size must be a positive multiple of 4, got {self.hid}")
        if self.num_classes < 1:
            raise GHNConfigError(f"GHN num_classes must be positive, got {self.num_classes}")
        if self.hypernet not in HYPERNETS or self.decoder != "conv":
            raise GHNConfigError(
                f"unsupported GHN (hypernet={self.hypernet!r}, decoder={self.decoder!r}): "
                "ghnorth implements GHN-2 (hypernet='gatedgnn') and GHN-3 (hypernet='transformer'), "
                "both with decoder='conv'"
            )
        if self.is_ghn3 and (self.layers < 1 or self.heads < 1 or self.hid % self.heads):
            raise GHNConfigError(f"GHN layers and heads must be positive with hid divisible by heads, "
                                 f"got layers={self.layers}, heads={self.heads}, hid={self.hid}")

    def _check_types(self) -> None:
        """Exact types, so that a config read from a file never means something else (``"no"`` is not False)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_shape":
                ok = isinstance(value, (list, tuple)) and all(type(v) is int for v in value)
            else:
                ok = type(value) is {"int": int, "bool": bool, "str": str}[str(f.type)]
            if not ok:
                raise GHNConfigError(f"GHN config {f.name} must be {_TYPE_NAMES[str(f.type)]}, got {value!r}")

    @property
    def is_ghn3(self) -> bool:
        """True for a GHN-3 (transformer hypernetwork)."""
        return self.hypernet == "transformer"

    @property
    def max_channels(self) -> int:
        return max(self.max_shape[:2])

    @property
    def ve_cutoff(self) -> int:
        """Longest shortest-path length that becomes a (virtual) edge in the graph."""
        return 50 if self.ve else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_shape"] = list(self.max_shape)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "GHNConfig":
        """Build from a released file's ``config`` or from :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise GHNConfigError(f"GHN config must be a map, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - _IGNORED_KEYS)
        if unknown:
            raise GHNConfigError(f"unknown GHN config keys: {', '.join(unknown)}")
        missing = sorted({"max_shape", "num_classes"} - set(data))
        if missing:
            raise GHNConfigError(f"GHN config lacks: {', '.join(missing)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise GHNConfigError(f"invalid GHN config {data}: {exc}") from None
