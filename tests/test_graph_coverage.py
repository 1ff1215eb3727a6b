"""Every torchvision classifier and a broad list of timm families capture, and every weight
matrix/kernel their forward pass uses maps to a node of the graph."""

from __future__ import annotations

import warnings
from unittest import mock
from typing import Callable

import pytest
import torch
from torch import nn

from ghnorth_cli.graph import ModelGraph, capture_graph
from ghnorth_cli.graph.trace import trace_model

# The list, then at least one small member of many other timm families.
TIMM_REQUIRED = [
    "resnet18", "resnet50", "convnext_tiny", "convnextv2_tiny", "efficientnet_b0", "mobilenetv3_large_100",
    "vit_small_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224", "regnety_040",
    "densenet121", "levit_128",
]  # fmt: skip
TIMM_FAMILIES = [
    "convnext_atto", "convnextv2_atto", "efficientnet_lite0", "tf_efficientnetv2_b0", "mobilenetv3_small_050",
    "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium", "regnetx_002", "regnetz_b16", "resnet26d",
    "seresnet18", "resnext26ts", "resnetv2_50x1_bit", "skresnet18", "ecaresnet26t", "repvgg_a0",
    "deit_tiny_distilled_patch16_224", "vit_small_patch16_rope_224", "eva02_tiny_patch14_224",
    "beit_base_patch16_224", "cait_xxs24_224", "swinv2_cr_tiny_224", "levit_conv_128s", "dla34",
    "ghostnet_100", "mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224", "poolformer_s12", "poolformerv2_s12",
    "coat_lite_tiny", "crossvit_tiny_240", "pit_ti_224", "twins_svt_small", "xcit_nano_12_p16_224",
    "mobilevit_xxs", "efficientformerv2_s0", "fastvit_t8", "edgenext_xx_small", "maxvit_tiny_tf_224",
    "coatnet_0_rw_224", "nf_resnet26", "dm_nfnet_f0", "rexnet_100", "lcnet_050", "hrnet_w18_small",
    "inception_v3", "xception41", "dpn68", "cspdarknet53", "ese_vovnet19b_dw", "hgnetv2_b0",
    "tresnet_m", "nest_tiny", "volo_d1_224", "focalnet_tiny_srf", "davit_tiny", "starnet_s1",
    "efficientvit_m0", "repvit_m1", "mambaout_femto", "hiera_tiny_224", "tiny_vit_5m_224",
    "pvt_v2_b0", "gcvit_xxtiny", "botnet26t_256", "halonet26t",
]  # fmt: skip


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def used_weights(model: nn.Module, img_size: int) -> set[str]:
    """Names of the 2-D+ ``*weight*`` parameters the forward pass reaches."""
    trace = trace_model(model, img_size=img_size)
    seen, stack, used = set(), [trace.root], set()
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        info = trace.params.get(id(getattr(fn, "variable", None)))
        if info is not None and "weight" in info.local_name and len(info.shape) >= 2:
            used.add(info.name)
        stack.extend(c for c, _ in fn.next_functions if c is not None)
    return used


def assert_covers(model: nn.Module, graph: ModelGraph, img_size: int) -> None:
    mapped = {p.param for p in graph.param_nodes}
    missing = sorted(used_weights(model, img_size) - mapped)
    assert not missing, f"weights without a node: {missing[:5]}"
    assert graph.node_types[0] == "input" and "input" not in graph.node_types[1:]


_INIT_FUNCTIONS = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]


def build(make: Callable[[], nn.Module]) -> nn.Module:
    """The model on the meta device (no weight-init cost; capture only needs shapes), or on CPU
    with torch.nn.init switched off when its constructor computes with tensors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                return make()
        except Exception:
            with mock.patch.multiple(nn.init, **{n: (lambda t, *a, **k: t) for n in _INIT_FUNCTIONS}):
                return make()


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_models())
def test_torchvision_model_captures(name: str) -> None:
    import torchvision

    img_size = 299 if name.startswith("inception") else 224
    model = build(lambda: torchvision.models.get_model(name))
    graph = capture_graph(model, img_size=img_size)
    assert_covers(model, graph, img_size)


def timm_model(name: str) -> tuple[nn.Module, int]:
    timm = pytest.importorskip("timm")
    model = build(lambda: timm.create_model(name, pretrained=False))
    return model, model.pretrained_cfg["input_size"][-1]


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_REQUIRED + TIMM_FAMILIES)
def test_timm_model_captures(name: str) -> None:
    model, img_size = timm_model(name)
    graph = capture_graph(model, img_size=img_size)
    assert_covers(model, graph, img_size)
