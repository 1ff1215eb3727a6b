"""experiment run --executor local|ray|slurm: same report whichever executes, the init cache made once,
crashed and interrupted workers, device slots, --threads, the progress display."""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from finetune_helpers import TINY_ARCH, make_fashion_dir
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.experiment import plan_runs, run_experiment
from ghnorth_cli.experiment.executors import LocalExecutor, device_slots, make_executor, parse_jobs
from ghnorth_cli.experiment.progress import ExperimentProgress
from ghnorth_cli.experiment.runner import RunOutcome, read_json
from test_experiment import FakeExecutor, experiment
from test_experiment_inits import ConstantPredictor, make


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fmnist"), num_classes=3, train_per_class=8, test_per_class=4)


def tiny_grid(cli, out: Path, data_dir: Path, *extra: str):
    """Two runs that need the same GHN-orth init (same arch, size, seed) at the same time."""
    return cli("experiment", "run", "-o", out, "-a", TINY_ARCH, "--data", "fashion-mnist", "--data-dir", data_dir,
               "--val-size", "6", "--init", "ghn-orth:ghn2-fmnist-tiny", "--orth-from", "3", "--beta", "0",
               "--grid", "epochs=1,2", "--set", "img_size=16", "--set", "batch_size=8", "--seeds", "1", *extra)


def table_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "report.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("dir", "run_seconds")} for row in csv.DictReader(f)]


@pytest.fixture
def ray_stopped():
    yield
    import ray

    ray.shutdown()


@pytest.mark.slow
def test_every_executor_gives_the_same_report(cli, tmp_path, fashion_dir, ray_stopped):
    ways = {"serial": ["--jobs", "1"], "pool": ["--jobs", "2"], "ray": ["--executor", "ray", "--cpus-per-run", "1"],
            "slurm": ["--executor", "slurm", "--jobs", "2"]}
    for name, options in ways.items():
        result = tiny_grid(cli, tmp_path / name, fashion_dir, *options)
        assert result.exit_code == 0, (name, result.stderr)
        assert "2 of 2 runs done, 0 failed" in result.stderr, (name, result.stderr)
    assert "no Slurm here" in result.stderr  # submitit's local executor stood in
    reports = {name: (tmp_path / name / "report.md").read_text() for name in ways}
    assert len(set(reports.values())) == 1, reports
    rows = {name: table_rows(tmp_path / name) for name in ways}
    assert all(r == rows["serial"] for r in rows.values())
    assert len(rows["serial"]) == 2 and all(r["status"] == "done" for r in rows["serial"])
    for name, options in ways.items():
        inits = list((tmp_path / name / "inits").glob("*.safetensors"))
        assert len(inits) == 1, (name, inits)  # both runs asked for it; it was made once
        for run_dir in (tmp_path / name / "runs").iterdir():
            execution = read_json(run_dir / "config.json")["execution"]
            assert execution["threads"] == 1
            assert execution["executor"] == {"serial": "local", "pool": "local"}.get(name, name)
            assert "ghnorth_cli.finetune" in (run_dir / "run.log").read_text()


def test_init_cache_is_filled_once_when_workers_ask_at_the_same_moment(tmp_path):
    class SlowPredictor(ConstantPredictor):
        def __call__(self, model, **kwargs):
            time.sleep(0.3)
            return super().__call__(model, **kwargs)

    predictor, barrier, paths = SlowPredictor(), threading.Barrier(3), []

    def worker():
        barrier.wait()
        paths.append(make("ghn-orth:some-ghn", tmp_path, predictor))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert predictor.calls == 1 and len(set(paths)) == 1 and paths[0].is_file()


class ThreadsSeen(FakeExecutor):
    """Records the torch threads a run had; one run ends its process abruptly, one never ends."""

    def __init__(self, *, crash: str = "", hang: str = "", bug: str = ""):
        super().__init__()
        self.crash, self.hang, self.bug = crash, hang, bug

    def __call__(self, run, paths):
        if run.run_id == self.crash:
            os._exit(3)
        if run.run_id == self.bug:
            raise RuntimeError("an unexpected bug")
        if run.run_id == self.hang:
            time.sleep(600)
        logging.getLogger("ghnorth_cli.fake").info("fake fine-tuning of %s", run.run_id)
        metrics = super().__call__(run, paths)
        return {**metrics, "threads": torch.get_num_threads()}


def test_serial_runs_use_the_fixed_threads_and_log_to_their_folder(tmp_path):
    exp = experiment(seeds=(0,))
    before = torch.get_num_threads()
    root, stderr = logging.getLogger(), io.StringIO()
    handler, level = logging.StreamHandler(stderr), root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # ghnorth -q
    try:
        outcomes = run_experiment(exp, plan_runs(exp), out_dir=tmp_path, executor=ThreadsSeen(), threads=1)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert {o.metrics["threads"] for o in outcomes} == {1} and torch.get_num_threads() == before
    run_log = (tmp_path / "runs" / outcomes[0].run.run_id / "run.log").read_text()
    assert f"fake fine-tuning of {outcomes[0].run.run_id}" in run_log and "fake" not in stderr.getvalue()
    outcomes = run_experiment(exp, plan_runs(exp), out_dir=tmp_path / "two", executor=ThreadsSeen(), threads=2)
    assert {o.metrics["threads"] for o in outcomes} == {2}
    assert read_json(tmp_path / "two" / "runs" / outcomes[0].run.run_id / "config.json")["execution"]["threads"] == 2


def test_pool_records_dead_and_buggy_workers_as_failed_and_the_other_runs_finish(tmp_path):
    exp = experiment(seeds=(0,))
    runs = plan_runs(exp)
    victim, buggy = runs[1].run_id, runs[2].run_id
    outcomes = run_experiment(exp, runs, out_dir=tmp_path, executor=ThreadsSeen(crash=victim, bug=buggy),
                              pool=LocalExecutor([None, None]))
    status = {o.run.run_id: o.status for o in outcomes}
    assert status.pop(victim) == status.pop(buggy) == "failed" and set(status.values()) == {"done"}
    failed = read_json(tmp_path / "runs" / victim / "metrics.json")["failed"]
    assert "exited with code 3" in failed
    assert read_json(tmp_path / "runs" / buggy / "metrics.json")["failed"].startswith("RuntimeError: an unexpected bug")
    assert "Traceback" in (tmp_path / "runs" / buggy / "run.log").read_text()
    assert {o.metrics.get("threads") for o in outcomes if o.status == "done"} == {1}


def test_interrupt_stops_the_workers_and_keeps_finished_runs(tmp_path):
    exp = experiment(seeds=(0,))
    runs = plan_runs(exp)
    hung = runs[0].run_id
    ended: list[RunOutcome] = []

    def stop_after_one(outcome: RunOutcome) -> None:
        ended.append(outcome)
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, runs, out_dir=tmp_path, executor=ThreadsSeen(hang=hung),
                       pool=LocalExecutor([None, None]), on_run=stop_after_one)
    assert time.monotonic() - start < 300  # the hung run's process was terminated, not waited for
    finished = ended[0].run.run_id
    assert finished != hung and "final" in read_json(tmp_path / "runs" / finished / "metrics.json")
    assert not (tmp_path / "runs" / hung / "metrics.json").exists()  # unfinished: runs again on resume
    executor = FakeExecutor()
    run_experiment(exp, runs, out_dir=tmp_path, executor=executor)
    assert finished not in executor.calls and hung in executor.calls


def test_device_slots_spread_and_pack_gpu_runs():
    assert device_slots(device="auto", jobs="auto", runs_per_gpu=2, threads=1, gpus=2) == [
        "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert device_slots(device="cuda:1", jobs="auto", runs_per_gpu=3, threads=1, gpus=2) == ["cuda:1"] * 3
    assert device_slots(device="cuda", jobs=3, runs_per_gpu=4, threads=1, gpus=1) == ["cuda:0"] * 3
    assert device_slots(device="auto", jobs=3, runs_per_gpu=1, threads=1, gpus=0) == [None] * 3
    assert 1 <= len(device_slots(device="cpu", jobs="auto", runs_per_gpu=1, threads=1, gpus=0)) <= 4
    with pytest.raises(GhnorthError, match="CUDA is not available"):
        device_slots(device="cuda", jobs=1, runs_per_gpu=1, threads=1, gpus=0)
    with pytest.raises(GhnorthError, match="1 CUDA device"):
        device_slots(device="cuda:1", jobs=1, runs_per_gpu=1, threads=1, gpus=1)


def test_executor_options_are_checked_before_any_run(tmp_path):
    assert parse_jobs("auto") == "auto" and parse_jobs("3") == 3 and parse_jobs(None) is None
    for bad in ("0", "two"):
        with pytest.raises(GhnorthError, match="--jobs"):
            parse_jobs(bad)
    with pytest.raises(GhnorthError, match="--executor"):
        make_executor("dask", out_dir=tmp_path)
    with pytest.raises(GhnorthError, match="whole number"):
        make_executor("slurm", out_dir=tmp_path, gpus_per_run=0.5)
    with pytest.raises(GhnorthError, match="--gpus-per-run 1"):
        make_executor("slurm", out_dir=tmp_path, device="cuda")
    with pytest.raises(GhnorthError, match="--gpus-per-run"):
        make_executor("ray", out_dir=tmp_path, device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_up_front(cli, tmp_path):
    result = cli("experiment", "run", "-o", tmp_path / "e", "-a", TINY_ARCH, "--data", "fashion-mnist",
                 "--init", "default", "--seeds", "1", "--device", "cuda")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["ghnorth: error: --device cuda: CUDA is not available here"]
    assert not (tmp_path / "e").exists()


def test_progress_counts_runs_and_draws_one_bar(tmp_path):
    from rich.console import Console

    exp = experiment(seeds=(0,))
    runs = plan_runs(exp)
    run_experiment(exp, runs[:1], out_dir=tmp_path, executor=FakeExecutor())  # finished before
    stream = io.StringIO()
    progress = ExperimentProgress(enabled=True, console=Console(file=stream, force_terminal=True, width=120))
    with progress:
        run_experiment(exp, runs, out_dir=tmp_path, executor=FakeExecutor(fail={runs[2].run_id}),
                       on_plan=progress.on_plan, on_start=progress.on_start, on_run=progress.on_run)
    assert (progress.total, progress.pending, progress.done, progress.failed, progress.left) == (4, 3, 2, 1, 0)
    assert "3/3" in stream.getvalue() and "0 running, 1 failed, 0 left" in stream.getvalue()
    quiet = io.StringIO()
    with ExperimentProgress(enabled=False, console=Console(file=quiet, force_terminal=True)) as progress:
        progress.on_plan(4, 3)
    assert quiet.getvalue() == ""


def _experiment_options() -> set[str]:
    import typer.main

    from ghnorth_cli.cli import app

    run = typer.main.get_command(app).commands["experiment"].commands["run"]
    return {name for param in run.params for name in param.opts if name.startswith("--")}


@pytest.mark.parametrize("args, message", [
    (["--init", "ghn:no-such-ghn"], "no such file"),
    (["--init", "ghn:ghn2-cifar10"], "not cached"),  # offline, with an empty cache
    (["--data", "cifar10", "--init", "default"], "not found"),
    (["--init", "default", "--grid", "epochs=0"], "at least 1"),
    (["--init", "default", "--set", "warmup_epochs=3", "--grid", "epochs=2,5"], "warmup_epochs=3"),
    (["--init", "default", "--set", "lr=0"], "positive"),
])
def test_every_hint_names_an_option_of_experiment_run(cli, tmp_path, monkeypatch, fashion_dir, args, message):
    import re

    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GHNORTH_OFFLINE", "1")
    data = ["--data", "fashion-mnist", "--data-dir", str(fashion_dir)] if "--data" not in args else [
        "--data-dir", str(tmp_path / "nowhere")]
    result = cli("experiment", "run", "-o", tmp_path / "e", "-a", TINY_ARCH, "--seeds", "1", *data, *args)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ghnorth: error: ")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", error))
    assert named <= _experiment_options(), (named, error)
    assert not list((tmp_path / "e").glob("runs/*/metrics.json"))
