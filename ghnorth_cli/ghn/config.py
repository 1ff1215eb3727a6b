"""The hyperparameters of a GHN-2, as stored with its weights (``config`` in the released files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ghnorth_cli.errors import GhnorthError

# Keys of the released files' ``config`` that do not change the network (accepted and dropped).
_IGNORED_KEYS = frozenset({"debug_level"})


class GHNConfigError(GhnorthError):
    """A GHN configuration that ghnorth cannot build."""


@dataclass(frozen=True)
class GHNConfig:
    """What a GHN-2 network looks like.

    ``max_shape`` is the largest (out, in, h, w) tensor the decoder predicts before tiling;
    ``num_classes`` is the class count of the dataset the GHN was trained on.
    """

    max_shape: tuple[int, int, int, int]
    num_classes: int
    hid: int = 32
    hypernet: str = "gatedgnn"
    decoder: str = "conv"
    weight_norm: bool = False
    ve: bool = False
    layernorm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_shape", tuple(int(s) for s in self.max_shape))
        if len(self.max_shape) != 4 or min(self.max_shape) < 1:
            raise GHNConfigError(f"GHN max_shape must be 4 positive sizes, got {self.max_shape}")
        if self.max_shape[2] != self.max_shape[3]:
            raise GHNConfigError(f"GHN max_shape must have a square kernel, got {self.max_shape}")
        if self.hid < 4 or self.hid % 4:
            raise GHNConfigError(f"GHN hidden size must be a positive multiple of 4, got {self.hid}")
        if self.num_classes < 1:
            raise GHNConfigError(f"GHN num_classes must be positive, got {self.num_classes}")
        if self.hypernet != "gatedgnn" or self.decoder != "conv":
            raise GHNConfigError(
                f"unsupported GHN (hypernet={self.hypernet!r}, decoder={self.decoder!r}): "
                "ghnorth implements the GHN-2 (hypernet='gatedgnn', decoder='conv')"
            )

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
    def from_dict(cls, data: dict[str, Any]) -> "GHNConfig":
        """Build from a released file's ``config`` or from :meth:`to_dict`; unknown keys are an error."""
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
