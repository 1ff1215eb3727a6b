"""``ghnorth export``: a checkpoint as a model folder that timm and the Hugging Face Hub load by name."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import InputArgument

_logger = logging.getLogger(__name__)

FolderArgument = Annotated[str, typer.Argument(metavar="DIR", help="Folder to write (created if missing).")]
PushOption = Annotated[
    Optional[str],
    typer.Option("--push-to-hub", metavar="REPO", help="Also upload the folder to this Hugging Face Hub model "
                 "repository (user/name; created if missing), with the token of `huggingface-cli login` or HF_TOKEN."),
]
PrivateOption = Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repository private.")]


@app.command("export")
def export_command(input: InputArgument, folder: FolderArgument, push_to_hub: PushOption = None,
                   private: PrivateOption = False) -> None:
    """Write CKPT as DIR/model.safetensors + DIR/config.json, timm's folder layout.

    `timm.create_model("local-dir:DIR", pretrained=True)` then gives the model with these weights,
    loaded strictly. A small-input (32 px) stem or a torchvision model is beyond timm's builder:
    the command says so, and `ghnorth_cli.load_model("DIR")` rebuilds those (and every other).
    """
    from ghnorth_cli import export
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.files import check_writable

    if push_to_hub is not None and push_to_hub.count("/") != 1:
        raise GhnorthError(f"--push-to-hub takes a repository id user/name, got {push_to_hub!r}")
    check_writable(folder.rstrip("/") + "/")
    result = export.export_checkpoint(input, folder)
    _logger.info("%s", result.describe())
    if push_to_hub is not None:
        url = export.push_to_hub(result.folder, push_to_hub, private=private)
        _logger.info("uploaded %s to https://huggingface.co/%s (%s)", result.folder, push_to_hub, url)
