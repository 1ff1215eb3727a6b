"""Graph capture reproduces the reference GHN-2 graphs (../shared/fixtures/ghn2-parity/graphs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from ghnorth_cli.graph import ModelGraph, capture_graph

_GRAPHS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ghn2-parity" / "graphs"
CASES = sorted(p.stem for p in _GRAPHS.glob("*.json")) or ["tv_resnet18"]


def fixture_model(case: str) -> tuple[torch.nn.Module, int]:
    """The model of a parity case and the image size its graph was built at."""
    if case == "tv_resnet18_cifar10":
        from ghnorth_cli.models import adapt_small_input

        model = torchvision.models.resnet18(num_classes=10)
        assert adapt_small_input(model)
        assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, torch.nn.Identity)
        return model, 32
    name = case.removeprefix("tv_")
    with torch.device("meta"):  # only the architecture matters for the graph
        return torchvision.models.get_model(name), 224


def edge_set(graph: ModelGraph) -> set[tuple[int, int, int]]:
    return {tuple(row) for row in graph.edges.tolist()}


@pytest.mark.parametrize("case", CASES)
def test_graph_matches_reference(case: str, parity_dir: Path) -> None:
    expected = ModelGraph.from_json(json.loads((parity_dir / "graphs" / f"{case}.json").read_text()))
    model, img_size = fixture_model(case)

    graph = capture_graph(model, img_size=img_size, ve_cutoff=50)

    assert graph.node_types == expected.node_types
    assert graph.param_nodes == expected.param_nodes
    assert edge_set(graph) == edge_set(expected)
    assert len(graph.edges) == len(expected.edges)  # no duplicate rows


def test_no_virtual_edges_keeps_only_real_edges(parity_dir: Path) -> None:
    expected = ModelGraph.from_json(json.loads((parity_dir / "graphs" / "tv_resnet18.json").read_text()))
    model, img_size = fixture_model("tv_resnet18")

    graph = capture_graph(model, img_size=img_size, ve_cutoff=1)

    real = {e for e in edge_set(expected) if e[2] == 1}
    assert edge_set(graph) == real
    assert graph.node_types == expected.node_types
