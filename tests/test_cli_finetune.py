"""``ghnorth finetune`` end to end: outputs, streams, errors, and resuming after Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir, make_image_folder


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fashion"))


def tiny_args(fashion_dir: Path, *extra: str) -> list[str]:
    return ["finetune", "--data", "fashion-mnist", "--data-dir", str(fashion_dir), "--arch", TINY_ARCH,
            "--img-size", str(TINY_SIZE), "--no-small-input", "--labels-per-class", "4", "--val-size", "6",
            "--batch-size", "8", "--lr", "0.05", "--epochs", "2", *extra]


def scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("final", "best", "best_epoch")}


def test_writes_weights_metrics_and_log(cli, fashion_dir: Path, tmp_path: Path) -> None:
    from ghnorth_cli.checkpoint import read_checkpoint

    out, metrics, log = tmp_path / "tuned.safetensors", tmp_path / "m.json", tmp_path / "log.jsonl"
    result = cli(*tiny_args(fashion_dir, "-o", out, "--metrics", metrics, "--log", log,
                            "--recipe", "resnet50-paper", "--epochs", "2", "--batch-size", "8"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "epoch 1/2" in result.stderr and "epoch 2/2" in result.stderr and "test accuracy" in result.stderr
    data = json.loads(metrics.read_text())
    assert data["config"]["epochs"] == 2 and data["config"]["clip_grad"] == 5.0  # recipe, overridden
    assert set(data["final"]) >= {"test_acc", "test_loss", "val_acc", "val_loss"}
    assert data["best"]["epoch"] == data["best_epoch"] and data["wall_seconds"] > 0
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2]
    ckpt = read_checkpoint(out)
    assert ckpt.spec.num_classes == 3 and ckpt.history[-1]["command"] == "finetune"


def test_json_goes_to_stdout(cli, fashion_dir: Path) -> None:
    result = cli(*tiny_args(fashion_dir, "--epochs", "1", "--val-size", "0", "--json", "--no-progress"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["best"] is None and 0 <= data["final"]["test_acc"] <= 100


def test_image_folder_with_orth_init(cli, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", test_name="test")
    result = cli("finetune", "--data", f"imagefolder:{root}", "--arch", TINY_ARCH, "--img-size", str(TINY_SIZE),
                 "--no-small-input", "--init", "orth", "--epochs", "1", "--batch-size", "6", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dataset"]["classes"] == 3 and data["dataset"]["train"] == 12 and data["dataset"]["test"] == 6
    assert data["init"]["method"] == "orth" and "weights orthogonal" in result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data-dir", "/nonexistent/fm"], "dataset-fashion-mnist"),
        (["--labels-per-class", "50"], "--labels-per-class 50 is more than"),
        (["-o", "/nonexistent/dir/out.safetensors"], "no such directory /nonexistent/dir"),
        (["--lr", "1e12", "--epochs", "3"], "loss is"),
        (["--opt", "adam"], "--opt must be one of sgd, adamw"),
    ],
)
def test_bad_input_is_one_line_and_no_output(cli, fashion_dir: Path, tmp_path: Path, extra, message) -> None:
    args = tiny_args(fashion_dir, "--metrics", str(tmp_path / "m.json"))
    result = cli(*args, *extra)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ghnorth: error: ") and message in lines[-1]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_resume_after_ctrl_c_matches_an_uninterrupted_run(cli, fashion_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(fashion_dir, "--labels-per-class", "12", "--val-size", "0", "--batch-size", "6",
                     "--epochs", "5", "--save-every", "1", "--no-progress")
    state, metrics = tmp_path / "run.state.pt", tmp_path / "resumed.json"
    command = [sys.executable, "-m", "ghnorth_cli", *args, "--state", str(state), "--metrics", str(metrics)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)  # same thread count as this process
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "ghnorth: error: interrupted"
    assert state.exists() and not metrics.exists()

    resumed = cli(*args, "--state", state, "--metrics", metrics, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    reference = cli(*args, "--state", tmp_path / "reference.pt", "--metrics", tmp_path / "reference.json")
    assert reference.exit_code == 0, reference.stderr
    assert scores(json.loads(metrics.read_text())) == scores(json.loads((tmp_path / "reference.json").read_text()))
