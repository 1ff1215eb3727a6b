"""Model resolution: ``--arch`` names to timm or torchvision classifiers, and small-input adaptation."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ghnorth_cli.errors import ModelResolutionError

_logger = logging.getLogger(__name__)

SOURCES = ("timm", "torchvision")
SMALL_INPUT_MAX = 32  # the reference adapts a model when its input is 32x32 or smaller
# torchvision models built without their auxiliary classifiers (``aux_logits=False``).
AUX_LOGITS_MODELS = frozenset({("torchvision", "googlenet"), ("torchvision", "inception_v3")})


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: where it comes from and what input it expects.

    ``small_input`` says whether the stem *was* adapted to small images (False for a model that
    no rule adapts, such as Swin, whatever was asked). ``aux_logits`` is the builder's
    ``aux_logits`` argument for models that have one (GoogLeNet and Inception-v3 in torchvision,
    built without their auxiliary heads), None for the others (and then left out of ``to_dict``).
    """

    source: str
    name: str
    num_classes: int
    img_size: int
    small_input: bool
    aux_logits: bool | None = None

    @property
    def arch(self) -> str:
        return f"{self.source}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["aux_logits"] is None:
            del data["aux_logits"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
        """Decode :meth:`to_dict` output, strictly: exact JSON types, sizes within :mod:`ghnorth_cli.limits`.

        ``aux_logits`` is optional (files written before it was recorded): absent, it takes the
        builder's default for the model. Raises :class:`ModelResolutionError` for a missing or
        unknown field, a wrong type (``"false"`` is not a bool, ``3.0`` not an int) or a value out of range.
        """
        from ghnorth_cli.limits import MAX_IMG_SIZE, MAX_NUM_CLASSES

        if not isinstance(data, dict):
            raise ModelResolutionError(f"invalid model spec {data!r}: not an object")
        fields = {"source": str, "name": str, "num_classes": int, "img_size": int, "small_input": bool}
        optional = {"aux_logits": bool}
        unknown, missing = sorted(set(data) - set(fields) - set(optional)), sorted(set(fields) - set(data))
        if unknown or missing:
            raise ModelResolutionError(f"invalid model spec: missing {missing}, unknown {unknown}")
        for key, kind in {**fields, **optional}.items():
            if key in data and type(data[key]) is not kind:
                raise ModelResolutionError(f"invalid model spec: {key} must be a JSON {kind.__name__}, "
                                           f"got {data[key]!r}")
        if data["source"] not in SOURCES or not data["name"]:
            raise ModelResolutionError(f"invalid model spec: unknown model {data['source']}:{data['name']}")
        if not 1 <= data["num_classes"] <= MAX_NUM_CLASSES:
            raise ModelResolutionError(f"invalid model spec: num_classes {data['num_classes']} is not within "
                                       f"1..{MAX_NUM_CLASSES}")
        if not 8 <= data["img_size"] <= MAX_IMG_SIZE:
            raise ModelResolutionError(f"invalid model spec: img_size {data['img_size']} is not within 8..{MAX_IMG_SIZE}")
        aux = data.get("aux_logits")
        return cls(**{k: data[k] for k in fields},
                   aux_logits=aux if aux is not None else _default_aux_logits(data["source"], data["name"]))


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def _is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name)


def list_archs(pattern: str | None = None) -> list[str]:
    """All resolvable names as ``source:name``, optionally filtered by a shell-style pattern."""
    import fnmatch

    names = [f"timm:{n}" for n in _timm_names()] + [f"torchvision:{n}" for n in _torchvision_names()]
    if not pattern:
        return names
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split(":", 1)[1], pattern)]


def _suggest(name: str) -> str:
    candidates = list(dict.fromkeys(_timm_names() + _torchvision_names()))
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; see `ghnorth archs PATTERN`"


def resolve_name(arch: str) -> tuple[str, str]:
    """Map ``timm:x``, ``torchvision:x`` or a bare name (timm first) to ``(source, name)``."""
    arch = arch.strip()
    source, sep, name = arch.partition(":")
    if not sep:
        source, name = "", arch
    if source and source not in SOURCES:
        raise ModelResolutionError(f"unknown model source {source!r} in {arch!r} (use timm: or torchvision:)")
    if not name:
        raise ModelResolutionError("empty architecture name")
    if source in ("", "timm") and _is_timm_model(name):
        return "timm", name
    if source in ("", "torchvision") and name in _torchvision_names():
        return "torchvision", name
    where = f"{source} " if source else ""
    raise ModelResolutionError(f"unknown {where}architecture {name!r}{_suggest(name)}")


def _default_aux_logits(source: str, name: str) -> bool | None:
    """ghnorth builds GoogLeNet and Inception-v3 without auxiliary classifiers; other models have no such switch."""
    return False if (source, name) in AUX_LOGITS_MODELS else None


@functools.lru_cache(maxsize=None)
def small_input_applies(source: str, name: str) -> bool:
    """Whether :func:`adapt_small_input` has a rule for this model (built once on the meta device to see)."""
    try:
        default_classes, default_size = _default_io(source, name)
        with torch.device("meta"):
            model = _build(ModelSpec(source, name, default_classes, default_size, False,
                                     _default_aux_logits(source, name)), {})
    except Exception:  # a model that does not build here fails later, with its own message
        return True
    return any(isinstance(model, classes) for classes, _ in _small_input_rules())


def effective_small_input(source: str, name: str, wanted: bool) -> bool:
    """Whether the model will be adapted to small inputs: ``wanted`` and a rule exists (a warning if not)."""
    if wanted and not small_input_applies(source, name):
        _logger.warning("warning: %s:%s is not adapted for small inputs (no rule for it): it keeps its ImageNet "
                        "stem, recorded as small_input false", source, name)
        return False
    return wanted


def _default_io(source: str, name: str) -> tuple[int, int]:
    """The model's own (num_classes, img_size)."""
    if source == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            return 1000, 224
        return int(cfg.num_classes or 1000), int(cfg.input_size[-1])
    return 1000, 299 if name == "inception_v3" else 224


def resolve_spec(
    arch: str,
    *,
    num_classes: int | None = None,
    img_size: int | None = None,
    small_input: bool | None = None,
) -> ModelSpec:
    """Resolve an ``--arch`` value plus optional overrides to a :class:`ModelSpec`.

    ``small_input`` None means "adapt at 32 px or less"; it is recorded False for a model that no
    rule adapts (a warning says so), so the spec tells what :func:`create_model` will build.
    """
    source, name = resolve_name(arch)
    default_classes, default_size = _default_io(source, name)
    from ghnorth_cli.limits import MAX_IMG_SIZE, MAX_NUM_CLASSES

    if num_classes is not None and not 1 <= num_classes <= MAX_NUM_CLASSES:
        raise ModelResolutionError(f"--num-classes must be within 1..{MAX_NUM_CLASSES}, got {num_classes}")
    if img_size is not None and not 8 <= img_size <= MAX_IMG_SIZE:
        raise ModelResolutionError(f"--img-size must be within 8..{MAX_IMG_SIZE}, got {img_size}")
    size = img_size or default_size
    wanted = size <= SMALL_INPUT_MAX if small_input is None else small_input
    return ModelSpec(
        source=source,
        name=name,
        num_classes=num_classes or default_classes,
        img_size=size,
        small_input=effective_small_input(source, name, wanted),
        aux_logits=_default_aux_logits(source, name),
    )


def _build(spec: ModelSpec, model_args: dict[str, Any]) -> nn.Module:
    if spec.source == "timm":
        import timm

        _, default_size = _default_io(spec.source, spec.name)
        kwargs: dict[str, Any] = {"num_classes": spec.num_classes}
        if spec.img_size != default_size:
            kwargs["img_size"] = spec.img_size  # ViT-like models fix their grid at build time
        kwargs.update(model_args)
        try:
            return timm.create_model(spec.name, pretrained=False, **kwargs)
        except TypeError:
            kwargs.pop("img_size", None)
            return timm.create_model(spec.name, pretrained=False, **kwargs)

    import torchvision

    builder = torchvision.models.get_model_builder(spec.name)
    kwargs = {"weights": None, "num_classes": spec.num_classes}
    if spec.img_size != 224 and spec.name.startswith("vit_"):
        kwargs["image_size"] = spec.img_size
    if (spec.source, spec.name) in AUX_LOGITS_MODELS:
        kwargs["aux_logits"] = bool(spec.aux_logits)
        kwargs["init_weights"] = True
    kwargs.update(model_args)
    return builder(**kwargs)


AUX_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def model_args_for(spec: ModelSpec, tensor_names: Any) -> dict[str, Any]:
    """Builder arguments a checkpoint's tensors imply beyond ``spec``: ``aux_logits=True`` for a
    torchvision GoogLeNet / Inception-v3 whose file holds its auxiliary heads."""
    prefixes = AUX_HEADS.get(spec.name) if spec.source == "torchvision" else None
    if prefixes and any(str(n).startswith(prefixes) for n in tensor_names):
        return {"aux_logits": True}
    return {}


def small_input_adapted(spec: ModelSpec) -> bool:
    """Whether building ``spec`` changes the model's stem (a small-input rule applies to it)."""
    if not spec.small_input:
        return False
    model = skeleton_model(dataclasses.replace(spec, small_input=False))
    return any(isinstance(model, classes) for classes, _ in _small_input_rules())


def create_model(spec: ModelSpec, *, seed: int = 0, model_args: dict[str, Any] | None = None) -> nn.Module:
    """Build the model with its own initialization, seeded, without touching the global RNG state.

    ``model_args`` are extra builder arguments (timm's ``create_model`` keywords, or torchvision's,
    e.g. ``{"aux_logits": True}``; see :func:`model_args_for`).
    """
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build(spec, dict(model_args or {}))
            if spec.small_input:
                adapt_small_input(model)
    except ModelResolutionError:
        raise
    except Exception as exc:  # a model that refuses these settings: report, don't crash
        raise ModelResolutionError(f"cannot build {spec.arch} with {spec.num_classes} classes at "
                                   f"{spec.img_size}px: {exc}") from exc
    return model


def skeleton_model(spec: ModelSpec, *, model_args: dict[str, Any] | None = None) -> nn.Module:
    """The model on the meta device (no weights allocated), for its structure and shapes.

    A model whose constructor computes with tensor values (torchvision's RegNet) is built on
    the CPU instead.
    """
    try:
        with torch.device("meta"):
            return create_model(spec, seed=0, model_args=model_args)
    except ModelResolutionError:
        pass  # the CPU build below raises the error again if the model cannot be built at all
    return create_model(spec, seed=0, model_args=model_args)


def model_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of the model's state_dict, in module order, without allocating its weights."""
    model = skeleton_model(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def weight_layer_names(names_and_shapes: dict[str, tuple[int, ...]] | list[tuple[str, tuple[int, ...]]]) -> list[str]:
    """The paper's "layers": tensors named ``weight`` with 2 or more dimensions, in module order."""
    items = names_and_shapes.items() if isinstance(names_and_shapes, dict) else names_and_shapes
    return [n for n, shape in items if (n == "weight" or n.endswith(".weight")) and len(shape) >= 2]


Shape = tuple[int, ...]


def classifier_modules(model: nn.Module) -> list[str]:
    """Module names of every classifier head of ``model``, in module order.

    The model's own declaration where it has one: timm's ``pretrained_cfg["classifier"]`` (a name,
    or a tuple of names for distilled models such as DeiT, LeViT and EfficientFormer: ``head`` and
    ``head_dist``). Otherwise (torchvision, plain PyTorch) the module of the last 2+-D ``weight``
    in module order, plus the final layer of every auxiliary head (a top-level module named
    ``aux*``, e.g. GoogLeNet's ``aux1``/``aux2`` and Inception-v3's ``AuxLogits`` when built with
    ``aux_logits=True``). A declared head that is an ``nn.Identity`` (``num_classes=0``) is no head.
    """
    modules = dict(model.named_modules())
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    declared = cfg.get("classifier") if isinstance(cfg, dict) else None
    if declared:
        names = (declared,) if isinstance(declared, str) else tuple(declared)
        if all(n in modules for n in names):
            heads = [n for n in names if _own_weight(modules[n]) is not None]
            return [n for n in modules if n in heads]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    heads = {_module_of(n) for n in _last_layers(shapes)}
    return [n for n in modules if n in heads]


def _own_weight(module: nn.Module) -> torch.Tensor | None:
    weight = module._parameters.get("weight")
    return weight if weight is not None and weight.dim() >= 2 else None


def _module_of(tensor_name: str) -> str:
    return tensor_name.rpartition(".")[0]


def _last_layers(shapes: dict[str, Shape]) -> list[str]:
    """The last 2+-D weight overall and the last one of each top-level ``aux*`` module."""
    layers = weight_layer_names(shapes)
    if not layers:
        return []
    aux: dict[str, str] = {}
    for name in layers:
        top = name.split(".", 1)[0]
        if top.lower().startswith("aux") and "." in name:
            aux[top] = name
    return [n for n in layers if n == layers[-1] or n in aux.values()]


def classifier_tensor_names(source: "nn.Module | ModelSpec | dict[str, Shape]") -> list[str]:
    """The one place that decides which tensors are a model's classifier: names, in state_dict order.

    ``source`` is a model (see :func:`classifier_modules`), a :class:`ModelSpec` (the model is built
    on the meta device, no weights allocated) or, for a file that does not say which model it holds,
    ``{tensor name: shape}`` in module order, where the classifier is the last 2+-D ``weight`` and
    its ``bias`` (and the last layer of any ``aux*`` head). Every head's weight and bias are listed;
    predict, init, postprocess, analyze, fine-tuning and experiments all ask this function.
    """
    if isinstance(source, ModelSpec):
        return list(_spec_classifier(source))
    if isinstance(source, nn.Module):
        heads = set(classifier_modules(source))
        return [k for k in source.state_dict() if _module_of(k) in heads]
    heads = {_module_of(n) for n in _last_layers(dict(source))}
    return [k for k in source if _module_of(k) in heads and k.rpartition(".")[2] in ("weight", "bias")]


@functools.lru_cache(maxsize=64)
def _spec_classifier(spec: ModelSpec) -> tuple[str, ...]:
    return tuple(classifier_tensor_names(skeleton_model(spec)))


def tied_tensor_names(source: "nn.Module | ModelSpec") -> dict[str, str]:
    """``{alias: first name}`` for state_dict entries that are the same tensor as an earlier entry.

    A module registered under two names (timm's CoaT shares its position encoders between blocks)
    or a parameter assigned to two modules appears once per name in ``state_dict()`` but is one
    tensor: a step that changes it (``postprocess``) must change every name alike.
    """
    if isinstance(source, ModelSpec):
        return dict(_spec_tied(source))
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, tensor in source.state_dict(keep_vars=True).items():
        tied_to = first.setdefault(id(tensor), name)
        if tied_to != name:
            tied[name] = tied_to
    return tied


@functools.lru_cache(maxsize=64)
def _spec_tied(spec: ModelSpec) -> tuple[tuple[str, str], ...]:
    return tuple(tied_tensor_names(skeleton_model(spec)).items())


# --- small-input adaptation (the reference's adjust_net, extended to timm's families) ---------------


def _crop_first_conv(conv: nn.Conv2d, *, kernel: int = 3, stride: int = 1) -> None:
    """Turn a large-kernel stem conv into a ``kernel x kernel`` stride-1 conv, keeping its central taps."""
    kh, kw = conv.kernel_size
    if kh > kernel or kw > kernel:
        top, left = (kh - kernel) // 2, (kw - kernel) // 2
        weight = conv.weight.data[:, :, top : top + kernel, left : left + kernel].contiguous()
        conv.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
        conv.kernel_size = (kernel, kernel)
    conv.padding = (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
    conv.stride = (stride, stride)


def _first_conv(module: nn.Module) -> nn.Conv2d | None:
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def _stride_one(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)


def _adapt_resnet(model: nn.Module) -> None:
    stem = model.conv1
    if isinstance(stem, nn.Conv2d):
        _crop_first_conv(stem)
    else:  # timm's deep stems: a stack of 3x3 convs, only the first strides
        conv = _first_conv(stem)
        if conv is not None:
            conv.stride = (1, 1)
    model.maxpool = nn.Identity()


def _adapt_densenet(model: nn.Module) -> None:
    features = model.features
    names = [n for n, _ in features.named_children()]
    conv_name = next(n for n in names if isinstance(getattr(features, n), nn.Conv2d))
    _crop_first_conv(getattr(features, conv_name))
    for n in names:
        if isinstance(getattr(features, n), nn.MaxPool2d):
            setattr(features, n, nn.Identity())
            break


def _adapt_inverted_residual_tv(model: nn.Module) -> None:
    for m in model.features[:5]:
        _stride_one(m)


def _adapt_inverted_residual_timm(model: nn.Module) -> None:
    # Same depth of change as torchvision's features[:5]: stem, two stages and the next block.
    _stride_one(model.conv_stem)
    for stage in model.blocks[:2]:
        _stride_one(stage)
    if len(model.blocks) > 2 and len(model.blocks[2]) > 0:
        _stride_one(model.blocks[2][0])


def _adapt_vgg(model: nn.Module) -> None:
    for i, m in enumerate(model.features[:10]):
        if isinstance(m, nn.MaxPool2d):
            model.features[i] = nn.Identity()


def _adapt_convnext(model: nn.Module) -> None:
    stem = model.features[0] if hasattr(model, "features") else model.stem
    _first_conv(stem).stride = (1, 1)


def _adapt_first_stride(attr: str, pool: str | None = None):
    def adapt(model: nn.Module) -> None:
        _first_conv(getattr(model, attr)).stride = (1, 1)
        if pool is not None:
            setattr(model, pool, nn.Identity())

    return adapt


def _adapt_alexnet(model: nn.Module) -> None:
    model.features[0].stride = (1, 1)
    model.features[2] = nn.Identity()


def _small_input_rules() -> list[tuple[tuple[type, ...], Any]]:
    import timm.models as tm
    import torchvision.models as tv

    return [
        ((tv.ResNet, tm.ResNet), _adapt_resnet),
        ((tv.DenseNet, tm.DenseNet), _adapt_densenet),
        ((tv.MobileNetV2, tv.MobileNetV3), _adapt_inverted_residual_tv),
        ((tm.MobileNetV3, tm.EfficientNet), _adapt_inverted_residual_timm),
        ((tv.VGG, tm.VGG), _adapt_vgg),
        ((tv.AlexNet,), _adapt_alexnet),
        ((tv.MNASNet,), lambda m: setattr(m.layers[0], "stride", (1, 1))),
        ((tv.ShuffleNetV2,), _adapt_first_stride("conv1", "maxpool")),
        ((tv.GoogLeNet,), _adapt_first_stride("conv1", "maxpool1")),
        ((tv.ConvNeXt, tm.ConvNeXt), _adapt_convnext),
    ]


def adapt_small_input(model: nn.Module) -> bool:
    """Adapt a model's stem to 32x32 inputs in place, as the reference does; False if no rule applies."""
    for classes, rule in _small_input_rules():
        if isinstance(model, classes):
            rule(model)
            return True
    _logger.warning(
        "warning: %s is not adapted for small inputs (no rule for it); it keeps its ImageNet stem",
        type(model).__name__,
    )
    return False
