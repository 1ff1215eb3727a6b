"""Where an experiment's pending runs execute: ``experiment run --executor local|ray|slurm``.

Every executor takes the same :class:`RunTask` list and calls :func:`run_task` once per task, in
a worker of its own engine:

- :class:`SerialExecutor`: one after another in this process (``--executor local --jobs 1``);
- :class:`LocalExecutor`: a pool of ``jobs`` slots on this machine, each run in a fresh process
  (forked from a fork server), GPU runs spread over the visible devices, ``runs_per_gpu`` of them per device;
- :class:`RayExecutor`: Ray tasks (https://docs.ray.io), on a cluster at ``address`` or on a
  Ray started here, each task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs;
- :class:`SlurmExecutor`: one Slurm job array through submitit
  (https://github.com/facebookincubator/submitit), or submitit's local executor where there is
  no Slurm.

The guarantees live in :func:`~ghnorth_cli.experiment.runner.execute_run`, which every worker
calls: config.json first, metrics.json last and atomically, a failing run recorded as failed. A
worker that dies without a metrics.json (killed, out of memory) is recorded as failed by the
executor. Ctrl-C stops the workers; finished runs keep their files and a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment.plan import Run
from ghnorth_cli.experiment.runner import (
    RunFunction,
    RunOutcome,
    RunPaths,
    execute_run,
    outcome_on_disk,
    record_crash,
)

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray", "slurm")
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class RunTask:
    """One pending run as a worker receives it (picklable)."""

    run: Run
    paths: RunPaths
    run_fn: RunFunction
    threads: int | None = 1  # torch intra-op threads of the run (None: torch's default)
    device: str | None = None  # a device slot of the local pool: replaces the run function's device
    executor: str = "local"


Started = Callable[[Run], None]
Ended = Callable[[RunOutcome], None]


class ExperimentExecutor(Protocol):
    """Executes tasks, calling ``started(run)`` when it knows a run began and ``ended(outcome)`` for each."""

    name: str

    def execute(self, tasks: Sequence[RunTask], *, started: Started, ended: Ended) -> None: ...


# --- the worker side ----------------------------------------------------------------------------------


@contextmanager
def _run_log(paths: RunPaths, *, only: bool) -> Iterator[None]:
    """Log records of the run go to its run.log (``only``: nowhere else, as in a worker process)."""
    root = logging.getLogger()
    paths.dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.run_log, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    before = (list(root.handlers), root.level)
    quieted = []
    if only:
        root.handlers = [handler]
    else:  # the handlers already there keep their level (-q stays quiet on stderr), run.log gets INFO
        for other in root.handlers:
            if other.level < root.level:
                quieted.append((other, other.level))
                other.setLevel(root.level)
        root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:  # -v (DEBUG) stays as it is
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers, level = before
        root.setLevel(level)
        for other, other_level in quieted:
            other.setLevel(other_level)
        handler.close()


def _with_device(run_fn: RunFunction, device: str | None) -> RunFunction:
    if device is None or not dataclasses.is_dataclass(run_fn) or not hasattr(run_fn, "device"):
        return run_fn
    return dataclasses.replace(run_fn, device=device)


def run_task(task: RunTask, *, in_process: bool = False) -> RunOutcome:
    """Execute one task: its log in run.log, ``task.threads`` torch threads, the slot's device.

    In a worker (not ``in_process``) an unexpected exception also fails only this run: its traceback
    goes to run.log and its one-line summary to metrics.json. In this process it propagates, as it
    did before executors existed.
    """
    from ghnorth_cli.threads import intra_op_threads

    run_fn = _with_device(task.run_fn, task.device)
    execution = {"executor": task.executor, "threads": task.threads,
                 "device": task.device or getattr(task.run_fn, "device", None)}
    with _run_log(task.paths, only=not in_process), intra_op_threads(task.threads):
        try:
            return execute_run(task.run, task.paths, run_fn, execution=execution)
        except Exception as exc:
            if in_process:
                raise
            log.exception("run %s stopped by an unexpected error", task.run.run_id)
            return record_crash(task.run, task.paths, f"{type(exc).__name__}: {exc} (traceback in run.log)")


def _child_main(task: RunTask) -> None:
    """A local pool process: Ctrl-C is the parent's to handle (it terminates the children)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_task(task)


def _collect(task: RunTask, *, reason: str) -> RunOutcome:
    """The outcome a worker wrote, or a failure saying why there is none."""
    return outcome_on_disk(task.run, task.paths) or record_crash(task.run, task.paths, reason)


def _started_since(paths: RunPaths, since: float) -> bool:
    """Whether a worker began the run after ``since`` (it writes config.json first)."""
    try:
        return paths.config.stat().st_mtime >= since
    except OSError:
        return False


# --- executors ----------------------------------------------------------------------------------------


class SerialExecutor:
    """One run after another in this process (``--jobs 1``): the behaviour before executors existed."""

    name = "local"

    def execute(self, tasks: Sequence[RunTask], *, started: Started, ended: Ended) -> None:
        for task in tasks:
            started(task.run)
            ended(run_task(dataclasses.replace(task, executor=self.name), in_process=True))


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without CUDA); does not initialize CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_slots(*, device: str, jobs: int | str, runs_per_gpu: int, threads: int | None,
                 gpus: int | None = None) -> list[str | None]:
    """The device of each slot of the local pool; its length is the number of runs at once.

    ``jobs="auto"``: one slot per GPU times ``runs_per_gpu`` when runs go to CUDA, else as many
    runs as the CPUs hold at ``threads`` threads each, at most 4 (small runs on a shared machine).
    CUDA runs (``device`` auto with a GPU, ``cuda`` or ``cuda:N``) go round robin over the GPUs
    (``cuda:N``: that one only), never more than ``runs_per_gpu`` on one device.
    """
    if runs_per_gpu < 1:
        raise GhnorthError("--runs-per-gpu must be at least 1")
    count = visible_gpus() if gpus is None else gpus
    on_cuda = device.startswith("cuda") or (device == "auto" and count > 0)
    if on_cuda:
        if count == 0:
            raise GhnorthError(f"--device {device}: CUDA is not available here")
        index = device.partition(":")[2]
        ids = [int(index)] if index else list(range(count))
        if ids[0] >= count:
            raise GhnorthError(f"--device {device}: this machine has {count} CUDA device(s)")
        slots: list[str | None] = [f"cuda:{i}" for _ in range(runs_per_gpu) for i in ids]
        wanted = len(slots) if jobs == "auto" else int(jobs)
        return slots[:max(1, wanted)]
    if jobs == "auto":
        wanted = max(1, min(4, _usable_cpus() // max(1, threads or 1)))
    else:
        wanted = int(jobs)
    if wanted < 1:
        raise GhnorthError("--jobs must be at least 1 (or auto)")
    return [None] * wanted


# What a run's process needs, imported once by the fork server rather than once per run (seconds each).
PRELOAD = ["torch", "timm", "ghnorth_cli.models", "ghnorth_cli.finetune", "ghnorth_cli.experiment.executor",
           "ghnorth_cli.experiment.executors"]


def _process_context():
    """``forkserver`` (fresh processes forked from a clean server that has imported torch), else ``spawn``."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class LocalExecutor:
    """A pool of processes on this machine, one fresh process per run, ``len(slots)`` at once.

    Each run gets a process of its own (its memory, CUDA context and crashes stay its own), forked
    from a fork server that imported torch once, so starting one costs milliseconds, not an import.
    """

    name = "local"

    def __init__(self, slots: Sequence[str | None]) -> None:
        if not slots:
            raise GhnorthError("--jobs must be at least 1")
        self.slots = list(slots)

    def execute(self, tasks: Sequence[RunTask], *, started: Started, ended: Ended) -> None:
        from multiprocessing.connection import wait

        context = _process_context()
        queue = deque(tasks)
        free = list(range(len(self.slots)))
        running: dict[int, tuple[Any, RunTask, int]] = {}  # process sentinel -> (process, task, slot)
        try:
            while queue or running:
                while queue and free:
                    slot = free.pop(0)
                    task = dataclasses.replace(queue.popleft(), device=self.slots[slot], executor=self.name)
                    process = context.Process(target=_child_main, args=(task,), name=f"ghnorth-{task.run.run_id}")
                    process.start()
                    running[process.sentinel] = (process, task, slot)
                    started(task.run)
                for sentinel in wait(list(running)):
                    process, task, slot = running.pop(sentinel)
                    process.join()
                    free.append(slot)
                    ended(_collect(task, reason=f"its process exited with code {process.exitcode} "
                                                f"before writing metrics.json"))
        finally:
            for process, _, _ in running.values():
                process.terminate()
            for process, _, _ in running.values():
                process.join()


def _ray_task(task: RunTask) -> RunOutcome:
    return run_task(task)


class RayExecutor:
    """Runs as Ray tasks: on the cluster at ``address``, or on a Ray started in this process."""

    name = "ray"

    def __init__(self, *, address: str | None = None, cpus_per_run: float | None = None,
                 gpus_per_run: float = 0.0, max_running: int | None = None,
                 init_options: dict[str, Any] | None = None) -> None:
        self.address, self.gpus_per_run, self.max_running = address, gpus_per_run, max_running
        self.cpus_per_run = cpus_per_run
        self.init_options = init_options or {}

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise GhnorthError('--executor ray needs Ray: pip install "ghnorth[ray]"') from None
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                       **self.init_options}
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {self.address}" if self.address else "here"
                raise GhnorthError(f"cannot start or reach Ray {where}: {exc}") from None
        return ray

    def check_gpus(self, device: str) -> None:
        """Refuse CUDA runs that Ray could never place: no GPU requested, or none in the cluster."""
        if not device.startswith("cuda"):
            return
        if self.gpus_per_run <= 0:
            raise GhnorthError(f"--device {device} with --executor ray needs --gpus-per-run (e.g. 0.25)")
        if self._connect().cluster_resources().get("GPU", 0) < self.gpus_per_run:
            raise GhnorthError(f"--device {device}: the Ray cluster has no GPU")

    def execute(self, tasks: Sequence[RunTask], *, started: Started, ended: Ended) -> None:
        ray = self._connect()
        options: dict[str, Any] = {"num_gpus": self.gpus_per_run, "max_retries": 0}
        threads = max((t.threads or 1 for t in tasks), default=1)
        options["num_cpus"] = self.cpus_per_run if self.cpus_per_run is not None else threads
        remote = ray.remote(**options)(_ray_task)
        queue = deque(dataclasses.replace(t, executor=self.name) for t in tasks)
        submitted: dict[Any, RunTask] = {}
        waiting: dict[Any, RunTask] = {}  # submitted, not seen starting yet
        since = time.time() - 1
        try:
            while queue or submitted:
                while queue and (self.max_running is None or len(submitted) < self.max_running):
                    task = queue.popleft()
                    ref = remote.remote(task)
                    submitted[ref] = waiting[ref] = task
                done, _ = ray.wait(list(submitted), num_returns=1, timeout=POLL_SECONDS)
                for ref, task in list(waiting.items()):
                    if ref in done or _started_since(task.paths, since):
                        del waiting[ref]
                        started(task.run)
                for ref in done:
                    task = submitted.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # the worker died or Ray lost the task
                        outcome = _collect(task, reason=f"Ray: {type(exc).__name__}: {exc}".splitlines()[0])
                    ended(outcome)
        finally:
            for ref in submitted:
                ray.cancel(ref, force=True)


def _submitit_task(task: RunTask) -> RunOutcome:
    return run_task(task)


@dataclass
class SlurmSettings:
    """The job array's resources (submitit's names in comments)."""

    partition: str | None = None  # slurm_partition
    time_minutes: int = 60  # timeout_min: per run
    gpus_per_run: int = 0  # gpus_per_node
    cpus_per_run: int | None = None  # cpus_per_task (default: the run's threads)
    max_running: int | None = None  # slurm_array_parallelism (None: 32; locally: as the CPUs hold)
    mem_gb: float | None = None  # mem_gb


class SlurmExecutor:
    """The runs as one Slurm job array via submitit; submitit's local executor where there is no Slurm."""

    name = "slurm"

    def __init__(self, folder: str | Path, settings: SlurmSettings, *, cluster: str | None = None) -> None:
        self.folder, self.settings = Path(folder), settings
        self.cluster = cluster

    def _max_running(self, cluster: str, threads: int) -> int:
        if self.settings.max_running is not None:
            return self.settings.max_running
        return 32 if cluster != "local" else len(device_slots(device="cpu", jobs="auto", runs_per_gpu=1,
                                                                  threads=threads))

    def _executor(self, threads: int):
        try:
            import submitit
        except ImportError:
            raise GhnorthError('--executor slurm needs submitit: pip install "ghnorth[slurm]"') from None
        cluster = self.cluster or ("slurm" if shutil.which("sbatch") else "local")
        self.running_cap = self._max_running(cluster, threads)
        if cluster == "local":
            log.warning("warning: no Slurm here (no sbatch): running the job array with submitit's local "
                        "executor, %d run(s) at once", self.running_cap)
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        s = self.settings
        executor.update_parameters(
            name="ghnorth-experiment", timeout_min=s.time_minutes, gpus_per_node=s.gpus_per_run,
            cpus_per_task=s.cpus_per_run or threads, mem_gb=s.mem_gb, slurm_partition=s.partition,
            slurm_array_parallelism=self.running_cap,
        )
        return executor, cluster

    def execute(self, tasks: Sequence[RunTask], *, started: Started, ended: Ended) -> None:
        if not tasks:
            return
        executor, cluster = self._executor(max(t.threads or 1 for t in tasks))
        tasks = [dataclasses.replace(t, executor=self.name) for t in tasks]
        queue = deque(tasks)
        jobs: dict[Any, RunTask] = {}
        waiting: dict[Any, RunTask] = {}
        since = time.time() - 1
        try:
            if cluster != "local":  # one array; Slurm keeps max_running of it running
                for job, task in zip(executor.map_array(_submitit_task, list(queue)), list(queue)):
                    jobs[job] = waiting[job] = task
                queue.clear()
            while queue or jobs:
                while queue and len(jobs) < self.running_cap:  # the local executor has no limit
                    task = queue.popleft()
                    job = executor.submit(_submitit_task, task)
                    jobs[job] = waiting[job] = task
                for job, task in list(waiting.items()):
                    if job.done() or _started_since(task.paths, since):
                        del waiting[job]
                        started(task.run)
                for job in [j for j in jobs if j.done()]:
                    task = jobs.pop(job)
                    try:
                        outcome = job.result()
                    except Exception as exc:  # the job failed outside the run (killed, timed out, node lost)
                        first = str(exc).strip().splitlines()
                        outcome = _collect(task, reason=f"job {job.job_id}: {first[-1] if first else exc}")
                    ended(outcome)
                if jobs:
                    time.sleep(POLL_SECONDS)
        finally:
            for job in jobs:
                job.cancel(check=False)


def parse_jobs(text: str | None) -> int | str | None:
    """``--jobs``: a count, ``auto``, or None (not given)."""
    if text is None or text == "auto":
        return text
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise GhnorthError(f"--jobs {text!r}: give a count of at least 1, or auto")
    return jobs


def make_executor(name: str, *, out_dir: str | Path, device: str = "auto", jobs: int | str | None = None,
                  runs_per_gpu: int = 1, threads: int | None = 1, ray_address: str | None = None,
                  gpus_per_run: float | None = None, cpus_per_run: float | None = None,
                  partition: str | None = None, time_minutes: int = 60) -> ExperimentExecutor:
    """The executor ``experiment run --executor NAME`` uses, checked before any run starts.

    ``jobs`` is how many runs execute at once: the local pool's size (default 1: one after
    another in this process), Ray's cap on tasks in flight (default: as Ray's resources allow),
    the Slurm array's parallelism (default 32). Local CUDA runs without a GPU are refused here.
    """
    if name not in EXECUTORS:
        raise GhnorthError(f"--executor {name!r}: choose from {', '.join(EXECUTORS)}")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise GhnorthError("--gpus-per-run must be 0 or more")
    if name == "local":
        slots = device_slots(device=device, jobs=1 if jobs is None else jobs, runs_per_gpu=runs_per_gpu,
                             threads=threads)
        return SerialExecutor() if len(slots) == 1 and jobs in (None, 1) else LocalExecutor(slots)
    if name == "ray":
        ray = RayExecutor(address=ray_address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run or 0.0,
                          max_running=jobs if isinstance(jobs, int) else None)
        ray.check_gpus(device)
        return ray
    gpus = int(gpus_per_run or 0)
    if gpus != (gpus_per_run or 0):
        raise GhnorthError("--gpus-per-run with --executor slurm is a whole number (GPUs per array task)")
    if device.startswith("cuda") and gpus == 0:
        raise GhnorthError(f"--device {device} with --executor slurm needs --gpus-per-run 1")
    settings = SlurmSettings(partition=partition, time_minutes=time_minutes, gpus_per_run=gpus,
                             cpus_per_run=int(cpus_per_run) if cpus_per_run else None,
                             max_running=jobs if isinstance(jobs, int) else None)
    return SlurmExecutor(Path(out_dir) / "submitit", settings)
