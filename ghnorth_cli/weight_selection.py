"""Weight selection: initialize a model with a uniformly selected subset of a larger model's weights.

Xu et al., "Initializing Models with Larger Ones", ICLR 2024 (arXiv:2311.18823; reference code
OscarXZQ/weight-selection, ``weight_selection.py``). The method, per tensor of the smaller model
(the *student*):

- **layer selection**: the student's tensor takes the teacher's tensor of the same name. For the
  timm / torchvision families that is the paper's *first-N* layer selection: a student with fewer
  blocks (``blocks.0..5`` of 12, or ``layers.2.blocks.0..5`` of a stage of 9) takes the teacher's
  first ones, stage by stage.
- **element selection**: along every dimension, evenly spaced indices ``floor(i * T / S)`` for
  ``i < S`` (student size ``S``, teacher size ``T``); ``i * (T // S)`` when ``S`` divides ``T``, as in
  the reference. Where ``S`` does not divide ``T`` the reference rounds ``linspace(0, T, S)``, which
  can index ``T`` itself; ``floor(i * T / S)`` stays inside. The same indices are used for every
  tensor with the same sizes, so a channel kept in one layer's output is the channel kept in the
  next layer's input (the paper's consistency).
- every tensor is selected this way: convolution and linear weights, biases, normalization weights
  and running statistics, embeddings. A 1x1 convolution and a linear layer of the same name (timm's
  smallest ConvNeXts use the first for their MLPs) count as the same tensor.
- the classifier keeps the student's own initialization (the reference skips ``head``); it is
  found by the project's one classifier function.

Tensors the teacher lacks, or that have a different number of dimensions or a larger size in
some dimension than the teacher's, keep the student's own (seeded) initialization and are listed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.config import WEIGHT_SELECTION as METHOD  # noqa: F401  (the name in --method / --init)

log = logging.getLogger(__name__)


def uniform_indices(teacher_size: int, student_size: int) -> torch.Tensor:
    """``student_size`` evenly spaced indices into ``range(teacher_size)``: ``floor(i * T / S)``.

    Raises ValueError when the student is larger than the teacher.
    """
    if student_size > teacher_size:
        raise ValueError(f"cannot select {student_size} of {teacher_size} elements")
    return torch.arange(student_size) * teacher_size // student_size


def select_uniform(teacher: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """The teacher's elements at :func:`uniform_indices` along every dimension; the result has ``shape``.

    Raises ValueError when ``shape`` has another number of dimensions or is larger somewhere.
    """
    if teacher.dim() != len(shape):
        raise ValueError(f"{teacher.dim()}-D teacher tensor for a {len(shape)}-D student tensor")
    selected = teacher
    for dim, (size, wanted) in enumerate(zip(teacher.shape, shape)):
        if wanted != size:
            selected = selected.index_select(dim, uniform_indices(size, wanted))
    return selected


def _same_rank(teacher: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``teacher`` viewed with ``len(shape)`` dimensions when they differ only by trailing 1s.

    A 1x1 convolution ``(out, in, 1, 1)`` and a linear layer ``(out, in)`` hold the same weights
    (timm's ConvNeXt-A/F/P/N use the first for their MLPs, the larger ones the second).
    """
    rank = len(shape)
    if teacher.dim() > rank and all(size == 1 for size in teacher.shape[rank:]):
        return teacher.reshape(teacher.shape[:rank])
    if teacher.dim() < rank and all(size == 1 for size in shape[teacher.dim():]):
        return teacher.reshape(*teacher.shape, *([1] * (rank - teacher.dim())))
    return teacher


def _mismatch(teacher: torch.Tensor | None, shape: tuple[int, ...]) -> str | None:
    """Why a student tensor of ``shape`` cannot be selected from ``teacher``, or None if it can."""
    if teacher is None:
        return "not in the teacher"
    if teacher.dim() != len(shape):
        return f"teacher's is {teacher.dim()}-D"
    if any(s > t for s, t in zip(shape, teacher.shape)):
        return f"teacher's {tuple(teacher.shape)} is smaller"
    return None


@dataclass
class SelectionResult:
    """What :func:`weight_selection_` did to a model (tensor names as in its ``state_dict``)."""

    selected: list[str] = field(default_factory=list)
    unmatched: dict[str, str] = field(default_factory=dict)  # name -> why it kept the model's init
    classifier: list[str] = field(default_factory=list)  # kept at the model's init by design

    def to_dict(self) -> dict[str, Any]:
        return {"selected": len(self.selected), "unmatched": dict(self.unmatched), "classifier": list(self.classifier)}


def _classifier_names(model: nn.Module) -> list[str]:
    from ghnorth_cli.models import classifier_tensor_names

    return classifier_tensor_names({k: tuple(v.shape) for k, v in model.state_dict().items()})


@torch.no_grad()
def weight_selection_(model: nn.Module, teacher: Mapping[str, torch.Tensor]) -> SelectionResult:
    """Overwrite ``model``'s state (in place) with tensors uniformly selected from ``teacher``.

    ``teacher`` is the larger model's ``state_dict`` (name -> tensor). The classifier and the
    tensors that cannot be matched keep their current values; the result lists them.
    """
    result = SelectionResult(classifier=_classifier_names(model))
    skip = set(result.classifier)
    for name, value in model.state_dict().items():
        if name in skip:
            continue
        source = teacher.get(name)
        if source is not None:
            source = _same_rank(source, tuple(value.shape))
        reason = _mismatch(source, tuple(value.shape))
        if reason is not None:
            result.unmatched[name] = reason
            continue
        value.copy_(select_uniform(source, value.shape))
        result.selected.append(name)
    return result


# --- teachers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Teacher:
    """A larger model's weights: from a safetensors file or a pretrained timm / torchvision model."""

    name: str  # the file as given, or ``source:name``
    tensors: Mapping[str, torch.Tensor]
    sha256: str | None = None  # the file's, None for pretrained weights


def _is_file_name(text: str) -> bool:
    return Path(text).exists() or "/" in text or text.endswith((".safetensors", ".pt", ".pth"))


def load_teacher(teacher: str, *, img_size: int, small_input: bool | None) -> Teacher:
    """The teacher ``teacher`` names: a checkpoint file (ghnorth's or plain safetensors) or a model name.

    A model name (``resnet50``, ``timm:vit_small_patch16_224``, ``torchvision:resnet50``) means its
    pretrained weights, as ``finetune --init pretrained`` gets them (adapted to small inputs when
    ``small_input``). Raises :class:`GhnorthError` (one line) when they cannot be had, e.g. offline.
    """
    if _is_file_name(teacher):
        from ghnorth_cli.checkpoint import read_checkpoint

        ckpt = read_checkpoint(teacher, require_spec=False)
        return Teacher(teacher, ckpt.tensors, ckpt.sha256)
    from ghnorth_cli.models import resolve_spec

    return _pretrained_teacher(resolve_spec(teacher, img_size=img_size, small_input=small_input))


@functools.lru_cache(maxsize=2)  # an experiment's runs share one teacher
def _pretrained_teacher(spec: Any) -> Teacher:
    from ghnorth_cli.finetune.model import _pretrained_tensors

    return Teacher(spec.arch, _pretrained_tensors(spec))


def select_from_teacher_(model: nn.Module, teacher: str, *, img_size: int,
                         small_input: bool | None) -> tuple[Teacher, SelectionResult]:
    """Load ``teacher`` (see :func:`load_teacher`) and apply :func:`weight_selection_`; log what was kept."""
    source = load_teacher(teacher, img_size=img_size, small_input=small_input)
    result = weight_selection_(model, source.tensors)
    if not result.selected:
        raise GhnorthError(f"weight selection: no tensor of the model matches the teacher {source.name} "
                           "(a model of the same family with the same tensor names is needed)")
    log.info("weight selection from %s: %d of %d tensors selected; classifier %s kept at its init",
             source.name, len(result.selected), len(model.state_dict()), ", ".join(result.classifier) or "(none)")
    if result.unmatched:
        log.info("kept at the model's own init (not matched): %s",
                 ", ".join(f"{name} ({why})" for name, why in result.unmatched.items()))
    return source, result
