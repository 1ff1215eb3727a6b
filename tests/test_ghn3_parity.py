"""GHN-3 parity with the reference implementation on ../shared/fixtures/ghn3-parity (see its README).

The fixture GHN (``ghn3tm8_random.pt``, the released GHN-3-T file format with random weights) is
read by ghnorth's own loader. Every predicted tensor must match the reference's fingerprint
(1e-5), with the same tensors left unpredicted; ViT's position embedding is compared on its
deterministic rows 1.. and its class-token row (drawn at random by the reference) on its form.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from test_ghn_parity import assert_fingerprint

from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.ghn3 import CLASS_TOKEN_STD, GHN3
from ghnorth_cli.ghn.io import load_ghn
from ghnorth_cli.ghn.predict import predict
from ghnorth_cli.graph import ModelGraph, capture_graph
from ghnorth_cli.models import create_model, resolve_spec

CASES = ("tv_resnet18", "tv_resnet50", "tv_convnext_tiny", "tv_mobilenet_v2", "tv_efficientnet_b0",
         "tv_vit_b_16", "tv_swin_t", "tv_densenet121")
POS_EMBEDDING = "encoder.pos_embedding"


@lru_cache(maxsize=1)
def _ghn(path: Path) -> GHN3:
    ghn = load_ghn(path)
    assert isinstance(ghn, GHN3)
    return ghn


def _case(parity_dir: Path, case: str) -> tuple[dict, dict]:
    graph = json.loads((parity_dir / "graphs" / f"{case}.json").read_text())
    expected = json.loads((parity_dir / "predictions" / f"{case}.json").read_text())
    return graph, expected


def _model(case: str) -> torch.nn.Module:
    # create_model seeds with manual_seed(seed), as the fixtures' torch.manual_seed(0)
    return create_model(resolve_spec(f"torchvision:{case.removeprefix('tv_')}", num_classes=1000, img_size=224),
                        seed=0)


def assert_matches_reference(model: torch.nn.Module, predicted: dict[str, torch.Tensor], expected: dict) -> None:
    params = dict(model.named_parameters())
    tensors = expected["tensors"]
    assert sorted(params) == sorted(tensors), "model parameters differ from the fixture's"
    for name, ref in tensors.items():
        assert (name in predicted) == ref["changed_by_ghn"], f"{name}: predicted={name in predicted}"
        value = predicted[name] if name in predicted else params[name]
        if name == POS_EMBEDDING:
            assert_class_token_row(value)
            assert_fingerprint(name, value[:, 1:], expected["deterministic_slices"][f"{name}[:, 1:]"])
        else:
            assert_fingerprint(name, value, ref)


def assert_class_token_row(pos_embedding: torch.Tensor) -> None:
    """Row 0 is 64 values N(0, 0.02) (the decoded width of GHN-3-T) repeated across the channels."""
    row = pos_embedding[0, 0]
    assert torch.equal(row, row[:64].repeat(len(row) // 64))
    assert 0.5 * CLASS_TOKEN_STD < row[:64].std().item() < 1.5 * CLASS_TOKEN_STD


def test_state_dict_has_the_released_keys_and_shapes(ghn3_parity_dir: Path) -> None:
    info = json.loads((ghn3_parity_dir / "ghn3tm8_random.json").read_text())
    config = GHNConfig(max_shape=(64, 64, 16, 16), num_classes=1000, hid=64, hypernet="transformer",
                       weight_norm=True, ve=True, layernorm=True, layers=3, heads=8)
    state = GHN3(config).state_dict()
    assert list(state) == info["order"]
    assert {k: list(v.shape) for k, v in state.items()} == {k: t["shape"] for k, t in info["tensors"].items()}


@pytest.mark.parametrize("case", CASES)
def test_parity_on_reference_graphs(ghn3_parity_dir: Path, case: str) -> None:
    graph_json, expected = _case(ghn3_parity_dir, case)
    ghn = _ghn(ghn3_parity_dir / "ghn3tm8_random.pt")
    model = _model(case)
    result = predict(model, ghn, graph=ModelGraph.from_json(graph_json), classifier="predict")
    assert_matches_reference(model, result.params, expected)


@pytest.mark.parametrize("case", CASES)
def test_graph_matches_reference(ghn3_parity_dir: Path, case: str) -> None:
    graph_json, _ = _case(ghn3_parity_dir, case)
    expected = ModelGraph.from_json(graph_json)
    with torch.device("meta"):  # only the architecture matters for the graph
        model = _model_arch(case)
    graph = capture_graph(model, img_size=224, ve_cutoff=50, ghn3=True)
    assert graph.node_types == expected.node_types
    assert graph.param_nodes == expected.param_nodes
    assert {tuple(e) for e in graph.edges.tolist()} == {tuple(e) for e in expected.edges.tolist()}
    assert len(graph.edges) == len(expected.edges)


def _model_arch(case: str) -> torch.nn.Module:
    import torchvision

    return torchvision.models.get_model(case.removeprefix("tv_"))


@pytest.mark.parametrize("case", ["tv_resnet18", "tv_efficientnet_b0", "tv_vit_b_16", "tv_swin_t"])
def test_parity_end_to_end(ghn3_parity_dir: Path, case: str) -> None:
    """Graph captured by ghnorth, GHN read from the released format, prediction written into the model."""
    _, expected = _case(ghn3_parity_dir, case)
    model = _model(case)
    result = predict(model, _ghn(ghn3_parity_dir / "ghn3tm8_random.pt"), inplace=True)
    assert result.classifier_predicted
    assert_matches_reference(model, result.params, expected)


def test_class_token_row_comes_from_the_generator(ghn3_parity_dir: Path) -> None:
    graph_json, _ = _case(ghn3_parity_dir, "tv_vit_b_16")
    ghn, graph = _ghn(ghn3_parity_dir / "ghn3tm8_random.pt"), ModelGraph.from_json(graph_json)
    shapes = {POS_EMBEDDING: (1, 197, 768)}
    default = ghn.predict(graph, shapes)[POS_EMBEDDING]
    again = ghn.predict(graph, shapes)[POS_EMBEDDING]
    other = ghn.predict(graph, shapes, generator=torch.Generator().manual_seed(1))[POS_EMBEDDING]
    assert torch.equal(default, again)  # no global random state involved
    assert torch.equal(default[:, 1:], other[:, 1:]) and not torch.equal(default[:, 0], other[:, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["tv_resnet50", "tv_vit_b_16", "tv_swin_t"])
def test_parity_on_cuda(ghn3_parity_dir: Path, case: str) -> None:
    graph_json, expected = _case(ghn3_parity_dir, case)
    ghn = load_ghn(ghn3_parity_dir / "ghn3tm8_random.pt", device="cuda")
    model = _model(case)
    result = predict(model, ghn, graph=ModelGraph.from_json(graph_json), classifier="predict", device="cuda")
    assert all(t.device.type == "cuda" for t in result.params.values())
    assert_matches_reference(model, {k: v.cpu() for k, v in result.params.items()}, expected)
