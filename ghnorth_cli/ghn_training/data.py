"""The images a GHN trains and is evaluated on: a fine-tuning dataset, optionally a subset of classes.

Labels of a class subset are renumbered in the order given (``--classes 5-9``: class 5 becomes
label 0), so a GHN trained on ``k`` classes predicts ``k``-way classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.data import ImageDataset, Split, load_dataset


class ClassSelectionError(GhnorthError):
    """A ``--classes`` value that names no valid classes."""


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """``"0-4"`` -> ``(0, 1, 2, 3, 4)``; ``"1,3,5-6"`` -> ``(1, 3, 5, 6)``; empty/None -> None (all)."""
    if text is None or not text.strip():
        return None
    classes: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ClassSelectionError(f"--classes {text!r}: expected numbers and ranges like 0-4 or 1,3,5") from None
        if lo < 0 or hi < lo:
            raise ClassSelectionError(f"--classes {text!r}: {part.strip()!r} is not a valid range")
        classes.extend(range(lo, hi + 1))
    if len(set(classes)) != len(classes):
        raise ClassSelectionError(f"--classes {text!r} names a class twice")
    return tuple(classes)


def select_classes(split: Split, classes: tuple[int, ...]) -> Split:
    """The images of ``classes`` with labels renumbered 0..k-1 in the order of ``classes``."""
    remap = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.int64)
    for new, old in enumerate(classes):
        if old < len(remap):
            remap[old] = new
    labels = remap[split.labels]
    keep = labels >= 0
    return Split(split.images[keep], labels[keep])


@dataclass(frozen=True)
class TaskData:
    """Training and test images of the classes a GHN learns, with what is needed to feed them."""

    name: str
    train: Split
    test: Split
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_task(data: str, *, data_dir: str | Path | None = None, classes: tuple[int, ...] | None = None,
              img_size: int = 32) -> TaskData:
    """Read ``data`` (any fine-tuning dataset) and keep ``classes`` (all when None)."""
    dataset: ImageDataset = load_dataset(data, data_dir=data_dir, img_size=img_size, can_download=False)
    chosen = tuple(range(dataset.num_classes)) if classes is None else classes
    unknown = [c for c in chosen if c >= dataset.num_classes]
    if unknown:
        raise ClassSelectionError(f"{dataset.name} has {dataset.num_classes} classes; no class {unknown[0]}")
    train, test = dataset.train, dataset.test
    if classes is not None:
        train, test = select_classes(train, chosen), select_classes(test, chosen)
    names = tuple(dataset.classes[c] for c in chosen)
    return TaskData(dataset.name, train, test, chosen, names, dataset.mean, dataset.std)
