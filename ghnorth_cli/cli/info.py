"""``ghnorth info``: what a checkpoint holds and how it was made."""

from __future__ import annotations

import json

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import InputArgument, JsonOption


def _summary(ckpt) -> dict:
    from ghnorth_cli.checkpoint import first_nonfinite

    n_params = sum(int(t.numel()) for t in ckpt.tensors.values())
    extra = {k: ckpt.extra(k) for k in ckpt.metadata if k.startswith("ghnorth.")
             and k not in ("ghnorth.order", "ghnorth.history", "ghnorth.model", "ghnorth.format_version",
                           "ghnorth.version")}
    return {
        "file": ckpt.source,
        "sha256": ckpt.sha256,
        "format": ckpt.metadata.get("format"),
        "format_version": ckpt.metadata.get("ghnorth.format_version"),
        "ghnorth_version": ckpt.metadata.get("ghnorth.version"),
        "model": ckpt.spec.to_dict() if ckpt.spec else None,
        "tensors": len(ckpt.tensors),
        "numel": n_params,
        "weight_layers": len(ckpt.weight_layers()),
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in ckpt.tensors.values()}),
        "nonfinite": first_nonfinite(ckpt.tensors),
        "history": ckpt.history,
        "extra": extra,
    }


def _print_text(info: dict) -> None:
    echo = typer.echo
    echo(f"file            {info['file']}")
    echo(f"sha256          {info['sha256']}")
    if info["format"] is None:
        echo("format          plain safetensors (no ghnorth metadata)")
    else:
        echo(f"format          {info['format']} v{info['format_version']} (ghnorth {info['ghnorth_version']})")
    model = info["model"]
    if model:
        aux = f"  aux_logits={model['aux_logits']}" if model.get("aux_logits") is not None else ""
        echo(f"model           {model['source']}:{model['name']}  classes={model['num_classes']}  "
             f"img_size={model['img_size']}  small_input={model['small_input']}{aux}")
    echo(f"tensors         {info['tensors']} ({info['numel']:,} values, {', '.join(info['dtypes'])})")
    echo(f"weight layers   {info['weight_layers']}")
    if info["nonfinite"]:
        echo(f"non-finite      {info['nonfinite']} holds NaN or Inf values (the first such tensor)")
    for key, value in info["extra"].items():
        text = json.dumps(value)
        echo(f"{key:<15} {text if len(text) < 200 else text[:197] + '...'}")
    if info["history"]:
        echo("history")
    for i, step in enumerate(info["history"], 1):
        options = " ".join(f"{k}={v}" for k, v in step.get("options", {}).items())
        inputs = ", ".join(f"{k}:{v[:12]}" for k, v in step.get("inputs", {}).items())
        line = f"  {i}. {step.get('time', '?')}  {step.get('command', '?')}  seed={step.get('seed')}  {options}"
        echo(line + (f"  inputs={inputs}" if inputs else ""))


@app.command("info")
def info_command(path: InputArgument, as_json: JsonOption = False) -> None:
    """Print a checkpoint's model, tensors and provenance history."""
    from ghnorth_cli.checkpoint import read_checkpoint

    info = _summary(read_checkpoint(path, require_spec=False, allow_nonfinite=True))
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        _print_text(info)
