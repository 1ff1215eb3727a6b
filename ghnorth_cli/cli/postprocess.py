"""``ghnorth postprocess``: GHN-orth (Section 3 of the paper) on any checkpoint.

The per-layer report goes to stderr (log lines) and, as JSON, to stdout with ``--json`` or to a file with
``--report FILE``. ``--json`` together with ``-o -`` is an error: stdout then carries the checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.files import check_writable
from ghnorth_cli.cli.options import (
    ImgSizeOption,
    InputArgument,
    JsonOption,
    NumClassesOption,
    OptionalArchOption,
    OutputOption,
    SeedOption,
    ThreadsOption,
    finite_float,
    output_path,
)

_logger = logging.getLogger(__name__)

_CORE_KEYS = ("ghnorth.format_version", "ghnorth.version", "ghnorth.model", "ghnorth.order", "ghnorth.history")

PresetOption = Annotated[
    Optional[str],
    typer.Option("--preset", help="Published settings: resnet50-paper (beta 3e-5, orth from 37) or "
                 "convnext_base-paper (beta 3e-5, orth from 94). Explicit options override it."),
]
BetaOption = Annotated[
    Optional[float],
    typer.Option("--beta", parser=finite_float(min=0.0), metavar="FLOAT", help="Noise scale: noise std = beta x std of the layer's correlation values (0 = off)."),
]
OrthFromOption = Annotated[
    Optional[int],
    typer.Option("--orth-from", metavar="L", help="Orthogonally re-initialize layers L.. (1-based among the "
                 "2+-D weights, in module order; the classifier never). Omitted: no re-initialization."),
]
NoiseLayersOption = Annotated[
    Optional[str],
    typer.Option("--noise-layers", metavar="all|from-orth", help="Layers that get noise: all (the paper's text, "
                 "default) or from-orth (the reference code: only the re-initialized layers)."),
]
DtypeOption = Annotated[
    str,
    typer.Option("--dtype", metavar="keep|float32|float16|bfloat16|float64", help="dtype of the written "
                 "floating tensors (keep: the input's). The work is done in float32 (float64 in float64)."),
]
ReportOption = Annotated[
    Optional[Path], typer.Option("--report", metavar="FILE", callback=output_path, help="Also write the JSON report to FILE.")
]


def resolve_settings(
    *, preset: str | None, beta: float | None, orth_from: int | None, noise_layers: str | None
) -> dict[str, Any]:
    """Preset values overridden by the explicit options; unknown preset or bad values -> GhnorthError."""
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.postprocess import NOISE_LAYERS, PRESETS

    settings: dict[str, Any] = {"preset": preset, "beta": 0.0, "orth_from": None, "noise_layers": "all"}
    if preset is not None:
        if preset not in PRESETS:
            raise GhnorthError(f"unknown --preset {preset!r}; choose from {', '.join(PRESETS)}")
        settings.update(beta=PRESETS[preset].beta, orth_from=PRESETS[preset].orth_from)
    explicit = {"beta": beta, "orth_from": orth_from, "noise_layers": noise_layers}
    settings.update({k: v for k, v in explicit.items() if v is not None})
    if settings["beta"] < 0:
        raise GhnorthError(f"--beta must be >= 0, got {settings['beta']}")
    if settings["noise_layers"] not in NOISE_LAYERS:
        raise GhnorthError(f"--noise-layers must be one of {', '.join(NOISE_LAYERS)}, got {noise_layers!r}")
    return settings


DTYPES = ("keep", "float32", "float16", "bfloat16", "float64")
# Warn when more than this share of the noised values lose their noise to rounding.
ROUNDED_AWAY_WARNING = 0.1


def output_dtype(name: str):
    """``--dtype`` as a torch dtype (None for keep)."""
    import torch

    from ghnorth_cli.errors import GhnorthError

    if name not in DTYPES:
        raise GhnorthError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return None if name == "keep" else getattr(torch, name)


def _warn_rounding(changes, tensors, *, dtype_option: str) -> None:
    from ghnorth_cli.postprocess import noise_rounded_away

    share = noise_rounded_away(changes)
    if share is None or share <= ROUNDED_AWAY_WARNING:
        return
    dtypes = sorted({str(tensors[c.name].dtype).removeprefix("torch.") for c in changes
                     if c.noise_rounded_away is not None})
    hint = "; write float32 with --dtype float32" if dtype_option != "float32" else ""
    _logger.warning("warning: in %s the noise is below the dtype's resolution for %.0f%% of the noised weights "
                    "and rounds away%s", "/".join(dtypes), 100 * share, hint)


def _check_streams(*, output: str, as_json: bool, report: Path | None) -> None:
    from ghnorth_cli.errors import GhnorthError

    if as_json and output == "-":
        raise GhnorthError("--json and -o - would both write to stdout; use --report FILE for the report")
    if report is not None and str(report) == "-":
        raise GhnorthError("--report needs a file name; use --json for the report on stdout")


def _log_changes(changes) -> None:
    for c in changes:
        shape = "x".join(map(str, c.shape))
        if c.action in ("unchanged", "classifier", "tied"):
            _logger.info("layer %3d %-40s %-14s %s", c.index, c.name, shape, c.action)
            continue
        noise = f" noise_std={c.noise_std:.3g} (corr std {c.corr_std:.3g})" if c.noise_std is not None else ""
        _logger.info("layer %3d %-40s %-14s %-10s max|dW|=%.3g rel=%.3g%s", c.index, c.name, shape, c.action,
                     c.max_abs_change, c.rel_change, noise)


def _preserved_extra(metadata: dict[str, str]) -> dict[str, Any]:
    """The input's other ``ghnorth.*`` metadata (e.g. which GHN predicted it), carried over unchanged."""
    return {k: json.loads(v) for k, v in metadata.items() if k.startswith("ghnorth.") and k not in _CORE_KEYS}


def _report(*, ckpt, output: str, settings: dict, seed: int, changes) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    return {"input": ckpt.source, "input_sha256": ckpt.sha256, "output": output, "options": settings,
            "seed": seed, "summary": counts, "layers": [c.to_dict() for c in changes]}


def _write_outputs(*, ckpt, tensors, output: str, entry: dict, report: dict, report_path: Path | None) -> None:
    """Checkpoint, then the report file; if the report cannot be written the new checkpoint is removed."""
    from ghnorth_cli.checkpoint import write_bytes_atomic, write_checkpoint

    write_checkpoint(output, tensors, spec=ckpt.spec, order=ckpt.order, history=[*ckpt.history, entry],
                     extra=_preserved_extra(ckpt.metadata))
    if report_path is None:
        return
    try:
        write_bytes_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode())
    except Exception:
        from ghnorth_cli.export import is_folder_output

        if output != "-" and not is_folder_output(output):  # a model folder is complete: leave it
            Path(output).unlink(missing_ok=True)
        raise


@app.command("postprocess")
def postprocess_command(
    input: InputArgument,
    output: OutputOption,
    preset: PresetOption = None,
    beta: BetaOption = None,
    orth_from: OrthFromOption = None,
    noise_layers: NoiseLayersOption = None,
    seed: SeedOption = 0,
    arch: OptionalArchOption = None,
    num_classes: NumClassesOption = None,
    img_size: ImgSizeOption = None,
    dtype: DtypeOption = "keep",
    as_json: JsonOption = False,
    report: ReportOption = None,
    threads: ThreadsOption = None,
) -> None:
    """GHN-orth: add noise to the weights and orthogonally re-initialize layers L.. (classifier untouched)."""
    import torch

    from ghnorth_cli.checkpoint import provenance, read_checkpoint
    from ghnorth_cli.postprocess import PRESETS, postprocess, validate_options
    from ghnorth_cli.threads import apply_threads

    apply_threads(threads)
    _check_streams(output=output, as_json=as_json, report=report)
    for path in (output, report):
        if path is not None:
            check_writable(path)
    settings = resolve_settings(preset=preset, beta=beta, orth_from=orth_from, noise_layers=noise_layers)
    out_dtype = output_dtype(dtype)
    settings["dtype"] = dtype
    ckpt = read_checkpoint(input, arch=arch, num_classes=num_classes, img_size=img_size)
    layers, heads = ckpt.weight_layers(), set(ckpt.classifier())
    validate_options(beta=settings["beta"], orth_from=settings["orth_from"], noise_layers=settings["noise_layers"],
                     num_layers=len(layers),
                     last_changeable=max((i for i, n in enumerate(layers, 1) if n not in heads), default=0))
    if preset is not None and ckpt.spec.name != PRESETS[preset].arch:
        _logger.warning("warning: preset %s was published for %s, the checkpoint holds %s",
                        preset, PRESETS[preset].arch, ckpt.spec.arch)
    if settings["beta"] == 0 and settings["orth_from"] is None:
        _logger.warning("warning: neither --beta nor --orth-from (nor --preset) given: the weights stay as they are")
    tensors, changes = postprocess(ckpt.tensors, ckpt.order, beta=settings["beta"], orth_from=settings["orth_from"],
                                   noise_layers=settings["noise_layers"],
                                   generator=torch.Generator().manual_seed(seed), classifier=heads,
                                   dtype=out_dtype, tied=ckpt.tied())
    _log_changes(changes)
    _warn_rounding(changes, tensors, dtype_option=dtype)
    result = _report(ckpt=ckpt, output=output, settings=settings, seed=seed, changes=changes)
    entry = provenance(command="postprocess", options=settings, seed=seed, inputs={"input": ckpt.sha256},
                       summary=result["summary"])
    _write_outputs(ckpt=ckpt, tensors=tensors, output=output, entry=entry, report=result, report_path=report)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
