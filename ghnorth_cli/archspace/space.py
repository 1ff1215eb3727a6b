"""Named architecture spaces, a seeded sampler over them and a fixed held-out split.

A space mixes the families of :mod:`ghnorth_cli.archspace.families` under one size budget. The
held-out split of a space is the first ``count`` distinct architectures drawn with a fixed seed
(the same for every GHN, so evaluations compare); the training sampler never returns one of them.
Given timm or torchvision names join a space as extra choices, drawn as often as each family.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ghnorth_cli.archspace.families import FAMILIES, Budget, pick
from ghnorth_cli.errors import GhnorthError

HELDOUT_SEED = 20220
NAMED = "named"  # the family of an architecture given by a timm / torchvision name
_MAX_REDRAWS = 100


class ArchSpaceError(GhnorthError):
    """An unknown space, or a space that cannot produce what was asked."""


@dataclass(frozen=True)
class ArchSpace:
    """A named mix of families under one size budget."""

    name: str
    families: tuple[str, ...]
    budget: Budget
    description: str


_ALL = tuple(FAMILIES)
_TINY = Budget(widths=(8, 16, 24, 32), depths=(1, 2), max_channels=64)
_SMALL = Budget(widths=(16, 24, 32, 48, 64), depths=(1, 2, 3), max_channels=128)

SPACES: dict[str, ArchSpace] = {
    s.name: s
    for s in (
        ArchSpace("tiny", _ALL, _TINY, "all four families, 8-64 channels, 1-2 blocks per stage (CPU-sized)"),
        ArchSpace("small", _ALL, _SMALL, "all four families, 16-128 channels, 1-3 blocks per stage"),
        ArchSpace("tiny-convnets", ("resnet", "convnext", "mobilenet"), _TINY, "tiny without the ViT family"),
        *(ArchSpace(f"tiny-{f}", (f,), _TINY, f"only the {f} family, tiny budget") for f in _ALL),
    )
}


def get_space(name: str) -> ArchSpace:
    """The space called ``name``; an unknown name lists the known ones."""
    if name not in SPACES:
        raise ArchSpaceError(f"unknown architecture space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name]


@dataclass(frozen=True)
class ArchSample:
    """One sampled architecture: its family, settings and the seed of its own initialization."""

    family: str
    settings: dict[str, Any] = field(hash=False)
    seed: int = 0

    @property
    def key(self) -> str:
        """What makes two samples the same architecture (the seed does not)."""
        return f"{self.family}:{json.dumps(self.settings, sort_keys=True)}"

    @property
    def label(self) -> str:
        """A short name, e.g. ``convnext-3fa2c1d0`` or ``timm:resnet18``."""
        if self.family == NAMED:
            return self.settings["arch"]
        return f"{self.family}-{hashlib.sha256(self.key.encode()).hexdigest()[:8]}"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "settings": self.settings, "seed": self.seed, "label": self.label}


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


def _draw(space: ArchSpace, extra: tuple[str, ...], *, generator: torch.Generator) -> ArchSample:
    choice = pick(space.families + extra, generator=generator)
    if choice in extra:
        return ArchSample(NAMED, {"arch": choice}, seed=_draw_seed(generator))
    settings = FAMILIES[choice].sample(budget=space.budget, generator=generator)
    return ArchSample(choice, settings, seed=_draw_seed(generator))


def heldout_archs(space: ArchSpace, *, count: int, seed: int = HELDOUT_SEED) -> list[ArchSample]:
    """The space's held-out split: the first ``count`` distinct architectures from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    found: dict[str, ArchSample] = {}
    for _ in range(count * _MAX_REDRAWS):
        if len(found) == count:
            break
        sample = _draw(space, (), generator=generator)
        found.setdefault(sample.key, sample)
    if len(found) < count:
        raise ArchSpaceError(f"space {space.name!r} has fewer than {count} distinct architectures")
    return list(found.values())


class ArchSampler:
    """Draws training architectures from a space (plus named models), never a held-out one.

    All randomness comes from ``generator``; its state is the sampler's state (for resuming).
    """

    def __init__(self, space: ArchSpace, *, generator: torch.Generator, extra_archs: tuple[str, ...] = (),
                 exclude: frozenset[str] = frozenset()) -> None:
        self.space = space
        self.generator = generator
        self.extra_archs = tuple(extra_archs)
        self.exclude = exclude

    def sample(self) -> ArchSample:
        for _ in range(_MAX_REDRAWS):
            sample = _draw(self.space, self.extra_archs, generator=self.generator)
            if sample.key not in self.exclude:
                return sample
        raise ArchSpaceError(f"space {self.space.name!r}: no architecture outside the held-out split")


def build_arch(sample: ArchSample, *, num_classes: int, img_size: int) -> nn.Module:
    """The model of ``sample``, initialized from its seed without touching the global RNG."""
    if sample.family == NAMED:
        from ghnorth_cli.models import create_model, resolve_spec

        spec = resolve_spec(sample.settings["arch"], num_classes=num_classes, img_size=img_size)
        return create_model(spec, seed=sample.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sample.seed)
        return FAMILIES[sample.family].build(sample.settings, num_classes=num_classes, img_size=img_size)
