"""The model a fine-tuning run starts from: a checkpoint, a baseline init or pretrained weights."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.finetune.config import FinetuneConfig
from ghnorth_cli.models import ModelSpec, adapt_small_input, classifier_tensor_names, create_model, resolve_spec

log = logging.getLogger(__name__)

DEFAULT_IMG_SIZE = 32


@dataclass
class StartingModel:
    """A model ready to fine-tune, what it is, and what was loaded into it."""

    model: nn.Module
    spec: ModelSpec
    loaded: list[str]  # tensors copied from the init source
    replaced: list[str]  # classifier tensors made fresh for the dataset's classes
    history: list[dict[str, Any]] = field(default_factory=list)  # the init checkpoint's provenance
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> sha256

    def report(self) -> dict[str, Any]:
        return {"init_loaded": len(self.loaded), "init_replaced": list(self.replaced)}

    def describe(self, init: str) -> str:
        if init == "default":
            return f"{self.spec.arch}: the model's own initialization (seeded)"
        if init == "orth":
            return f"{self.spec.arch}: {len(self.loaded)} weights orthogonal (Eq. 2), the rest default"
        return (f"{self.spec.arch}: loaded {len(self.loaded)} tensors from {init}; new classifier "
                f"{', '.join(self.replaced) or '(none found)'} for {self.spec.num_classes} classes")


def _classifier(model: nn.Module) -> list[str]:
    return classifier_tensor_names({k: tuple(v.shape) for k, v in model.state_dict().items()})


def _load_except_classifier(model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    from ghnorth_cli.checkpoint import load_tensors_into

    replaced = _classifier(model)
    load_tensors_into(model, tensors, strict=True, skip=replaced)
    return [k for k in model.state_dict() if k not in replaced], replaced


def _from_checkpoint(config: FinetuneConfig, num_classes: int) -> StartingModel:
    from ghnorth_cli.checkpoint import read_checkpoint

    ckpt = read_checkpoint(config.init, arch=config.arch)
    base = ckpt.spec
    spec = dataclasses.replace(
        base,
        num_classes=num_classes,
        img_size=config.img_size or base.img_size,
        small_input=base.small_input if config.small_input is None else config.small_input,
    )
    model = create_model(spec, seed=config.seed)
    loaded, replaced = _load_except_classifier(model, ckpt.tensors)
    return StartingModel(model, spec, loaded, replaced, list(ckpt.history), {"init": ckpt.sha256})


def _weights_source(spec: ModelSpec) -> tuple[str, bool]:
    """(URL the pretrained weights come from, whether they are in the local cache already)."""
    if spec.source == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.name)
        if cfg is not None and cfg.hf_hub_id:
            from huggingface_hub import constants, try_to_load_from_cache

            repo = cfg.hf_hub_id.split("@")[0]
            cached = any(isinstance(try_to_load_from_cache(repo, f), str)
                         for f in (cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"))
            return f"{constants.ENDPOINT}/{repo}", cached
        url = (cfg.url if cfg is not None else "") or ""
    else:
        import torchvision

        try:
            url = torchvision.models.get_model_weights(spec.name).DEFAULT.url
        except (ValueError, AttributeError):
            url = ""
    cached = bool(url) and (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()
    return url, cached


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host can be opened within ``timeout`` seconds."""
    import socket

    parts = urlparse(url)
    if not parts.hostname:
        return True  # nothing to test; let the library say what is wrong
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_pretrained_available(spec: ModelSpec) -> None:
    """Fail at once, in one line, when the weights are neither cached nor downloadable (offline).

    Without this, an offline machine spends a minute in the Hub client's retries and warnings.
    """
    url, cached = _weights_source(spec)
    if cached:
        return
    declared = spec.source == "timm" and _hub_offline()  # HF_HUB_OFFLINE=1: do not even try
    if not declared and _reachable(url):
        return
    why = "HF_HUB_OFFLINE is set" if declared else f"{urlparse(url).hostname} cannot be reached (offline?)"
    raise GhnorthError(f"--init pretrained: {spec.arch}'s weights are not cached and {why}; run once with "
                       "network access, or use --init default, orth or a checkpoint")


def _pretrained_tensors(spec: ModelSpec) -> dict[str, torch.Tensor]:
    check_pretrained_available(spec)
    try:
        if spec.source == "timm":
            import timm

            source = timm.create_model(spec.name, pretrained=True)
        else:
            import torchvision

            source = torchvision.models.get_model(spec.name, weights="DEFAULT")
    except Exception as exc:  # no network, no weights for this model, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GhnorthError(f"pretrained weights for {spec.arch} cannot be had: {first_line}") from None
    if spec.small_input:
        adapt_small_input(source)
    return source.state_dict()


def build_starting_model(config: FinetuneConfig, *, num_classes: int) -> StartingModel:
    """The model to fine-tune, with a fresh classifier for ``num_classes`` classes."""
    if config.init_is_checkpoint:
        return _from_checkpoint(config, num_classes)
    if config.arch is None:
        raise GhnorthError(f"--init {config.init} needs --arch")
    size = config.img_size or DEFAULT_IMG_SIZE
    spec = resolve_spec(config.arch, num_classes=num_classes, img_size=size, small_input=config.small_input)
    model = create_model(spec, seed=config.seed)
    if config.init == "pretrained":
        loaded, replaced = _load_except_classifier(model, _pretrained_tensors(spec))
        return StartingModel(model, spec, loaded, replaced)
    from ghnorth_cli.inits import init_model_

    changed = init_model_(model, method=config.init, generator=torch.Generator().manual_seed(config.seed))
    return StartingModel(model, spec, changed, [])
