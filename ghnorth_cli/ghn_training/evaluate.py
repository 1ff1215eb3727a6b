"""Test accuracy of GHN-predicted parameters, without any training.

As the reference evaluates GHNs, batch norm uses the statistics of each test batch (its layers
run in training mode); everything else (dropout, drop-path) runs in evaluation mode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ghnorth_cli.archspace import ArchSample, build_arch
from ghnorth_cli.finetune.augment import to_model_input
from ghnorth_cli.finetune.data import Split
from ghnorth_cli.ghn.network import GraphHyperNetwork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """How to feed test images: class count, input size, normalization, batch size, device."""

    num_classes: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 256
    device: str = "cpu"


@dataclass(frozen=True)
class EvalResult:
    """One model's accuracy with predicted parameters."""

    name: str
    family: str
    params: int
    predicted_share: float  # fraction of the model's parameter values the GHN predicted
    accuracy: float
    images: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_stat_mode_(model: nn.Module) -> nn.Module:
    """Evaluation mode except batch norm layers, which use batch statistics."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, test: Split, *, settings: EvalSettings) -> float:
    """Top-1 accuracy on ``test`` (batch norm with batch statistics)."""
    device = torch.device(settings.device)
    batch_stat_mode_(model.to(device))
    correct = 0
    for start in range(0, len(test), settings.batch_size):
        images = test.images[start:start + settings.batch_size].to(device)
        x = to_model_input(images, mean=settings.mean, std=settings.std, img_size=settings.img_size)
        labels = test.labels[start:start + settings.batch_size].to(device)
        correct += int((model(x).argmax(1) == labels).sum())
    return correct / max(len(test), 1)


def evaluate_model(ghn: GraphHyperNetwork, model: nn.Module, test: Split, *, name: str, family: str,
                   settings: EvalSettings) -> EvalResult:
    """Predict ``model``'s parameters with ``ghn`` (in place) and measure its test accuracy."""
    from ghnorth_cli.ghn.predict import predict

    start = time.perf_counter()
    prediction = predict(model, ghn, img_size=settings.img_size, inplace=True)
    total = sum(p.numel() for p in model.parameters())
    predicted = sum(v.numel() for v in prediction.params.values())
    acc = accuracy(model, test, settings=settings)
    result = EvalResult(name, family, total, predicted / max(total, 1), acc, len(test), time.perf_counter() - start)
    log.info("%s: %.2f%% (%d params, %.0f%% predicted)", name, 100 * acc, total, 100 * result.predicted_share)
    return result


def evaluate_heldout(ghn: GraphHyperNetwork, samples: list[ArchSample], test: Split, *,
                     settings: EvalSettings) -> list[EvalResult]:
    """:func:`evaluate_model` for each sampled architecture."""
    results = []
    for sample in samples:
        model = build_arch(sample, num_classes=settings.num_classes, img_size=settings.img_size)
        results.append(evaluate_model(ghn, model, test, name=sample.label, family=sample.family, settings=settings))
    return results


def evaluate_named(ghn: GraphHyperNetwork, archs: list[str], test: Split, *, settings: EvalSettings,
                   seed: int = 0) -> list[EvalResult]:
    """:func:`evaluate_model` for timm / torchvision models (adapted to small inputs at 32 px or less)."""
    from ghnorth_cli.models import create_model, resolve_spec

    results = []
    for arch in archs:
        spec = resolve_spec(arch, num_classes=settings.num_classes, img_size=settings.img_size)
        model = create_model(spec, seed=seed)
        results.append(evaluate_model(ghn, model, test, name=spec.arch, family="named", settings=settings))
    return results


def summarize(results: list[EvalResult]) -> dict[str, Any]:
    """Mean, min and max accuracy over ``results``."""
    accs = [r.accuracy for r in results]
    if not accs:
        return {"count": 0}
    return {"count": len(accs), "mean_accuracy": sum(accs) / len(accs), "min_accuracy": min(accs),
            "max_accuracy": max(accs)}
