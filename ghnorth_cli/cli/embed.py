"""``ghnorth embed``: one latent vector per architecture from a GHN (mean of its node embeddings)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.cli.options import GhnOption, ImgSizeOption

_logger = logging.getLogger(__name__)

ArchsOption = Annotated[Optional[list[str]], typer.Option("--arch", "-a", help="Model to embed (repeat for several).")]
ArchFileOption = Annotated[
    Optional[Path], typer.Option("--arch-file", metavar="FILE", help="Text file with one --arch value per line "
                                 "(blank lines and '#' comments ignored).")
]
GraphFileOption = Annotated[
    Optional[list[str]], typer.Option("--graph", metavar="FILE", help="Graph JSON written by `ghnorth graph -o "
                                      "X.json` (repeatable); named after the file.")
]
HeldoutOption = Annotated[
    Optional[str], typer.Option("--heldout", metavar="SPACE:N", help="Also embed the first N held-out "
                                "architectures of an architecture space (the split `train-ghn --heldout N` "
                                "keeps out of training), e.g. tiny:16; built at --img-size (default 32).")
]
EmbedClassesOption = Annotated[
    Optional[int], typer.Option("--num-classes", min=1, help="Classifier outputs of the embedded models "
                                "(default: the GHN's number of classes).")
]
EmbedOutputOption = Annotated[
    str, typer.Option("--output", "-o", metavar="FILE", help="Embeddings JSON; '-' writes to stdout.")
]


def read_arch_file(path: Path) -> list[str]:
    """The architectures listed in ``path``, one per line, without blanks and ``#`` comments."""
    from ghnorth_cli.errors import GhnorthError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise GhnorthError(f"cannot read --arch-file {path}: {exc.strerror or exc}") from None
    archs = [line.split("#", 1)[0].strip() for line in lines]
    return [a for a in archs if a]


def _check_unique(names: list[str]) -> None:
    from ghnorth_cli.errors import GhnorthError

    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise GhnorthError(f"{name!r} is given twice; every embedded model needs its own name")
        seen.add(name)


def _read_graph_file(path: str):
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.graph.types import ModelGraph

    try:
        return ModelGraph.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except OSError as exc:
        raise GhnorthError(f"cannot read --graph {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise GhnorthError(f"--graph {path} is not a graph JSON written by `ghnorth graph`: {exc}") from None


def _parse_heldout(text: str) -> tuple[str, int]:
    from ghnorth_cli.errors import GhnorthError

    space, _, count = text.rpartition(":")
    if not space or not count.isdigit() or int(count) < 1:
        raise GhnorthError(f"--heldout takes SPACE:N (e.g. tiny:16), got {text!r}")
    return space, int(count)


def _embed_heldout(ghn, space_name: str, count: int, *, num_classes: int | None, img_size: int | None):
    """Embeddings of a space's held-out architectures, named by their sample labels."""
    from ghnorth_cli.embedding import embed_graph
    from ghnorth_cli.errors import GhnorthError

    try:
        from ghnorth_cli.archspace import build_arch, get_space, heldout_archs
    except ImportError:
        raise GhnorthError("--heldout needs ghnorth's architecture spaces (ghnorth_cli.archspace), "
                           "which this installation lacks") from None
    classes, size = num_classes or ghn.config.num_classes, img_size or 32
    for sample in heldout_archs(get_space(space_name), count=count):
        model = build_arch(sample, num_classes=classes, img_size=size)
        graph = ghn.capture_graph(model, img_size=size)
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        info = {"heldout": f"{space_name}:{count}", "family": sample.family, "settings": sample.settings,
                "img_size": size, "num_classes": classes}
        yield embed_graph(ghn, graph, name=sample.label, shapes=shapes, info=info)


def _embed_arch(ghn, arch: str, *, num_classes: int | None, img_size: int | None):
    from ghnorth_cli.embedding import embed_graph
    from ghnorth_cli.models import create_model, resolve_spec

    spec = resolve_spec(arch, num_classes=num_classes or ghn.config.num_classes, img_size=img_size)
    model = create_model(spec, seed=0)
    graph = ghn.capture_graph(model, img_size=spec.img_size)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    info = {"arch": spec.arch, "img_size": spec.img_size, "num_classes": spec.num_classes}
    return embed_graph(ghn, graph, name=arch, shapes=shapes, info=info)


@app.command("embed")
def embed_command(
    output: EmbedOutputOption,
    ghn_spec: GhnOption = None,
    archs: ArchsOption = None,
    arch_file: ArchFileOption = None,
    graphs: GraphFileOption = None,
    heldout: HeldoutOption = None,
    img_size: ImgSizeOption = None,
    num_classes: EmbedClassesOption = None,
) -> None:
    """Embed architectures in the GHN's latent space: mean of node embeddings after propagation (JSON)."""
    from ghnorth_cli.checkpoint import write_bytes_atomic
    from ghnorth_cli.files import check_writable
    from ghnorth_cli.embedding import dumps_embeddings, embed_graph, embeddings_document
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.ghn.registry import DEFAULT_GHN, load_pretrained

    names = list(archs or []) + (read_arch_file(arch_file) if arch_file else [])
    space = _parse_heldout(heldout) if heldout else None
    if not names and not graphs and not space:
        raise GhnorthError("nothing to embed: give --arch, --arch-file, --graph or --heldout")
    check_writable(output)
    _check_unique(names + [Path(p).stem for p in graphs or []])
    saved = [(path, _read_graph_file(path)) for path in graphs or []]  # bad files fail before any work
    ghn = load_pretrained(ghn_spec or DEFAULT_GHN)
    embeddings = []
    for arch in names:
        embeddings.append(_embed_arch(ghn, arch, num_classes=num_classes, img_size=img_size))
        _logger.info("%s: %d nodes", arch, embeddings[-1].n_nodes)
    for path, graph in saved:
        if ghn.config.ve and len(graph.edges) and int(graph.edges[:, 2].max()) == 1 and graph.n_nodes > 2:
            _logger.warning("warning: %s has no virtual edges but this GHN uses them; its embedding differs from "
                            "what the GHN sees (write the graph with the default --ve-cutoff)", path)
        embeddings.append(embed_graph(ghn, graph, name=Path(path).stem, info={"graph": path}))
        _logger.info("%s: %d nodes", path, embeddings[-1].n_nodes)
    if space:
        embeddings.extend(_embed_heldout(ghn, *space, num_classes=num_classes, img_size=img_size))
        _logger.info("%s: %d held-out architectures", heldout, space[1])
    document = embeddings_document(embeddings, ghn={"name": ghn.info.name, "sha256": ghn.info.sha256,
                                                    "config": ghn.config.to_dict()})
    write_bytes_atomic(output, dumps_embeddings(document).encode())
    _logger.info("%d embeddings (dim %s) -> %s", len(embeddings), document["dim"], output)
