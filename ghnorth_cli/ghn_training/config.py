"""Everything that defines a GHN training run, as one frozen dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from ghnorth_cli.errors import GhnorthError

SCHEDULES = ("cosine", "step", "constant")
# Options that may change when a run is resumed (they do not change the result).
RESUMABLE_CHANGES = frozenset({"output", "log", "save_every", "device", "log_every"})


class GHNTrainConfigError(GhnorthError):
    """Training options that cannot work together."""


@dataclass(frozen=True)
class GHNTrainConfig:
    """A GHN training run: data, architecture space, optimization, the GHN's size and outputs."""

    output: str
    data: str = "fashion-mnist"
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None
    arch_space: str = "tiny"
    extra_archs: tuple[str, ...] = ()
    heldout: int = 16
    steps: int = 1000
    meta_batch: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    warmup: int = 0
    grad_clip: float = 5.0
    seed: int = 0
    img_size: int = 32
    hid: int = 32
    max_shape: tuple[int, int, int, int] = (64, 64, 7, 7)
    virtual_edges: bool = True
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None: on CUDA (the run records what it used)
    save_every: int = 100
    log_every: int = 10
    log: str | None = None
    train_limit: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, "--steps must be at least 1"),
            (self.meta_batch >= 1, "--meta-batch must be at least 1"),
            (self.batch_size >= 2, "--batch-size must be at least 2 (batch norm needs 2 images)"),
            (math.isfinite(self.lr) and self.lr > 0, "--lr must be a finite positive number"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, "--wd must be a finite number >= 0"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (0 <= self.warmup < self.steps, "--warmup must be below --steps"),
            (math.isfinite(self.grad_clip) and self.grad_clip >= 0, "--grad-clip must be 0 (off) or positive"),
            (self.save_every >= 1, "--save-every must be at least 1"),
            (self.heldout >= 0, "--heldout must be 0 or more"),
            (self.img_size >= 32, "--img-size must be at least 32 (the spaces' networks downsample 16-32x)"),
        ]
        for ok, message in checks:
            if not ok:
                raise GHNTrainConfigError(message)

    @property
    def state_path(self) -> str:
        """Where checkpoints for ``--resume`` go: next to the output."""
        return f"{self.output}.state.pt"

    def replace(self, **changes: Any) -> "GHNTrainConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes) if self.classes is not None else None
        data["extra_archs"] = list(self.extra_archs)
        data["max_shape"] = list(self.max_shape)
        return data

    def result_options(self) -> dict[str, Any]:
        """The options that change the result (compared on resume, stored as provenance)."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_CHANGES}
