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
OutputOption = Annotated[
    str, typer.Option("--output", "-o", help="Output safetensors file; '-' writes to stdout.")
]
InputArgument = Annotated[str, typer.Argument(help="Input checkpoint (.safetensors); '-' reads stdin.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PathOption = Optional[Path]
GhnOption = Annotated[
    Optional[str],
    typer.Option("--ghn", "-g", help="GHN-2 or GHN-3: a known name (see `ghnorth ghn list`; default ghn2-imagenet; "
                 "e.g. ghn3-xl), a local file (a released .pt, read without running any code from it, or a "
                 "ghnorth .safetensors) or an http(s) URL."),
]
