"""GHN-3 predicts for torchvision and timm classifiers: a broad list (the smallest member of every
torchvision family, the issue's timm list and timm models with tokens, odd attention or no
attention), with the fixture GHN-3-T; the median share of parameters predicted is at least 95%.

``benchmarks/coverage_ghn3.py`` runs the same check on every torchvision classifier and every timm
model of the GHN-2 capture test (results in benchmarks/results/coverage_ghn3.json).
"""

from __future__ import annotations

import math
import statistics
from functools import lru_cache

import pytest
import torch
from test_graph_coverage import TIMM_REQUIRED, build

from ghnorth_cli.ghn.ghn3 import GHN3
from ghnorth_cli.ghn.io import load_ghn

TORCHVISION = [
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf",
    "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t", "swin_v2_t", "vgg11",
    "vit_b_32", "wide_resnet50_2",
]  # fmt: skip
TIMM = TIMM_REQUIRED + [
    "deit_tiny_distilled_patch16_224", "vit_small_patch16_rope_224", "eva02_tiny_patch14_224", "cait_xxs24_224",
    "crossvit_tiny_240", "efficientvit_m0", "mixer_s16_224", "levit_conv_128s", "mobilevit_xxs",
    "coatnet_0_rw_224", "nf_resnet26", "hiera_tiny_224",
]  # fmt: skip
MODELS = [f"torchvision:{n}" for n in TORCHVISION] + [f"timm:{n}" for n in TIMM]
MIN_MEDIAN = 0.95


@lru_cache(maxsize=1)
def fixture_ghn(path: str) -> GHN3:
    return load_ghn(path)


def make_model(arch: str) -> tuple[torch.nn.Module, int]:
    """The model on the meta device where possible (prediction needs only its shapes) and its image size."""
    source, name = arch.split(":")
    if source == "torchvision":
        import torchvision

        return build(lambda: torchvision.models.get_model(name)), 299 if name.startswith("inception") else 224
    timm = pytest.importorskip("timm")
    model = build(lambda: timm.create_model(name, pretrained=False))
    return model, model.pretrained_cfg["input_size"][-1]


@lru_cache(maxsize=None)
def predicted_share(arch: str, ghn_path: str) -> float:
    """Share of ``arch``'s parameters (by count) that the GHN-3 predicts; checks every tensor."""
    model, img_size = make_model(arch)
    ghn = fixture_ghn(ghn_path)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    predicted = ghn.predict(ghn.capture_graph(model, img_size=img_size), shapes)
    for name, tensor in predicted.items():
        assert tuple(tensor.shape) == shapes[name], name
        assert torch.isfinite(tensor).all(), name
    return sum(t.numel() for t in predicted.values()) / sum(math.prod(s) for s in shapes.values())


@pytest.mark.slow
@pytest.mark.parametrize("arch", MODELS)
def test_ghn3_predicts(arch: str, ghn3_parity_dir) -> None:
    assert predicted_share(arch, str(ghn3_parity_dir / "ghn3tm8_random.pt")) > 0.5


@pytest.mark.slow
def test_median_share_predicted(ghn3_parity_dir) -> None:
    shares = [predicted_share(arch, str(ghn3_parity_dir / "ghn3tm8_random.pt")) for arch in MODELS]
    assert statistics.median(shares) >= MIN_MEDIAN
