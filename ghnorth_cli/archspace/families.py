"""Four families of small image classifiers, each a sampler of settings and a builder.

Every family is a thin layer over a timm model class, so the sampled networks are the same
code as the models users predict parameters for:

- ``resnet``: timm ``ResNet`` with basic or bottleneck blocks, batch or group norm;
- ``convnext``: timm ``ConvNeXt`` (depthwise convs, LayerNorm, GELU, layer scale);
- ``mobilenet``: timm ``EfficientNet`` built from MobileNetV3-style inverted residual blocks
  with optional squeeze-excite;
- ``vit``: timm ``VisionTransformer`` with small patches.

A sampler draws plain JSON-able settings (``dict``) with an explicit ``torch.Generator``; a
builder turns settings into an ``nn.Module`` whose classifier has ``num_classes`` outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Settings = dict[str, Any]


@dataclass(frozen=True)
class Budget:
    """How big the sampled networks may be: channel choices and blocks per stage."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    max_channels: int


def pick(options: Sequence[Any], *, generator: torch.Generator) -> Any:
    """One element of ``options``, uniformly."""
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _widths(base: int, stages: int, *, cap: int) -> list[int]:
    return [min(base * 2**i, cap) for i in range(stages)]


# Activation names as timm's factories know them.
_ACTIVATIONS = {"relu": "relu", "silu": "silu", "gelu": "gelu", "hardswish": "hard_swish"}


# --- ResNet-like ----------------------------------------------------------------------------


class GroupNorm4(nn.GroupNorm):
    """Group norm with (up to) 4 groups, built from a channel count like a batch norm."""

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(math.gcd(num_channels, 4), num_channels, **kwargs)


def sample_resnet(*, budget: Budget, generator: torch.Generator) -> Settings:
    g = generator
    return {
        "block": pick(("basic", "bottleneck"), generator=g),
        "depths": [pick(budget.depths, generator=g) for _ in range(4)],
        "widths": _widths(pick(budget.widths, generator=g), 4, cap=budget.max_channels),
        "norm": pick(("batch", "group"), generator=g),
        "act": pick(("relu", "silu", "gelu"), generator=g),
        "small_stem": bool(pick((True, False), generator=g)),
    }


def build_resnet(s: Settings, *, num_classes: int, img_size: int = 32) -> nn.Module:
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    block = BasicBlock if s["block"] == "basic" else Bottleneck
    widths = s["widths"] if s["block"] == "basic" else [max(w // 2, 4) for w in s["widths"]]
    norm = nn.BatchNorm2d if s["norm"] == "batch" else GroupNorm4
    # A "deep" (three 3x3 convs) stem, so that its width follows the sampled widths.
    model = ResNet(block, s["depths"], channels=tuple(widths), stem_type="deep", stem_width=max(widths[0] // 2, 4),
                   num_classes=num_classes, act_layer=_ACTIVATIONS[s["act"]], norm_layer=norm)
    if s["small_stem"]:  # stride-1 stem without max-pool, as for 32 px inputs
        model.conv1[0].stride = (1, 1)
        model.maxpool = nn.Identity()
    return model


# --- ConvNeXt-like --------------------------------------------------------------------------


def sample_convnext(*, budget: Budget, generator: torch.Generator) -> Settings:
    g = generator
    return {
        "depths": [pick(budget.depths, generator=g) for _ in range(4)],
        "widths": _widths(pick(budget.widths, generator=g), 4, cap=budget.max_channels),
        "kernel": pick((3, 5, 7), generator=g),
        "patch": pick((1, 2), generator=g),
        "layer_scale": pick((1e-6, 0.1, 1.0), generator=g),
        "act": pick(("gelu", "silu"), generator=g),
        "conv_mlp": bool(pick((False, True), generator=g)),
    }


def build_convnext(s: Settings, *, num_classes: int, img_size: int = 32) -> nn.Module:
    from timm.models.convnext import ConvNeXt

    return ConvNeXt(depths=tuple(s["depths"]), dims=tuple(s["widths"]), kernel_sizes=s["kernel"],
                    patch_size=s["patch"], ls_init_value=s["layer_scale"], act_layer=s["act"],
                    conv_mlp=s["conv_mlp"], num_classes=num_classes)


# --- MobileNet-like (inverted residuals, squeeze-excite) ------------------------------------


def sample_mobilenet(*, budget: Budget, generator: torch.Generator) -> Settings:
    g = generator
    base = pick(budget.widths, generator=g)
    stages = []
    for i in range(int(pick((2, 3, 4), generator=g))):
        stages.append({
            "repeats": pick(budget.depths, generator=g),
            "kernel": pick((3, 5), generator=g),
            "stride": 2 if i < 3 else 1,
            "expand": pick((2, 3, 4, 6), generator=g),
            "se": pick((0.0, 0.25), generator=g),
            "width": min(base * 2 ** (i // 2 + 1) // 2 * 2, budget.max_channels),
        })
    return {
        "stem": base,
        "stages": stages,
        "features": pick((64, 128), generator=g),
        "act": pick(("relu", "hardswish", "silu"), generator=g),
    }


def _block_string(stage: Settings) -> str:
    se = f"_se{stage['se']}" if stage["se"] else ""
    return (f"ir_r{stage['repeats']}_k{stage['kernel']}_s{stage['stride']}_e{stage['expand']}"
            f"_c{stage['width']}{se}")


def build_mobilenet(s: Settings, *, num_classes: int, img_size: int = 32) -> nn.Module:
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    arch_def = [[f"ds_r1_k3_s1_e1_c{s['stem']}"]] + [[_block_string(stage)] for stage in s["stages"]]
    return EfficientNet(decode_arch_def(arch_def), num_classes=num_classes, stem_size=s["stem"],
                        num_features=s["features"], act_layer=_ACTIVATIONS[s["act"]])


# --- ViT-like -------------------------------------------------------------------------------


def sample_vit(*, budget: Budget, generator: torch.Generator) -> Settings:
    g = generator
    heads = pick((1, 2, 4), generator=g)
    dim = max(pick(budget.widths, generator=g) * 2, 16)
    return {
        "patch": pick((4, 8), generator=g),
        "dim": min(dim, budget.max_channels) // heads * heads,
        "depth": pick(tuple(d + 1 for d in budget.depths), generator=g),
        "heads": heads,
        "mlp_ratio": pick((2.0, 4.0), generator=g),
        "pool": pick(("token", "avg"), generator=g),
    }


def build_vit(s: Settings, *, num_classes: int, img_size: int = 32) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=img_size, patch_size=s["patch"], embed_dim=s["dim"], depth=s["depth"],
                             num_heads=s["heads"], mlp_ratio=s["mlp_ratio"], global_pool=s["pool"],
                             class_token=s["pool"] == "token", num_classes=num_classes)


# --- registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A family of architectures: how to draw settings and how to build them."""

    name: str
    sample: Callable[..., Settings]
    build: Callable[..., nn.Module]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("resnet", sample_resnet, build_resnet),
        Family("convnext", sample_convnext, build_convnext),
        Family("mobilenet", sample_mobilenet, build_mobilenet),
        Family("vit", sample_vit, build_vit),
    )
}
