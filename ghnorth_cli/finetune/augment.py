"""Batch-wise augmentation and preprocessing on the training device.

The standard small-data augmentation of CIFAR training (as in the paper's code): a random
``size x size`` crop of the image zero-padded by ``padding`` pixels on every side, then a
horizontal flip with probability 1/2. Both are done for a whole batch at once as one gather,
with random numbers from an explicit ``torch.Generator`` living on the batch's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor, *, padding: int = 4, flip: bool = True, generator: torch.Generator
) -> torch.Tensor:
    """Randomly crop (after zero padding) and flip a batch ``(N, C, H, W)``; same dtype and shape."""
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    cols = torch.arange(w, device=device).expand(n, w)
    if flip:
        flipped = torch.rand(n, generator=generator, device=device) < 0.5
        cols = torch.where(flipped[:, None], w - 1 - cols, cols)
    rows = top[:, None] + torch.arange(h, device=device)
    cols = left[:, None] + cols
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def to_model_input(
    images: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    img_size: int,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 images to normalized float32, resized (bilinear, antialiased) to ``img_size``."""
    x = images.float().div_(255)
    if x.shape[-2:] != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
