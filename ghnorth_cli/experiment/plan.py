"""An experiment's definition and the runs it expands to, with stable, readable run ids.

A run is one fine-tuning: (architecture, init, hyper-parameters, seed) on the experiment's data.
Its ``config_id`` hashes everything but the seed, so the seeds of one configuration share it; its
``run_id`` (``resnet18-orth-1a2b3c4d5e-s0``) names the run's directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment.grid import HParams, expand, normalize_grid
from ghnorth_cli.experiment.initspec import InitSpec, OrthSettings


@dataclass(frozen=True)
class DataSettings:
    """The data every run of an experiment trains and is judged on (``data_dir`` is only where it is)."""

    data: str
    labels_per_class: int | None = None
    val_size: float = 0.1
    data_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "labels_per_class": self.labels_per_class, "val_size": self.val_size,
                "data_seed": self.data_seed}


@dataclass(frozen=True)
class Experiment:
    """Archs x inits x (union of grids) x seeds, with options fixed for all runs or per architecture."""

    archs: tuple[str, ...]
    inits: tuple[InitSpec, ...]
    data: DataSettings
    grids: tuple[Mapping[str, Sequence[Any]], ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    per_arch: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    orth: OrthSettings = field(default_factory=OrthSettings)

    def __post_init__(self) -> None:
        if not self.archs or not self.inits or not self.seeds:
            raise GhnorthError("an experiment needs at least one --arch, one --init and one seed")
        object.__setattr__(self, "grids", tuple(normalize_grid(g) for g in self.grids))

    def configurations(self, arch: str) -> list[HParams]:
        """Every hyper-parameter set of ``arch``: fixed options < per-arch options < grid values."""
        from ghnorth_cli.finetune.config import FinetuneConfig

        base = {**self.fixed, **self.per_arch.get(arch, {})}
        configs = [{**base, **combo} for combo in expand(self.grids)]
        for config in configs:
            warmup, epochs = config.get("warmup_epochs", 0), config.get("epochs", FinetuneConfig.epochs)
            if warmup >= epochs:
                raise GhnorthError(f"{arch}: warmup_epochs={warmup} must be below epochs={epochs} "
                                   f"(set with --grid or --set)")
        return configs

    def to_dict(self) -> dict[str, Any]:
        return {"archs": list(self.archs), "inits": [i.to_dict() for i in self.inits], "data": self.data.to_dict(),
                "grids": [{k: list(v) for k, v in g.items()} for g in self.grids], "seeds": list(self.seeds),
                "fixed": dict(self.fixed), "per_arch": {k: dict(v) for k, v in self.per_arch.items()},
                "orth": self.orth.to_dict()}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


@dataclass(frozen=True)
class Run:
    """One fine-tuning run of an experiment."""

    arch: str
    init: InitSpec
    hparams: Mapping[str, Any]
    seed: int
    data: DataSettings

    def identity(self) -> dict[str, Any]:
        """What the run's configuration is (seed excluded); hashed into ``config_id``."""
        return {"arch": self.arch, "init": {"kind": self.init.kind, "source": self.init.source},
                "hparams": dict(sorted(self.hparams.items())), "data": self.data.to_dict()}

    @property
    def config_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{_slug(self.arch)}-{self.init.slug}-{self.config_id}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "config_id": self.config_id, "arch": self.arch, "init": self.init.to_dict(),
                "hparams": dict(sorted(self.hparams.items())), "seed": self.seed, "data": self.data.to_dict()}


InitFilter = Callable[[InitSpec, str], bool]


def plan_runs(experiment: Experiment, *, applies: InitFilter | None = None) -> list[Run]:
    """Every run, ordered by arch, init, configuration, seed; ``applies(init, arch)`` drops pairs."""
    runs = []
    for arch in experiment.archs:
        for init in experiment.inits:
            if applies is not None and not applies(init, arch):
                continue
            for hparams in experiment.configurations(arch):
                runs.extend(Run(arch, init, hparams, seed, experiment.data) for seed in experiment.seeds)
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); shards count from 1."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise GhnorthError(f"--shard {text!r}: expected I/N, e.g. 1/4") from None
    if not sep or n < 1 or not 1 <= i <= n:
        raise GhnorthError(f"--shard {text!r}: I must be between 1 and N (shards count from 1)")
    return i, n


def select_shard(runs: Sequence[Run], *, index: int, count: int) -> list[Run]:
    """Runs ``index-1, index-1+count, ...``: round robin, so every shard gets a similar mix."""
    return list(runs[index - 1 :: count])
