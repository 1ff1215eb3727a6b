"""Cheap shape propagation for the meta-device forward pass of graph capture.

Several of torch's meta kernels (batch/layer/group norm, pointwise ops, ``addmm``) are
Python decompositions that cost more than a millisecond each; for graph capture only the
output shapes matter. :class:`FastMetaMode` answers those ops directly (same shapes and
strides as the real kernels) and passes every other op to its meta kernel. It runs below
autograd, so the recorded autograd graph is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_POINTWISE = {
    aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.div, aten.div_,
    aten.relu, aten.relu_, aten.gelu, aten.gelu_, aten.silu, aten.silu_, aten.sigmoid, aten.sigmoid_,
    aten.tanh, aten.tanh_, aten.hardtanh, aten.hardtanh_, aten.hardswish, aten.hardswish_,
    aten.hardsigmoid, aten.hardsigmoid_, aten.leaky_relu, aten.leaky_relu_, aten.elu, aten.elu_,
    aten.mish, aten.mish_,
}  # fmt: skip


def _same_shape_pointwise(func: Any, args: tuple) -> torch.Tensor | None:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    first = tensors[0] if tensors else None
    if first is None or not first.dtype.is_floating_point:
        return None
    if any(t.shape != first.shape or t.dtype != first.dtype for t in tensors[1:]):
        return None
    if func.overloadpacket._qualified_op_name.endswith("_"):
        return first if first is args[0] else None
    return torch.empty_like(first)


def _norm_outputs(func: Any, args: tuple) -> tuple[torch.Tensor, ...] | None:
    x = args[0]
    if func is aten.native_batch_norm.default:
        channels = x.shape[1]
        return torch.empty_like(x), x.new_empty((channels,)), x.new_empty((channels,))
    if func is aten.native_layer_norm.default:
        stats = tuple(x.shape[: x.dim() - len(args[1])]) + (1,) * len(args[1])
        return torch.empty_like(x), x.new_empty(stats), x.new_empty(stats)
    if func is aten.native_group_norm.default:
        batch, groups = args[3], args[6]
        return torch.empty_like(x), x.new_empty((batch, groups)), x.new_empty((batch, groups))
    return None


def _matmul_output(func: Any, args: tuple) -> torch.Tensor | None:
    if func is aten.addmm.default:
        a, b = args[1], args[2]
    elif func is aten.mm.default:
        a, b = args[0], args[1]
    else:
        return None
    return a.new_empty((a.shape[0], b.shape[1]))


class FastMetaMode(TorchDispatchMode):
    """Answer shape-only questions for meta tensors without the slow decompositions."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not kwargs:
            if func.overloadpacket in _POINTWISE:
                out = _same_shape_pointwise(func, args)
                if out is not None:
                    return out
            else:
                fast = _norm_outputs(func, args) or _matmul_output(func, args)
                if fast is not None:
                    return fast
        return func(*args, **kwargs)
