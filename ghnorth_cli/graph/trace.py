"""Step 1 of graph capture: run one forward pass and keep its autograd graph.

The model is called through :func:`torch.func.functional_call` with stand-in tensors for
every parameter and buffer, so the model itself is never touched: not its weights, not its
BatchNorm statistics, not its train/eval mode (the pass runs in whatever mode the model is
in, as the reference does). The stand-ins live on the ``meta`` device when the model allows
it (no arithmetic is done, so capture costs the same at any image size); a model whose
forward needs real numbers is run again on CPU with detached aliases of its tensors.

A module reached by several paths (shared between blocks) and a tensor tied between modules
get one stand-in, swapped in once per owning module, and :func:`_restored` puts back every
parameter, buffer and tensor attribute of every module afterwards (spectral norm and caches
write attributes during the forward pass), whatever the forward pass did or raised.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from ghnorth_cli.graph.errors import GraphCaptureError
from ghnorth_cli.graph.fast_meta import FastMetaMode

log = logging.getLogger(__name__)


@dataclass
class ParamInfo:
    """A parameter as graph capture sees it."""

    name: str  # as in ``model.named_parameters()``
    local_name: str  # the attribute name inside its owning module
    module: nn.Module
    shape: tuple[int, ...]


@dataclass
class Trace:
    """The autograd graph of one forward pass.

    ``root`` is the ``grad_fn`` of the model's (first) output, ``params`` maps the id of every
    stand-in parameter to its :class:`ParamInfo` and ``input_fn`` is the ``AccumulateGrad``
    node of the dummy input (``None`` if the output does not depend on the input).
    """

    root: Any
    params: dict[int, ParamInfo]
    input_fn: Any
    output: torch.Tensor  # keeps the autograd graph alive
    stand_ins: dict[str, torch.Tensor]  # keeps the ids in ``params`` valid
    device: str
    global_pools: set = field(default_factory=set)  # autograd nodes of global average pools


def named_param_owners(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``{param name: (local name, owning module)}`` for every entry of ``named_parameters()``."""
    owners: dict[str, tuple[str, nn.Module]] = {}
    for mod_name, module in model.named_modules():
        for local, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{local}" if mod_name else local
            owners.setdefault(full, (local, module))
    return owners


def first_tensor(output: Any) -> torch.Tensor | None:
    """The logits in a model's output: the tensor itself or the first tensor of a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        items = list(output)
    elif isinstance(output, dict):
        items = [output["logits"]] if "logits" in output else list(output.values())
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def _stand_ins(model: nn.Module, device: str) -> tuple[dict[str, torch.Tensor], dict[int, ParamInfo]]:
    """Stand-ins keyed by one path per (module, attribute), the same stand-in for a tied tensor.

    ``functional_call`` swaps each key in and out once; two keys for one attribute of a shared
    module would restore the stand-in over the original (torch's tie-weights handling does that).
    """
    owners = named_param_owners(model)
    made: dict[int, torch.Tensor] = {}  # id(original) -> its stand-in
    infos: dict[int, ParamInfo] = {}
    for name, p in model.named_parameters():  # one canonical name per tensor
        t = torch.empty_like(p, device="meta") if device == "meta" else p.detach()
        t.requires_grad_(True)
        made[id(p)] = t
        local, module = owners[name]
        infos[id(t)] = ParamInfo(name=name, local_name=local, module=module, shape=tuple(p.shape))
    for _, b in model.named_buffers():
        made[id(b)] = torch.empty_like(b, device="meta") if device == "meta" else b.clone()
    tensors: dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():  # each module once, whatever its aliases
        prefix = f"{mod_name}." if mod_name else ""
        for local, value in [*module._parameters.items(), *module._buffers.items()]:
            if value is not None and id(value) in made:
                tensors[prefix + local] = made[id(value)]
    return tensors, infos


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Put back every module's parameters, buffers and tensor attributes on exit, as they were."""
    saved = []
    for module in model.modules():
        attrs = {k: v for k, v in vars(module).items() if isinstance(v, torch.Tensor)}
        saved.append((module, dict(module._parameters), dict(module._buffers), attrs))
    try:
        yield
    finally:
        for module, params, buffers, attrs in saved:
            for store, before in ((module._parameters, params), (module._buffers, buffers)):
                if store.keys() != before.keys() or any(store[k] is not v for k, v in before.items()):
                    store.clear()
                    store.update(before)
            for key in [k for k, v in vars(module).items() if isinstance(v, torch.Tensor) and k not in attrs]:
                delattr(module, key)
            for key, value in attrs.items():
                if vars(module).get(key) is not value:
                    object.__setattr__(module, key, value)


# Modules that pool globally with ``Tensor.mean`` (a bare mean is kept only with keepdim=True).
_GLOBAL_POOL_MODULES = ("FastAdaptiveAvgPool",)


@contextlib.contextmanager
def _pool_hooks(model: nn.Module, pools: set) -> Iterator[None]:
    """Record the autograd nodes of the outputs of global-pooling modules while active."""

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            pools.add(output.grad_fn)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ in _GLOBAL_POOL_MODULES
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _shape_mode(device: str) -> contextlib.AbstractContextManager:
    return FastMetaMode() if device == "meta" else contextlib.nullcontext()


def _dummy_input(*, batch_size: int, img_size: int, device: str) -> torch.Tensor:
    x = torch.zeros(batch_size, 3, img_size, img_size, device=device)
    if device != "meta":
        gen = torch.Generator().manual_seed(0)
        x.copy_(((torch.rand(x.shape, generator=gen) - 0.5) / 2).to(device))
    return x.requires_grad_(True)


def _forward(model: nn.Module, *, device: str, img_size: int, batch_size: int) -> Trace:
    pools: set = set()
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        tensors, infos = _stand_ins(model, device)
        x = _dummy_input(batch_size=batch_size, img_size=img_size, device=device)
        with _restored(model), _pool_hooks(model, pools), _shape_mode(device):
            out = torch.func.functional_call(model, tensors, (x,), strict=False, tie_weights=False)
        input_fn = _accumulate_grad_of(x)
    logits = first_tensor(out)
    if logits is None or logits.grad_fn is None:
        raise GraphCaptureError(f"{type(model).__name__}: forward pass returned no tensor that depends on the parameters")
    return Trace(
        root=logits.grad_fn,
        params=infos,
        input_fn=input_fn,
        output=logits,
        stand_ins=tensors,
        device=device,
        global_pools=pools,
    )


def _accumulate_grad_of(x: torch.Tensor) -> Any:
    # A leaf's AccumulateGrad node is created lazily and shared: reach it through a view.
    return x.view_as(x).grad_fn.next_functions[0][0]


def trace_model(model: nn.Module, *, img_size: int = 224, batch_size: int = 2) -> Trace:
    """Run ``model`` once on a dummy ``batch_size x 3 x img_size x img_size`` input and keep the graph.

    Raises :class:`GraphCaptureError` if the forward pass fails on both meta and CPU.
    """
    try:
        return _forward(model, device="meta", img_size=img_size, batch_size=batch_size)
    except GraphCaptureError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on meta means "try real numbers"
        meta_error = exc
    device = _home_device(model)
    log.debug("forward on meta failed (%s: %s); retrying on %s", type(meta_error).__name__, meta_error, device)
    if device == "meta":
        raise GraphCaptureError(
            f"{type(model).__name__}: forward pass on the meta device failed: {type(meta_error).__name__}: "
            f"{_first_line(meta_error)}"
        ) from meta_error
    try:
        return _forward(model, device=device, img_size=img_size, batch_size=batch_size)
    except GraphCaptureError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user model may raise anything
        raise GraphCaptureError(
            f"{type(model).__name__}: forward pass on a 3x{img_size}x{img_size} input failed: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _home_device(model: nn.Module) -> str:
    """The device the model's tensors live on (CPU for a model without any)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return str(tensor.device)
    return "cpu"
