import logging

import pytest
import torch
from torch import nn

from ghnorth_cli.errors import ModelResolutionError
from ghnorth_cli.models import (
    ModelSpec,
    classifier_tensor_names,
    create_model,
    list_archs,
    model_shapes,
    resolve_name,
    resolve_spec,
    weight_layer_names,
)


def test_bare_name_prefers_timm_then_torchvision():
    assert resolve_name("resnet18") == ("timm", "resnet18")
    assert resolve_name("squeezenet1_0") == ("torchvision", "squeezenet1_0")
    assert resolve_name("torchvision:resnet18") == ("torchvision", "resnet18")
    assert resolve_name("timm:convnext_tiny") == ("timm", "convnext_tiny")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelResolutionError, match="did you mean.*resnet50"):
        resolve_name("resnet5O")
    with pytest.raises(ModelResolutionError, match="unknown model source"):
        resolve_name("keras:resnet50")
    with pytest.raises(ModelResolutionError, match="unknown torchvision architecture"):
        resolve_name("torchvision:resnet10t")  # a timm-only name


def test_spec_defaults_and_overrides():
    spec = resolve_spec("timm:resnet18")
    assert (spec.num_classes, spec.img_size, spec.small_input) == (1000, 224, False)
    assert resolve_spec("torchvision:inception_v3").img_size == 299
    small = resolve_spec("resnet18", num_classes=10, img_size=32)
    assert (small.num_classes, small.img_size, small.small_input) == (10, 32, True)
    assert ModelSpec.from_dict(small.to_dict()) == small
    assert small.arch == "timm:resnet18"


@pytest.mark.parametrize("arch", ["timm:resnet18", "torchvision:resnet18"])
def test_resnet_small_input_follows_the_reference(arch):
    model = create_model(resolve_spec(arch, num_classes=10, img_size=32), seed=0)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_small_input_keeps_the_center_of_the_stem_kernel():
    big = create_model(resolve_spec("torchvision:resnet18", num_classes=10, img_size=224), seed=3)
    small = create_model(resolve_spec("torchvision:resnet18", num_classes=10, img_size=32), seed=3)
    assert torch.equal(small.conv1.weight, big.conv1.weight[:, :, 2:5, 2:5])


@pytest.mark.parametrize(
    "arch, check",
    [
        ("torchvision:mobilenet_v2", lambda m: all(c.stride == (1, 1) for c in m.features[:5].modules()
                                                  if isinstance(c, nn.Conv2d))),
        ("torchvision:densenet121", lambda m: isinstance(m.features.pool0, nn.Identity)),
        ("timm:convnext_atto", lambda m: m.stem[0].stride == (1, 1)),
        ("timm:mobilenetv3_small_050", lambda m: m.conv_stem.stride == (1, 1)),
    ],
)
def test_other_families_are_adapted(arch, check):
    model = create_model(resolve_spec(arch, num_classes=10, img_size=32), seed=0)
    assert check(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unadaptable_model_warns(caplog):
    with caplog.at_level(logging.WARNING):
        spec = resolve_spec("timm:vit_tiny_patch16_224", num_classes=10, img_size=32)
        model = create_model(spec, seed=0)
    assert "not adapted for small inputs" in caplog.text
    assert not spec.small_input  # the record says what was built
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_create_model_is_seeded_and_leaves_global_rng_alone():
    spec = resolve_spec("timm:resnet10t", num_classes=10, img_size=32)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = create_model(spec, seed=7), create_model(spec, seed=7)
    c = create_model(spec, seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1[0].weight, c.conv1[0].weight)


def test_layers_and_classifier_names():
    shapes = model_shapes(resolve_spec("torchvision:resnet18", num_classes=10))
    layers = weight_layer_names(shapes)
    assert layers[0] == "conv1.weight" and layers[-1] == "fc.weight" and len(layers) == 21
    assert classifier_tensor_names(shapes) == ["fc.weight", "fc.bias"]


def test_list_archs_filters():
    names = list_archs("resnet18")
    assert "timm:resnet18" in names and "torchvision:resnet18" in names
    assert all("resnet18" in n for n in names)
