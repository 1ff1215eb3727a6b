"""The fine-tuning configuration and the published recipes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ghnorth_cli.errors import GhnorthError

INIT_METHODS = ("default", "orth", "pretrained")
WEIGHT_SELECTION = "weight-selection"  # --init weight-selection:TEACHER


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run depends on (see ``ghnorth finetune --help``)."""

    data: str
    arch: str | None = None
    init: str = "default"  # "default" | "orth" | "pretrained" | "weight-selection:T" | path to a checkpoint
    data_dir: str | None = None
    download: bool = False
    labels_per_class: int | None = None
    val_size: float = 0
    test_size: int | None = None  # None: the whole test split
    data_seed: int = 0
    seed: int = 0
    opt: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    wd: float = 0.01
    momentum: float = 0.9
    epochs: int = 10
    batch_size: int = 96
    eval_batch_size: int = 512
    img_size: int | None = None  # None: the checkpoint's size, else 32
    small_input: bool | None = None  # None: the checkpoint's choice, else img_size <= 32
    warmup_epochs: int = 0
    clip_grad: float | None = None
    label_smoothing: float = 0.0
    crop_padding: int = 4
    hflip: bool = True
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA
    compile: bool = False
    deterministic: bool | None = None  # None: on CPU only
    save_model: Literal["best", "last"] = "last"
    output: str | None = None
    metrics: str | None = None
    log: str | None = None
    state: str | None = None  # resumable state file
    save_every: int = 0
    resume: bool = False
    tensorboard: str | None = None  # this run's TensorBoard folder (events written there)

    def __post_init__(self) -> None:
        choices = {"opt": ("sgd", "adamw"), "save_model": ("best", "last")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise GhnorthError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                   f"got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise GhnorthError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise GhnorthError(f"--warmup-epochs must be below --epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.init.startswith(WEIGHT_SELECTION + ":") and not self.init_teacher:
            raise GhnorthError("--init weight-selection:T needs a teacher T (a checkpoint file or a model name)")
        if self.save_model == "best" and not self.val_size:
            raise GhnorthError("--save-model best needs a validation set (--val-size)")

    def replace(self, **changes: Any) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def init_is_checkpoint(self) -> bool:
        return self.init not in INIT_METHODS and self.init_teacher is None

    @property
    def init_method(self) -> str:
        """``default`` | ``orth`` | ``pretrained`` | ``weight-selection`` | ``checkpoint``."""
        if self.init_teacher is not None:
            return WEIGHT_SELECTION
        return "checkpoint" if self.init_is_checkpoint else self.init

    @property
    def init_teacher(self) -> str | None:
        """The teacher of ``--init weight-selection:T``, else None."""
        method, sep, teacher = self.init.partition(":")
        return teacher if sep and method == WEIGHT_SELECTION else None


@dataclass(frozen=True)
class Recipe:
    """A published fine-tuning recipe: option values that explicit options override."""

    name: str
    description: str
    values: dict[str, Any]


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "resnet50-paper",
            "ResNet-50 fine-tuning in Knyazev et al. 2022: SGD, lr 0.01, wd 0.01, 300 epochs, 32 px, batch 96",
            {"opt": "sgd", "lr": 0.01, "wd": 0.01, "epochs": 300, "img_size": 32, "batch_size": 96, "clip_grad": 5.0},
        ),
        Recipe(
            "convnext_base-paper",
            "ConvNeXt-Base fine-tuning in Knyazev et al. 2022: AdamW, lr 1e-3, wd 0.1, 300 epochs, 32 px, batch 48",
            {"opt": "adamw", "lr": 1e-3, "wd": 0.1, "epochs": 300, "img_size": 32, "batch_size": 48, "clip_grad": 5.0},
        ),
    )
}


def apply_recipe(recipe: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The recipe's values overridden by ``options`` (whose ``None`` values mean "not given")."""
    given = {k: v for k, v in options.items() if v is not None}
    if recipe is None:
        return given
    if recipe not in RECIPES:
        raise GhnorthError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    return {**RECIPES[recipe].values, **given}
