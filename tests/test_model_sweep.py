"""The sweep: timm and torchvision models at their own size and at 32 px, 10 classes, through
predict, init orth, postprocess and a strict reload. Each step succeeds or fails with one line,
the caller's model is never changed, every head is handled as a classifier, and no tensor is NaN.

A tiny random GHN-2 (10 classes, so the classifier is predicted) keeps it fast; the heaviest
models are marked slow and still run in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ghnorth_cli
from ghn_helpers import tiny_ghn
from ghnorth_cli.checkpoint import model_tensors, read_checkpoint, write_checkpoint
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.predict import load_prediction, predict
from ghnorth_cli.inits import init_model_
from ghnorth_cli.models import classifier_tensor_names, create_model, resolve_spec, tied_tensor_names, weight_layer_names
from ghnorth_cli.postprocess import postprocess

SIZES = (None, 32)  # the model's own input size, and the small-input (32 px) adaptation
TIMM = [
    "resnet10t", "regnetx_002", "mobilenetv3_small_050", "efficientnet_b0",
    "lcnet_050", "ghostnet_050", "convnext_atto", "repvit_m1", "mobilevit_xxs", "edgenext_xx_small",
    "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "levit_128s", "efficientformer_l1",
    "coat_lite_tiny", "crossvit_tiny_240", "pit_ti_224", "fastvit_t8", "tiny_vit_5m_224", "hgnetv2_b0",
]  # fmt: skip
TORCHVISION = [
    "resnet18", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_0", "shufflenet_v2_x0_5", "mnasnet0_5",
    "googlenet", "efficientnet_b0", "regnet_x_400mf",
]  # fmt: skip
SLOW = {"timm:densenet121", "torchvision:inception_v3"}
CASES = [f"timm:{n}" for n in TIMM] + [f"torchvision:{n}" for n in TORCHVISION] + sorted(SLOW)


@pytest.fixture(scope="module")
def ghn():
    return tiny_ghn()


def one_line(exc: BaseException) -> None:
    assert isinstance(exc, GhnorthError), f"{type(exc).__name__}: {exc}"
    assert str(exc).strip() and "\n" not in str(exc).strip()


def snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {k: (v, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()}


def assert_untouched(model: torch.nn.Module, before: dict) -> None:
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before)
    for name, (obj, values) in before.items():
        assert after[name] is obj and not obj.is_meta and torch.equal(obj.detach(), values), name


def assert_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"{what}: non-finite {bad[:3]}"


def sweep(arch: str, img_size: int | None, ghn, tmp_path: Path) -> None:
    try:
        spec = resolve_spec(arch, num_classes=10, img_size=img_size)
        model = create_model(spec, seed=0)
    except GhnorthError as exc:  # e.g. a model that cannot take 32 px inputs
        return one_line(exc)
    heads = classifier_tensor_names(model)
    assert heads and all(model.state_dict()[h].shape[0] == 10 for h in heads if h.endswith("weight"))

    before = snapshot(model)
    try:
        result = predict(model, ghn, img_size=spec.img_size)
    except GhnorthError as exc:
        one_line(exc)
        assert_untouched(model, before)
        return
    assert_untouched(model, before)
    params = dict(model.named_parameters())
    assert result.classifier == [h for h in heads if h in params]
    assert result.classifier_predicted and set(result.classifier) <= set(result.params)  # all heads, together
    assert_finite(result.params, "predict")

    load_prediction(model, result.params)
    tensors, order = model_tensors(model)
    if img_size == 32:  # the weights have the same shapes at both sizes: post-process once (it costs most)
        read_layers = list(weight_layer_names({k: tuple(v.shape) for k, v in tensors.items()}))
        last = max(i for i, n in enumerate(read_layers, 1) if n not in heads)
        out, changes = postprocess(tensors, order, beta=1e-3, orth_from=max(1, last - 4), noise_layers="from-orth",
                                   generator=torch.Generator().manual_seed(0), classifier=heads,
                                   tied=tied_tensor_names(model))
        assert sum(c.orthogonalized for c in changes) >= 1
        layers = {c.name for c in changes}
        assert {c.name for c in changes if c.action == "classifier"} == {h for h in heads if h in layers}
        assert all(torch.equal(out[h], tensors[h]) for h in heads)
        assert_finite(out, "postprocess")
    else:
        out = tensors

    path = tmp_path / "post.safetensors"
    write_checkpoint(path, out, spec=spec, order=order, history=[{"command": "sweep"}])
    reloaded = ghnorth_cli.load_model(path)  # strict
    assert all(torch.equal(v, out[k]) for k, v in reloaded.state_dict().items())
    assert read_checkpoint(path).classifier() == heads
    assert read_checkpoint(path).tied() == tied_tensor_names(model)
    if img_size != 32:
        return
    fresh = create_model(spec, seed=1)
    own = {h: fresh.state_dict()[h].clone() for h in heads}
    changed = init_model_(fresh, method="orth", generator=torch.Generator().manual_seed(0))
    assert changed and not set(changed) & set(heads)
    assert all(torch.equal(fresh.state_dict()[h], own[h]) for h in heads)
    assert_finite(dict(fresh.state_dict()), "init orth")


@pytest.mark.parametrize("img_size", SIZES, ids=["own-size", "32px"])
@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in CASES])
def test_sweep(arch: str, img_size: int | None, ghn, tmp_path: Path) -> None:
    sweep(arch, img_size, ghn, tmp_path)
