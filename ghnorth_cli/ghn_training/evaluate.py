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
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.data import Split, batch_bounds
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


BUILTIN_DATA = ("cifar10", "cifar100", "fashion-mnist")  # names whose classes are fixed and known


class ClassMismatchError(GhnorthError):
    """The GHN's predicted classifiers do not classify the test classes."""


@dataclass(frozen=True)
class ClassifierClasses:
    """What a GHN's predicted classifiers classify: output ``i`` is class ``classes[i]`` of ``data``.

    ``data`` and ``classes`` are None where unknown (a GHN file without training information).
    """

    num_classes: int
    data: str | None = None
    classes: tuple[int, ...] | None = None


def classifier_classes(ghn: str, *, num_classes: int) -> ClassifierClasses:
    """What the GHN named ``ghn`` (registry name, file or URL) was trained to classify, as far as it says.

    From its ``ghnorth.training`` header (GHNs trained by ghnorth), else its registry entry's dataset.
    """
    from ghnorth_cli.ghn.registry import resolve_ghn
    from ghnorth_cli.ghn_training.ghnfile import read_training_info

    resolved = resolve_ghn(ghn)
    info = read_training_info(resolved.path)
    data = info.get("data") or (resolved.entry.dataset if resolved.entry is not None else None)
    return ClassifierClasses(num_classes, data, tuple(info["classes"]) if info.get("classes") else None)


def _fmt(classes) -> str:
    classes = list(classes)
    if len(classes) > 2 and classes == list(range(classes[0], classes[-1] + 1)):
        return f"{classes[0]}-{classes[-1]}"
    return ",".join(map(str, classes)) if len(classes) <= 12 else ",".join(map(str, classes[:12])) + ",..."


def align_test_classes(test: Split, *, data: str, classes: tuple[int, ...], ghn: ClassifierClasses,
                       name: str) -> tuple[Split, tuple[int, ...], bool]:
    """The test images whose class the GHN's classifiers know, labelled by the classifier's output index.

    ``test``'s labels index ``classes`` (class ids of the dataset ``data``). Returns the kept images,
    the class ids they hold, and whether the classes could be checked at all (False when the GHN
    or the data does not say which classes they are: then only the counts must agree).
    Raises :class:`ClassMismatchError` when the classifier's classes are not the test classes:
    another dataset, another class count, or no test class the GHN was trained on. Scoring such a
    classifier gives chance-level or lower numbers that read like results.
    """
    known_data = ghn.data in BUILTIN_DATA and data in BUILTIN_DATA
    if known_data and ghn.data != data:
        raise ClassMismatchError(f"{name} predicts {ghn.num_classes}-class classifiers for {ghn.data}, not "
                                 f"{data}: its accuracy there would be meaningless; pass --data {ghn.data}, or "
                                 f"evaluate a GHN trained on {data} (`ghnorth train-ghn --data {data}`)")
    known = ghn.classes if ghn.classes is not None else (tuple(range(ghn.num_classes)) if known_data else None)
    if known is None or not known_data and ghn.data != data:
        if ghn.num_classes != len(classes):
            where = ghn.data if ghn.data in BUILTIN_DATA else "imagefolder:PATH"
            hint = (f"evaluate it on {ghn.data} (--data {where})" if ghn.data is not None
                    else f"pass --classes with the {ghn.num_classes} classes it was trained on")
            raise ClassMismatchError(f"{name} predicts {ghn.num_classes}-class classifiers, the test set has "
                                     f"{len(classes)} classes: its accuracy would be meaningless; {hint}")
        return test, tuple(classes), False
    shared = tuple(c for c in classes if c in known)
    if not shared:
        raise ClassMismatchError(f"{name} was trained on {data} classes {_fmt(known)}, none of the test classes "
                                 f"{_fmt(classes)}: its accuracy would be meaningless; pass --classes "
                                 f"{_fmt(known)} (or a subset)")
    remap = torch.tensor([known.index(c) if c in known else -1 for c in classes], dtype=torch.int64)
    labels = remap[test.labels]
    keep = labels >= 0
    return Split(test.images[keep], labels[keep]), shared, True


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
    """Top-1 accuracy on ``test`` (batch norm with batch statistics, so a last batch of 1 joins the one before)."""
    device = torch.device(settings.device)
    batch_stat_mode_(model.to(device))
    correct = 0
    for start, stop in batch_bounds(len(test), settings.batch_size):
        images = test.images[start:stop].to(device)
        x = to_model_input(images, mean=settings.mean, std=settings.std, img_size=settings.img_size)
        labels = test.labels[start:stop].to(device)
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
