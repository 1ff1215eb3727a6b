"""Few-shot subsets and validation hold-outs drawn with an explicit generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ghnorth_cli.finetune.data import DatasetError, ImageDataset, Split


@dataclass(frozen=True)
class FinetuneSplits:
    """What training sees: a training set, an optional validation set and the test set."""

    train: Split
    val: Split | None
    test: Split


def balanced_subset(labels: torch.Tensor, *, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``per_class`` random examples of every class, in ascending order."""
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        if len(members) < per_class:
            raise DatasetError(
                f"--labels-per-class {per_class} is more than the {len(members)} training images of class {cls}"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def val_count(val_size: float, *, total: int) -> int:
    """A validation size given as a count (>= 1) or a fraction of ``total`` (< 1) as a count."""
    if val_size < 0:
        raise DatasetError(f"--val-size must not be negative, got {val_size}")
    count = int(round(val_size * total)) if 0 < val_size < 1 else int(val_size)
    if count != val_size and val_size >= 1:
        raise DatasetError(f"--val-size {val_size}: give a whole count or a fraction below 1")
    return count


def make_splits(
    dataset: ImageDataset, *, labels_per_class: int | None, val_size: float, seed: int,
    test_size: int | None = None,
) -> FinetuneSplits:
    """Draw the (few-shot) training set, then hold out the validation set from the rest.

    The few-shot subset does not depend on ``val_size``: it is drawn first, and the validation
    images come from the training images it left over. ``test_size`` (for quick runs) keeps a
    random subset of the test split, drawn from its own generator.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(dataset.train)
    if labels_per_class is not None:
        if labels_per_class < 1:
            raise DatasetError(f"--labels-per-class must be at least 1, got {labels_per_class}")
        train_idx = balanced_subset(dataset.train.labels, per_class=labels_per_class, generator=generator)
    else:
        train_idx = torch.arange(n)
    n_val = val_count(val_size, total=n)
    val = None
    if n_val:
        if labels_per_class is None:  # no subset: the validation images come out of the training set
            rest, limit = train_idx, n - 1
        else:
            is_rest = torch.ones(n, dtype=torch.bool)
            is_rest[train_idx] = False
            rest = torch.nonzero(is_rest).flatten()
            limit = len(rest)
        if n_val > limit:
            raise DatasetError(f"--val-size {n_val} is more than the {limit} training images it can be held out from")
        val_idx = torch.sort(rest[torch.randperm(len(rest), generator=generator)[:n_val]]).values
        val = dataset.train.subset(val_idx)
        if labels_per_class is None:
            keep = torch.ones(n, dtype=torch.bool)
            keep[val_idx] = False
            train_idx = torch.nonzero(keep).flatten()
    test = dataset.test
    if test_size is not None and test_size < len(test):
        if test_size < 1:
            raise DatasetError(f"--test-size must be at least 1, got {test_size}")
        test_gen = torch.Generator().manual_seed(seed)  # independent of the training draws
        test = test.subset(torch.sort(torch.randperm(len(test), generator=test_gen)[:test_size]).values)
    return FinetuneSplits(dataset.train.subset(train_idx), val, test)
