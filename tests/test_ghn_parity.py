"""GHN-2 parity with the reference implementation on the shared fixtures (see their README).

Every predicted tensor must match the reference's fingerprint (shape, mean, std, min, max,
sampled values within 1e-5; abs-sum within 1e-4 relative), and the same tensors must be left
unpredicted. First on the fixtures' own graphs (the GHN alone), then end to end with ghnorth's
graph capture and model construction.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from ghnorth_cli.ghn.io import load_ghn
from ghnorth_cli.ghn.predict import predict
from ghnorth_cli.graph.types import ModelGraph
from ghnorth_cli.models import create_model, resolve_spec

ATOL, SUM_RTOL = 1e-5, 1e-4

CASES = {  # case -> (arch, num_classes, img_size)
    "tv_resnet18": ("torchvision:resnet18", 1000, 224),
    "tv_resnet18_cifar10": ("torchvision:resnet18", 10, 32),
    "tv_resnet50": ("torchvision:resnet50", 1000, 224),
    "tv_squeezenet1_0": ("torchvision:squeezenet1_0", 1000, 224),
    "tv_mobilenet_v2": ("torchvision:mobilenet_v2", 1000, 224),
    "tv_convnext_tiny": ("torchvision:convnext_tiny", 1000, 224),
    "tv_densenet121": ("torchvision:densenet121", 1000, 224),
    "tv_efficientnet_v2_s": ("torchvision:efficientnet_v2_s", 1000, 224),
}
LARGE = {"tv_densenet121", "tv_efficientnet_v2_s"}


def _cases(large_too: bool = True):
    return [pytest.param(c, marks=pytest.mark.slow) if c in LARGE else c
            for c in CASES if large_too or c not in LARGE]


@lru_cache(maxsize=2)
def _ghn(path: Path):
    return load_ghn(path)


def _case(parity_dir: Path, case: str) -> tuple[dict, dict]:
    graph = json.loads((parity_dir / "graphs" / f"{case}.json").read_text())
    expected = json.loads((parity_dir / "predictions" / f"{case}.json").read_text())["tensors"]
    return graph, expected


def _model(case: str):
    arch, num_classes, img_size = CASES[case]
    # create_model seeds with manual_seed(seed) like the fixtures' torch.manual_seed(0)
    return create_model(resolve_spec(arch, num_classes=num_classes, img_size=img_size), seed=0)


def assert_matches_reference(model: torch.nn.Module, predicted: dict[str, torch.Tensor], expected: dict) -> None:
    params = dict(model.named_parameters())
    assert sorted(params) == sorted(expected), "model parameters differ from the fixture's"
    for name, ref in expected.items():
        assert (name in predicted) == ref["changed_by_ghn"], f"{name}: predicted={name in predicted}"
        assert_fingerprint(name, predicted[name] if name in predicted else params[name], ref)


def assert_fingerprint(name: str, value: torch.Tensor, ref: dict) -> None:
    """``value`` matches a fixture fingerprint: shape, statistics and sampled values."""
    value = value.detach().double().cpu()
    assert list(value.shape) == ref["shape"], name
    flat = value.flatten()
    stats = {"mean": flat.mean(), "min": flat.min(), "max": flat.max()}
    if flat.numel() > 1:
        stats["std"] = flat.std()
    for key, got in stats.items():
        assert abs(got.item() - ref[key]) <= ATOL, f"{name}.{key}: {got.item()} vs {ref[key]}"
    sampled = flat[torch.tensor(ref["idx"], dtype=torch.long)]
    torch.testing.assert_close(sampled, torch.tensor(ref["values"], dtype=torch.float64), atol=ATOL, rtol=0,
                               msg=lambda m, name=name: f"{name}: {m}")
    assert flat.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=SUM_RTOL, abs=ATOL), name


@pytest.mark.parametrize("case", _cases())
def test_parity_on_reference_graphs(parity_dir: Path, case: str) -> None:
    graph_json, expected = _case(parity_dir, case)
    ghn = _ghn(parity_dir / f"ghn2_random_{graph_json['ghn_config']}.pt")
    model = _model(case)
    result = predict(model, ghn, graph=ModelGraph.from_json(graph_json), classifier="predict")
    assert_matches_reference(model, result.params, expected)


@pytest.mark.parametrize("case", ["tv_resnet18_cifar10", "tv_squeezenet1_0", "tv_convnext_tiny",
                                  pytest.param("tv_mobilenet_v2", marks=pytest.mark.slow)])
def test_parity_end_to_end(parity_dir: Path, case: str) -> None:
    """Graph captured by ghnorth, model built by ghnorth, prediction written into the model."""
    graph_json, expected = _case(parity_dir, case)
    ghn = _ghn(parity_dir / f"ghn2_random_{graph_json['ghn_config']}.pt")
    model = _model(case)
    result = predict(model, ghn, img_size=CASES[case][2], inplace=True)  # auto: the class counts agree
    assert result.classifier_predicted
    for name, tensor in result.params.items():
        assert tensor.data_ptr() == model.get_parameter(name).data_ptr(), "inplace must write into the model"
    assert_matches_reference(model, result.params, expected)


def test_inplace_and_returned_predictions_agree(parity_dir: Path) -> None:
    graph_json, _ = _case(parity_dir, "tv_squeezenet1_0")
    ghn = _ghn(parity_dir / "ghn2_random_imagenet.pt")
    graph = ModelGraph.from_json(graph_json)
    model = _model("tv_squeezenet1_0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    returned = predict(model, ghn, graph=graph).params
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed without inplace"
    predict(model, ghn, graph=graph, inplace=True)
    for name, tensor in returned.items():
        assert torch.equal(model.get_parameter(name), tensor), name
