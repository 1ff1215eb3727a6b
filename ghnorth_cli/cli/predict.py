"""``ghnorth predict``: a model's parameters predicted by a GHN (GHN-2 or GHN-3), as a checkpoint."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer

from ghnorth_cli.cli.app import app
from ghnorth_cli.files import check_writable
from ghnorth_cli.cli.options import (
    ArchOption,
    GhnOption,
    ImgSizeOption,
    JsonOption,
    NumClassesOption,
    OutputOption,
    SeedOption,
    SmallInputOption,
    ThreadsOption,
    device_name,
)

_logger = logging.getLogger(__name__)

BUFFERS_NOTE = ("buffers (batch-norm running statistics) are not predicted: they keep the model's init; "
                "evaluate in training mode or recompute them on data")

ClassifierOption = Annotated[
    str,
    typer.Option("--classifier", help="auto: predict the classification layer only when the GHN has as many "
                 "classes as the model (else keep its init, the paper's fine-tuning protocol); predict; keep."),
]
DeviceOption = Annotated[str, typer.Option("--device", parser=device_name, help="Where the GHN runs: cpu, cuda, cuda:1, ...")]
ReportOption = Annotated[bool, typer.Option("--report", help="Print a coverage table: what was predicted, what was not.")]


def _device(name: str):
    import torch

    from ghnorth_cli.errors import GhnorthError

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise GhnorthError(f"unknown --device {name!r} (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GhnorthError("--device cuda: no CUDA device is available here (use --device cpu)")
    return device


def coverage(model, prediction) -> dict[str, Any]:
    """Counts of tensors and values predicted, kept as a classifier, and not predictable."""
    params = dict(model.named_parameters())

    def count(names: list[str]) -> dict[str, int]:
        return {"tensors": len(names), "parameters": sum(params[n].numel() for n in names)}

    kept_cls = [] if prediction.classifier_predicted else prediction.classifier
    return {
        "predicted": count(list(prediction.params)),
        "classifier_kept": count(kept_cls),
        "not_predictable": count(prediction.unpredicted),
        "total": count(list(params)),
        "not_predicted": [{"name": n, "shape": list(params[n].shape), "reason": "classifier kept"
                           if n in kept_cls else "no graph node"} for n in params if n in prediction.kept],
    }


def _report_lines(cov: dict[str, Any], *, ghn: str, arch: str) -> list[str]:
    total = cov["total"]
    lines = [f"{ghn} -> {arch}", f"{'':18}{'tensors':>9}{'parameters':>14}{'share':>9}"]
    for key, label in (("predicted", "predicted"), ("classifier_kept", "classifier kept"),
                       ("not_predictable", "not predictable"), ("total", "total")):
        row = cov[key]
        share = row["parameters"] / max(total["parameters"], 1)
        lines.append(f"{label:<18}{row['tensors']:>9}{row['parameters']:>14,}{share:>9.2%}")
    for item in cov["not_predicted"]:
        lines.append(f"  not predicted: {item['name']} {item['shape']} ({item['reason']})")
    return lines


@app.command("predict")
def predict_command(
    arch: ArchOption,
    output: OutputOption,
    ghn: GhnOption = None,
    num_classes: NumClassesOption = None,
    img_size: ImgSizeOption = None,
    small_input: SmallInputOption = None,
    device: DeviceOption = "cpu",
    classifier: ClassifierOption = "auto",
    seed: SeedOption = 0,
    report: ReportOption = False,
    as_json: JsonOption = False,
    threads: ThreadsOption = None,
) -> None:
    """Predict ARCH's parameters with a GHN (GHN-2 or GHN-3) and write them as a checkpoint.

    Parameters the GHN cannot predict keep the model's own (seeded) init and are listed on
    stderr and in the checkpoint's metadata. --json prints the coverage report as JSON.
    """
    from ghnorth_cli.checkpoint import provenance, write_checkpoint
    from ghnorth_cli.errors import GhnorthError
    from ghnorth_cli.ghn.predict import CLASSIFIER_MODES, create_predicted_model
    from ghnorth_cli.ghn.registry import DEFAULT_GHN, load_pretrained
    from ghnorth_cli.models import resolve_spec
    from ghnorth_cli.threads import apply_threads

    apply_threads(threads)
    if classifier not in CLASSIFIER_MODES:
        raise GhnorthError(f"unknown --classifier {classifier!r}; choose from {', '.join(CLASSIFIER_MODES)}")
    check_writable(output)
    torch_device = _device(device)
    spec = resolve_spec(arch, num_classes=num_classes, img_size=img_size, small_input=small_input)
    network = load_pretrained(ghn or DEFAULT_GHN, device=str(torch_device))
    _warn_resolution(network, spec.img_size)
    model, result = create_predicted_model(spec, network, seed=seed, classifier=classifier, threads=None)
    _logger.info("predicted %d of %d parameter tensors of %s with %s (graph %.2f s, GHN %.2f s)",
                 len(result.params), len(list(model.parameters())), spec.arch, network.info.name,
                 result.timings["graph"], result.timings["ghn"])
    if result.classifier and not result.classifier_predicted:
        _logger.info("classifier %s kept at its init (GHN: %d classes, model: %s)", ", ".join(result.classifier),
                     network.config.num_classes, result.model_classes)

    tensors, order = _state_tensors(model)
    trained_on = None
    if result.classifier_predicted:
        from ghnorth_cli.ghn_training.evaluate import classifier_classes

        trained_on = classifier_classes(ghn or DEFAULT_GHN, num_classes=network.config.num_classes).data
    ghn_meta = {"name": network.info.name, "sha256": network.info.sha256, "config": network.config.to_dict()}
    classifier_meta = {"mode": classifier, "params": result.classifier, "predicted": result.classifier_predicted,
                       "ghn_classes": network.config.num_classes, "model_classes": result.model_classes,
                       "data": trained_on}
    entry = provenance(
        command="predict",
        options={"arch": spec.arch, "ghn": network.info.name, "classifier": classifier, "device": device,
                 "img_size": spec.img_size, "num_classes": spec.num_classes, "small_input": spec.small_input},
        seed=seed, inputs={network.info.name: network.info.sha256}, unpredicted=result.unpredicted,
        classifier_predicted=result.classifier_predicted, classifier_data=trained_on,
    )
    extra = {"ghnorth.ghn": ghn_meta, "ghnorth.unpredicted": result.unpredicted,
             "ghnorth.classifier": classifier_meta, "ghnorth.buffers": BUFFERS_NOTE}
    write_checkpoint(output, tensors, spec=spec, order=order, history=[entry], extra=extra)
    if report or as_json:
        _print_report(coverage(model, result), ghn=network.info.name, arch=spec.arch,
                      as_json=as_json, to_stderr=output == "-")


def _state_tensors(model) -> tuple[dict[str, Any], list[str]]:
    """The model's state_dict for writing, copying only tensors that share memory with another.

    (``checkpoint.model_tensors`` copies everything; for a large model that is a second copy of
    its weights in memory, which this command does not need.)
    """
    state = model.state_dict()
    seen: set[int] = set()
    tensors = {}
    for name, value in state.items():
        value = value.detach()
        key = value.untyped_storage().data_ptr()
        shared = key in seen or not value.is_contiguous() or value.device.type != "cpu"
        seen.add(key)
        tensors[name] = value.to("cpu", copy=True).contiguous() if shared else value
    return tensors, list(state)


def _warn_resolution(network, img_size: int) -> None:
    from ghnorth_cli.ghn.registry import REGISTRY

    trained = next((e for e in REGISTRY.values() if e.config == network.config), None)
    if trained is not None and trained.img_size != img_size:
        _logger.warning("this GHN (%s config) was trained on %dpx graphs; predicting at %dpx "
                        "(pass --img-size %d for %s-sized inputs)", trained.name, trained.img_size, img_size,
                        trained.img_size, trained.dataset)


def _print_report(cov: dict[str, Any], *, ghn: str, arch: str, as_json: bool, to_stderr: bool) -> None:
    text = json.dumps(cov, indent=2) if as_json else "\n".join(_report_lines(cov, ghn=ghn, arch=arch))
    typer.echo(text, err=to_stderr)
