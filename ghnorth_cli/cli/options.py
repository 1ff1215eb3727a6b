"""Options shared by several commands, as ``Annotated`` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ArchOption = Annotated[
    str,
    typer.Option("--arch", "-a", help="Model: a timm or torchvision name; 'timm:' / 'torchvision:' prefixes force the source."),
]
OptionalArchOption = Annotated[
    Optional[str],
    typer.Option("--arch", "-a", help="Model the checkpoint holds (needed for files without ghnorth metadata)."),
]
NumClassesOption = Annotated[
    Optional[int], typer.Option("--num-classes", min=1, help="Classifier outputs (default: the model's own).")
]
ImgSizeOption = Annotated[
    Optional[int],
    typer.Option("--img-size", min=8, help="Input size in pixels (default: the model's own); 32 or less adapts the stem."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for everything random in this step.")]
def binary_output(value: str | None) -> str | None:
    """Option callback: a checkpoint to stdout only when stdout is not a terminal."""
    from ghnorth_cli.files import refuse_binary_terminal

    refuse_binary_terminal(value)
    return value


OutputOption = Annotated[
    str, typer.Option("--output", "-o", callback=binary_output,
                      help="Output safetensors file; '-' writes to stdout (not to a terminal).")
]
InputArgument = Annotated[str, typer.Argument(help="Input checkpoint (.safetensors); '-' reads stdin.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PathOption = Optional[Path]
ThreadsOption = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, help="CPU threads for torch (default 1, measured fastest on a shared "
                 "machine; OMP_NUM_THREADS, when set, is the default instead). Recorded in the history."),
]
