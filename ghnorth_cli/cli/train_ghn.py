"""``ghnorth train-ghn``: train a GHN-2 over an architecture space on an image dataset."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.cli.app import app, is_quiet
from ghnorth_cli.cli.options import JsonOption, ThreadsOption, device_name, finite_float, output_path, seed_value
from ghnorth_cli.limits import MAX_GHN_HID, MAX_IMG_SIZE

_DATA, _ARCHS, _TRAIN, _GHN, _RUN = "Data", "Architectures", "Training", "GHN size", "Run"


def _opt(*names: str, help: str, panel: str, **kwargs: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, **kwargs)


def _max_shape(text: str) -> tuple[int, int, int, int]:
    from ghnorth_cli.errors import GhnorthError

    try:
        sizes = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 4:
        raise GhnorthError(f"--max-shape {text!r}: expected four sizes like 64,64,7,7")
    return sizes  # type: ignore[return-value]


def step_status(record: dict[str, Any]) -> str:
    """``loss 2.1000 acc 23.4% lr 0.001 grad 1.20`` for one training record."""
    return (f"loss {record['loss']:.4f} acc {100 * record['acc']:.1f}% lr {record['lr']:.3g} "
            f"grad {record['grad_norm']:.2f}")


class _GHNScalars:
    """TensorBoard scalars of GHN training, one point per step (accuracy in %, images/s from step times)."""

    def __init__(self, log_dir: str, *, images_per_step: int) -> None:
        from ghnorth_cli.tensorboard_log import ScalarLog

        self.log, self.images_per_step, self.seconds = ScalarLog(log_dir), images_per_step, None

    def add(self, record: dict[str, Any]) -> None:
        previous = 0.0 if record["step"] == 1 else self.seconds  # unknown for the first step after a resume
        elapsed = record["seconds"] - previous if previous is not None else None
        self.seconds = record["seconds"]
        speed = self.images_per_step / elapsed if elapsed else None
        self.log.add({"loss": record["loss"], "acc": 100 * record["acc"], "lr": record["lr"],
                      "grad_norm": record["grad_norm"], "images_per_second": speed}, step=record["step"], prefix="step/")

    def __enter__(self) -> "_GHNScalars":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.log.close()


def _scalar_log(tensorboard: str | None, config: Any) -> Any:
    import contextlib
    from pathlib import Path

    if tensorboard is None:
        return contextlib.nullcontext()
    from ghnorth_cli.tensorboard_log import run_dir

    return _GHNScalars(run_dir(tensorboard, "train-ghn", Path(config.output).stem),
                       images_per_step=config.batch_size * config.meta_batch)


@app.command("train-ghn")
def train_ghn_command(
    output: Annotated[str, _opt("--output", "-o", callback=output_path, help="The GHN file to write (.safetensors); a state file "
                      "OUTPUT.state.pt next to it makes --resume possible.", panel=_RUN)],
    data: Annotated[str, _opt("--data", help="cifar10 | cifar100 | fashion-mnist | imagefolder:PATH.",
                    panel=_DATA)] = "fashion-mnist",
    data_dir: Annotated[Optional[str], _opt("--data-dir", help="Where the dataset lives (as for finetune).",
                        panel=_DATA)] = None,
    classes: Annotated[Optional[str], _opt("--classes", help="Train on these classes only, e.g. 0-4 or 1,3,5; "
                       "labels are renumbered in this order (default: all).", panel=_DATA)] = None,
    arch_space: Annotated[str, _opt("--arch-space", help="Architecture space: tiny | small | tiny-convnets | "
                          "tiny-resnet | tiny-convnext | tiny-mobilenet | tiny-vit.", panel=_ARCHS)] = "tiny",
    include_arch: Annotated[Optional[list[str]], _opt("--include-arch", help="Also train on this timm or "
                            "torchvision model (repeatable), drawn as often as each family.",
                            panel=_ARCHS)] = None,
    heldout: Annotated[int, _opt("--heldout", min=0, help="Size of the space's held-out split that training "
                       "never sees (ghn eval uses it).", panel=_ARCHS)] = 16,
    steps: Annotated[int, _opt("--steps", min=1, help="Optimization steps.", panel=_TRAIN)] = 1000,
    meta_batch: Annotated[int, _opt("--meta-batch", min=1, help="Architectures per step.", panel=_TRAIN)] = 4,
    batch_size: Annotated[int, _opt("--batch-size", min=2, help="Images per step (every architecture of a step "
                          "sees the same batch).", panel=_TRAIN)] = 64,
    lr: Annotated[float, _opt("--lr", parser=finite_float(min=0.0), metavar="FLOAT", help="AdamW peak learning rate.", panel=_TRAIN)] = 1e-3,
    wd: Annotated[float, _opt("--wd", parser=finite_float(min=0.0), metavar="FLOAT", help="AdamW weight decay.", panel=_TRAIN)] = 1e-5,
    schedule: Annotated[str, _opt("--schedule", help="cosine | step (x0.1 at 50% and 75%) | constant.",
                        panel=_TRAIN)] = "cosine",
    warmup: Annotated[int, _opt("--warmup", min=0, help="Linear warm-up steps.", panel=_TRAIN)] = 0,
    grad_clip: Annotated[float, _opt("--grad-clip", parser=finite_float(min=0.0), metavar="FLOAT", help="Clip the gradient norm (0: off).",
                         panel=_TRAIN)] = 5.0,
    seed: Annotated[int, _opt("--seed", parser=seed_value, metavar="INT", help="Seed of the GHN's init, the architectures, batches and "
                    "augmentation.", panel=_TRAIN)] = 0,
    img_size: Annotated[int, _opt("--img-size", min=32, max=MAX_IMG_SIZE, help="Input size the GHN trains at.", panel=_GHN)] = 32,
    hid: Annotated[int, _opt("--hid", min=4, max=MAX_GHN_HID, help="GHN hidden size.", panel=_GHN)] = 32,
    max_shape: Annotated[str, _opt("--max-shape", help="Largest tensor the GHN decodes before tiling "
                         "(out,in,h,w).", panel=_GHN)] = "64,64,7,7",
    device: Annotated[str, _opt("--device", parser=device_name, help="auto (CUDA if available) | cpu | cuda[:N].", panel=_RUN)] = "auto",
    amp: Annotated[Optional[bool], _opt("--amp/--no-amp", help="bf16 autocast (CUDA only; default on there).",
                                        panel=_RUN)] = None,
    threads: ThreadsOption = None,
    save_every: Annotated[int, _opt("--save-every", min=1, help="Write the state and the GHN file every N "
                          "steps.", panel=_RUN)] = 100,
    resume: Annotated[bool, _opt("--resume", help="Continue from OUTPUT.state.pt.", panel=_RUN)] = False,
    log: Annotated[Optional[str], _opt("--log", callback=output_path, help="Append one JSON line per --log-every steps here.",
                   panel=_RUN)] = None,
    log_every: Annotated[int, _opt("--log-every", min=1, help="Log and progress interval.", panel=_RUN)] = 10,
    tensorboard: Annotated[Optional[str], _opt("--tensorboard", help="Log loss, accuracy, learning rate, gradient "
                           "norm and images/s per step to TensorBoard, in a new subfolder of this folder "
                           "(pip install \"ghnorth[tensorboard]\").", panel=_RUN)] = None,
    json_output: JsonOption = False,
) -> None:
    """Train a GHN-2 whose predicted parameters classify DATA, over many sampled architectures.

    Writes ghnorth's GHN file (usable as `predict --ghn FILE` and `ghn eval FILE`). Data goes to
    stdout only with --json; progress and logs go to stderr. On several GPUs or machines start it
    with torchrun (`torchrun --nproc_per_node 4 -m ghnorth_cli train-ghn ...`): every process
    trains its share of each meta-batch, with DDP, and rank 0 writes the files.
    """
    from ghnorth_cli.ghn_training.config import GHNTrainConfig
    from ghnorth_cli.ghn_training.data import parse_classes
    from ghnorth_cli.ghn_training.distributed import from_environment, process_group
    from ghnorth_cli.ghn_training.run import train_ghn
    from ghnorth_cli.threads import apply_threads
    from ghnorth_cli.progress import Progress

    apply_threads(threads)
    config = GHNTrainConfig(
        output=output, data=data, data_dir=data_dir, classes=parse_classes(classes), arch_space=arch_space,
        extra_archs=tuple(include_arch or ()), heldout=heldout, steps=steps, meta_batch=meta_batch,
        batch_size=batch_size, lr=lr, weight_decay=wd, schedule=schedule, warmup=warmup, grad_clip=grad_clip,
        seed=seed, img_size=img_size, hid=hid, max_shape=_max_shape(max_shape), device=device, amp=amp,
        save_every=save_every, log_every=log_every, log=log,
    )
    dist = from_environment()  # several processes under torchrun: one GHN trained with DDP
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks (and draws progress) for all
    with (process_group(dist, device=device, meta_batch=meta_batch),
          Progress("training GHN", total=steps) as progress,
          _scalar_log(tensorboard if dist.is_main else None, config) as scalars):
        def on_step(record: dict[str, Any]) -> None:
            progress.update(completed=record["step"], status=step_status(record))
            if record["step"] % log_every == 0 or record["step"] == steps:
                progress.line(f"step {record['step']}/{steps} {step_status(record)} {record['seconds']:.0f}s")
            if scalars is not None:
                scalars.add(record)

        result = train_ghn(config, resume=resume, on_step=on_step, dist=dist)
    if not dist.is_main:
        return
    summary = {"output": result.output, "steps": result.steps, "seconds": round(result.seconds, 1),
               "last": result.last, "training": result.training}
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
    elif not is_quiet():
        typer.echo(f"wrote {result.output} ({result.steps} steps, {result.seconds:.0f} s)", err=True)
