"""Architecture embeddings from a GHN-2 (``ghnorth embed``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ghnorth_cli.embedding import embed_graph, graph_embedding, node_embeddings
from ghnorth_cli.graph.types import ModelGraph

REFERENCE_MEANS = Path(__file__).parent / "data" / "ghn2_random_imagenet_mean_embeddings.json"


@pytest.fixture(scope="module")
def ghn(parity_dir):
    from ghnorth_cli.ghn.registry import load_pretrained

    return load_pretrained(str(parity_dir / "ghn2_random_imagenet.pt"))


def _fixture_graph(parity_dir, case: str) -> ModelGraph:
    return ModelGraph.from_json(json.loads((parity_dir / "graphs" / f"{case}.json").read_text()))


@pytest.mark.parametrize("case", ["tv_resnet18", "tv_convnext_tiny"])
def test_mean_embedding_matches_the_reference_implementation(ghn, parity_dir, case):
    expected = torch.tensor(json.loads(REFERENCE_MEANS.read_text())["mean_embedding"][case])
    vector = graph_embedding(ghn, _fixture_graph(parity_dir, case))
    assert vector.shape == (ghn.config.hid,)
    torch.testing.assert_close(vector, expected, atol=1e-5, rtol=0)


def test_embedding_is_the_mean_of_node_embeddings_and_deterministic(ghn, parity_dir):
    graph = _fixture_graph(parity_dir, "tv_resnet18")
    nodes = node_embeddings(ghn, graph)
    assert nodes.shape == (graph.n_nodes, ghn.config.hid)
    again = embed_graph(ghn, graph, name="r18")  # a second, independent pass
    assert again.vector == [float(v) for v in nodes.mean(0)]
    assert again.n_nodes == graph.n_nodes and again.to_dict()["name"] == "r18"


def test_different_architectures_land_apart(ghn, parity_dir):
    r18 = graph_embedding(ghn, _fixture_graph(parity_dir, "tv_resnet18"))
    cnx = graph_embedding(ghn, _fixture_graph(parity_dir, "tv_convnext_tiny"))
    assert (r18 - cnx).norm() > 0.1


def test_embed_command_model_and_saved_graph_agree_and_reruns_are_identical(cli, parity_dir, tmp_path):
    ghn_file = parity_dir / "ghn2_random_imagenet.pt"
    archs = tmp_path / "archs.txt"
    archs.write_text("# models to embed\n\ntorchvision:resnet18  # the same net as the fixture graph\n")
    args = ["embed", "--ghn", ghn_file, "--arch-file", archs, "--graph", parity_dir / "graphs" / "tv_resnet18.json"]
    result = cli(*args, "-o", tmp_path / "a.json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["format"] == "ghnorth.embeddings" and doc["dim"] == 32 and "mean" in doc["pooling"]
    assert [m["name"] for m in doc["models"]] == ["torchvision:resnet18", "tv_resnet18"]
    assert doc["models"][0]["arch"] == "torchvision:resnet18" and doc["models"][0]["n_nodes"] == 53
    assert len(doc["models"][0]["embedding"]) == 32
    torch.testing.assert_close(torch.tensor(doc["models"][0]["embedding"]),
                               torch.tensor(doc["models"][1]["embedding"]), atol=1e-6, rtol=0)
    assert cli(*args, "-o", tmp_path / "b.json").exit_code == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_embed_command_errors_are_one_line(cli, parity_dir, tmp_path):
    nothing = cli("embed", "--ghn", parity_dir / "ghn2_random_imagenet.pt", "-o", tmp_path / "e.json")
    assert nothing.exit_code == 1
    assert nothing.stderr.strip() == "ghnorth: error: nothing to embed: give --arch, --arch-file, --graph or --heldout"
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    bad = cli("embed", "--ghn", bogus, "--graph", parity_dir / "graphs" / "tv_resnet18.json", "-o", tmp_path / "e.json")
    assert bad.exit_code == 1 and bad.stderr.startswith("ghnorth: error: ") and len(bad.stderr.splitlines()) == 1
    assert not (tmp_path / "e.json").exists()


def test_embed_heldout_architectures_of_a_space(cli, parity_dir, tmp_path):
    archspace = pytest.importorskip("ghnorth_cli.archspace")
    expected = [s.label for s in archspace.heldout_archs(archspace.get_space("tiny"), count=2)]
    out = tmp_path / "held.json"
    result = cli("embed", "--ghn", parity_dir / "ghn2_random_cifar10.pt", "--heldout", "tiny:2", "-o", out)
    assert result.exit_code == 0, result.stderr
    models = json.loads(out.read_text())["models"]
    assert [m["name"] for m in models] == expected
    assert all(m["heldout"] == "tiny:2" and m["img_size"] == 32 and m["num_classes"] == 10 for m in models)
    bad = cli("embed", "--ghn", parity_dir / "ghn2_random_cifar10.pt", "--heldout", "tiny", "-o", out)
    assert bad.exit_code == 1 and "SPACE:N" in bad.stderr
