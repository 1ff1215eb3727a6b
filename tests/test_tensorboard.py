"""``--tensorboard DIR``: event files, one run per subfolder, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir

STEP_TAGS = {"step/loss", "step/acc", "step/lr", "step/grad_norm", "step/images_per_second"}


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of a run folder's event files."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fashion"))


def finetune_args(data: Path, *extra) -> list[str]:
    return ["finetune", "--data", "fashion-mnist", "--data-dir", str(data), "--arch", TINY_ARCH, "--img-size",
            str(TINY_SIZE), "--no-small-input", "--labels-per-class", "4", "--val-size", "6", "--batch-size", "4",
            "--lr", "0.05", "--epochs", "2", "--no-progress", *extra]


def test_finetune_logs_steps_and_epochs_without_changing_the_run(cli, fashion_dir, tmp_path) -> None:
    log, plain = tmp_path / "log.jsonl", tmp_path / "plain.json"
    result = cli(*finetune_args(fashion_dir, "--tensorboard", tmp_path / "tb", "--log", log, "--metrics",
                                tmp_path / "m.json"))
    assert result.exit_code == 0, result.stderr
    runs = list((tmp_path / "tb").iterdir())
    assert len(runs) == 1 and "test_resnet" in runs[0].name and runs[0].name.endswith("default-seed0")
    got = scalars(runs[0])
    assert STEP_TAGS <= set(got)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s for s, _ in got["step/loss"]] == list(range(1, records[-1]["step"] + 1))
    assert all(v > 0 for _, v in got["step/grad_norm"]) and all(v > 0 for _, v in got["step/images_per_second"])
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_second"):
        assert [s for s, _ in got[f"epoch/{name}"]] == [1, 2]
        assert [v for _, v in got[f"epoch/{name}"]] == pytest.approx([r[name] for r in records], rel=1e-5)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert got["epoch/test_acc"] == [(2, pytest.approx(metrics["final"]["test_acc"], rel=1e-5))]
    assert metrics["config"]["tensorboard"] == str(runs[0])
    # logging measures the gradient norm, which must not change training
    again = cli(*finetune_args(fashion_dir, "--metrics", plain))
    assert again.exit_code == 0, again.stderr
    assert json.loads(plain.read_text())["final"] == metrics["final"]


def test_train_ghn_logs_every_step(cli, tmp_path) -> None:
    data = make_fashion_dir(tmp_path / "fm", num_classes=3, train_per_class=4, test_per_class=3)
    result = cli("train-ghn", "--data", "fashion-mnist", "--data-dir", data, "--classes", "0-1", "--steps", "2",
                 "--meta-batch", "1", "--batch-size", "4", "--hid", "8", "--max-shape", "8,8,3,3", "--img-size", "32",
                 "--arch-space", "tiny-resnet", "--heldout", "1", "-o", tmp_path / "g.safetensors",
                 "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.stderr
    (run,) = (tmp_path / "tb").iterdir()
    got = scalars(run)
    assert STEP_TAGS <= set(got) and "train-ghn-g" in run.name
    assert [s for s, _ in got["step/loss"]] == [1, 2] and all(0 <= v <= 100 for _, v in got["step/acc"])


def test_experiment_gives_each_run_its_subfolder(cli, fashion_dir, tmp_path) -> None:
    result = cli("experiment", "run", "-o", tmp_path / "exp", "-a", TINY_ARCH, "--data", "fashion-mnist",
                 "--data-dir", fashion_dir, "--labels-per-class", "4", "--val-size", "6", "--init", "default",
                 "--grid", "lr=0.01,0.05 epochs=1 batch_size=4", "--set", f"img_size={TINY_SIZE}",
                 "--set", "small_input=false", "--seeds", "1", "--tensorboard", tmp_path / "tb", "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()  # the run-level progress, as plain lines (stderr is not a terminal)
    assert "experiment: 2 runs" in lines and any(line.startswith("experiment: done, 2 runs in ") for line in lines)
    run_ids = sorted(p.name for p in (tmp_path / "exp" / "runs").iterdir())
    assert not any("failed" in json.loads((tmp_path / "exp" / "runs" / r / "metrics.json").read_text()) for r in run_ids)
    assert len(run_ids) == 2 and sorted(p.name for p in (tmp_path / "tb").iterdir()) == run_ids
    for run_id in run_ids:
        got = scalars(tmp_path / "tb" / run_id)
        assert STEP_TAGS <= set(got) and [s for s, _ in got["epoch/val_acc"]] == [1]


def test_missing_tensorboard_is_one_line_with_the_install_command(cli, fashion_dir, tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = cli(*finetune_args(fashion_dir, "--tensorboard", tmp_path / "tb"))
    assert result.exit_code == 1
    assert result.stderr == 'ghnorth: error: --tensorboard needs the tensorboard package: pip install "ghnorth[tensorboard]"\n'
    assert not (tmp_path / "tb").exists()
