"""Class counts checked where they matter (issue 11, requirement 3): ghn eval and finetune --init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir
from ghn_helpers import write_released_ghn
from ghnorth_cli.checkpoint import model_tensors, provenance, read_checkpoint, write_checkpoint
from ghnorth_cli.finetune.data import Split
from ghnorth_cli.ghn_training.evaluate import ClassifierClasses, ClassMismatchError, align_test_classes
from ghnorth_cli.models import create_model, resolve_spec


def _split(classes: int, per_class: int = 2) -> Split:
    labels = torch.arange(classes).repeat(per_class)
    return Split(torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8), labels)


def test_same_classes_are_kept_as_they_are():
    test = _split(5)
    got, tested, checked = align_test_classes(test, data="fashion-mnist", classes=(0, 1, 2, 3, 4),
                                              ghn=ClassifierClasses(5, "fashion-mnist", (0, 1, 2, 3, 4)), name="g")
    assert checked and tested == (0, 1, 2, 3, 4) and torch.equal(got.labels, test.labels)


def test_only_the_classes_the_ghn_knows_are_scored_with_its_output_index():
    test = _split(5)  # labels 0..4 stand for fashion-mnist classes 3..7
    got, tested, checked = align_test_classes(test, data="fashion-mnist", classes=(3, 4, 5, 6, 7),
                                              ghn=ClassifierClasses(5, "fashion-mnist", (0, 1, 2, 3, 4)), name="g")
    assert checked and tested == (3, 4) and len(got) == 4
    assert sorted(got.labels.tolist()) == [3, 3, 4, 4]  # the classifier's outputs 3 and 4 are classes 3 and 4


@pytest.mark.parametrize(
    ("ghn", "data", "classes", "fragments"),
    [
        (ClassifierClasses(5, "fashion-mnist", (0, 1, 2, 3, 4)), "fashion-mnist", (5, 6, 7, 8, 9),
         ["classes 0-4", "none of the test classes 5-9", "--classes 0-4"]),
        (ClassifierClasses(10, "cifar10"), "fashion-mnist", tuple(range(10)), ["for cifar10, not fashion-mnist"]),
        (ClassifierClasses(1000, "imagenet"), "fashion-mnist", tuple(range(10)),
         ["1000-class classifiers", "10 classes", "evaluate it on imagenet (--data imagefolder:PATH)"]),
        (ClassifierClasses(5), "fashion-mnist", tuple(range(10)), ["5-class classifiers", "10 classes"]),
    ],
)
def test_classifiers_of_other_classes_are_refused(ghn, data, classes, fragments):
    with pytest.raises(ClassMismatchError) as info:
        align_test_classes(_split(len(classes)), data=data, classes=classes, ghn=ghn, name="g")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_a_ghn_of_unknown_classes_with_the_right_count_is_evaluated_unchecked():
    test = _split(3)
    got, tested, checked = align_test_classes(test, data="imagefolder:x", classes=(0, 1, 2),
                                              ghn=ClassifierClasses(3, "imagenet"), name="g")
    assert not checked and tested == (0, 1, 2) and got is test


# --- ghn eval ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion10(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fm10"), num_classes=10, train_per_class=1, test_per_class=3)


@pytest.mark.parametrize("classes", ["5-9", "0-9"])
def test_ghn_eval_refuses_or_narrows_to_the_ghns_classes(cli, fashion10, classes):
    result = cli("ghn", "eval", "ghn2-fmnist-tiny", "--data-dir", fashion10, "--classes", classes,
                 "--heldout", "1", "--json")
    if classes == "5-9":
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.startswith("ghnorth: error: ghn2-fmnist-tiny was trained on fashion-mnist classes 0-4")
        assert result.stderr.count("\n") == 1
        return
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == [0, 1, 2, 3, 4] and report["test_images"] == 15
    assert "never saw classes 5,6,7,8,9; evaluating only on its classes 0,1,2,3,4" in result.stderr


def test_ghn_eval_refuses_a_ghn_with_another_class_count(cli, fashion10, tmp_path):
    from ghn_helpers import TINY_CONFIG

    import dataclasses

    ghn = write_released_ghn(tmp_path / "g5.pt", config=dataclasses.replace(TINY_CONFIG, num_classes=5))
    result = cli("ghn", "eval", ghn, "--data-dir", fashion10, "--heldout", "1")
    assert result.exit_code == 1 and result.stdout == ""
    assert "5-class classifiers, the test set has 10 classes" in result.stderr
    assert result.stderr.count("\n") == 1


def test_ghn_eval_warns_when_it_cannot_check_the_classes(cli, fashion10, tmp_path):
    ghn = write_released_ghn(tmp_path / "g10.pt")  # 10 classes, trained on who knows what
    result = cli("ghn", "eval", ghn, "--data-dir", fashion10, "--heldout", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert "does not say which classes it was trained on" in result.stderr
    assert json.loads(result.stdout)["classes"] == list(range(10))


# --- finetune --init: keep a classifier that fits, replace one that does not -------------------------


@pytest.fixture(scope="module")
def fashion3(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fm3"))


def _checkpoint(path: Path, *, num_classes: int, history: list | None = None) -> Path:
    spec = resolve_spec(TINY_ARCH, num_classes=num_classes, img_size=TINY_SIZE, small_input=False)
    tensors, order = model_tensors(create_model(spec, seed=5))
    write_checkpoint(path, tensors, spec=spec, order=order,
                     history=history or [provenance(command="init", options={}, seed=5)])
    return path


def _finetune(cli, data: Path, init: Path, out: Path, *extra: str):
    metrics = out.with_suffix(".json")
    result = cli("finetune", "--data", "fashion-mnist", "--data-dir", data, "--init", init, "--epochs", "1",
                 "--lr", "0", "--batch-size", "8", "--labels-per-class", "4", "-o", out, "--metrics", metrics,
                 "--no-progress", *extra)
    assert result.exit_code == 0, result.stderr
    return result, json.loads(metrics.read_text())


@pytest.mark.parametrize(("num_classes", "extra", "decision"),
                         [(3, (), "kept"), (3, ("--new-classifier",), "new"), (7, (), "replaced")])
def test_finetune_keeps_a_fitting_classifier(cli, fashion3, tmp_path, num_classes, extra, decision):
    init = _checkpoint(tmp_path / "init.safetensors", num_classes=num_classes)
    out = tmp_path / "out.safetensors"
    result, metrics = _finetune(cli, fashion3, init, out, *extra)
    assert metrics["init"]["classifier"] == decision
    assert f"classifier {decision}" in result.stderr or (decision != "kept" and "new classifier" in result.stderr)
    tuned, source = read_checkpoint(out), read_checkpoint(init)
    assert tuned.history[-1]["classifier"] == decision
    same = torch.equal(tuned.tensors["fc.weight"][:3], source.tensors["fc.weight"][:3])  # lr 0: nothing moves
    assert same == (decision == "kept")
    first = source.weight_layers()[0]
    assert torch.equal(tuned.tensors[first], source.tensors[first])
    if decision == "kept":
        assert metrics["init"]["init_replaced"] == []
    else:
        assert metrics["init"]["init_replaced"] == ["fc.weight", "fc.bias"]


def test_finetune_replaces_a_classifier_trained_on_another_dataset(cli, fashion3, tmp_path):
    history = [{"command": "finetune", "data": {"name": "cifar10", "classes": 3}}]
    init = _checkpoint(tmp_path / "init.safetensors", num_classes=3, history=history)
    result, metrics = _finetune(cli, fashion3, init, tmp_path / "out.safetensors")
    assert metrics["init"]["classifier"] == "replaced"
    assert "trained on cifar10, not fashion-mnist" in metrics["init"]["classifier_reason"]


def test_a_second_finetuning_stage_keeps_the_trained_classifier(cli, fashion3, tmp_path):
    first = tmp_path / "first.safetensors"
    _, metrics = _finetune(cli, fashion3, _checkpoint(tmp_path / "init.safetensors", num_classes=7), first)
    assert metrics["init"]["classifier"] == "replaced"
    _, metrics = _finetune(cli, fashion3, first, tmp_path / "second.safetensors")
    assert metrics["init"]["classifier"] == "kept"


def test_predict_records_the_dataset_of_a_predicted_classifier(cli, tmp_path):
    out = tmp_path / "p.safetensors"
    result = cli("-q", "predict", "-a", TINY_ARCH, "--ghn", "ghn2-fmnist-tiny", "--num-classes", "5",
                 "--img-size", "32", "-o", out)
    assert result.exit_code == 0, result.stderr
    ckpt = read_checkpoint(out)
    assert ckpt.extra("ghnorth.classifier")["data"] == "fashion-mnist"
    assert ckpt.history[-1]["classifier_predicted"] and ckpt.history[-1]["classifier_data"] == "fashion-mnist"


def test_finetune_replaces_a_classifier_predicted_for_another_dataset(cli, fashion3, tmp_path):
    history = [{"command": "predict", "classifier_predicted": True, "classifier_data": "cifar10"}]
    init = _checkpoint(tmp_path / "init.safetensors", num_classes=3, history=history)
    _, metrics = _finetune(cli, fashion3, init, tmp_path / "out.safetensors")
    assert metrics["init"]["classifier"] == "replaced"
    history = [{"command": "predict", "classifier_predicted": True, "classifier_data": "fashion-mnist"}]
    init = _checkpoint(tmp_path / "init2.safetensors", num_classes=3, history=history)
    _, metrics = _finetune(cli, fashion3, init, tmp_path / "out2.safetensors")
    assert metrics["init"]["classifier"] == "kept"


def test_experiment_inits_record_the_dataset_of_a_predicted_classifier():
    from ghnorth_cli.experiment.materialize import LoadedGhnPredictor

    predictor = LoadedGhnPredictor()
    five = create_model(resolve_spec(TINY_ARCH, num_classes=5, img_size=32))
    assert predictor(five, ghn="ghn2-fmnist-tiny", img_size=32)["classifier_data"] == "fashion-mnist"
    ten = create_model(resolve_spec(TINY_ARCH, num_classes=10, img_size=32))
    info = predictor(ten, ghn="ghn2-fmnist-tiny", img_size=32)
    assert not info["classifier_predicted"] and info["classifier_data"] is None
