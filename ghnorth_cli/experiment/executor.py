"""The executor that runs an experiment's runs as ordinary ``ghnorth finetune`` runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghnorth_cli.experiment.initspec import WEIGHT_SELECTION, OrthSettings
from ghnorth_cli.experiment.materialize import GhnPredictor, LoadedGhnPredictor, materialize_init
from ghnorth_cli.experiment.plan import Run
from ghnorth_cli.experiment.runner import INITS_DIR, RunPaths

log = logging.getLogger(__name__)

DEFAULT_IMG_SIZE = 32  # fine-tuning's own default when neither the grid nor the options set it


@dataclass
class FinetuneExecutor:
    """Fine-tune one run with :func:`ghnorth_cli.finetune.finetune`; returns its metrics."""

    out_dir: Path
    orth: OrthSettings
    data_dir: str | None = None
    download: bool = False  # fetch a missing CIFAR into data_dir once, in preflight, before any run
    device: str = "auto"
    save_models: bool = False
    save_every: int = 0
    options: dict[str, Any] | None = None  # other FinetuneConfig fields, e.g. {"amp": False}
    tensorboard: str | None = None  # TensorBoard folder: each run logs into <tensorboard>/<run_id>
    predictor: GhnPredictor = field(default_factory=LoadedGhnPredictor)

    def preflight(self, runs: Sequence[Run]) -> None:
        """Fail now, once, on what would make every run fail: data, architectures, GHNs, checkpoints.

        After it passes, an error inside a run (e.g. a diverging loss) fails only that run.
        """
        from ghnorth_cli.finetune.data import load_dataset
        from ghnorth_cli.models import resolve_spec
        from ghnorth_cli.weight_selection import load_teacher

        if not runs:
            return
        specs = {arch: resolve_spec(arch) for arch in dict.fromkeys(r.arch for r in runs)}
        for run in runs:
            if run.init.kind == "ghn-orth":
                self.orth.for_arch(specs[run.arch].name)
        check = getattr(self.predictor, "check", None)
        for source in dict.fromkeys(r.init.source for r in runs if r.init.needs_materializing):
            if check is not None:
                check(source)
        teachers = dict.fromkeys((r.init.source, int(r.hparams.get("img_size") or DEFAULT_IMG_SIZE),
                                  r.hparams.get("small_input")) for r in runs if r.init.kind == WEIGHT_SELECTION)
        for teacher, img_size, small_input in teachers:  # the teacher's weights can be had (pretrained ones cached)
            load_teacher(teacher, img_size=img_size, small_input=small_input)
        data = runs[0].data
        dataset = load_dataset(data.data, data_dir=self.data_dir, download=self.download, img_size=8)
        log.info("data %s: %d training images, %d classes", dataset.name, len(dataset.train), dataset.num_classes)

    def init_for(self, run: Run) -> str:
        """What ``--init`` fine-tuning gets: a built-in name or a checkpoint file."""
        if not run.init.needs_materializing:
            return run.init.finetune_init
        img_size = int(run.hparams.get("img_size") or DEFAULT_IMG_SIZE)
        path = materialize_init(run.init, arch=run.arch, img_size=img_size, small_input=run.hparams.get("small_input"),
                                seed=run.seed, data=run.data.data,
                                cache_dir=self.out_dir / INITS_DIR, orth=self.orth, predictor=self.predictor)
        return str(path)

    def __call__(self, run: Run, paths: RunPaths) -> dict[str, Any]:
        from ghnorth_cli.finetune import FinetuneConfig, finetune

        resume = bool(self.save_every) and paths.state.is_file()
        fields = {
            **(self.options or {}), **run.hparams, **run.data.to_dict(),
            "arch": run.arch, "init": self.init_for(run), "data_dir": self.data_dir, "seed": run.seed,
            "device": self.device, "log": str(paths.log),
            "output": str(paths.checkpoint) if self.save_models else None,
            "state": str(paths.state) if self.save_every else None, "save_every": self.save_every, "resume": resume,
            "tensorboard": str(Path(self.tensorboard) / run.run_id) if self.tensorboard else None,
        }
        result = finetune(FinetuneConfig(**fields))
        if self.save_every:
            paths.state.unlink(missing_ok=True)
        metrics = dict(result.metrics)
        metrics["num_params"] = sum(p.numel() for p in result.model.parameters())
        return metrics
