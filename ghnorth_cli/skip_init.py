"""Build a model without computing the initial values of parameters that are about to be overwritten.

``ghnorth predict`` overwrites almost every parameter with the GHN's prediction, yet building the
model runs its full random initialization first (for ConvNeXt-Base, 88M values drawn twice:
``nn.Linear``'s own init, then timm's ``trunc_normal_``), a second or more of a few-second
command. :func:`create_model_skipping` builds the model so that

* the parameters named by the caller (the ones it will overwrite) get no initial values: their
  in-place init ops are not run, and their memory is left as allocated;
* every other parameter and buffer gets exactly the values a plain
  :func:`~ghnorth_cli.models.create_model` gives: the random draws a skipped init would have made
  are still made, in the same order, as long as a later draw depends on the generator's state
  (only draws after the last one that lands in a kept tensor are left out).

It works in two passes. A build on the ``meta`` device (no memory, no values) records the
order in which parameters are registered and every random in-place op with the parameter it
writes; the caller's ``overwritten(meta_model)`` names the parameters to skip (``predict`` captures
the graph of this meta model and plans the prediction). The real build then runs under a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that recognizes those parameters by their
registration order. Any disagreement between the passes (another registration order, another
sequence of random ops) falls back to the full build, so the result is never silently different.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ghnorth_cli.errors import ModelResolutionError
from ghnorth_cli.models import ModelSpec, create_model

log = logging.getLogger(__name__)


class _PassMismatch(Exception):
    """The real build did not follow the meta build (registration or random-op order)."""


_SCHEMA: dict[Any, tuple[bool, tuple[tuple[int, str], ...]]] = {}


def _schema(func: Any) -> tuple[bool, tuple[tuple[int, str], ...]]:
    """(draws random numbers, (position, name) of each argument the op writes into)."""
    if func not in _SCHEMA:
        arguments = func._schema.arguments
        _SCHEMA[func] = (any(a.name == "generator" for a in arguments),
                         tuple((i, a.name) for i, a in enumerate(arguments)
                               if a.alias_info is not None and a.alias_info.is_write))
    return _SCHEMA[func]


def _written(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors an op writes into (its ``Tensor(a!)`` arguments and ``out=``)."""
    out = []
    for i, name in _schema(func)[1]:
        value = args[i] if i < len(args) else kwargs.get(name)
        if isinstance(value, torch.Tensor):
            out.append(value)
    return out


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class _Recorder(TorchDispatchMode):
    """Meta pass: each random op, with the registration index of the parameter it writes (or None)."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: list[nn.Parameter] = []
        self.index: dict[int, int] = {}  # storage -> registration index
        self.random_ops: list[tuple[Any, int | None]] = []
        self.sizes: list[int] = []  # values each random op draws into its outputs

    def register(self, module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            self.index[_storage_key(param)] = len(self.registered)
            self.registered.append(param)  # alive until the end: storage keys are never reused

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _schema(func)[0]:
            targets = [self.index.get(_storage_key(t)) for t in _written(func, args, kwargs)]
            self.random_ops.append((func, targets[0] if len(targets) == 1 else None))
            self.sizes.append(sum(t.numel() for t in _written(func, args, kwargs)))
        return func(*args, **kwargs)


class _Skipper(TorchDispatchMode):
    """Real pass: skip the init ops of chosen parameters, keeping the random stream exact."""

    def __init__(self, random_ops: list[tuple[Any, int | None]], last_needed: int) -> None:
        super().__init__()
        self.random_ops, self.last_needed = random_ops, last_needed
        self.skip_storages: set[int] = set()
        self.n_random = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        written = _written(func, args, kwargs)
        skipped = bool(written) and all(_storage_key(t) in self.skip_storages for t in written)
        if _schema(func)[0]:
            i = self.n_random
            self.n_random += 1
            if i >= len(self.random_ops) or self.random_ops[i][0] is not func:
                raise _PassMismatch(f"random op {i}: {func} (meta pass: "
                                    f"{self.random_ops[i][0] if i < len(self.random_ops) else 'none'})")
            if skipped and i > self.last_needed:
                return written[0]
        elif skipped:
            return written[0]
        return func(*args, **kwargs)


def create_model_skipping(spec: ModelSpec, *, seed: int = 0,
                          overwritten: Callable[[nn.Module], Collection[str]]) -> tuple[nn.Module, set[str]]:
    """Build ``spec``'s model like :func:`~ghnorth_cli.models.create_model`, leaving uninitialized the
    parameters that ``overwritten(meta_model)`` names (the caller must overwrite all of them).

    ``overwritten`` receives the model built on the ``meta`` device (same names and shapes, no
    values). Returns ``(model, skipped)``: ``skipped`` is the set of parameter names left without
    values (empty when the fallback full build was used). Every other parameter and buffer equals,
    bit for bit, what ``create_model(spec, seed=seed)`` gives. Raises what ``create_model`` raises.
    """
    recorder = _Recorder()
    handle = nn.modules.module.register_module_parameter_registration_hook(recorder.register)
    try:
        with torch.device("meta"), recorder:
            meta = create_model(spec, seed=seed)
    finally:
        handle.remove()
    registered = recorder.registered
    names = {id(p): n for n, p in meta.named_parameters()}
    wanted = set(overwritten(meta))
    skip_index = {i for i, p in enumerate(registered) if names.get(id(p)) in wanted}
    if not skip_index:
        return create_model(spec, seed=seed), set()
    kept_random = [i for i, (_, target) in enumerate(recorder.random_ops) if target not in skip_index]
    last_needed = max(kept_random, default=-1)
    if sum(recorder.sizes[: last_needed + 1]) > 0.5 * sum(recorder.sizes):
        # Most random values must be drawn anyway (e.g. a kept classifier initialized last):
        # skipping the rest of the init would not pay for the extra pass.
        return create_model(spec, seed=seed), set()
    shapes = [tuple(p.shape) for p in registered]
    skipper = _Skipper(recorder.random_ops, last_needed)
    alive: list[nn.Parameter] = []  # skipped storages stay alive: their addresses are never reused
    count = 0

    def mark(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        nonlocal count
        if param is None:
            return
        if count >= len(shapes) or tuple(param.shape) != shapes[count]:
            raise _PassMismatch(f"parameter {count} ({name}) differs from the meta pass")
        if count in skip_index:
            skipper.skip_storages.add(_storage_key(param))
            alive.append(param)
        count += 1

    handle = nn.modules.module.register_module_parameter_registration_hook(mark)
    try:
        with skipper:
            model = create_model(spec, seed=seed)
        if count != len(shapes) or skipper.n_random != len(recorder.random_ops):
            raise _PassMismatch("the real build registered or drew a different number of values")
    except (_PassMismatch, ModelResolutionError) as exc:
        if not isinstance(exc, _PassMismatch) and not isinstance(exc.__cause__, _PassMismatch):
            raise
        handle.remove()
        log.debug("skipping the init of overwritten parameters failed (%s); building in full", exc)
        return create_model(spec, seed=seed), set()
    finally:
        handle.remove()  # (removing twice is harmless)
    skipped = {n for n, p in model.named_parameters() if _storage_key(p) in skipper.skip_storages}
    return model, skipped
