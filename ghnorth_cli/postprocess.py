"""GHN-orth post-processing (Section 3 of the paper): noise on the weights, then orthogonal re-initialization.

The "layers" are the tensors named ``*.weight`` with 2 or more dimensions, in module order, counted from 1
(``analysis.layer_names``). The classifier (every head, ``models.classifier_tensor_names``; for a file
that does not say which model it holds, the last layer) is never touched.

For each layer, in this order:

1. Noise (``beta > 0``): ``W += N(0, s^2)`` with ``s = beta * std(r)``, where ``r`` are all the values
   (diagonal included, unbiased std) of the Pearson correlation between the rows of the layer's 2-D view
   ``K x CHW``, transposed when K < CHW - what the reference implementation computes.
2. Orthogonal re-initialization from layer ``orth_from`` on: ``W <- orthogonalize(W)`` (Eq. 2).

Which layers get noise: the paper's text adds it to all layers (``noise_layers="all"``, the default);
the reference code adds it only to the layers it also orthogonalizes (``noise_layers="from-orth"``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

from ghnorth_cli.analysis import layer_names, row_correlation_std
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.inits import as_matrix, orthogonalize
from ghnorth_cli.models import classifier_tensor_names

logger = logging.getLogger(__name__)

NoiseLayers = Literal["all", "from-orth"]
NOISE_LAYERS: tuple[str, ...] = ("all", "from-orth")


class PostprocessError(GhnorthError):
    """Post-processing options that do not fit the checkpoint (negative beta, layer index out of range...)."""


@dataclass(frozen=True)
class PostprocessPreset:
    """Published GHN-orth settings for one architecture."""

    name: str
    arch: str
    beta: float
    orth_from: int
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, PostprocessPreset] = {
    preset.name: preset
    for preset in (
        PostprocessPreset(
            name="resnet50-paper",
            arch="resnet50",
            beta=3e-5,
            orth_from=37,
            source="Knyazev 2022, Section 3 (ResNet-50)",
        ),
        PostprocessPreset(
            name="convnext_base-paper",
            arch="convnext_base",
            beta=3e-5,
            orth_from=94,
            source="Knyazev 2022, Section 3 (ConvNeXt-Base); the report says 100, corrected by its author to 94",
        ),
    )
}


@dataclass(frozen=True)
class LayerChange:
    """What post-processing did to one layer."""

    index: int
    """1-based position among the 2+-D weights, in module order."""
    name: str
    shape: tuple[int, ...]
    action: str
    """"noise", "orth", "noise+orth", "unchanged", "classifier" (never touched) or "tied" (an alias of
    an earlier layer: the same tensor, given that layer's result)."""
    corr_std: float | None
    """std of the correlation values that scaled the noise (None without noise)."""
    noise_std: float | None
    """Standard deviation of the added noise (None without noise)."""
    orthogonalized: bool
    noise_rounded_away: float | None
    """Share of the layer's values whose noise is below the output dtype's resolution (None without noise)."""
    max_abs_change: float
    rel_change: float
    """||W_new - W|| / ||W|| (Frobenius)."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def correlation_std(weight: Tensor) -> float:
    """Unbiased std of all the correlation values of the reference's 2-D view (transposed when K < CHW).

    Constant rows (undefined correlation) are left out; with fewer than two defined values the result is 0.
    """
    mat, _ = as_matrix(weight)
    return row_correlation_std(mat)


def validate_options(*, beta: float, orth_from: int | None, noise_layers: str, num_layers: int,
                     last_changeable: int | None = None) -> None:
    """Raise ``PostprocessError`` with one clear line when the options cannot apply to ``num_layers`` layers.

    ``last_changeable``: the 1-based index of the last layer that is not the classifier
    (default ``num_layers - 1``: one head, the last layer).
    """
    if not math.isfinite(beta) or beta < 0:
        raise PostprocessError(f"beta must be a finite number >= 0, got {beta}")
    if noise_layers not in NOISE_LAYERS:
        raise PostprocessError(f"noise layers must be one of {', '.join(NOISE_LAYERS)}, got {noise_layers!r}")
    if noise_layers == "from-orth" and beta > 0 and orth_from is None:
        raise PostprocessError("noise on the layers 'from-orth' needs an orth-from layer")
    if orth_from is None:
        return
    if orth_from < 1:
        raise PostprocessError(f"orth-from is a 1-based layer index, got {orth_from}")
    last = num_layers - 1 if last_changeable is None else last_changeable
    if orth_from > last:
        heads = num_layers - last
        raise PostprocessError(
            f"orth-from {orth_from} is beyond the layers that can change: the checkpoint has {num_layers} "
            f"layers with a 2+-D weight and the last {'one' if heads == 1 else heads} ({last + 1}"
            f"{'' if heads == 1 else f'-{num_layers}'}) {'is the classifier' if heads == 1 else 'are classifier heads'}"
            ", never touched"
        )


def _change_layer(
    weight: Tensor, *, noise: bool, orth: bool, beta: float, generator: torch.Generator, dtype: torch.dtype
) -> tuple[Tensor, float | None, float | None, float | None]:
    """New weight in ``dtype``; the correlation std, noise std and share of values the noise left unchanged.

    The work is done in float32 (float64 stays float64) whatever the stored dtype. The last value is
    the fraction of the layer's values for which ``W + noise`` rounds to ``W`` in ``dtype``: the noise
    is below the dtype's resolution there (None without noise).
    """
    work = torch.float64 if weight.dtype == torch.float64 else torch.float32
    new = weight.detach().to(work, copy=True)
    corr_std = noise_std = rounded_away = None
    if noise:
        corr_std = correlation_std(new)
        noise_std = beta * corr_std
        clean = new.to(dtype, copy=True)
        new += noise_std * torch.randn(new.shape, generator=generator, dtype=torch.float32, device=new.device)
        rounded_away = torch.eq(new.to(dtype), clean).float().mean().item() if new.numel() else 0.0
    if orth:
        new = orthogonalize(new)
    return new.to(dtype).contiguous(), corr_std, noise_std, rounded_away


def _cast(tensor: Tensor, dtype: torch.dtype | None) -> Tensor:
    """Floating tensors in ``dtype`` (None: unchanged); integer buffers stay as they are."""
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype:
        return tensor
    return tensor.to(dtype)


def noise_rounded_away(changes: Sequence[LayerChange]) -> float | None:
    """Share of all the noised values (over every noised layer) whose noise rounded away; None without noise."""
    noised = [(c.noise_rounded_away, math.prod(c.shape)) for c in changes if c.noise_rounded_away is not None]
    total = sum(n for _, n in noised)
    return sum(share * n for share, n in noised) / total if total else None


def _describe(index: int, name: str, old: Tensor, new: Tensor, **fields) -> LayerChange:
    if new is old or (new.dtype == old.dtype and torch.equal(new, old)):
        return LayerChange(index=index, name=name, shape=tuple(old.shape), max_abs_change=0.0, rel_change=0.0,
                           **fields)
    diff = new.double() - old.double()
    norm = torch.linalg.vector_norm(old.double()).item()
    return LayerChange(
        index=index,
        name=name,
        shape=tuple(old.shape),
        max_abs_change=diff.abs().max().item() if diff.numel() else 0.0,
        rel_change=torch.linalg.vector_norm(diff, dtype=torch.float64).item() / norm if norm > 0 else 0.0,
        **fields,
    )


def postprocess(
    tensors: Mapping[str, Tensor],
    order: Sequence[str],
    *,
    beta: float = 0.0,
    orth_from: int | None = None,
    noise_layers: NoiseLayers = "all",
    generator: torch.Generator,
    classifier: Collection[str] | None = None,
    dtype: torch.dtype | None = None,
    tied: Mapping[str, str] | None = None,
) -> tuple[dict[str, Tensor], list[LayerChange]]:
    """GHN-orth: noise (``beta``) and orthogonal re-init (layers ``orth_from``.. but the classifier).

    Returns new tensors (every input tensor, in ``order``; the input is not modified) and one
    ``LayerChange`` per layer. Noise is drawn from ``generator`` layer by layer, in module order.
    ``classifier``: the classifier's tensor names (``models.classifier_tensor_names`` of the
    checkpoint's model); None: the last layer, for a file that does not say which model it holds.
    Computed in float32 (float64 inputs in float64); the floating tensors are returned in ``dtype``
    (None: each keeps its own). In float16 or bfloat16 the paper's noise (std ~1e-6) is mostly
    below the resolution and rounds away: ``LayerChange.noise_rounded_away`` says how much.
    ``tied`` (``{alias: first name}``, ``models.tied_tensor_names``): names of one shared tensor; an
    alias takes its first name's result (action ``"tied"``), so the model gets one consistent tensor.
    """
    layers = layer_names(tensors, order)
    heads = set(classifier_tensor_names({n: tuple(tensors[n].shape) for n in order})
                if classifier is None else classifier)
    changeable = [i for i, name in enumerate(layers, start=1) if name not in heads]
    validate_options(beta=beta, orth_from=orth_from, noise_layers=noise_layers, num_layers=len(layers),
                     last_changeable=max(changeable, default=0))
    if dtype is not None and not dtype.is_floating_point:
        raise PostprocessError(f"the output dtype must be a floating type, got {dtype}")
    out = {name: _cast(tensors[name], dtype) for name in order}
    changes = []
    for index, name in enumerate(layers, start=1):
        old = tensors[name]
        if tied and name in tied and tied[name] in out:
            out[name] = out[tied[name]]
            changes.append(_describe(index, name, old, out[name], action="tied", corr_std=None, noise_std=None,
                                     orthogonalized=False, noise_rounded_away=None))
            continue
        if name in heads:
            changes.append(_describe(index, name, old, out[name], action="classifier", corr_std=None,
                                     noise_std=None, orthogonalized=False, noise_rounded_away=None))
            continue
        orth = orth_from is not None and index >= orth_from
        noise = beta > 0 and (noise_layers == "all" or orth)
        if not (noise or orth):
            changes.append(_describe(index, name, old, out[name], action="unchanged", corr_std=None,
                                     noise_std=None, orthogonalized=False, noise_rounded_away=None))
            continue
        new, corr_std, noise_std, rounded_away = _change_layer(old, noise=noise, orth=orth, beta=beta,
                                                               generator=generator, dtype=out[name].dtype)
        out[name] = new
        action = "+".join(a for a, on in (("noise", noise), ("orth", orth)) if on)
        changes.append(_describe(index, name, old, new, action=action, corr_std=corr_std,
                                 noise_std=noise_std, orthogonalized=orth, noise_rounded_away=rounded_away))
        logger.debug("layer %d %s: %s", index, name, action)
    return {name: out[name] for name in order}, changes
