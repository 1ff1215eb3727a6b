"""One function decides which tensors are the classifier; every head is a classifier everywhere."""

from __future__ import annotations

import pytest
import torch

from ghn_helpers import tiny_ghn
from ghnorth_cli.checkpoint import model_tensors, read_checkpoint, write_checkpoint
from ghnorth_cli.ghn.predict import predict
from ghnorth_cli.inits import init_model_
from ghnorth_cli.models import classifier_modules, classifier_tensor_names, create_model, resolve_spec
from ghnorth_cli.postprocess import PostprocessError, postprocess, validate_options

TWO_HEADS = {
    "timm:deit_tiny_distilled_patch16_224": ["head.weight", "head.bias", "head_dist.weight", "head_dist.bias"],
    "timm:levit_128s": ["head.linear.weight", "head.linear.bias", "head_dist.linear.weight", "head_dist.linear.bias"],
    "timm:efficientformer_l1": ["head.weight", "head.bias", "head_dist.weight", "head_dist.bias"],
}


@pytest.mark.parametrize(("arch", "expected"), [
    *TWO_HEADS.items(),
    ("timm:resnet18", ["fc.weight", "fc.bias"]),
    ("timm:mobilenetv3_small_050", ["classifier.weight", "classifier.bias"]),
    ("timm:convnext_atto", ["head.fc.weight", "head.fc.bias"]),
    ("torchvision:resnet18", ["fc.weight", "fc.bias"]),
    ("torchvision:squeezenet1_0", ["classifier.1.weight", "classifier.1.bias"]),
    ("torchvision:mobilenet_v3_small", ["classifier.3.weight", "classifier.3.bias"]),
])
def test_classifier_tensor_names(arch: str, expected: list[str]) -> None:
    spec = resolve_spec(arch, num_classes=10, img_size=32)
    assert classifier_tensor_names(spec) == expected
    with torch.device("meta"):
        assert classifier_tensor_names(create_model(spec)) == expected


def test_auxiliary_heads_of_torchvision_models_are_classifiers() -> None:
    import torchvision

    with torch.device("meta"):
        googlenet = torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=True, init_weights=False)
        inception = torchvision.models.inception_v3(weights=None, num_classes=10, aux_logits=True, init_weights=False)
    assert classifier_modules(googlenet) == ["aux1.fc2", "aux2.fc2", "fc"]
    assert classifier_modules(inception) == ["AuxLogits.fc", "fc"]
    shapes = {k: tuple(v.shape) for k, v in googlenet.state_dict().items()}
    assert classifier_tensor_names(shapes) == [f"{m}.{p}" for m in ("aux1.fc2", "aux2.fc2", "fc") for p in ("weight", "bias")]


def test_a_plain_file_falls_back_to_the_last_layer() -> None:
    shapes = {"conv.weight": (8, 3, 3, 3), "bn.weight": (8,), "fc.weight": (10, 8), "fc.bias": (10,)}
    assert classifier_tensor_names(shapes) == ["fc.weight", "fc.bias"]
    assert classifier_tensor_names({"bn.weight": (8,)}) == []


def test_a_removed_head_is_no_classifier() -> None:
    import timm

    with torch.device("meta"):
        model = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=0)
    assert classifier_tensor_names(model) == []


@pytest.fixture(scope="module")
def ghn():
    return tiny_ghn()  # 10 classes


def _deit(num_classes: int):
    spec = resolve_spec("timm:deit_tiny_distilled_patch16_224", num_classes=num_classes, img_size=32)
    return spec, create_model(spec, seed=0)


def test_predict_keeps_or_predicts_every_head_together(ghn) -> None:
    heads = TWO_HEADS["timm:deit_tiny_distilled_patch16_224"]
    _, model = _deit(5)
    kept = predict(model, ghn, img_size=32)
    assert kept.classifier == heads and not kept.classifier_predicted
    assert not set(heads) & set(kept.params) and set(heads) <= set(kept.kept)
    _, model = _deit(10)
    both = predict(model, ghn, img_size=32)
    assert both.classifier == heads and both.classifier_predicted and set(heads) <= set(both.params)


def test_orth_init_leaves_every_head_alone() -> None:
    _, model = _deit(10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    changed = init_model_(model, method="orth", generator=torch.Generator().manual_seed(0))
    assert "blocks.0.attn.qkv.weight" in changed
    for name in TWO_HEADS["timm:deit_tiny_distilled_patch16_224"]:
        assert name not in changed and torch.equal(model.state_dict()[name], before[name])


def test_postprocess_never_touches_any_head(tmp_path) -> None:
    spec, model = _deit(10)
    tensors, order = model_tensors(model)
    path = tmp_path / "deit.safetensors"
    write_checkpoint(path, tensors, spec=spec, order=order, history=[])
    ckpt = read_checkpoint(path)
    heads = ckpt.classifier()
    assert heads == TWO_HEADS["timm:deit_tiny_distilled_patch16_224"]
    out, changes = postprocess(ckpt.tensors, ckpt.order, beta=1e-3, orth_from=1,
                               generator=torch.Generator().manual_seed(0), classifier=heads)
    actions = {c.name: c.action for c in changes}
    assert actions["head.weight"] == actions["head_dist.weight"] == "classifier"
    assert actions["blocks.11.mlp.fc2.weight"] == "noise+orth"
    assert all(torch.equal(out[n], ckpt.tensors[n]) for n in heads)
    n_layers = len(changes)
    with pytest.raises(PostprocessError, match=r"last 2 \(\d+-\d+\) are classifier heads"):
        validate_options(beta=0, orth_from=n_layers - 1, noise_layers="all", num_layers=n_layers,
                         last_changeable=n_layers - 2)


def test_analyze_flags_every_head() -> None:
    from ghnorth_cli.analysis import analyze_tensors

    spec, model = _deit(10)
    tensors, order = model_tensors(model)
    heads = classifier_tensor_names(spec)
    stats = analyze_tensors(tensors, order, layers=["head.weight", "head_dist.weight", "blocks.0.mlp.fc1.weight"],
                            classifier=heads)
    assert {s.name: s.classifier for s in stats} == {"blocks.0.mlp.fc1.weight": False, "head.weight": True,
                                                      "head_dist.weight": True}


def test_finetune_replaces_every_head_of_a_1000_class_checkpoint(tmp_path) -> None:
    from ghnorth_cli.finetune.config import FinetuneConfig
    from ghnorth_cli.finetune.model import build_starting_model

    spec = resolve_spec("timm:levit_128s", img_size=32)  # 1000 classes
    tensors, order = model_tensors(create_model(spec, seed=1))
    path = tmp_path / "levit.safetensors"
    write_checkpoint(path, tensors, spec=spec, order=order, history=[])
    start = build_starting_model(FinetuneConfig(data="fashion-mnist", init=str(path)), num_classes=10)
    assert start.replaced == TWO_HEADS["timm:levit_128s"]
    state = start.model.state_dict()
    assert state["head.linear.weight"].shape[0] == state["head_dist.linear.weight"].shape[0] == 10
    assert torch.equal(state["stem.conv1.linear.weight"], tensors["stem.conv1.linear.weight"])
    assert read_checkpoint(path).spec.num_classes == 1000
