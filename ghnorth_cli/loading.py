"""Rebuilding the exact model a ghnorth checkpoint describes, for use outside ghnorth.

A checkpoint's ``ghnorth.model`` metadata names the model (timm or torchvision), its class count,
input size and whether its stem was adapted to small inputs; its tensors say whether it carries
auxiliary heads (GoogLeNet, Inception-v3). :func:`create_model` builds that model and
:func:`load_model` also loads the weights, strictly. Both read a checkpoint file or a folder
written by ``ghnorth export`` (``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ghnorth_cli.checkpoint import Checkpoint, load_tensors_into, read_checkpoint
from ghnorth_cli.errors import CheckpointError
from ghnorth_cli.models import create_model as build_model
from ghnorth_cli.models import model_args_for

def _read(path: str | Path, arch: str | None) -> Checkpoint:
    if not isinstance(path, (str, Path)):
        raise CheckpointError(f"expected a checkpoint path (str or pathlib.Path), got {type(path).__name__} {path!r}")
    ckpt = read_checkpoint(path, arch=arch)  # a file, "-" or a model folder's model.safetensors
    if ckpt.spec is None:  # read_checkpoint requires one; kept for type checkers
        raise CheckpointError(f"{path}: has no ghnorth metadata; pass arch= to say which model it holds")
    return ckpt


def _model_for(ckpt: Checkpoint) -> nn.Module:
    return build_model(ckpt.spec, seed=0, model_args=model_args_for(ckpt.spec, ckpt.tensors))


def create_model(path: str | Path, *, arch: str | None = None) -> nn.Module:
    """The model ``path`` describes, with its own (seed 0) initialization and no weights loaded.

    ``path``: a ghnorth checkpoint (``.safetensors``; ``"-"`` is stdin) or a folder written by
    ``ghnorth export``. The model is the timm or torchvision classifier of the file's
    ``ghnorth.model`` metadata: same class count and input size, with the small-input stem when
    the checkpoint was made with one, and auxiliary heads (``aux_logits=True``) when the file holds
    them. ``arch`` names the model of a plain safetensors file without ghnorth metadata.

    Raises :class:`~ghnorth_cli.errors.CheckpointError` for a missing, unreadable or foreign file.
    """
    return _model_for(_read(path, arch))


def load_model(path: str | Path, *, arch: str | None = None) -> nn.Module:
    """:func:`create_model` with the checkpoint's tensors loaded strictly (every tensor, exact shapes).

    Returns the model on the CPU in training mode (as timm and torchvision build it), with the
    file's dtype converted to the model's. Raises :class:`~ghnorth_cli.errors.CheckpointError`
    naming the first tensor that is missing, unexpected or of another shape.
    """
    ckpt = _read(path, arch)
    model = _model_for(ckpt)
    load_tensors_into(model, ckpt.tensors, strict=True)
    return model
