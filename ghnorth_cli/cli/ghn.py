"""``ghnorth ghn``: the known GHNs and the cache (list, download) and file conversion."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import JsonOption, output_path

_logger = logging.getLogger(__name__)

ghn_app = typer.Typer(name="ghn", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                      help="Known GHNs, the download cache, and GHN file conversion.")
app.add_typer(ghn_app, name="ghn")


def _size_text(size: int | None, n_params: int) -> str:
    """The released file's size, or about the float32 weights' size when not known exactly."""
    if size is None:
        return f"~{_human(4 * n_params)}"
    return _human(size)


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@ghn_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List the known GHNs: family, size, parameter count, source and whether they are cached."""
    from ghnorth_cli.ghn.registry import DEFAULT_GHN, ghn_cache_dir, list_ghns

    rows = [
        {"name": s.entry.name, "default": s.entry.name == DEFAULT_GHN, "family": s.entry.family,
         "dataset": s.entry.dataset, "num_classes": s.entry.config.num_classes, "img_size": s.entry.img_size,
         "n_params": s.entry.n_params, "size_bytes": s.entry.size, "cached": s.cached, "path": str(s.path),
         "url": s.entry.url, "git_blob_id": s.entry.git_blob_id,
         "hub": None if s.entry.hub is None else {"repo_id": s.entry.hub.repo_id, "filename": s.entry.hub.filename,
                                                 "revision": s.entry.hub.revision},
         "description": s.entry.description, "config": s.entry.config.to_dict()}
        for s in list_ghns()
    ]
    if as_json:
        typer.echo(json.dumps({"cache_dir": str(ghn_cache_dir()), "ghns": rows}, indent=2))
        return
    typer.echo(f"{'name':<19}{'family':<7}{'dataset':<14}{'classes':>8}{'params':>13}{'size':>11}  {'cached':<7} "
               "description")
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        typer.echo(f"{name:<19}{r['family']:<7}{r['dataset']:<14}{r['num_classes']:>8}{r['n_params']:>13,}"
                   f"{_size_text(r['size_bytes'], r['n_params']):>11}  {'yes' if r['cached'] else 'no':<7} "
                   f"{r['description']}")
    typer.echo(f"cache: {ghn_cache_dir()}  (* = default; ~ = size of the float32 weights; set GHNORTH_HOME to move "
               "it; GHN-3 files come through the Hugging Face cache)")


@ghn_app.command("download")
def download_command(
    names: Annotated[Optional[list[str]], typer.Argument(help="GHN names (default: every known GHN-2; the "
                                                         "GHN-3s, 28 MB to 2.6 GB each, by name).")] = None,
) -> None:
    """Download known GHNs into the cache (GHN-2: verified by git blob id; GHN-3: via the Hugging Face cache,
    checked and converted once to safetensors)."""
    from ghnorth_cli.ghn.registry import REGISTRY, resolve_ghn

    for name in names or [name for name, entry in REGISTRY.items() if entry.hub is None]:
        resolved = resolve_ghn(name)
        typer.echo(f"{name}\t{resolved.path}")


@ghn_app.command("convert")
def convert_command(
    source: Annotated[str, typer.Argument(help="GHN file: released .pt (or a ghnorth .safetensors).")],
    dest: Annotated[str, typer.Argument(callback=output_path, help="Output .safetensors file (written atomically).")],
) -> None:
    """Convert a released GHN-2 or GHN-3 (.pt) to ghnorth's safetensors format (config in the metadata).

    A GHN-3 pickle is read without running any code from it and its config inferred from its tensors.
    """
    from ghnorth_cli.ghn.io import convert_ghn

    ghn_file = convert_ghn(source, dest)
    _logger.info("converted %s (%s, %d tensors, sha256 %s) -> %s", source, ghn_file.format,
                 len(ghn_file.state_dict), ghn_file.sha256[:12], dest)
