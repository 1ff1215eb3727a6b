"""Building a model without initializing what is overwritten: every other value exactly as today."""

from __future__ import annotations

import pytest
import torch

from ghn_helpers import tiny_ghn
from ghnorth_cli.ghn.predict import create_predicted_model, predict
from ghnorth_cli.models import create_model, resolve_spec
from ghnorth_cli.skip_init import create_model_skipping

# timm and torchvision models with random inits before, between and after the skipped ones:
# ViT's position embedding and class token come first, relative-position tables sit in each block.
ARCHS = ["timm:test_vit", "timm:test_vit_relpos", "timm:test_convnext", "timm:test_efficientnet",
         "torchvision:resnet18"]


def _assert_same_except(model, reference, skipped: set[str]) -> None:
    got, want = model.state_dict(), reference.state_dict()
    assert list(got) == list(want)
    for name in want:
        if name not in skipped:
            assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("keep", ["classifier-and-first", "every-third"])
def test_kept_tensors_get_exactly_the_full_builds_values(arch: str, keep: str) -> None:
    spec = resolve_spec(arch, num_classes=7, img_size=32 if "vit" not in arch and "maxvit" not in arch else None)
    reference = create_model(spec, seed=5)
    names = [n for n, _ in reference.named_parameters()]
    kept = {names[0], names[-1], names[-2]} if keep == "classifier-and-first" else set(names[::3])
    model, skipped = create_model_skipping(spec, seed=5, overwritten=lambda meta: set(names) - kept)
    assert skipped <= set(names) - kept
    _assert_same_except(model, reference, skipped)


def test_skipping_happens_when_draws_can_be_left_out() -> None:
    spec = resolve_spec("timm:test_convnext", num_classes=7)
    names = [n for n, _ in create_model(spec, seed=0).named_parameters()]
    kept = {n for n in names if n.endswith("gamma")}  # layer scales: constant init, no random draw
    model, skipped = create_model_skipping(spec, seed=0, overwritten=lambda meta: set(names) - kept)
    assert kept and skipped == set(names) - kept
    _assert_same_except(model, create_model(spec, seed=0), skipped)


def test_overwritten_sees_the_meta_model() -> None:
    spec = resolve_spec("timm:test_convnext", num_classes=7)
    seen = []

    def overwritten(meta):
        seen.append({p.device.type for p in meta.parameters()})
        return set()

    model, skipped = create_model_skipping(spec, seed=0, overwritten=overwritten)
    assert seen == [{"meta"}] and skipped == set()
    _assert_same_except(model, create_model(spec, seed=0), set())


@pytest.mark.parametrize("arch,num_classes", [("timm:test_convnext", 10), ("timm:test_vit", 10),
                                               ("torchvision:resnet18", 10), ("timm:test_convnext", 5)])
def test_create_predicted_model_equals_build_then_predict(arch: str, num_classes: int) -> None:
    ghn = tiny_ghn()  # 10 classes: the classifier is predicted at 10, kept at 5
    spec = resolve_spec(arch, num_classes=num_classes, img_size=32)
    model, result = create_predicted_model(spec, ghn, seed=3)
    reference = create_model(spec, seed=3)
    expected = predict(reference, ghn, img_size=32, inplace=True)
    assert list(result.params) == list(expected.params) and result.unpredicted == expected.unpredicted
    assert result.classifier_predicted == expected.classifier_predicted == (num_classes == 10)
    _assert_same_except(model, reference, set())


def test_a_build_that_differs_on_meta_falls_back_to_the_full_init() -> None:
    # torch's trunc_normal_ draws nothing on the meta device (and a value-dependent number of
    # values on a real one): the passes disagree, so nothing is skipped and nothing differs.
    spec = resolve_spec("torchvision:convnext_tiny", num_classes=10, img_size=32)
    names = [n for n, _ in create_model(spec, seed=1).named_parameters()]
    model, skipped = create_model_skipping(spec, seed=1, overwritten=lambda meta: set(names[:-2]))
    assert skipped == set()
    _assert_same_except(model, create_model(spec, seed=1), set())
