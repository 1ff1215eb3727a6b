"""Pictures of the GHN's graph: layout, SVG/PNG/DOT/JSON output and the ``ghnorth graph`` command."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from ghnorth_cli.drawing import graph_summary, layout_graph, render_graph
from ghnorth_cli.drawing.style import STYLES, style_key
from ghnorth_cli.graph.types import PRIMITIVES, ModelGraph, ParamNode

SVG = "{http://www.w3.org/2000/svg}"


def _graph(n_nodes: int, edges: list[tuple[int, int, int]], types: list[str] | None = None) -> ModelGraph:
    types = types or ["input"] + ["conv"] * (n_nodes - 1)
    nodes = [ParamNode(index=i, param=f"l{i}.weight", op=t, shape=(4, 4, 3, 3))
             for i, t in enumerate(types) if t == "conv"]
    return ModelGraph(node_types=types, param_nodes=nodes, edges=torch.tensor(edges, dtype=torch.long).reshape(-1, 3))


def _chain(n: int, *, skips: tuple[tuple[int, int], ...] = ()) -> ModelGraph:
    edges = [(i, i + 1, 1) for i in range(n - 1)] + [(s, t, 1) for s, t in skips]
    edges += [(i, i + 2, 2) for i in range(n - 2)]  # virtual edges of length 2
    return _graph(n, edges)


@pytest.fixture(scope="module")
def resnet50(parity_dir) -> ModelGraph:
    return ModelGraph.from_json(json.loads((parity_dir / "graphs" / "tv_resnet50.json").read_text()))


@pytest.fixture(scope="module")
def convnext(parity_dir) -> ModelGraph:
    return ModelGraph.from_json(json.loads((parity_dir / "graphs" / "tv_convnext_tiny.json").read_text()))


def test_every_primitive_has_a_style_and_1x1_convs_are_told_apart():
    assert set(PRIMITIVES) <= set(STYLES)
    assert style_key("conv", (8, 4, 1, 1)) == "conv_1x1"
    assert style_key("conv", (10, 8)) == "conv_1x1"
    assert style_key("conv", (8, 4, 3, 3)) == "conv"
    assert style_key("sep_conv", (8, 1, 3, 3)) == "sep_conv"


def test_ranks_follow_the_longest_path_and_sources_sit_above_their_first_use():
    # 0 -> 1 -> 2 -> 3 and 0 -> 3 (a skip); node 4 is a source used by 3 only (like a position embedding)
    g = _graph(5, [(0, 1, 1), (1, 2, 1), (2, 3, 1), (0, 3, 1), (4, 3, 1)])
    layout = layout_graph(g)
    assert layout.rank.tolist() == [0, 1, 2, 3, 2]
    assert layout.x[4] != layout.x[2]  # two nodes of rank 2 never overlap


def test_long_chains_fold_into_a_snake_of_columns():
    g = _chain(100)
    layout = layout_graph(g, rows=20)
    assert layout.n_columns == 5
    assert layout.column.tolist() == [i // 20 for i in range(100)]
    # even columns read downwards, odd ones upwards: the last node of a column sits beside the next's first
    assert layout.y[19] == layout.y[20] == 19 and layout.y[39] == layout.y[40] == 0
    assert np.all(np.diff(layout.x[layout.column == 1]) == 0)  # a plain chain is a straight column
    default = layout_graph(g)
    assert 1 < default.n_columns < 10
    assert layout_graph(g, rows=20).x.tolist() == layout.x.tolist()  # deterministic


def test_svg_is_well_formed_with_a_legend_entry_per_primitive(resnet50):
    root = ET.fromstring(render_graph(resnet50, "svg", name="resnet50"))
    nodes = root.findall(f".//{SVG}g[@class='node']")
    assert len(nodes) == resnet50.n_nodes
    keys = {n.get("data-key") for n in nodes}
    legend = {e.get("data-key") for e in root.findall(f".//{SVG}g[@class='legend-entry']")}
    assert legend == keys
    assert {t for t in resnet50.node_types} <= {k.replace("conv_1x1", "conv") for k in legend}
    assert all(n.find(f"{SVG}title").text.startswith(f"#{n.get('data-index')} ") for n in nodes)
    counts = graph_summary(resnet50)
    assert len(root.findall(f".//{SVG}path[@class='edge']")) == counts["edges"]
    assert root.findall(f".//{SVG}path[@class='virtual-edge']") == []
    assert f"virtual edges hidden ({counts['virtual_edges']})" in ET.tostring(root, encoding="unicode")


def test_virtual_edges_are_drawn_only_when_asked():
    g = _chain(12)
    shown = ET.fromstring(render_graph(g, "svg", virtual_edges=True))
    virtual = shown.findall(f".//{SVG}path[@class='virtual-edge']")
    assert len(virtual) == 10 and {v.get("data-length") for v in virtual} == {"2"}
    hidden = ET.fromstring(render_graph(g, "svg"))
    assert hidden.findall(f".//{SVG}path[@class='virtual-edge']") == []


def test_png_has_the_png_signature(convnext):
    data = render_graph(convnext, "png", name="convnext_tiny")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_dot_parses_loosely_and_hides_virtual_edges_by_default(resnet50):
    text = render_graph(resnet50, "dot", name="resnet50").decode()
    assert text.startswith('digraph "resnet50" {') and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes = re.findall(r"^\s*n(\d+) \[label=\"(\w+)\", shape=(\w+), fillcolor=\"(#[0-9a-f]{6})\"", text, re.M)
    assert [int(n[0]) for n in nodes] == list(range(resnet50.n_nodes))
    edges = re.findall(r"^\s*n(\d+) -> n(\d+)", text, re.M)
    counts = graph_summary(resnet50)
    assert len(edges) == counts["edges"] and "dashed" not in text
    with_ve = render_graph(resnet50, "dot", virtual_edges=True).decode()
    assert len(re.findall(r"^\s*n\d+ -> n\d+", with_ve, re.M)) == counts["edges"] + counts["virtual_edges"]


def test_json_output_round_trips(resnet50):
    again = ModelGraph.from_json(json.loads(render_graph(resnet50, "json")))
    assert again.node_types == resnet50.node_types
    assert again.param_nodes == resnet50.param_nodes
    assert torch.equal(again.edges, resnet50.edges)


def test_graph_command_writes_svg_and_refuses_unknown_formats(cli, tmp_path):
    out = tmp_path / "vit.svg"
    result = cli("graph", "--arch", "timm:test_vit", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    root = ET.parse(out).getroot()
    legend = {e.get("data-key") for e in root.findall(f".//{SVG}g[@class='legend-entry']")}
    assert {"msa", "pos_enc", "ln", "input"} <= legend
    bad = cli("graph", "--arch", "timm:test_vit", "-o", tmp_path / "vit.txt")
    assert bad.exit_code == 1 and bad.stderr.startswith("ghnorth: error: cannot tell the output format")
    assert not (tmp_path / "vit.txt").exists()


def test_graph_command_json_matches_capture_and_dot_goes_to_stdout(cli, tmp_path):
    from ghnorth_cli.graph.capture import capture_graph
    from ghnorth_cli.models import create_model, resolve_spec

    out = tmp_path / "r18.json"
    assert cli("graph", "-a", "torchvision:resnet18", "--ve-cutoff", "1", "-o", out).exit_code == 0
    expected = capture_graph(create_model(resolve_spec("torchvision:resnet18")), ve_cutoff=1)
    assert json.loads(out.read_text()) == expected.to_json()
    result = cli("graph", "-a", "torchvision:resnet18", "--ve-cutoff", "1", "-o", "-", "--format", "dot")
    assert result.exit_code == 0 and result.stdout.startswith('digraph "torchvision:resnet18"')
