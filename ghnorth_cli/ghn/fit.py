"""Fitting a decoded tensor to a parameter: slice or tile it to the target shape, then scale it.

Decoded tensors are at most ``max_shape``; larger parameters repeat them along each axis
(channel ``c`` takes decoded channel ``c mod n``). Fan-in weight normalization then scales
weights by ``sqrt(beta / fan_in)`` (beta = 2 for layers followed by a ReLU, 1 for depthwise
and asymmetric kernels), maps norm-layer scales into (0, 2) and biases into (-1, 1).
"""

from __future__ import annotations

import math

import torch


def centred_window(size: int, n: int) -> slice:
    """The ``n`` central positions of an axis of ``size`` (all of it if ``n >= size``).

    GHN-3 reads kernels smaller than its decoded ones from their centre: positions
    ``size//2 - n//2`` to ``size//2 + ceil(n/2)`` (ghn3/nn.py ``ConvDecoder3``, ``_tile_params``).
    """
    centre = size // 2
    return slice(max(0, centre - n // 2), min(size, centre + (n + 1) // 2))


def crop_to_shape(w: torch.Tensor, shape: tuple[int, ...], *, centred: bool = False) -> torch.Tensor:
    """``w`` with as many axes as ``shape``, each cut to at most its size.

    Surplus trailing axes are read at index 0; missing ones are added with size 1. With
    ``centred`` (GHN-3) the kernel axes (2 and up) are read at, and cut around, their centre.
    """
    while w.dim() > len(shape):
        w = w[..., w.shape[-1] // 2 if (centred and w.dim() > 2) else 0]
    while w.dim() < len(shape):
        w = w.unsqueeze(-1)
    return w[tuple(centred_window(size, n) if (centred and axis >= 2) else slice(0, n)
                   for axis, (size, n) in enumerate(zip(w.shape, shape)))]


def tile_to_shape(w: torch.Tensor, shape: tuple[int, ...], *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Repeat a cropped ``w`` along every axis that is short of ``shape``.

    Same values as ``Tensor.repeat`` followed by slicing, written as one broadcast copy
    (``repeat`` is several times slower on large outputs). With ``out`` (a tensor of ``shape``,
    any dtype or device) the result is written there and ``out`` is returned.
    """
    shape = tuple(shape)
    reps = [math.ceil(n / have) for n, have in zip(shape, w.shape)]
    full = tuple(r * have for r, have in zip(reps, w.shape))
    interleaved = [d for r, have in zip(reps, w.shape) for d in (r, have)]
    tiled = w.reshape([d for have in w.shape for d in (1, have)]).expand(interleaved)
    if out is not None and full == shape and out.is_contiguous():
        out.view(interleaved).copy_(tiled)
        return out
    result = tiled.reshape(full) if full != tuple(w.shape) else w
    if full != shape:
        result = result[tuple(slice(0, n) for n in shape)]
    if out is not None:
        return out.copy_(result)
    return result.contiguous()


def fit_to_shape(w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Slice or tile ``w`` to ``shape`` (channel ``c`` takes decoded channel ``c mod n``)."""
    return tile_to_shape(crop_to_shape(w, shape), shape)


def weight_gain(shape: tuple[int, ...]) -> float | None:
    """Fan-in scale for a 2+-D weight of ``shape``, or None for positional encodings (left as is)."""
    if len(shape) > 2 and shape[2] >= 11 and shape[0] == 1:
        return None
    no_relu = len(shape) > 2 and (shape[1] == 1 or shape[2] < shape[3 if len(shape) > 3 else 2])
    beta = 1.0 if no_relu else 2.0
    return (beta / math.prod(shape[1:])) ** 0.5


def normalize(w: torch.Tensor, *, shape: tuple[int, ...], is_weight: bool) -> torch.Tensor:
    """Fan-in normalization for a parameter of ``shape`` (see the module docstring).

    Element-wise, so it may run on the cropped tensor before tiling: only the gain depends on
    the full ``shape``.
    """
    if len(shape) > 1:
        gain = weight_gain(tuple(shape))
        return w if gain is None else w * gain
    if is_weight:
        return 2 * torch.sigmoid(0.5 * w)
    return torch.tanh(0.2 * w)
