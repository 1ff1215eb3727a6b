"""Which GHN-2 primitive a parameter or an autograd op stands for.

Parameters are typed by the module that owns them (a convolution's weight is ``conv``, a
norm layer's weight ``bn``/``ln``, a linear or conv bias ``bias``). Norm-layer biases,
layer-scale gammas and other tensors the GHN-2 has no primitive for map to ``None``: they
get no node (the GHN predicts a norm layer's bias together with its weight, and leaves
the rest at the model's own init).

Ops are typed by the name of their autograd node with the ``Backward<k>`` suffix removed
(``"AddBackward0"`` -> ``"Add"``); ops without a primitive are removed from the graph later.
"""

from __future__ import annotations

import re

from torch import nn

# Autograd op name (suffix removed) -> primitive. The first block is DeepNets-1M's table;
# "Mean", "Mul", "Clone", "Add" and "Cat" are kept only under conditions (see filter.py).
OP_PRIMITIVES: dict[str, str] = {
    "Mean": "glob_avg",
    "AdaptiveAvgPool2D": "glob_avg",
    "MaxPool2DWithIndices": "max_pool",
    "AvgPool2D": "avg_pool",
    "Clone": "msa",
    "Mul": "cse",
    "Add": "sum",
    "Cat": "concat",
}

# Fused attention kernels (SDPA variants); their node is the attention op itself.
_ATTENTION_OP = re.compile(r"ScaledDotProduct|MultiHeadAttention|_EfficientAttention|FlashAttention")

# Learned tokens and position embeddings (timm, torchvision ViT) -> ``pos_enc``.
_POS_ENC_NAME = re.compile(
    r"(^|_)(pos_embed|pos_embedding|absolute_pos_embed|cls_token|class_token|dist_token|reg_token)$"
)

_LINEAR_WEIGHTS = ("weight", "in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
_BN_TYPES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm,)
_LN_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)


def op_name(fn_type_name: str) -> str:
    """``"ConvolutionBackward0"`` -> ``"Convolution"``."""
    pos = fn_type_name.find("Backward")
    return fn_type_name if pos < 0 else fn_type_name[:pos]


def op_primitive(name: str) -> str | None:
    """Primitive of an op (``name`` as returned by :func:`op_name`), ``None`` if it has none."""
    if name in OP_PRIMITIVES:
        return OP_PRIMITIVES[name]
    if _ATTENTION_OP.search(name):
        return "msa"
    return None


def conv_primitive(module: nn.Module) -> str:
    """``conv``, or ``sep_conv``/``dil_conv`` for grouped convolutions (dilated or not)."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return "dil_conv" if min(module.dilation) > 1 else "sep_conv"
    return "conv"


def _norm_primitive(module: nn.Module) -> str | None:
    if isinstance(module, _BN_TYPES):
        return "bn"
    if isinstance(module, _LN_TYPES) or _is_timm_norm(module):
        return "ln"
    return None


def _is_timm_norm(module: nn.Module) -> bool:
    """timm norms not derived from torch's (RmsNorm, LayerNorm2d variants, ...)."""
    cls = type(module)
    return cls.__module__.startswith(("timm.layers", "torchvision.models")) and (
        cls.__name__.endswith(("Norm", "Norm2d", "Norm1d", "NormAct", "NormAct2d")) or "RmsNorm" in cls.__name__
    )


def param_primitive(module: nn.Module, local_name: str, *, ndim: int) -> str | None:
    """Primitive of parameter ``local_name`` (with ``ndim`` dims) of ``module``, ``None`` if it gets no node."""
    if _POS_ENC_NAME.search(local_name):
        return "pos_enc"
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)) or _is_conv_like(module):
        if local_name in ("bias", "in_proj_bias"):
            return "bias"
        if local_name in _LINEAR_WEIGHTS and ndim >= 2:
            return conv_primitive(module)
        return None
    if local_name == "weight":
        return _norm_primitive(module)
    return None


def _is_conv_like(module: nn.Module) -> bool:
    """Convolutions that do not derive from torch's (timm's CondConv2d, ...)."""
    name = type(module).__name__
    return name.endswith(("Conv1d", "Conv2d", "Conv3d", "Linear")) and isinstance(getattr(module, "weight", None), nn.Parameter)
