"""Training GHNs: differentiable prediction, the training loop, resuming, the GHN file and ghn eval."""

from __future__ import annotations

import json

import pytest
import torch

from finetune_helpers import make_fashion_dir
from ghnorth_cli.threads import intra_op_threads
from ghnorth_cli.archspace import ArchSampler, build_arch, get_space
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.data import Split
from ghnorth_cli.ghn_training.config import GHNTrainConfig, GHNTrainConfigError
from ghnorth_cli.ghn_training.data import ClassSelectionError, TaskData, parse_classes, select_classes
from ghnorth_cli.ghn_training.functional import parameter_shapes, predict_tensors
from ghnorth_cli.ghn_training.loop import lr_at
from ghnorth_cli.ghn_training.run import train_ghn
from ghnorth_cli.graph import capture_graph
from ghn_helpers import tiny_ghn

TINY = dict(hid=8, max_shape=(8, 8, 3, 3), img_size=32, meta_batch=2, batch_size=4, heldout=2,
            arch_space="tiny-convnets")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is faster than several, above all on a busy machine."""
    with intra_op_threads(1):
        yield


def tiny_task(num_classes: int = 3, per_class: int = 8) -> TaskData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(num_classes).repeat(per_class)
    images = torch.randint(0, 256, (len(labels), 3, 16, 16), generator=g, dtype=torch.uint8)
    split = Split(images, labels)
    return TaskData("synthetic", split, split, tuple(range(num_classes)), tuple("abc"[:num_classes]),
                    (0.5,) * 3, (0.25,) * 3)


def _sample(space: str = "tiny", seed: int = 0):
    return ArchSampler(get_space(space), generator=torch.Generator().manual_seed(seed)).sample()


@pytest.mark.parametrize("space", ["tiny-resnet", "tiny-convnext", "tiny-mobilenet", "tiny-vit"])
def test_differentiable_prediction_matches_predict_and_reaches_every_ghn_part(space):
    from ghn_helpers import TINY_CONFIG

    ghn = tiny_ghn(config=TINY_CONFIG)
    model = build_arch(_sample(space), num_classes=10, img_size=32)
    graph = capture_graph(model, img_size=32, ve_cutoff=TINY_CONFIG.ve_cutoff)
    shapes = parameter_shapes(model)
    mine, reference = predict_tensors(ghn, graph, shapes), ghn.predict(graph, shapes)
    assert set(mine) == set(reference)
    for name, value in reference.items():
        torch.testing.assert_close(mine[name], value, rtol=1e-5, atol=1e-6, msg=name)
    sum(v.square().sum() for v in mine.values()).backward()
    for part in ("embed", "shape_enc", "gnn", "decoder"):
        grads = [p.grad for n, p in ghn.named_parameters() if n.startswith(part) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), part


def test_parse_and_select_classes():
    assert parse_classes("0-4") == (0, 1, 2, 3, 4)
    assert parse_classes("7,1,3-4") == (7, 1, 3, 4)
    assert parse_classes(None) is None
    for bad in ("4-2", "a", "1,1"):
        with pytest.raises(ClassSelectionError):
            parse_classes(bad)
    split = Split(torch.zeros(6, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 5, 6, 5, 9, 6]))
    picked = select_classes(split, (6, 5))
    assert picked.labels.tolist() == [1, 0, 1, 0]


def test_learning_rate_schedules():
    cfg = GHNTrainConfig(output="x", steps=10, lr=1.0, warmup=2)
    assert lr_at(0, cfg) == pytest.approx(0.5) and lr_at(2, cfg) == pytest.approx(1.0)
    assert lr_at(9, cfg) < 0.05
    step = cfg.replace(schedule="step", warmup=0)
    assert [round(lr_at(s, step), 4) for s in (0, 5, 8)] == [1.0, 0.1, 0.01]
    with pytest.raises(GHNTrainConfigError):
        GHNTrainConfig(output="x", steps=3, warmup=3)


def test_two_steps_write_a_ghn_file_that_predict_loads(tmp_path):
    from ghnorth_cli.ghn.io import load_ghn
    from ghnorth_cli.ghn.predict import predict
    from ghnorth_cli.ghn_training.ghnfile import read_training_info

    out = tmp_path / "ghn.safetensors"
    cfg = GHNTrainConfig(output=str(out), steps=2, log=str(tmp_path / "log.jsonl"), log_every=1, **TINY)
    result = train_ghn(cfg, task=tiny_task())
    assert result.steps == 2 and out.is_file()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(len(r["archs"]) == 2 for r in records)
    ghn = load_ghn(out)
    assert ghn.config.num_classes == 3 and ghn.config.max_shape == (8, 8, 3, 3)
    info = read_training_info(out)
    assert info["classes"] == [0, 1, 2] and info["steps"] == 2 and info["machine"]["device"] == "cpu"
    model = build_arch(_sample("tiny-resnet"), num_classes=3, img_size=32)
    prediction = predict(model, ghn, img_size=32)
    assert prediction.classifier_predicted and not prediction.unpredicted


def _stop_after(step: int):
    def callback(record):
        if record["step"] == step:
            raise KeyboardInterrupt

    return callback


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    task = tiny_task()
    straight = GHNTrainConfig(output=str(tmp_path / "a.safetensors"), steps=4, save_every=2,
                              **{**TINY, "meta_batch": 1})
    train_ghn(straight, task=task)
    broken = straight.replace(output=str(tmp_path / "b.safetensors"))
    with pytest.raises(KeyboardInterrupt):
        train_ghn(broken, task=task, on_step=_stop_after(3))
    resumed = train_ghn(broken, task=task, resume=True)
    assert resumed.steps == 4
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    with pytest.raises(GhnorthError, match="option lr"):
        train_ghn(broken.replace(lr=0.5), task=task, resume=True)


def test_cli_train_then_eval(cli, tmp_path):
    data = make_fashion_dir(tmp_path / "fm", num_classes=3, train_per_class=4, test_per_class=3)
    out = tmp_path / "g.safetensors"
    result = cli("train-ghn", "--data", "fashion-mnist", "--data-dir", data, "--classes", "0-1", "--steps", "2",
                 "--meta-batch", "1", "--batch-size", "4", "--hid", "8", "--max-shape", "8,8,3,3", "--img-size", "32",
                 "--arch-space", "tiny-resnet", "--heldout", "1", "--seed", "1", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["training"]["classes"] == [0, 1]
    assert "step 2/2" in result.stderr
    result = cli("ghn", "eval", out, "--data-dir", data, "--heldout", "1", "-a", "timm:test_resnet", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == [0, 1] and report["test_images"] == 6
    rows = report["heldout"] + report["named"]
    assert [r["family"] for r in rows] == ["resnet", "named"]
    assert all(0 <= r["accuracy"] <= 1 and r["predicted_share"] > 0.9 for r in rows)


def test_cli_errors_are_one_line(cli, tmp_path):
    out = tmp_path / "g.safetensors"
    result = cli("train-ghn", "--classes", "3-1", "-o", out)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "--classes" in result.stderr
    result = cli("train-ghn", "--max-shape", "8,8", "-o", out)
    assert result.exit_code == 1 and "--max-shape" in result.stderr
    assert not out.exists()


def test_bundled_ghn_loads_offline_and_predicts(monkeypatch, tmp_path):
    from ghnorth_cli.ghn.predict import predict
    from ghnorth_cli.ghn.registry import REGISTRY, load_pretrained, resolve_ghn
    from ghnorth_cli.ghn_training.ghnfile import read_training_info

    monkeypatch.setenv("GHNORTH_OFFLINE", "1")
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "empty-cache"))
    resolved = resolve_ghn("ghn2-fmnist-tiny")
    assert resolved.path.is_file() and resolved.path.parent.name == "data"
    assert resolved.path.stat().st_size < 8_000_000
    ghn = load_pretrained("ghn2-fmnist-tiny")
    assert ghn.config == REGISTRY["ghn2-fmnist-tiny"].config
    info = read_training_info(resolved.path)
    assert info["data"] == "fashion-mnist" and info["classes"] == [0, 1, 2, 3, 4] and info["img_size"] == 32
    model = build_arch(_sample("tiny-mobilenet"), num_classes=5, img_size=32)
    prediction = predict(model, ghn, img_size=32)
    assert prediction.classifier_predicted and all(torch.isfinite(v).all() for v in prediction.params.values())
