"""The model a fine-tuning run starts from: a checkpoint, a baseline init or pretrained weights."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.config import WEIGHT_SELECTION, FinetuneConfig
from ghnorth_cli.models import ModelSpec, adapt_small_input, classifier_tensor_names, create_model, resolve_spec

log = logging.getLogger(__name__)

DEFAULT_IMG_SIZE = 32


@dataclass
class StartingModel:
    """A model ready to fine-tune, what it is, and what was loaded into it."""

    model: nn.Module
    spec: ModelSpec
    loaded: list[str]  # tensors copied from the init source
    replaced: list[str]  # classifier tensors made fresh for the dataset's classes
    history: list[dict[str, Any]] = field(default_factory=list)  # the init checkpoint's provenance
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> sha256
    unmatched: dict[str, str] = field(default_factory=dict)  # weight selection: kept at the own init, and why

    def report(self) -> dict[str, Any]:
        report = {"init_loaded": len(self.loaded), "init_replaced": list(self.replaced)}
        return {**report, "init_unmatched": dict(self.unmatched)} if self.unmatched else report

    def describe(self, init: str) -> str:
        if init == "default":
            return f"{self.spec.arch}: the model's own initialization (seeded)"
        if init.startswith(WEIGHT_SELECTION + ":"):
            return (f"{self.spec.arch}: {len(self.loaded)} tensors selected from {init.partition(':')[2]}, "
                    f"{len(self.unmatched)} unmatched and the classifier at the model's own init")
        if init == "orth":
            return f"{self.spec.arch}: {len(self.loaded)} weights orthogonal (Eq. 2), the rest default"
        return (f"{self.spec.arch}: loaded {len(self.loaded)} tensors from {init}; new classifier "
                f"{', '.join(self.replaced) or '(none found)'} for {self.spec.num_classes} classes")


def _classifier(model: nn.Module) -> list[str]:
    return classifier_tensor_names({k: tuple(v.shape) for k, v in model.state_dict().items()})


def _load_except_classifier(model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    from ghnorth_cli.checkpoint import load_tensors_into

    replaced = _classifier(model)
    load_tensors_into(model, tensors, strict=True, skip=replaced)
    return [k for k in model.state_dict() if k not in replaced], replaced


def _from_checkpoint(config: FinetuneConfig, num_classes: int) -> StartingModel:
    from ghnorth_cli.checkpoint import read_checkpoint

    ckpt = read_checkpoint(config.init, arch=config.arch)
    base = ckpt.spec
    spec = dataclasses.replace(
        base,
        num_classes=num_classes,
        img_size=config.img_size or base.img_size,
        small_input=base.small_input if config.small_input is None else config.small_input,
    )
    model = create_model(spec, seed=config.seed)
    loaded, replaced = _load_except_classifier(model, ckpt.tensors)
    return StartingModel(model, spec, loaded, replaced, list(ckpt.history), {"init": ckpt.sha256})


def _pretrained_tensors(spec: ModelSpec) -> dict[str, torch.Tensor]:
    try:
        if spec.source == "timm":
            import timm

            source = timm.create_model(spec.name, pretrained=True)
        else:
            import torchvision

            source = torchvision.models.get_model(spec.name, weights="DEFAULT")
    except Exception as exc:  # no network, no weights for this model, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GhnorthError(f"pretrained weights for {spec.arch} cannot be had: {first_line}") from None
    if spec.small_input:
        adapt_small_input(source)
    return source.state_dict()


def build_starting_model(config: FinetuneConfig, *, num_classes: int) -> StartingModel:
    """The model to fine-tune, with a fresh classifier for ``num_classes`` classes."""
    if config.init_is_checkpoint:
        return _from_checkpoint(config, num_classes)
    if config.arch is None:
        raise GhnorthError(f"--init {config.init} needs --arch")
    size = config.img_size or DEFAULT_IMG_SIZE
    spec = resolve_spec(config.arch, num_classes=num_classes, img_size=size, small_input=config.small_input)
    model = create_model(spec, seed=config.seed)
    if config.init == "pretrained":
        loaded, replaced = _load_except_classifier(model, _pretrained_tensors(spec))
        return StartingModel(model, spec, loaded, replaced)
    if config.init_teacher is not None:
        from ghnorth_cli.weight_selection import select_from_teacher_

        teacher, result = select_from_teacher_(model, config.init_teacher, img_size=spec.img_size,
                                               small_input=spec.small_input)
        inputs = {teacher.name: teacher.sha256} if teacher.sha256 else {}
        return StartingModel(model, spec, result.selected, result.classifier, inputs=inputs,
                             unmatched=result.unmatched)
    from ghnorth_cli.inits import init_model_

    changed = init_model_(model, method=config.init, generator=torch.Generator().manual_seed(config.seed))
    return StartingModel(model, spec, changed, [])
