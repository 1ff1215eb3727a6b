"""A plain multi-layer perceptron (Linear + ReLU stacks) as the GHN-2 uses it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``Linear -> ReLU -> ... -> Linear [-> ReLU]``; the layers live in ``fc`` (as in the released weights)."""

    def __init__(self, in_features: int, sizes: Sequence[int], *, last_relu: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for j, n_out in enumerate(sizes):
            layers.append(nn.Linear(in_features if j == 0 else sizes[j - 1], n_out))
            last = j == len(sizes) - 1
            layers.append(nn.ReLU() if (not last or last_relu) else nn.Identity())
        self.fc = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
