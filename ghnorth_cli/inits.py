"""Table 1's baseline initializations and the orthogonal transform (the paper's Eq. 2)."""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from ghnorth_cli.models import classifier_tensor_names, weight_layer_names

_logger = logging.getLogger(__name__)

INIT_METHODS = ("default", "orth")


def as_matrix(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The reference's 2-D view of a weight: ``K x CHW``, transposed when ``K < CHW``."""
    matrix = weight.reshape(weight.shape[0], -1)
    transposed = matrix.shape[0] < matrix.shape[1]
    return (matrix.t() if transposed else matrix), transposed


def orthogonalize(weight: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ``Q * sign(diag(R))`` of the QR decomposition of the 2-D view, reshaped back.

    The result has orthonormal columns of the (possibly transposed) ``K x CHW`` view.
    Computed in the input's precision (half types in float32) and returned in the input's dtype:
    a GHN's tiled channels make the view rank-deficient, and then Q's columns for the dependent
    channels are set by round-off, so matching the reference (float32) needs the same precision.
    """
    work = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    matrix, transposed = as_matrix(weight.detach().to(work))
    q, r = torch.linalg.qr(matrix)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0  # an exactly rank-deficient view keeps Q's column rather than zeroing it
    q = q * signs.unsqueeze(0)
    if transposed:
        q = q.t()
    return q.reshape(weight.shape).to(weight.dtype).contiguous()


def init_model_(model: nn.Module, *, method: Literal["default", "orth"], generator: torch.Generator) -> list[str]:
    """Apply a baseline init in place and return the names of the tensors it changed.

    ``default`` keeps the model's own (seeded) initialization. ``orth`` replaces every conv/linear
    weight except the classifier's (every head, ``models.classifier_tensor_names``) by the Eq. 2
    transform of N(0, 1) values.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"unknown init method {method!r}; choose from {', '.join(INIT_METHODS)}")
    if method == "default":
        return []
    params = dict(model.named_parameters())
    layers = weight_layer_names([(n, tuple(p.shape)) for n, p in params.items()])
    heads = set(classifier_tensor_names(model))
    changed = [n for n in layers if n not in heads]  # the classifier keeps its default init
    with torch.no_grad():
        for name in changed:
            param = params[name]
            gaussian = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            param.copy_(orthogonalize(gaussian))
    _logger.debug("orthogonal init of %d layers", len(changed))
    return changed
