"""Predicting a model's parameters with a GHN (GHN-2 or GHN-3), and loading a prediction into a model.

The classification layer is predicted when the GHN was trained on as many classes as the
model has and kept at the model's own init otherwise (the paper's fine-tuning protocol);
``classifier="predict"`` / ``"keep"`` override that. A model with several heads (DeiT's
``head`` and ``head_dist``) has them all predicted or all kept (``models.classifier_tensor_names`` decides
which tensors they are); the GHN decodes them by its own convention (``ghn.plan``). Parameters the GHN has no node for
(e.g. ConvNeXt's layer scale) keep the model's own values; batch-norm running statistics
are buffers and are never predicted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.network import GraphHyperNetwork
from ghnorth_cli.graph.types import ModelGraph
from ghnorth_cli.logs import name_list
from ghnorth_cli.threads import intra_op_threads

log = logging.getLogger(__name__)

ClassifierMode = Literal["auto", "predict", "keep"]
CLASSIFIER_MODES: tuple[str, ...] = ("auto", "predict", "keep")


@dataclass
class Prediction:
    """What a GHN predicted for a model, and what it left alone."""

    params: dict[str, torch.Tensor]  # predicted parameters, in graph order
    unpredicted: list[str]  # parameters the GHN cannot predict (kept at the model's init), model order
    classifier: list[str]  # the classification layer's parameters
    classifier_predicted: bool
    model_classes: int | None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "graph", "ghn"
    graph: ModelGraph | None = None

    @property
    def kept(self) -> list[str]:
        """Parameters left at the model's init: unpredictable ones and a kept classifier."""
        return self.unpredicted + ([] if self.classifier_predicted else self.classifier)


def as_ghn(ghn: GraphHyperNetwork | str | Path | None, *,
           device: torch.device | str | None = None) -> GraphHyperNetwork:
    """A loaded GHN: an instance (moved to ``device`` if given), or a registry name, path or URL."""
    if isinstance(ghn, GraphHyperNetwork):
        return ghn if device is None else ghn.to(device)
    from ghnorth_cli.ghn.registry import load_pretrained

    return load_pretrained(None if ghn is None else str(ghn), device=str(device or "cpu"))


def _decide_classifier(mode: str, *, ghn_classes: int, model_classes: int | None) -> bool:
    if mode not in CLASSIFIER_MODES:
        raise GhnorthError(f"classifier mode must be one of {', '.join(CLASSIFIER_MODES)}, got {mode!r}")
    if mode == "auto":
        return model_classes == ghn_classes
    return mode == "predict"


def predict(model: nn.Module, ghn: GraphHyperNetwork | str | Path | None = None, *, img_size: int = 224,
            classifier: ClassifierMode = "auto", graph: ModelGraph | None = None, inplace: bool = False,
            device: torch.device | str | None = None, threads: int | None = 1,
            generator: torch.Generator | None = None) -> Prediction:
    """Predict ``model``'s parameters with a GHN-2 or GHN-3 (an instance, registry name, path or URL;
    the family comes from the file).

    ``graph`` defaults to the model's captured graph at ``img_size``. With ``inplace`` the
    predictions are written straight into the model's parameters (no extra copy) and
    ``params`` holds those parameters (should the GHN fail midway, some may already be written);
    otherwise the model is left exactly as it was, on success and on error: capture swaps no
    tensor of it for good (see ``graph.trace``). A parameter used at several places (a module
    applied twice, a module shared between blocks, tied weights) has a graph node at each use and
    is predicted once, from the first. ``threads``:
    intra-op CPU threads while predicting (default 1: the work is a long chain of small ops
    and memory copies, which extra threads slow down on a busy machine; None keeps torch's).
    ``generator`` draws what the GHN draws at random (a GHN-3: a ViT's class-token row; default
    seeded with 0, see :meth:`~ghnorth_cli.ghn.network.GraphHyperNetwork.predict`).
    """
    with intra_op_threads(threads):
        return _predict(model, as_ghn(ghn, device=device), img_size=img_size, classifier=classifier,
                        graph=graph, inplace=inplace, generator=generator)


def _predict(model: nn.Module, ghn: GraphHyperNetwork, *, img_size: int, classifier: str, graph: ModelGraph | None,
             inplace: bool, generator: torch.Generator | None = None) -> Prediction:
    params = dict(model.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    start = time.perf_counter()
    if graph is None:
        graph = ghn.capture_graph(model, img_size=img_size)
    captured = time.perf_counter()
    from ghnorth_cli.models import classifier_tensor_names

    cls_names = [n for n in classifier_tensor_names(model) if n in shapes]  # every head, kept or predicted together
    model_classes = shapes[cls_names[0]][0] if cls_names else None
    predict_cls = _decide_classifier(classifier, ghn_classes=ghn.config.num_classes, model_classes=model_classes)
    skip = () if predict_cls else cls_names
    out = {name: p.data for name, p in params.items()} if inplace else None
    predicted = ghn.predict(graph, shapes, out=out, skip=skip, generator=generator)
    done = time.perf_counter()
    unpredicted = [n for n in params if n not in predicted and n not in skip]
    if unpredicted:
        log.warning("%d parameter tensor(s) the GHN cannot predict keep the model's init: %s",
                    len(unpredicted), name_list(unpredicted, logger=log))
    return Prediction(params=predicted, unpredicted=unpredicted, classifier=cls_names,
                      classifier_predicted=predict_cls and bool(cls_names), model_classes=model_classes,
                      timings={"graph": captured - start, "ghn": done - captured}, graph=graph)


def create_predicted_model(spec, ghn: GraphHyperNetwork, *, seed: int = 0, classifier: ClassifierMode = "auto",
                           threads: int | None = 1,
                           generator: torch.Generator | None = None) -> tuple[nn.Module, Prediction]:
    """Build ``spec``'s model (seeded init) and predict its parameters in place with ``ghn``.

    The result equals ``predict(create_model(spec, seed=seed), ghn, inplace=True, ...)``, faster:
    the graph is captured from a ``meta``-device build, and the parameters the GHN overwrites are
    never initialized (:func:`ghnorth_cli.skip_init.create_model_skipping`); the ones it keeps get
    exactly the values of the full build. Returns ``(model, prediction)``.
    """
    from ghnorth_cli.graph.errors import GraphCaptureError
    from ghnorth_cli.models import classifier_tensor_names, create_model
    from ghnorth_cli.skip_init import create_model_skipping

    if classifier == "keep" or (classifier == "auto" and spec.num_classes != ghn.config.num_classes):
        # A kept classifier is usually initialized last, after every other random draw: its
        # exact values need them all, so the full build is as fast.
        model = create_model(spec, seed=seed)
        return model, predict(model, ghn, img_size=spec.img_size, classifier=classifier, inplace=True,
                              threads=threads, generator=generator)
    captured: dict[str, object] = {}

    def overwritten(meta_model: nn.Module) -> set[str]:
        start = time.perf_counter()
        try:
            graph = ghn.capture_graph(meta_model, img_size=spec.img_size)
        except GraphCaptureError:
            return set()  # capture it from the real model below, where the error is reported
        captured.update(graph=graph, seconds=time.perf_counter() - start)
        shapes = {n: tuple(p.shape) for n, p in meta_model.named_parameters()}
        cls_names = [n for n in classifier_tensor_names(meta_model) if n in shapes]
        model_classes = shapes[cls_names[0]][0] if cls_names else None
        skip = () if _decide_classifier(classifier, ghn_classes=ghn.config.num_classes,
                                        model_classes=model_classes) else cls_names
        return {t.name for t in ghn.plan(graph, shapes).targets} - set(skip)

    with intra_op_threads(threads):
        model, skipped = create_model_skipping(spec, seed=seed, overwritten=overwritten)
        result = _predict(model, ghn, img_size=spec.img_size, classifier=classifier, graph=captured.get("graph"),
                          inplace=True, generator=generator)
        if not skipped <= set(result.params):  # never expected: a plan that differs from the prediction
            model = create_model(spec, seed=seed)
            result = _predict(model, ghn, img_size=spec.img_size, classifier=classifier, graph=None, inplace=True,
                              generator=generator)
    if "seconds" in captured:
        result.timings["graph"] = captured["seconds"]
    return model, result


def predict_parameters(model: nn.Module, ghn: GraphHyperNetwork | str | Path | None = None,
                       **kwargs) -> dict[str, torch.Tensor]:
    """``{parameter name: tensor}`` predicted for ``model``; keyword arguments as :func:`predict`."""
    return predict(model, ghn, **kwargs).params


@torch.no_grad()
def load_prediction(model: nn.Module, params: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy predicted tensors into ``model``'s parameters (dtype and device converted).

    Returns the names loaded. Raises :class:`GhnorthError` for a name the model lacks or a
    shape that differs, before changing anything.
    """
    own = dict(model.named_parameters())
    for name, value in params.items():
        if name not in own:
            raise GhnorthError(f"prediction has {name!r}, which the model does not have")
        if tuple(own[name].shape) != tuple(value.shape):
            raise GhnorthError(f"prediction for {name!r} has shape {list(value.shape)}, "
                               f"the model's is {list(own[name].shape)}")
    for name, value in params.items():
        if value is not own[name] and value.data_ptr() != own[name].data_ptr():
            own[name].copy_(value)
    return list(params)
