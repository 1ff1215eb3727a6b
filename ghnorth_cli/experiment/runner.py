"""Running an experiment's runs one after another, each in its own directory, resumably.

Layout of an experiment directory::

    DIR/experiment.json              the definition (rewritten by every invocation)
    DIR/inits/*.safetensors          materialized GHN / GHN-orth inits, shared by runs
    DIR/runs/<run_id>/config.json    the run (written first)
    DIR/runs/<run_id>/metrics.json   written last, atomically: its presence means "finished"
    DIR/runs/<run_id>/log.jsonl      one line per epoch
    DIR/runs/<run_id>/run.log        the run's own log messages (warnings, errors, what it did)
    DIR/runs/<run_id>/model.safetensors   only with --save-models

A run that failed (e.g. the loss diverged) gets a metrics.json with ``"failed"``: it counts as
finished, is reported as failed and is never selected; ``retry_failed`` runs it again.

Where the pending runs execute (one after another here, a process pool, Ray, Slurm) is an
:class:`~ghnorth_cli.experiment.executors.ExperimentExecutor`; every one of them calls
:func:`execute_run` for each run, so these guarantees hold whichever executes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment.plan import Experiment, Run

if TYPE_CHECKING:
    from ghnorth_cli.experiment.executors import ExperimentExecutor

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
INITS_DIR = "inits"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
RUN_LOG_FILE = "run.log"


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
    def run_log(self) -> Path:
        return self.dir / RUN_LOG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.dir / "model.safetensors"

    @property
    def state(self) -> Path:
        return self.dir / "state.pt"


# A run function fine-tunes one run and returns its metrics ({"final": {...}, "best": {...}, ...});
# it may write the run's log and checkpoint; a GhnorthError marks the run as failed.
RunFunction = Callable[[Run, RunPaths], dict[str, Any]]
Executor = RunFunction  # the name the first experiment API used


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


def execute_run(run: Run, paths: RunPaths, executor: RunFunction, *,
                execution: dict[str, Any] | None = None) -> RunOutcome:
    """Run one configuration; a GhnorthError is recorded as a failed run instead of stopping.

    ``execution`` (how the run was executed: executor, torch threads, device) is recorded in the
    run's config.json next to the configuration; it is not part of the run's identity.
    """
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.metrics.unlink(missing_ok=True)  # a failed run retried: unfinished until it ends again
    write_json_atomic(paths.config, {**run.to_dict(), **({"execution": execution} if execution else {})})
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


def record_crash(run: Run, paths: RunPaths, reason: str) -> RunOutcome:
    """The outcome of a run whose worker died without writing metrics.json (killed, out of memory)."""
    log.warning("warning: run %s failed: %s", run.run_id, reason)
    metrics = {"failed": reason}
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.metrics, metrics)
    return RunOutcome(run, "failed", metrics)


def outcome_on_disk(run: Run, paths: RunPaths) -> RunOutcome | None:
    """What a worker left in ``paths``: the run's outcome, or None when it wrote no metrics.json."""
    if not paths.metrics.is_file():
        return None
    metrics = read_json(paths.metrics)
    return RunOutcome(run, "failed" if "failed" in metrics else "done", metrics)


def describe(metrics: dict[str, Any]) -> str:
    final = metrics.get("final") or {}
    if "failed" in metrics:
        return "failed"
    return f"val {final.get('val_acc', float('nan')):.4f} test {final.get('test_acc', float('nan')):.4f}"


def run_experiment(
    experiment: Experiment,
    runs: Sequence[Run],
    *,
    out_dir: str | Path,
    executor: RunFunction,
    preflight: Callable[[Sequence[Run]], None] | None = None,
    retry_failed: bool = False,
    on_run: Callable[[RunOutcome], None] | None = None,
    pool: "ExperimentExecutor | None" = None,
    threads: int | None = 1,
    on_plan: Callable[[int, int], None] | None = None,
    on_start: Callable[[Run], None] | None = None,
) -> list[RunOutcome]:
    """Execute ``runs`` (a plan or a shard of it) under ``out_dir``, skipping finished ones.

    ``executor`` fine-tunes one run; ``pool`` decides where the pending runs execute (default: one
    after another in this process; see :mod:`ghnorth_cli.experiment.executors`), each with
    ``threads`` torch intra-op threads (fixed, so a run's numbers do not depend on the pool; None
    leaves torch's setting). ``preflight(pending_runs)`` is called once before any run: the place
    to stop on problems that would fail every run (missing data or GHN), since an error inside a
    run only fails that run. Then ``on_plan(total, pending)``; ``on_start(run)`` when a run starts
    (where the pool can tell) and ``on_run(outcome)`` for every run, skipped ones first.
    """
    from ghnorth_cli.experiment.executors import RunTask, SerialExecutor

    out = Path(out_dir)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "experiment.json", experiment.to_dict())
    finished = {run.run_id: finished_metrics(run_paths(out, run), run) for run in runs}
    pending = [r for r in runs if finished[r.run_id] is None or (retry_failed and "failed" in finished[r.run_id])]
    log.info("%d runs: %d finished before, %d to run", len(runs), len(runs) - len(pending), len(pending))
    if preflight is not None:
        preflight(pending)
    if on_plan is not None:
        on_plan(len(runs), len(pending))
    waiting = {run.run_id for run in pending}
    outcomes = {run.run_id: RunOutcome(run, "skipped", finished[run.run_id]) for run in runs
                if run.run_id not in waiting}
    for outcome in outcomes.values():
        if on_run is not None:
            on_run(outcome)
    count = {"started": 0, "ended": 0}

    def started(run: Run) -> None:
        count["started"] += 1
        log.info("run %d/%d %s ...", count["started"], len(pending), run.run_id)
        if on_start is not None:
            on_start(run)

    def ended(outcome: RunOutcome) -> None:
        count["ended"] += 1
        seconds = outcome.metrics.get("run_seconds")
        took = f" ({seconds:.0f} s)" if seconds is not None else ""
        log.info("run %s done (%d/%d): %s%s", outcome.run.run_id, count["ended"], len(pending),
                 describe(outcome.metrics), took)
        outcomes[outcome.run.run_id] = outcome
        if on_run is not None:
            on_run(outcome)

    tasks = [RunTask(run, run_paths(out, run), executor, threads=threads) for run in pending]
    (pool or SerialExecutor()).execute(tasks, started=started, ended=ended)
    return [outcomes[run.run_id] for run in runs]
