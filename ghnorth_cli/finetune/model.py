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
from ghnorth_cli.finetune.config import WEIGHT_SELECTION, FinetuneConfig
from ghnorth_cli.models import (ModelSpec, adapt_small_input, classifier_tensor_names, create_model,
                                effective_small_input, resolve_spec)

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
    classifier: str = "init"  # "kept" | "replaced" (did not fit) | "new" (--new-classifier) | "init" (no source)
    reason: str = ""  # why the classifier was kept or replaced
    unmatched: dict[str, str] = field(default_factory=dict)  # weight selection: kept at the own init, and why

    def report(self) -> dict[str, Any]:
        report = {"init_loaded": len(self.loaded), "init_replaced": list(self.replaced),
                  "classifier": self.classifier, "classifier_reason": self.reason}
        return {**report, "init_unmatched": dict(self.unmatched)} if self.unmatched else report

    def describe(self, init: str) -> str:
        if init == "default":
            return f"{self.spec.arch}: the model's own initialization (seeded)"
        if init.startswith(WEIGHT_SELECTION + ":"):
            return (f"{self.spec.arch}: {len(self.loaded)} tensors selected from {init.partition(':')[2]}, "
                    f"{len(self.unmatched)} unmatched and the classifier at the model's own init")
        if init == "orth":
            return f"{self.spec.arch}: {len(self.loaded)} weights orthogonal (Eq. 2), the rest default"
        if self.classifier == "kept":
            return f"{self.spec.arch}: loaded {len(self.loaded)} tensors from {init}, classifier kept ({self.reason})"
        return (f"{self.spec.arch}: loaded {len(self.loaded)} tensors from {init}; new classifier "
                f"{', '.join(self.replaced) or '(none found)'} for {self.spec.num_classes} classes ({self.reason})")


def _classifier(model: nn.Module) -> list[str]:
    return classifier_tensor_names(model)  # every head: all replaced together


def classifier_decision(model: nn.Module, tensors: dict[str, torch.Tensor], *, new_classifier: bool,
                        trained_on: str | None = None, data: str | None = None) -> tuple[str, str]:
    """Keep the source's classifier when it fits the dataset, else replace it: ``(decision, reason)``.

    It fits when every classifier tensor of ``model`` (built for the dataset's classes) has the
    same shape in ``tensors`` and, where the source says which dataset its classifier was trained
    on (``trained_on``), that is ``data``. ``new_classifier`` forces a fresh one ("new").
    """
    names = _classifier(model)
    expected = model.state_dict()
    if new_classifier:
        return "new", "--new-classifier"
    if not names:
        return "replaced", "no classifier found"
    missing = [n for n in names if n not in tensors]
    if missing:
        return "replaced", f"the source has no {missing[0]}"
    wrong = [n for n in names if tuple(tensors[n].shape) != tuple(expected[n].shape)]
    if wrong:
        return "replaced", (f"{wrong[0]} has shape {list(tensors[wrong[0]].shape)}, the dataset needs "
                            f"{list(expected[wrong[0]].shape)}")
    if trained_on is not None and data is not None and trained_on != data:
        return "replaced", f"it was trained on {trained_on}, not {data}"
    return "kept", f"its {int(expected[names[0]].shape[0])} classes fit the dataset"


def _load_classifier_if_fits(model: nn.Module, tensors: dict[str, torch.Tensor], *, new_classifier: bool,
                             trained_on: str | None = None, data: str | None = None):
    """Load ``tensors`` into ``model``, the classifier only when it fits (see :func:`classifier_decision`)."""
    from ghnorth_cli.checkpoint import load_tensors_into

    decision, reason = classifier_decision(model, tensors, new_classifier=new_classifier, trained_on=trained_on,
                                           data=data)
    replaced = [] if decision == "kept" else _classifier(model)
    load_tensors_into(model, tensors, strict=True, skip=replaced)
    return [k for k in model.state_dict() if k not in replaced], replaced, decision, reason


def _trained_on(history: list[dict[str, Any]]) -> str | None:
    """The dataset the checkpoint's classifier was made for, if its history says.

    The last step that set the classifier decides: a fine-tuning run (its ``data``), or a GHN
    prediction of the classifier (``classifier_data``: the GHN's training set).
    """
    for entry in reversed(history):
        if entry.get("command") == "finetune" and isinstance(entry.get("data"), dict):
            return entry["data"].get("name")
        if entry.get("command") == "predict" and entry.get("classifier_predicted"):
            return entry.get("classifier_data")
    return None


def _from_checkpoint(config: FinetuneConfig, num_classes: int, data_name: str | None) -> StartingModel:
    from ghnorth_cli.checkpoint import read_checkpoint

    ckpt = read_checkpoint(config.init, arch=config.arch)
    base = ckpt.spec
    spec = dataclasses.replace(
        base,
        num_classes=num_classes,
        img_size=config.img_size or base.img_size,
        small_input=effective_small_input(base.source, base.name, base.small_input if config.small_input is None
                                          else config.small_input),
    )
    model = create_model(spec, seed=config.seed)
    loaded, replaced, decision, reason = _load_classifier_if_fits(
        model, ckpt.tensors, new_classifier=config.new_classifier, trained_on=_trained_on(ckpt.history),
        data=data_name)
    return StartingModel(model, spec, loaded, replaced, list(ckpt.history), {"init": ckpt.sha256}, decision, reason)


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


def build_starting_model(config: FinetuneConfig, *, num_classes: int, data_name: str | None = None) -> StartingModel:
    """The model to fine-tune for ``num_classes`` classes of ``data_name``.

    From a checkpoint or pretrained weights the classifier is kept when it fits the dataset and
    replaced when it does not or ``config.new_classifier`` (see :func:`classifier_decision`).
    """
    if config.init_is_checkpoint:
        return _from_checkpoint(config, num_classes, data_name)
    if config.arch is None:
        raise GhnorthError(f"--init {config.init} needs --arch")
    size = config.img_size or DEFAULT_IMG_SIZE
    spec = resolve_spec(config.arch, num_classes=num_classes, img_size=size, small_input=config.small_input)
    model = create_model(spec, seed=config.seed)
    if config.init == "pretrained":
        loaded, replaced, decision, reason = _load_classifier_if_fits(model, _pretrained_tensors(spec),
                                                                      new_classifier=config.new_classifier)
        return StartingModel(model, spec, loaded, replaced, classifier=decision, reason=reason)
    if config.init_teacher is not None:
        from ghnorth_cli.weight_selection import select_from_teacher_

        teacher, result = select_from_teacher_(model, config.init_teacher, img_size=spec.img_size,
                                               small_input=spec.small_input)
        inputs = {teacher.name: teacher.sha256} if teacher.sha256 else {}
        return StartingModel(model, spec, result.selected, result.classifier, inputs=inputs,
                             classifier="new", reason="weight selection leaves the classifier at the model's own init",
                             unmatched=result.unmatched)
    from ghnorth_cli.inits import init_model_

    changed = init_model_(model, method=config.init, generator=torch.Generator().manual_seed(config.seed))
    return StartingModel(model, spec, changed, [])
