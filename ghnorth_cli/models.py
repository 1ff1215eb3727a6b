"""Model resolution: ``--arch`` names to timm or torchvision classifiers, and small-input adaptation."""

from __future__ import annotations

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
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        try:
            return cls(
                source=str(data["source"]),
                name=str(data["name"]),
                num_classes=int(data["num_classes"]),
                img_size=int(data["img_size"]),
                small_input=bool(data["small_input"]),
                aux_logits=bool(data["aux_logits"]) if data.get("aux_logits") is not None else _default_aux_logits(
                    str(data["source"]), str(data["name"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelResolutionError(f"invalid model spec {data!r}: {exc}") from None


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
                                     _default_aux_logits(source, name)))
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
    if num_classes is not None and num_classes < 1:
        raise ModelResolutionError(f"--num-classes must be positive, got {num_classes}")
    if img_size is not None and img_size < 8:
        raise ModelResolutionError(f"--img-size must be at least 8, got {img_size}")
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


def _build(spec: ModelSpec) -> nn.Module:
    if spec.source == "timm":
        import timm

        _, default_size = _default_io(spec.source, spec.name)
        kwargs: dict[str, Any] = {"num_classes": spec.num_classes}
        if spec.img_size != default_size:
            kwargs["img_size"] = spec.img_size  # ViT-like models fix their grid at build time
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
    return builder(**kwargs)


def create_model(spec: ModelSpec, *, seed: int = 0) -> nn.Module:
    """Build the model with its own initialization, seeded, without touching the global RNG state."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build(spec)
            if spec.small_input:
                adapt_small_input(model)
    except ModelResolutionError:
        raise
    except Exception as exc:  # a model that refuses these settings: report, don't crash
        raise ModelResolutionError(f"cannot build {spec.arch} with {spec.num_classes} classes at "
                                   f"{spec.img_size}px: {exc}") from exc
    return model


def model_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of the model's state_dict, in module order, without allocating its weights."""
    with torch.device("meta"):
        model = create_model(spec, seed=0)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def weight_layer_names(names_and_shapes: dict[str, tuple[int, ...]] | list[tuple[str, tuple[int, ...]]]) -> list[str]:
    """The paper's "layers": tensors named ``weight`` with 2 or more dimensions, in module order."""
    items = names_and_shapes.items() if isinstance(names_and_shapes, dict) else names_and_shapes
    return [n for n, shape in items if (n == "weight" or n.endswith(".weight")) and len(shape) >= 2]


def classifier_tensor_names(names_and_shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The classifier's weight (the last layer) and its bias, if any."""
    layers = weight_layer_names(names_and_shapes)
    if not layers:
        return []
    weight = layers[-1]
    bias = weight[: -len("weight")] + "bias"
    return [weight] + ([bias] if bias in names_and_shapes else [])


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
