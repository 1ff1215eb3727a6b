"""``ghnorth ghn eval``: test accuracy of a GHN's predicted parameters, no training.

Registers on the ``ghn`` command group of :mod:`ghnorth_cli.cli.ghn`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from ghnorth_cli.cli.ghn import ghn_app
from ghnorth_cli.cli.options import JsonOption


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'model':<28}{'family':<11}{'params':>10}{'predicted':>11}{'top-1':>8}"]
    for r in rows:
        lines.append(f"{r['name']:<28}{r['family']:<11}{r['params']:>10,}{100 * r['predicted_share']:>10.0f}%"
                     f"{100 * r['accuracy']:>7.2f}%")
    return lines


@ghn_app.command("eval")
def eval_command(
    ghn: Annotated[str, typer.Argument(help="GHN-2 or GHN-3: a known name (e.g. ghn2-fmnist-tiny, ghn3-t) "
                                    "or a GHN file.")],
    arch: Annotated[Optional[list[str]], typer.Option("--arch", "-a", help="Also evaluate this timm or torchvision "
                    "model (repeatable); adapted to small inputs at 32 px or less.")] = None,
    heldout: Annotated[Optional[int], typer.Option("--heldout", min=0, help="Evaluate the first N held-out "
                       "architectures of the space (default: as many as the GHN was trained without).")] = None,
    arch_space: Annotated[Optional[str], typer.Option("--arch-space", help="Space of the held-out split "
                          "(default: the one the GHN was trained on).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Test data (default: what the GHN was trained "
                    "on).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Where the dataset lives.")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Test classes, e.g. 0-4 (default: the "
                       "GHN's training classes).")] = None,
    img_size: Annotated[Optional[int], typer.Option("--img-size", min=8, help="Input size (default: the GHN's "
                        "training size, else 32).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N test images.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Test batch size (batch norm uses "
                          "each batch's statistics).")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Init seed of the parameters the GHN does not predict "
                    "(named models).")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda[:N] | auto.")] = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Accuracy of GHN-predicted parameters on held-out sampled architectures and named models.

    No training: the GHN predicts every parameter it can (the classifier too when the class
    counts agree), batch norm uses batch statistics, and the test images are classified.
    """
    import torch

    from ghnorth_cli.archspace import get_space, heldout_archs
    from ghnorth_cli.ghn.registry import load_pretrained, resolve_ghn
    from ghnorth_cli.ghn_training.data import load_task, parse_classes
    from ghnorth_cli.ghn_training.evaluate import EvalSettings, evaluate_heldout, evaluate_named, summarize
    from ghnorth_cli.ghn_training.ghnfile import read_training_info
    from ghnorth_cli.ghn_training.run import resolve_device

    if threads is not None:
        torch.set_num_threads(threads)
    info = read_training_info(resolve_ghn(ghn).path)
    network = load_pretrained(ghn, device=str(resolve_device(device)))
    size = img_size or info.get("img_size") or 32
    wanted = parse_classes(classes) or (tuple(info["classes"]) if info.get("classes") else None)
    task = load_task(data or info.get("data") or "fashion-mnist", data_dir=data_dir, classes=wanted, img_size=size)
    test = task.test if limit is None else task.test.subset(torch.arange(min(limit, len(task.test))))
    settings = EvalSettings(num_classes=network.config.num_classes, img_size=size, mean=task.mean, std=task.std,
                            batch_size=batch_size, device=str(resolve_device(device)))
    space = arch_space or info.get("arch_space") or "tiny"
    count = info.get("heldout", 16) if heldout is None else heldout
    held = evaluate_heldout(network, heldout_archs(get_space(space), count=count), test, settings=settings)
    named = evaluate_named(network, list(arch or ()), test, settings=settings, seed=seed)
    report = {"ghn": ghn, "data": task.name, "classes": list(task.classes), "test_images": len(test),
              "img_size": size, "arch_space": space, "heldout": [r.to_dict() for r in held],
              "heldout_summary": summarize(held), "named": [r.to_dict() for r in named]}
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    for line in _table(report["heldout"] + report["named"]):
        typer.echo(line)
    s = report["heldout_summary"]
    if s["count"]:
        typer.echo(f"held-out {space} ({s['count']} architectures): mean {100 * s['mean_accuracy']:.2f}% "
                   f"(min {100 * s['min_accuracy']:.2f}%, max {100 * s['max_accuracy']:.2f}%) on {len(test)} "
                   f"{task.name} test images, classes {','.join(map(str, task.classes))}")
