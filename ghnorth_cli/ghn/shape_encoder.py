"""Shape encoding: each node's tensor shape becomes four learned embeddings added to its features.

Channel and kernel sizes are looked up in fixed vocabularies (the sizes seen in training);
sizes outside the vocabulary take the closest known size (the smaller one on ties), a few
sizes have fixed stand-ins (4-7 channels count as 8, a 2x2 kernel as 3x3) and anything beyond
the largest known size, or zero, takes the largest. Nodes without a shape take a reserved index.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import nn

Shape = tuple[int, ...]


def channel_vocabulary(num_classes: int) -> np.ndarray:
    """Sorted channel counts with their own embedding."""
    sizes = [1, 3, num_classes, *range(8, 64, 8), *range(64, 4096, 16), *range(4096, 8192 + 1, 32)]
    return np.unique(sizes)


def spatial_vocabulary(max_kernel: int) -> np.ndarray:
    """Sorted kernel sizes with their own embedding."""
    return np.unique([*range(1, max(12, max_kernel), 2), 14, 16])


def _nearest_lookup(vocab: np.ndarray) -> np.ndarray:
    """``table[size]`` = index of ``size`` in ``vocab`` or of its nearest entry (smaller on ties)."""
    sizes = np.arange(int(vocab[-1]) + 1)
    above = np.minimum(np.searchsorted(vocab, sizes), len(vocab) - 1)  # first entry >= size
    below = np.maximum(above - 1, 0)
    table = np.where(sizes - vocab[below] <= np.abs(vocab[above] - sizes), below, above)
    table[vocab] = np.arange(len(vocab))
    table[0] = len(vocab) - 1
    return table


@lru_cache(maxsize=8)
def _channel_table(num_classes: int) -> np.ndarray:
    vocab = channel_vocabulary(num_classes)
    table = _nearest_lookup(vocab)
    table[4:8] = int(np.searchsorted(vocab, 8))
    return table


@lru_cache(maxsize=8)
def _spatial_table(max_kernel: int) -> np.ndarray:
    vocab = spatial_vocabulary(max_kernel)
    table = _nearest_lookup(vocab)
    table[2] = int(np.searchsorted(vocab, 3))
    return table


def as_4d(shape: Shape) -> tuple[int, int, int, int]:
    """View any parameter shape as (out, in, h, w) the way the GHN-2 was trained to read it."""
    if len(shape) == 1:
        return (shape[0], 1, 1, 1)
    if len(shape) == 2:
        return (shape[0], shape[1], 1, 1)
    if len(shape) == 3:
        if shape[0] == 1 and min(shape[1:]) > 1:  # a token sequence such as ViT's (1, 197, 768)
            side = int(np.floor(shape[1] ** 0.5))
            return (1, shape[2], side, side)
        return (shape[0], shape[1], shape[2], 1)
    if len(shape) == 4:
        return (shape[0], shape[1], shape[2], shape[3])
    raise ValueError(f"cannot encode a {len(shape)}-D shape {shape}")


class ShapeEncoder(nn.Module):
    """Embeds (out, in, h, w) shapes: two channel embeddings and two kernel-size embeddings."""

    def __init__(self, *, hid: int, num_classes: int, max_kernel: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.max_kernel = max_kernel
        self.n_channels = len(channel_vocabulary(num_classes))
        self.n_spatial = len(spatial_vocabulary(max_kernel))
        # The last row of each table is the "no shape" index.
        self.embed_spatial = nn.Embedding(self.n_spatial + 1, hid // 4)
        self.embed_channel = nn.Embedding(self.n_channels + 1, hid // 4)

    def shape_indices(self, shapes: Sequence[Shape | None]) -> torch.Tensor:
        """(n, 4) vocabulary indices for each node's shape (``None``: the reserved index)."""
        chan, spat = _channel_table(self.num_classes), _spatial_table(self.max_kernel)
        out = np.empty((len(shapes), 4), dtype=np.int64)
        out[:, :2], out[:, 2:] = self.n_channels, self.n_spatial
        for i, shape in enumerate(shapes):
            if not shape:
                continue
            dims = as_4d(shape)
            out[i, :2] = [chan[c] if 0 <= c < len(chan) else chan[-1] for c in dims[:2]]
            out[i, 2:] = [spat[s] if 0 <= s < len(spat) else spat[-1] for s in dims[2:]]
        return torch.from_numpy(out)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """(n, hid) shape embeddings from :meth:`shape_indices`."""
        return torch.cat(
            (
                self.embed_channel(indices[:, 0]),
                self.embed_channel(indices[:, 1]),
                self.embed_spatial(indices[:, 2]),
                self.embed_spatial(indices[:, 3]),
            ),
            dim=1,
        )
