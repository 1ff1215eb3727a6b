"""Options shared by several commands, as ``Annotated`` aliases."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.limits import MAX_IMG_SIZE, MAX_NUM_CLASSES

# --- option values that make sense, checked by the option's type ------------------------------------

#: ``torch.manual_seed`` takes any 64-bit value, signed or unsigned.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def finite_float(*, min: float | None = None, max: float | None = None):
    """A parser for ``typer.Option(parser=...)``: a finite float within ``[min, max]`` (NaN and Inf refused)."""

    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        if min is not None and number < min:
            raise ValueError(f"{value!r} is below the minimum {min:g}")
        if max is not None and number > max:
            raise ValueError(f"{value!r} is above the maximum {max:g}")
        return number

    return parse


def seed_value(value: Any) -> int:
    """A seed ``torch.manual_seed`` accepts: an integer within 64 bits."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not an integer") from None
    if not SEED_MIN <= number <= SEED_MAX:
        raise ValueError(f"{value!r} does not fit in 64 bits")
    return number


def device_name(value: Any) -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
    text = str(value).strip()
    if not _DEVICE.match(text):
        raise ValueError(f"{value!r} is not a device (auto, cpu, cuda, cuda:N or mps)")
    return text


def output_path(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Callback of every output option: writable, and not the path of another output of the same command.

    Runs while the command line is parsed, so two outputs on one file (``-o X --report X``) are
    refused before any work. ``"-"`` (stdout) counts as one path too.
    """
    from ghnorth_cli.files import check_writable, same_output

    if value is None:
        return value
    name = param.opts[0] if param.opts else param.name
    check_writable(value, what=name)
    claimed = ctx.meta.setdefault("ghnorth.outputs", {})
    for other, path in claimed.items():
        if other != name and same_output(path, value):
            raise typer.BadParameter(f"{value} is also the {other} output; give each output its own file")
    claimed[name] = str(value)
    return value


ArchOption = Annotated[
    str,
    typer.Option("--arch", "-a", help="Model: a timm or torchvision name; 'timm:' / 'torchvision:' prefixes force the source."),
]
OptionalArchOption = Annotated[
    Optional[str],
    typer.Option("--arch", "-a", help="Model the checkpoint holds (needed for files without ghnorth metadata)."),
]
NumClassesOption = Annotated[
    Optional[int], typer.Option("--num-classes", min=1, max=MAX_NUM_CLASSES, help="Classifier outputs (default: the model's own).")
]
ImgSizeOption = Annotated[
    Optional[int],
    typer.Option("--img-size", min=8, max=MAX_IMG_SIZE, help="Input size in pixels (default: the model's own); 32 or less adapts the stem."),
]
SmallInputOption = Annotated[
    Optional[bool],
    typer.Option("--small-input/--no-small-input", help="Adapt the stem to small images, as the reference does "
                 "(default: when --img-size <= 32). Models that no rule adapts (e.g. Swin) are recorded unadapted."),
]
SeedOption = Annotated[int, typer.Option("--seed", parser=seed_value, metavar="INT",
                                         help="Seed for everything random in this step.")]


def binary_output(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Callback of binary (checkpoint) outputs: :func:`output_path`'s checks, and stdout only when it
    is not a terminal (the bytes would flood the screen; gzip refuses the same)."""
    from ghnorth_cli.files import refuse_binary_terminal

    refuse_binary_terminal(value)
    return output_path(ctx, param, value)


OutputOption = Annotated[
    str, typer.Option("--output", "-o", callback=binary_output,
                      help="Output safetensors file; '-' writes to stdout (not to a terminal); 'DIR/' (a trailing "
                      "slash) writes a model folder timm loads (see `ghnorth export`).")
]
InputArgument = Annotated[str, typer.Argument(help="Input checkpoint (.safetensors); '-' reads stdin.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PathOption = Optional[Path]
ThreadsOption = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, help="CPU threads for torch (default 1, measured fastest on a shared "
                 "machine; OMP_NUM_THREADS, when set, is the default instead). Recorded in the history."),
]
GhnOption = Annotated[
    Optional[str],
    typer.Option("--ghn", "-g", help="GHN-2 or GHN-3: a known name (see `ghnorth ghn list`; default ghn2-imagenet; "
                 "e.g. ghn3-xl), a local file (a released .pt, read without running any code from it, or a "
                 "ghnorth .safetensors) or an http(s) URL."),
]
