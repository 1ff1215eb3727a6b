"""The convolutional decoders (GHN-2, GHN-3): node embeddings to (out, in, h, w) weights of at most ``max_shape``.

An embedding is first mapped to a (hid*4, h, w) feature map, then 1x1 convolutions map its
channels to out*in weights at every kernel position. Only the kernel positions and the
(out, in) slice a group of tensors needs are computed; the classifier path maps the ``out``
axis to the GHN's class count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ghnorth_cli.ghn.fit import centred_window

Key = tuple[int, int, int, int]


class ConvDecoder(nn.Module):
    """Predicts weight tensors for a batch of nodes that share a decoding key (out, in, h, w)."""

    def __init__(self, *, hid: int, max_shape: Key, num_classes: int) -> None:
        super().__init__()
        self.max_shape = max_shape
        out_ch, in_ch, kh, kw = max_shape
        hid_map, hid_conv = hid * 4, hid * 8
        self.fc = nn.Sequential(nn.Linear(hid, hid_map * kh * kw), nn.ReLU())
        self.conv = nn.Sequential(
            nn.Conv2d(hid_map, hid_conv, 1), nn.ReLU(), nn.Conv2d(hid_conv, out_ch * in_ch, 1), nn.Identity()
        )
        self.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Conv2d(out_ch, num_classes, 1))

    def feature_map(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(n, hid*4, h, w): the first layer, computing only the kernel positions needed."""
        _, _, kh, kw = self.max_shape
        linear = self.fc[0]
        if h + w < kh + kw:
            rows = torch.arange(linear.out_features, device=x.device).view(-1, kh, kw)[:, :h, :w].flatten()
            return F.relu(F.linear(x, linear.weight[rows], linear.bias[rows])).view(len(x), -1, h, w)
        return self.fc(x).view(len(x), -1, kh, kw)[:, :, :h, :w]

    def forward(self, x: torch.Tensor, key: Key, *, classifier: bool = False) -> torch.Tensor:
        """(n, out, in, h, w) weights, or (n, num_classes, in) for the classification layer."""
        out_ch, in_ch, kh, kw = self.max_shape
        k_out, k_in, k_h, k_w = key
        h, w = min(kh, k_h), min(kw, k_w)
        maps = self.feature_map(x, h, w)
        if k_in <= in_ch // 2 or (k_out < out_ch and not classifier):
            weights = self._sliced_channels(maps, key, classifier=classifier)
        else:
            weights = self.conv(maps).view(len(x), out_ch, in_ch, h, w)
        if classifier:
            weights = self.class_layer_predictor(weights[..., 0])[..., 0]
        return weights

    def _sliced_channels(self, maps: torch.Tensor, key: Key, *, classifier: bool) -> torch.Tensor:
        """Decode only the first (out, in) channel pairs that the key asks for."""
        out_ch, in_ch, _, _ = self.max_shape
        k_out, k_in, k_h, k_w = key
        n, _, h, w = maps.shape
        # Inputs counts divisible by 3 are decoded at the next multiple of 4 (as in training).
        n_in = min(k_in // 3 * 4 if (k_in < in_ch and k_in % 3 == 0) else k_in, in_ch)
        n_out = out_ch if classifier else min(out_ch, k_out)
        last = self.conv[2]
        rows = torch.arange(out_ch * in_ch, device=maps.device).view(out_ch, in_ch)[:n_out, :n_in].flatten()
        hidden = self.conv[1](self.conv[0](maps))
        weights = F.conv2d(hidden, last.weight[rows], last.bias[rows]).view(n, n_out, n_in, h, w)
        weights = weights[:, :, : min(in_ch, k_in)]
        if min(k_h, k_w) > min(h, w):  # kernels larger than max_shape: repeat the predicted kernel
            weights = weights.repeat(1, 1, 1, 2, 2)
        return weights


class ConvDecoder3(nn.Module):
    """GHN-3's convolutional decoder (``ConvDecoder3`` of SamsungSAILMontreal/ghn3, ghn3/nn.py).

    Same three stages as :class:`ConvDecoder` (a linear map to a (hid*4, k, k) feature map, two
    position-wise layers to out*in weights, a class-layer predictor), written with linear layers,
    and with three differences: a kernel smaller than ``k`` is read from the *centre* of the
    feature map, a kernel larger than ``k`` is bilinearly interpolated up to its size, and the
    classification layer is decoded from the centre position.
    """

    def __init__(self, *, hid: int, max_shape: Key, num_classes: int) -> None:
        super().__init__()
        self.max_shape = max_shape
        out_ch, in_ch, kh, kw = max_shape
        hid_map, hid_conv = hid * 4, hid * 8
        self.fc = nn.Sequential(nn.Linear(hid, hid_map * kh * kw), nn.ReLU())
        self.conv = nn.Sequential(
            nn.Linear(hid_map, hid_conv), nn.ReLU(), nn.Linear(hid_conv, out_ch * in_ch), nn.Identity()
        )
        self.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Linear(out_ch, num_classes))

    def feature_map(self, x: torch.Tensor, k_h: int, k_w: int) -> torch.Tensor:
        """(n, h, w, hid*4): the first layer at the central ``k_h x k_w`` positions (at most the map)."""
        _, _, kh, kw = self.max_shape
        rows_h, cols_w = centred_window(kh, k_h), centred_window(kw, k_w)
        linear = self.fc[0]
        index = torch.arange(linear.out_features, device=x.device).view(-1, kh, kw)[:, rows_h, cols_w]
        h, w = index.shape[1:]
        index = index.permute(1, 2, 0).flatten()  # position-major: no permute of the output
        return F.relu(F.linear(x, linear.weight[index], linear.bias[index])).view(len(x), h, w, -1)

    def forward(self, x: torch.Tensor, key: Key, *, classifier: bool = False) -> torch.Tensor:
        """(n, out, in, h, w) weights for decoding key ``(out, in, h, w)`` (out and in at most
        ``max_shape``'s, h and w exactly the key's), or (n, num_classes, in) for the classifier."""
        out_ch, in_ch, _, _ = self.max_shape
        k_out, k_in, k_h, k_w = key
        n_out = out_ch if classifier else min(out_ch, k_out)
        n_in = min(in_ch, k_in)
        maps = self.feature_map(x, k_h, k_w)
        n, h, w, _ = maps.shape
        last = self.conv[2]
        rows = torch.arange(out_ch * in_ch, device=x.device).view(out_ch, in_ch)[:n_out, :n_in].flatten()
        hidden = self.conv[1](self.conv[0](maps))
        weights = F.linear(hidden, last.weight[rows], last.bias[rows])  # (n, h, w, n_out * n_in)
        weights = weights.permute(0, 3, 1, 2).reshape(n, n_out, n_in, h, w)
        if min(k_h, k_w) > min(h, w):  # kernels larger than the map: interpolate the decoded one
            weights = F.interpolate(weights.flatten(0, 1), size=(k_h, k_w), mode="bilinear")
            weights = weights.view(n, n_out, n_in, k_h, k_w)
        if classifier:
            centre = weights[:, :, :, weights.shape[-2] // 2, weights.shape[-1] // 2]  # (n, out, in)
            return self.class_layer_predictor(centre.transpose(1, 2)).transpose(1, 2)  # (n, classes, in)
        return weights
