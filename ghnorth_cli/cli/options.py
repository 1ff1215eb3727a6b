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
SmallInputOption = Annotated[
    Optional[bool],
    typer.Option("--small-input/--no-small-input", help="Adapt the stem to small images, as the reference does "
                 "(default: when --img-size <= 32). Models that no rule adapts (e.g. Swin) are recorded unadapted."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for everything random in this step.")]
OutputOption = Annotated[
    str, typer.Option("--output", "-o", help="Output safetensors file; '-' writes to stdout.")
]
InputArgument = Annotated[str, typer.Argument(help="Input checkpoint (.safetensors); '-' reads stdin.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PathOption = Optional[Path]
