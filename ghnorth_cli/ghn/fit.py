"""Fitting a decoded tensor to a parameter: slice or tile it to the target shape, then scale it.

Decoded tensors are at most ``max_shape``; larger parameters repeat them along each axis
(channel ``c`` takes decoded channel ``c mod n``). Fan-in weight normalization then scales
weights by ``sqrt(beta / fan_in)`` (beta = 2 for layers followed by a ReLU, 1 for depthwise
and asymmetric kernels), maps norm-layer scales into (0, 2) and biases into (-1, 1).
"""

from __future__ import annotations

import math

import torch


def fit_to_shape(w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Slice or tile ``w`` to ``shape``; surplus trailing axes of ``w`` are read at index 0."""
    while w.dim() > len(shape):
        w = w[..., 0]
    while w.dim() < len(shape):
        w = w.unsqueeze(-1)
    w = w[tuple(slice(0, n) for n in shape)]
    for dim, n in enumerate(shape):
        have = w.shape[dim]
        if n > have:
            reps = [1] * w.dim()
            reps[dim] = math.ceil(n / have)
            w = w.repeat(reps).narrow(dim, 0, n)
    return w


def weight_gain(shape: tuple[int, ...]) -> float | None:
    """Fan-in scale for a 2+-D weight of ``shape``, or None for positional encodings (left as is)."""
    if len(shape) > 2 and shape[2] >= 11 and shape[0] == 1:
        return None
    no_relu = len(shape) > 2 and (shape[1] == 1 or shape[2] < shape[3 if len(shape) > 3 else 2])
    beta = 1.0 if no_relu else 2.0
    return (beta / math.prod(shape[1:])) ** 0.5


def normalize(w: torch.Tensor, *, is_weight: bool) -> torch.Tensor:
    """Fan-in normalization of a fitted tensor (see the module docstring)."""
    if w.dim() > 1:
        gain = weight_gain(tuple(w.shape))
        return w if gain is None else w * gain
    if is_weight:
        return 2 * torch.sigmoid(0.5 * w)
    return torch.tanh(0.2 * w)
