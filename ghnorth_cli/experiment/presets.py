"""Published experiment settings: the paper's Table 1 grid, and its published recipes as the cheap route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.config import RECIPES

# The GHN the paper used for Table 1: GHN-2 trained on ImageNet.
TABLE1_GHN = "ghn2-imagenet"
TABLE1_ARCHS = ("resnet50", "convnext_base")
TABLE1_INITS = ("default", "orth", f"ghn:{TABLE1_GHN}", f"ghn-orth:{TABLE1_GHN}", "pretrained")
_TABLE1_SHARED = {"epochs": [50, 100, 200, 300], "wd": [1e-4, 1e-3, 1e-2, 0.05, 0.1], "img_size": [224, 32]}


@dataclass(frozen=True)
class ExperimentPreset:
    """Values an experiment preset fills in; explicit options override them."""

    name: str
    description: str
    archs: tuple[str, ...]
    inits: tuple[str, ...]
    data: str
    labels_per_class: int | None
    seeds: int
    grids: tuple[dict[str, Any], ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    per_arch: dict[str, dict[str, Any]] = field(default_factory=dict)


PRESETS: dict[str, ExperimentPreset] = {
    p.name: p
    for p in (
        ExperimentPreset(
            "table1",
            "Table 1 of Knyazev 2022: ResNet-50 and ConvNeXt-Base on CIFAR-10 with 100 labels per class, "
            "full hyper-parameter grid (360 configurations per arch and init), 3 seeds",
            TABLE1_ARCHS, TABLE1_INITS, "cifar10", 100, 3,
            grids=({"opt": ["sgd"], "lr": [0.025, 0.01, 0.005, 0.0025, 0.001], **_TABLE1_SHARED},
                   {"opt": ["adamw"], "lr": [0.004, 0.001, 0.0004, 0.0001], **_TABLE1_SHARED}),
            fixed={"clip_grad": 5.0},  # as in the published recipes
            per_arch={"resnet50": {"batch_size": 96}, "convnext_base": {"batch_size": 48}},
        ),
        ExperimentPreset(
            "table1-recipes",
            "Table 1's setting with the published recipe of each arch (one configuration per init), 3 seeds",
            TABLE1_ARCHS, TABLE1_INITS, "cifar10", 100, 3,
            per_arch={arch: dict(RECIPES[f"{arch}-paper"].values) for arch in TABLE1_ARCHS},
        ),
    )
}


def get_preset(name: str) -> ExperimentPreset:
    if name not in PRESETS:
        raise GhnorthError(f"unknown experiment preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
