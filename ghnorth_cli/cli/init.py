"""``ghnorth init``: Table 1's baseline initializations as checkpoints."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import (ArchOption, ImgSizeOption, NumClassesOption, OutputOption, SeedOption,
                                     SmallInputOption)

_logger = logging.getLogger(__name__)


@app.command("init")
def init_command(
    arch: ArchOption,
    output: OutputOption,
    method: Annotated[
        str,
        typer.Option("--method", "-m", help="default: the model's own init (RAND INIT, He); "
                     "orth: Eq. 2 on Gaussian weights, classifier at its default (ORTH INIT)."),
    ] = "default",
    num_classes: NumClassesOption = None,
    img_size: ImgSizeOption = None,
    small_input: SmallInputOption = None,
    seed: SeedOption = 0,
) -> None:
    """Write a baseline initialization of ARCH (the paper's RAND INIT or ORTH INIT)."""
    import torch

    from ghnorth_cli.checkpoint import model_tensors, provenance, write_checkpoint
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.inits import INIT_METHODS, init_model_
    from ghnorth_cli.models import create_model, resolve_spec

    if method not in INIT_METHODS:
        raise GhnorthError(f"unknown --method {method!r}; choose from {', '.join(INIT_METHODS)}")
    spec = resolve_spec(arch, num_classes=num_classes, img_size=img_size, small_input=small_input)
    model = create_model(spec, seed=seed)
    changed = init_model_(model, method=method, generator=torch.Generator().manual_seed(seed))
    tensors, order = model_tensors(model)
    entry = provenance(command="init", options={"method": method, "arch": spec.arch}, seed=seed,
                       changed=len(changed))
    write_checkpoint(output, tensors, spec=spec, order=order, history=[entry])
    n_params = sum(p.numel() for p in model.parameters())
    _logger.info("init %s: %s, %d parameters, %d layers re-initialized -> %s",
                 method, spec.arch, n_params, len(changed), output)
