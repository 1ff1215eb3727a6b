"""``ghnorth init``: Table 1's baseline initializations as checkpoints."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import (ArchOption, ImgSizeOption, NumClassesOption, OutputOption, SeedOption,
                                     SmallInputOption, ThreadsOption)

_logger = logging.getLogger(__name__)


@app.command("init")
def init_command(
    arch: ArchOption,
    output: OutputOption,
    method: Annotated[
        str,
        typer.Option("--method", "-m", help="default: the model's own init (RAND INIT, He); "
                     "orth: Eq. 2 on Gaussian weights, classifier at its default (ORTH INIT); "
                     "weight-selection: evenly spaced weights of the larger --teacher (Xu et al. 2024)."),
    ] = "default",
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="weight-selection: a larger model of the same family, as a checkpoint "
                     "file or a timm/torchvision name with pretrained weights (needs them cached or the network)."),
    ] = None,
    num_classes: NumClassesOption = None,
    img_size: ImgSizeOption = None,
    small_input: SmallInputOption = None,
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
) -> None:
    """Write a baseline initialization of ARCH (the paper's RAND INIT or ORTH INIT, or weight selection)."""
    import torch

    from ghnorth_cli.checkpoint import model_tensors, provenance, write_checkpoint
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.files import check_writable
    from ghnorth_cli.inits import INIT_METHODS, init_model_
    from ghnorth_cli.models import create_model, resolve_spec
    from ghnorth_cli.threads import apply_threads
    from ghnorth_cli.weight_selection import METHOD as WEIGHT_SELECTION

    apply_threads(threads)
    if method not in (*INIT_METHODS, WEIGHT_SELECTION):
        raise GhnorthError(f"unknown --method {method!r}; choose from {', '.join((*INIT_METHODS, WEIGHT_SELECTION))}")
    if (method == WEIGHT_SELECTION) != (teacher is not None):
        raise GhnorthError("--teacher goes with --method weight-selection, and it needs one")
    check_writable(output)  # before loading a teacher that may be large
    spec = resolve_spec(arch, num_classes=num_classes, img_size=img_size, small_input=small_input)
    model = create_model(spec, seed=seed)
    options: dict = {"method": method, "arch": spec.arch}
    inputs, extra = {}, {}
    if method == WEIGHT_SELECTION:
        from ghnorth_cli.weight_selection import select_from_teacher_

        source, result = select_from_teacher_(model, teacher, img_size=spec.img_size, small_input=spec.small_input)
        changed = result.selected
        options["teacher"] = source.name
        inputs = {source.name: source.sha256} if source.sha256 else {}
        extra = {"ghnorth.weight_selection": {"teacher": source.name, **result.to_dict()}}
    else:
        changed = init_model_(model, method=method, generator=torch.Generator().manual_seed(seed))
    tensors, order = model_tensors(model)
    entry = provenance(command="init", options=options, seed=seed, inputs=inputs, changed=len(changed))
    write_checkpoint(output, tensors, spec=spec, order=order, history=[entry], extra=extra)
    n_params = sum(p.numel() for p in model.parameters())
    # `default` changes no tensor: "0 tensors initialized" read as if the output were empty.
    what = ("all at the model's own init" if not changed
            else f"{len(changed)} of {len(tensors)} tensors changed from the model's own init")
    _logger.info("init %s: %s, %d parameters, %s -> %s", method, spec.arch, n_params, what, output)
