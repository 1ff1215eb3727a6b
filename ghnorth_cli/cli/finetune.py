"""``ghnorth finetune``: fine-tune a classifier from a checkpoint or a baseline init, and test it."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import JsonOption

_logger = logging.getLogger(__name__)

_DATA = "Data"
_MODEL = "Model and init"
_TRAIN = "Training"
_SPEED = "Speed"
_OUT = "Outputs"


def _opt(*names: str, help: str, panel: str, **kwargs: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, **kwargs)


def finetune_config(*, recipe: str | None = None, **options: Any):
    """The CLI's options as a :class:`FinetuneConfig` (a recipe's values, overridden by given options)."""
    from ghnorth_cli.finetune import FinetuneConfig, apply_recipe

    return FinetuneConfig(**apply_recipe(recipe, options))


@app.command("finetune")
def finetune_command(
    data: Annotated[str, _opt("--data", help="cifar10 | cifar100 | fashion-mnist | imagefolder:PATH.", panel=_DATA)],
    data_dir: Annotated[Optional[str], _opt("--data-dir", help="Where the dataset lives (CIFAR: torchvision's "
                        "layout, default ./data; Fashion-MNIST: idx files, default /usr/share/datasets/fashion-mnist).",
                        panel=_DATA)] = None,
    download: Annotated[bool, _opt("--download", help="Download CIFAR into --data-dir if missing.", panel=_DATA)] = False,
    labels_per_class: Annotated[Optional[int], _opt("--labels-per-class", min=1, help="Train on a class-balanced "
                                "random subset of N images per class.", panel=_DATA)] = None,
    val_size: Annotated[Optional[float], _opt("--val-size", min=0, help="Validation images held out from the rest "
                        "of the training split for model selection: a count (5000) or a fraction (0.1).",
                        panel=_DATA)] = None,
    test_size: Annotated[Optional[int], _opt("--test-size", min=1, help="Test on a random subset of N test images "
                         "(quick runs; default: the whole test split).", panel=_DATA)] = None,
    data_seed: Annotated[Optional[int], _opt("--data-seed", help="Seed of the subset and validation draws.",
                         panel=_DATA)] = None,
    arch: Annotated[Optional[str], _opt("--arch", "-a", help="Model (timm or torchvision name); with a checkpoint "
                    "--init, taken from its metadata unless given.", panel=_MODEL)] = None,
    init: Annotated[Optional[str], _opt("--init", help="A checkpoint file, or default | orth (made from --seed) | "
                    "pretrained (timm/torchvision weights; needs the network) | weight-selection:T (evenly "
                    "spaced weights of a larger model T of the same family: a checkpoint file or a pretrained "
                    "model name).", panel=_MODEL)] = None,
    img_size: Annotated[Optional[int], _opt("--img-size", min=8, help="Input size; images are resized "
                        "(default: the checkpoint's, else 32).", panel=_MODEL)] = None,
    small_input: Annotated[Optional[bool], _opt("--small-input/--no-small-input", help="Adapt the stem for small "
                           "images (default: the checkpoint's choice, else when --img-size <= 32).",
                           panel=_MODEL)] = None,
    seed: Annotated[Optional[int], _opt("--seed", help="Seed of model init, shuffling and augmentation.",
                    panel=_MODEL)] = None,
    recipe: Annotated[Optional[str], _opt("--recipe", help="Published settings: resnet50-paper | "
                      "convnext_base-paper; options given next to it override it.", panel=_TRAIN)] = None,
    opt: Annotated[Optional[str], _opt("--opt", help="sgd (momentum 0.9) | adamw.", panel=_TRAIN)] = None,
    lr: Annotated[Optional[float], _opt("--lr", help="Peak learning rate (default 0.01).", panel=_TRAIN)] = None,
    wd: Annotated[Optional[float], _opt("--wd", help="Weight decay, on all parameters (default 0.01).",
                  panel=_TRAIN)] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", min=1, help="Epochs (default 10).", panel=_TRAIN)] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", min=1, help="Batch size (default 96).",
                          panel=_TRAIN)] = None,
    warmup_epochs: Annotated[Optional[int], _opt("--warmup-epochs", min=0, help="Linear warm-up before the cosine "
                             "schedule (default 0).", panel=_TRAIN)] = None,
    clip_grad: Annotated[Optional[float], _opt("--clip-grad", help="Clip the gradient norm (default: off; "
                         "recipes: 5).", panel=_TRAIN)] = None,
    label_smoothing: Annotated[Optional[float], _opt("--label-smoothing", min=0, max=1, help="Default 0.",
                               panel=_TRAIN)] = None,
    hflip: Annotated[Optional[bool], _opt("--hflip/--no-hflip", help="Random horizontal flips (default on).",
                     panel=_TRAIN)] = None,
    crop_padding: Annotated[Optional[int], _opt("--crop-padding", min=0, help="Random crops after zero padding "
                            "by this many pixels (default 4; 0: no crops).", panel=_TRAIN)] = None,
    save_model: Annotated[Optional[str], _opt("--save-model", help="Weights -o keeps: last | best (best "
                          "validation accuracy; needs --val-size).", panel=_TRAIN)] = None,
    device: Annotated[Optional[str], _opt("--device", help="auto | cpu | cuda[:N].", panel=_SPEED)] = None,
    amp: Annotated[Optional[bool], _opt("--amp/--no-amp", help="bf16 autocast on CUDA (default on).",
                   panel=_SPEED)] = None,
    channels_last: Annotated[Optional[bool], _opt("--channels-last/--no-channels-last", help="channels_last "
                             "memory format on CUDA (default on).", panel=_SPEED)] = None,
    compile: Annotated[Optional[bool], _opt("--compile", help="torch.compile the model.", panel=_SPEED)] = None,
    deterministic: Annotated[Optional[bool], _opt("--deterministic/--no-deterministic", help="Deterministic "
                             "algorithms (default: on CPU only).", panel=_SPEED)] = None,
    output: Annotated[Optional[str], _opt("--output", "-o", help="Fine-tuned weights (.safetensors).",
                      panel=_OUT)] = None,
    metrics: Annotated[Optional[str], _opt("--metrics", help="Final metrics as JSON.", panel=_OUT)] = None,
    log: Annotated[Optional[str], _opt("--log", help="One JSON line per epoch.", panel=_OUT)] = None,
    save_every: Annotated[Optional[int], _opt("--save-every", min=1, help="Save a resumable state every K epochs.",
                          panel=_OUT)] = None,
    state: Annotated[Optional[str], _opt("--state", help="Resumable state file (default: OUT.state.pt).",
                     panel=_OUT)] = None,
    resume: Annotated[Optional[bool], _opt("--resume", help="Continue the run saved in the state file.",
                      panel=_OUT)] = None,
    tensorboard: Annotated[Optional[str], _opt("--tensorboard", help="Log losses, accuracies, learning rate, "
                           "gradient norm and images/s to TensorBoard, in a new subfolder of this folder "
                           "(pip install \"ghnorth[tensorboard]\").", panel=_OUT)] = None,
    progress: Annotated[bool, _opt("--progress/--no-progress", help="Progress on stderr.", panel=_OUT)] = True,
    json_out: JsonOption = False,
) -> None:
    """Fine-tune a classifier on an image dataset and report its validation and test accuracy.

    Training images get the standard small-data augmentation (as in the paper's CIFAR training):
    a random crop of the image zero-padded by 4 pixels and a horizontal flip with probability 1/2,
    done for whole batches on the training device, then a resize to --img-size. Evaluation images
    are only resized. SGD uses momentum 0.9 (no Nesterov); weight decay applies to all parameters;
    the learning rate follows a per-step cosine schedule down to 0 after an optional linear warm-up.
    """
    options = {k: v for k, v in locals().items() if k not in ("recipe", "progress", "json_out")}
    from ghnorth_cli.finetune import finetune
    from ghnorth_cli.finetune.progress import FinetuneProgress

    config = finetune_config(recipe=recipe, **options)
    if tensorboard is not None:
        from pathlib import Path

        from ghnorth_cli.tensorboard_log import require_tensorboard, run_dir

        require_tensorboard()
        init_name = Path(config.init).stem if config.init_is_checkpoint else config.init
        config = config.replace(tensorboard=run_dir(tensorboard, config.arch, init_name, f"seed{config.seed}"))
    with FinetuneProgress(epochs=config.epochs, enabled=None if progress else False) as reporter:
        result = finetune(config, on_step=reporter.on_step, on_epoch=reporter.on_epoch)
    final, best = result.metrics["final"], result.metrics["best"]
    summary = f"test accuracy {final['test_acc']:.2f}% after {final['epoch']} epochs"
    if best is not None:
        summary += f"; best validation epoch {best['epoch']}: test accuracy {best['test_acc']:.2f}%"
    _logger.info("%s", summary)
    if json_out:
        typer.echo(json.dumps(result.metrics, indent=2, sort_keys=True))
