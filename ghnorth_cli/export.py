"""Model folders in timm's / the Hugging Face Hub's layout: ``model.safetensors`` + ``config.json``.

``model.safetensors`` is the ghnorth checkpoint itself (timm reads its tensors and ignores the
metadata; ghnorth reads both). ``config.json`` is what ``timm.create_model("local-dir:DIR",
pretrained=True)`` and ``"hf-hub:REPO"`` read: ``architecture``, ``num_classes``, ``model_args`` and
a ``pretrained_cfg`` with the input size, mean and std, written by timm's own
``save_config_for_hf``. Its ``ghnorth`` entry says whether timm can rebuild the model by itself:
not for a stem adapted to small inputs, nor for a torchvision model; ``ghnorth_cli.load_model(DIR)``
rebuilds every one. ``push_to_hub`` uploads such a folder with ``huggingface_hub``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.files import current_umask
from ghnorth_cli.models import ModelSpec, classifier_modules, model_args_for, skeleton_model, small_input_adapted

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# pretrained_cfg fields that describe timm's own released weights, not these
_FOREIGN_FIELDS = ("tag", "hf_hub_id", "url", "license", "origin_url", "paper_ids", "paper_name", "notes",
                   "test_input_size", "test_crop_pct", "test_pool_size")


def is_folder_output(path: str | Path | None) -> bool:
    """Whether an output path names a model folder: it ends with a path separator (``-o DIR/``)."""
    return path is not None and str(path) != "-" and str(path).endswith(("/", os.sep))


@dataclass(frozen=True)
class FolderExport:
    """What ``ghnorth export`` wrote and who can load it."""

    folder: Path
    timm_loadable: bool
    reason: str  # why timm cannot rebuild the model ("" when it can)

    def describe(self) -> str:
        if self.timm_loadable:
            return (f"{self.folder}: timm.create_model(\"local-dir:{self.folder}\", pretrained=True) loads it "
                    "(or ghnorth_cli.load_model)")
        return f"{self.folder}: load it with ghnorth_cli.load_model(\"{self.folder}\"); timm cannot: {self.reason}"


def data_config(spec: ModelSpec, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Input size, mean and std the weights expect: those of the data of the last fine-tuning step,
    else the model's own (timm's pretrained_cfg; ImageNet's for torchvision)."""
    mean, std = IMAGENET_STATS
    if spec.source == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.name)
        if cfg is not None:
            mean, std = tuple(cfg.mean), tuple(cfg.std)
    for entry in reversed(list(history)):
        data = entry.get("data") if isinstance(entry, Mapping) else None
        if entry.get("command") == "finetune" and isinstance(data, Mapping):
            from ghnorth_cli.finetune.data import DATASET_STATS

            mean, std = DATASET_STATS.get(str(data.get("name", "")).lower(), (mean, std))
            break
    size = spec.img_size
    return {"input_size": (3, size, size), "mean": tuple(mean), "std": tuple(std), "crop_pct": 1.0,
            "crop_mode": "center"}


def _why_not_timm(spec: ModelSpec) -> str:
    if spec.source != "timm":
        return f"{spec.arch} is a torchvision model"
    if small_input_adapted(spec):
        return f"its stem is adapted to {spec.img_size} px inputs (timm builds the ImageNet stem)"
    return ""


def _ghnorth_entry(spec: ModelSpec, model_args: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {"model": spec.to_dict(), "model_args": dict(model_args), "timm_loadable": not reason,
            "load_with": "ghnorth_cli.load_model(DIR)", **({"timm_cannot": reason} if reason else {})}


def model_config(spec: ModelSpec, *, tensor_names: Sequence[str], history: Sequence[Mapping[str, Any]]
                 ) -> tuple[dict[str, Any], str]:
    """The ``config.json`` for a model folder, and why timm cannot load it ("" if it can)."""
    reason = _why_not_timm(spec)
    extra_args = model_args_for(spec, tensor_names)
    data = data_config(spec, history)
    # the config describes the architecture: the ImageNet stem will do
    model = skeleton_model(dataclasses.replace(spec, small_input=False), model_args=extra_args)
    if spec.source == "timm":
        config = _timm_config(model, spec, extra_args=extra_args, data=data)
    else:
        heads = classifier_modules(model)
        config = {
            "architecture": spec.arch,  # not a timm name: timm refuses it instead of building another model
            "num_classes": spec.num_classes,
            "model_args": {"num_classes": spec.num_classes, **extra_args},
            "pretrained_cfg": {"input_size": list(data["input_size"]), "mean": list(data["mean"]),
                               "std": list(data["std"]), "crop_pct": data["crop_pct"], "crop_mode": "center",
                               "num_classes": spec.num_classes,
                               "classifier": heads[0] if len(heads) == 1 else heads},
        }
    config["ghnorth"] = _ghnorth_entry(spec, extra_args, reason)
    return config, reason


def _timm_config(model: torch.nn.Module, spec: ModelSpec, *, extra_args: Mapping[str, Any],
                 data: Mapping[str, Any]) -> dict[str, Any]:
    """timm's own ``save_config_for_hf`` output, with the input and classes of these weights."""
    import inspect

    from timm.models._hub import save_config_for_hf

    with tempfile.TemporaryDirectory() as tmp:
        save_config_for_hf(model, str(Path(tmp) / CONFIG_NAME), model_args=dict(extra_args))
        config = json.loads((Path(tmp) / CONFIG_NAME).read_text())
    args = config.setdefault("model_args", {})
    args.update(num_classes=spec.num_classes, **extra_args)
    pretrained = config.setdefault("pretrained_cfg", {})
    default_size = tuple(pretrained.get("input_size", (3, 224, 224)))[-1]
    if spec.img_size != default_size and "img_size" in inspect.signature(type(model).__init__).parameters:
        args["img_size"] = spec.img_size  # as models.create_model builds it (ViT-like grids)
    for key in _FOREIGN_FIELDS:
        pretrained.pop(key, None)
    pretrained.update(num_classes=spec.num_classes, input_size=list(data["input_size"]), mean=list(data["mean"]),
                      std=list(data["std"]), crop_pct=data["crop_pct"], crop_mode=data["crop_mode"])
    config["num_classes"] = spec.num_classes
    return config


def write_model_folder(folder: str | Path, checkpoint_bytes: bytes, *, spec: ModelSpec, tensor_names: Sequence[str],
                       history: Sequence[Mapping[str, Any]]) -> FolderExport:
    """Write ``model.safetensors`` (the given checkpoint bytes) and ``config.json`` into ``folder``.

    A new folder appears whole (written beside it, then renamed); in an existing folder each file
    is replaced atomically, the weights first. Raises :class:`GhnorthError` when it cannot write.
    """
    folder = Path(str(folder).rstrip("/" + os.sep) or "/")
    config, reason = model_config(spec, tensor_names=tensor_names, history=history)
    files = {WEIGHTS_NAME: checkpoint_bytes, CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode()}
    if folder.exists() and not folder.is_dir():
        raise GhnorthError(f"cannot write {folder}/: it exists and is not a folder")
    if folder.is_dir():
        from ghnorth_cli.files import write_bytes_atomic

        for name, data in files.items():
            write_bytes_atomic(folder / name, data)
    else:
        _write_new_folder(folder, files)
    return FolderExport(folder=folder, timm_loadable=not reason, reason=reason)


def _write_new_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    parent = folder.parent
    if not parent.is_dir():
        raise GhnorthError(f"cannot write {folder}/: no such directory {parent}")
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.", suffix=".tmp"))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        mask = current_umask()
        os.chmod(tmp, 0o777 & ~mask)
        for name in files:
            os.chmod(tmp / name, 0o666 & ~mask)
        os.rename(tmp, folder)
        tmp = None
    except OSError as exc:
        raise GhnorthError(f"cannot write {folder}/: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def export_checkpoint(path: str | Path, folder: str | Path) -> FolderExport:
    """Write the checkpoint at ``path`` (``"-"``: stdin) as a model folder (see the module docstring)."""
    from ghnorth_cli.checkpoint import read_checkpoint, serialize_safetensors

    ckpt = read_checkpoint(path)
    data = serialize_safetensors({k: ckpt.tensors[k] for k in ckpt.order}, metadata=ckpt.metadata)
    return write_model_folder(folder, data, spec=ckpt.spec, tensor_names=ckpt.order, history=ckpt.history)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Add ghnorth checkpoint") -> str:
    """Upload a model folder to the Hugging Face Hub repository ``repo_id`` (created if needed).

    Uses ``huggingface_hub`` (``HfApi.create_repo`` + ``upload_folder``) with the token of
    ``huggingface-cli login`` / ``HF_TOKEN`` unless ``token`` is given. Returns the commit URL.
    Raises :class:`GhnorthError` with one line when the Hub refuses or cannot be reached.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="ghnorth")
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo.repo_id, repo_type="model",
                                   commit_message=commit_message)
    except Exception as exc:  # huggingface_hub raises HTTP, auth and validation errors of its own
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GhnorthError(f"cannot upload {folder} to the Hub repository {repo_id}: {first}") from None
    return str(getattr(commit, "commit_url", commit))
