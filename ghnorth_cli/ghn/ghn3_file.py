"""The released GHN-3 state dict: the config inferred from its tensor names and shapes, checked to fit.

The released files (``ghn3tm8.pt`` ... ``ghn3xlm16.pt`` of the Hugging Face Hub repository
SamsungSAILMontreal/ghn3) carry no config. As the reference does (``ghn3/nn.py``
``from_pretrained``, commit b3289ac), it is read off the tensors: ``hid`` = width of
``embed.weight``, ``layers`` = number of ``gnn.<i>.ln1.weight``, ``heads`` = 16 if ``hid > 64``
else 8, ``max_shape`` = (m, m, s, s) with m² = rows of ``decoder.conv.2.weight`` and s = 11 when
``shape_enc.embed_spatial`` has 9 rows (else 16), ``num_classes`` = rows of
``decoder.class_layer_predictor.1.weight``; weight normalization and virtual edges are always on.
Then every tensor must have exactly the name and shape of the network that config builds
(:func:`~ghnorth_cli.ghn.io.ghn_tensor_shapes`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from ghnorth_cli.ghn.config import GHNConfig, GHNConfigError
from ghnorth_cli.ghn.shape_encoder import spatial_vocabulary

_LAYER = re.compile(r"gnn\.(\d+)\.ln1\.weight")
_REQUIRED = ("embed.weight", "shape_enc.embed_spatial.weight", "decoder.conv.2.weight",
             "decoder.class_layer_predictor.1.weight")
_SPATIAL_ROWS = {len(spatial_vocabulary(k)) + 1: k for k in (11, 16)}  # 9 -> 11, 11 -> 16


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
    from ghnorth_cli.ghn.io import ghn_tensor_shapes

    expected = ghn_tensor_shapes(config)
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
