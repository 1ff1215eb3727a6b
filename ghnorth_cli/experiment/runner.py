"""Running an experiment's runs one after another, each in its own directory, resumably.

Layout of an experiment directory::

    DIR/experiment.json              the definition (rewritten by every invocation)
    DIR/inits/*.safetensors          materialized GHN / GHN-orth inits, shared by runs
    DIR/runs/<run_id>/config.json    the run (written first)
    DIR/runs/<run_id>/metrics.json   written last, atomically: its presence means "finished"
    DIR/runs/<run_id>/log.jsonl      one line per epoch
    DIR/runs/<run_id>/model.safetensors   only with --save-models

A run that failed (e.g. the loss diverged) gets a metrics.json with ``"failed"``: it counts as
finished, is reported as failed and is never selected; ``retry_failed`` runs it again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment.plan import Experiment, Run

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
INITS_DIR = "inits"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps its files."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def log(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.dir / "model.safetensors"

    @property
    def state(self) -> Path:
        return self.dir / "state.pt"


# An executor fine-tunes one run and returns its metrics ({"final": {...}, "best": {...}, ...});
# it may write the run's log and checkpoint; a GhnorthError marks the run as failed.
Executor = Callable[[Run, RunPaths], dict[str, Any]]


@dataclass
class RunOutcome:
    run: Run
    status: str  # "done" | "skipped" | "failed"
    metrics: dict[str, Any]


def write_json_atomic(path: Path, data: Any) -> None:
    from ghnorth_cli.checkpoint import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise GhnorthError(f"cannot read {path}: {exc}") from None


def run_paths(out_dir: Path, run: Run) -> RunPaths:
    return RunPaths(Path(out_dir) / RUNS_DIR / run.run_id)


def finished_metrics(paths: RunPaths, run: Run) -> dict[str, Any] | None:
    """The metrics of a finished run of the same configuration, else None."""
    if not paths.metrics.is_file() or not paths.config.is_file():
        return None
    if read_json(paths.config).get("config_id") != run.config_id:
        raise GhnorthError(f"{paths.dir} holds a different run than {run.run_id}; move it away")
    return read_json(paths.metrics)


def execute_run(run: Run, paths: RunPaths, executor: Executor) -> RunOutcome:
    """Run one configuration; a GhnorthError is recorded as a failed run instead of stopping."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.config, run.to_dict())
    start = time.perf_counter()
    try:
        metrics = executor(run, paths)
        status = "done"
    except GhnorthError as exc:
        log.warning("warning: run %s failed: %s", run.run_id, exc)
        metrics = {"failed": str(exc)}
        status = "failed"
    metrics = {**metrics, "run_seconds": time.perf_counter() - start}
    write_json_atomic(paths.metrics, metrics)
    return RunOutcome(run, status, metrics)


def _describe(metrics: dict[str, Any]) -> str:
    final = metrics.get("final") or {}
    if "failed" in metrics:
        return "failed"
    return f"val {final.get('val_acc', float('nan')):.4f} test {final.get('test_acc', float('nan')):.4f}"


def run_experiment(
    experiment: Experiment,
    runs: Sequence[Run],
    *,
    out_dir: str | Path,
    executor: Executor,
    preflight: Callable[[Sequence[Run]], None] | None = None,
    retry_failed: bool = False,
    on_run: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Execute ``runs`` (a plan or a shard of it) under ``out_dir``, skipping finished ones.

    ``preflight(pending_runs)`` is called once before any run: the place to stop on problems that
    would fail every run (missing data or GHN), since an error inside a run only fails that run.
    """
    out = Path(out_dir)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "experiment.json", experiment.to_dict())
    finished = {run.run_id: finished_metrics(run_paths(out, run), run) for run in runs}
    pending = [r for r in runs if finished[r.run_id] is None or (retry_failed and "failed" in finished[r.run_id])]
    log.info("%d runs: %d finished before, %d to run", len(runs), len(runs) - len(pending), len(pending))
    if preflight is not None:
        preflight(pending)
    numbers = {run.run_id: i for i, run in enumerate(pending, start=1)}
    outcomes = []
    for run in runs:
        if run.run_id in numbers:
            number = numbers[run.run_id]
            log.info("run %d/%d %s ...", number, len(pending), run.run_id)
            outcome = execute_run(run, run_paths(out, run), executor)
            log.info("run %d/%d %s: %s (%.0f s)", number, len(pending), run.run_id, _describe(outcome.metrics),
                     outcome.metrics["run_seconds"])
        else:
            outcome = RunOutcome(run, "skipped", finished[run.run_id])
        outcomes.append(outcome)
        if on_run is not None:
            on_run(outcome)
    return outcomes
