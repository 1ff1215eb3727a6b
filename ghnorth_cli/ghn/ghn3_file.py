"""The released GHN-3 state dict: its tensor layout, and the config inferred from it.

The released files (``ghn3tm8.pt`` ... ``ghn3xlm16.pt`` of the Hugging Face Hub repository
SamsungSAILMontreal/ghn3) carry no config. As the reference does (``ghn3/nn.py``
``from_pretrained``, commit b3289ac), it is read off the tensors: ``hid`` = width of
``embed.weight``, ``layers`` = number of ``gnn.<i>.ln1.weight``, ``heads`` = 16 if ``hid > 64``
else 8, ``max_shape`` = (m, m, s, s) with m² = rows of ``decoder.conv.2.weight`` and s = 11 when
``shape_enc.embed_spatial`` has 9 rows (else 16), ``num_classes`` = rows of
``decoder.class_layer_predictor.1.weight``; weight normalization and virtual edges are always on.
Then every tensor must have exactly the name and shape that config gives (:func:`ghn3_tensor_shapes`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from ghnorth_cli.ghn.config import GHNConfig, GHNConfigError
from ghnorth_cli.ghn.shape_encoder import channel_vocabulary, spatial_vocabulary
from ghnorth_cli.graph.types import PRIMITIVES

# Sizes fixed by the GHN-3 architecture (the reference's Graphormer layer 0).
MAX_DEGREE = 100  # in/out-degree embeddings have MAX_DEGREE + 1 rows
MAX_INPUT_DIST = 1000  # distance-from-input embedding has MAX_INPUT_DIST + 1 rows
EDGE_VOCAB = 257  # shortest-path-length embeddings of layer 0
EDGE_DIM = 2  # layer 0 embeds forward and backward distances
MLP_RATIO = 4

_LAYER = re.compile(r"gnn\.(\d+)\.ln1\.weight")
_REQUIRED = ("embed.weight", "shape_enc.embed_spatial.weight", "decoder.conv.2.weight",
             "decoder.class_layer_predictor.1.weight")
_SPATIAL_ROWS = {len(spatial_vocabulary(k)) + 1: k for k in (11, 16)}  # 9 -> 11, 11 -> 16


def is_ghn3_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    """True when the names are a GHN-3's (transformer layers), False for a GHN-2's or anything else."""
    return "gnn.0.attn.to_qkv.weight" in state


def ghn3_tensor_shapes(config: GHNConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a GHN-3 with ``config``, in the released files' order."""
    h, m, s, heads = config.hid, config.max_channels, config.max_shape[3], config.heads
    dec = (4 * h, 8 * h)  # ConvDecoder3 hidden sizes
    shapes: dict[str, tuple[int, ...]] = {}
    if config.layernorm:
        shapes |= {"ln.weight": (h,), "ln.bias": (h,)}
    shapes |= {
        "embed.weight": (len(PRIMITIVES), h),
        "shape_enc.embed_spatial.weight": (len(spatial_vocabulary(s)) + 1, h // 4),
        "shape_enc.embed_channel.weight": (len(channel_vocabulary(config.num_classes)) + 1, h // 4),
    }
    for i in range(config.layers):
        p = f"gnn.{i}."
        shapes |= {p + "ln1.weight": (h,), p + "ln1.bias": (h,), p + "attn.to_qkv.weight": (3 * h, h),
                   p + "attn.to_out.0.weight": (h, h), p + "attn.to_out.0.bias": (h,)}
        if i == 0:
            shapes |= {p + "attn.edge_embed.embed.weight": (EDGE_VOCAB, h),
                       p + "attn.proj_e.0.weight": (h, EDGE_DIM * h), p + "attn.proj_e.0.bias": (h,),
                       p + "attn.proj_e.2.weight": (heads, h), p + "attn.proj_e.2.bias": (heads,)}
        shapes |= {p + "ln2.weight": (h,), p + "ln2.bias": (h,),
                   p + "ff.net.0.weight": (MLP_RATIO * h, h), p + "ff.net.0.bias": (MLP_RATIO * h,),
                   p + "ff.net.3.weight": (h, MLP_RATIO * h), p + "ff.net.3.bias": (h,)}
    shapes |= {
        "decoder.fc.0.weight": (dec[0] * s * s, h), "decoder.fc.0.bias": (dec[0] * s * s,),
        "decoder.conv.0.weight": (dec[1], dec[0]), "decoder.conv.0.bias": (dec[1],),
        "decoder.conv.2.weight": (config.max_shape[0] * config.max_shape[1], dec[1]),
        "decoder.conv.2.bias": (config.max_shape[0] * config.max_shape[1],),
        "decoder.class_layer_predictor.1.weight": (config.num_classes, config.max_shape[0]),
        "decoder.class_layer_predictor.1.bias": (config.num_classes,),
        "decoder_1d.fc.0.weight": (2 * h, h), "decoder_1d.fc.0.bias": (2 * h,),
        "decoder_1d.fc.2.weight": (2 * m, 2 * h), "decoder_1d.fc.2.bias": (2 * m,),
        "bias_class.1.weight": (config.num_classes, m), "bias_class.1.bias": (config.num_classes,),
        "centrality_embed_in.weight": (MAX_DEGREE + 1, h),
        "centrality_embed_out.weight": (MAX_DEGREE + 1, h),
        "input_dist_embed.weight": (MAX_INPUT_DIST + 1, h),
    }
    return shapes


def infer_ghn3_config(state: Mapping[str, torch.Tensor]) -> GHNConfig:
    """The config of a released GHN-3 state dict (rules in the module docstring), checked to fit.

    Raises :class:`GHNConfigError` when a tensor the rules need is missing or when any tensor's
    name or shape does not fit the inferred config.
    """
    if any(".gru." in name for name in state):
        raise GHNConfigError("a GHN-2 saved in GHN-3's file format is not supported; use a released GHN-2 "
                             "(ghn2-imagenet, ghn2-cifar10) or a ghnorth .safetensors")
    missing = [name for name in _REQUIRED if name not in state]
    if missing:
        raise GHNConfigError(f"not a GHN-3 state dict: no {', '.join(missing)}")
    hid = state["embed.weight"].shape[-1]
    m = math.isqrt(len(state["decoder.conv.2.weight"]))
    spatial_rows = len(state["shape_enc.embed_spatial.weight"])
    if m * m != len(state["decoder.conv.2.weight"]) or spatial_rows not in _SPATIAL_ROWS:
        raise GHNConfigError(f"not a GHN-3 decoder: decoder.conv.2.weight has {len(state['decoder.conv.2.weight'])} "
                             f"rows (not a square) or shape_enc.embed_spatial.weight {spatial_rows} (not 9 or 11)")
    s = _SPATIAL_ROWS[spatial_rows]
    config = GHNConfig(
        max_shape=(m, m, s, s),
        num_classes=len(state["decoder.class_layer_predictor.1.weight"]),
        hid=hid,
        hypernet="transformer",
        weight_norm=True,
        ve=True,
        layernorm="ln.weight" in state,
        layers=sum(1 for name in state if _LAYER.fullmatch(name)),
        heads=16 if hid > 64 else 8,
    )
    check_ghn3_state_dict(config, state)
    return config


def check_ghn3_state_dict(config: GHNConfig, state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`GHNConfigError` unless ``state`` has exactly the tensors of a GHN-3 with ``config``."""
    expected = ghn3_tensor_shapes(config)
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [f"{name} {tuple(state[name].shape)} (expected {shape})" for name, shape in expected.items()
             if name in state and tuple(state[name].shape) != shape]
    not_float = [name for name, t in state.items() if not t.is_floating_point()]
    problems = [f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong),
                                     ("not floating-point", not_float)) if names]
    if problems:
        brief = f"hid={config.hid}, layers={config.layers}, heads={config.heads}, max_shape={config.max_shape}"
        raise GHNConfigError(f"tensors do not fit a GHN-3 with {brief}: {'; '.join(problems)}")
