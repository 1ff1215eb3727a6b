"""GHN-3's parts against their plain formulations, and the graph rules GHN-3 reads (no fixtures needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from ghn_helpers import TINY_GHN3_CONFIG, tiny_ghn3

from ghnorth_cli.ghn.decoder import ConvDecoder3
from ghnorth_cli.ghn.fit import centred_window, crop_to_shape
from ghnorth_cli.ghn.graphormer import EdgeAttention, dense_distances, structure_indices
from ghnorth_cli.graph import capture_graph


def test_edge_bias_projects_every_pair_like_the_dense_formulation() -> None:
    torch.manual_seed(0)
    attn = EdgeAttention(16, heads=4, edge_bias=True)
    dist = torch.randint(0, 6, (9, 9)).triu(1)  # a DAG's shortest paths: forward only
    pairs = torch.stack([dist, dist.t()], dim=-1) + 2  # (n, n, 2)
    dense = attn.proj_e(attn.edge_embed(pairs).flatten(-2)).permute(2, 0, 1)  # the reference's (heads, n, n)
    torch.testing.assert_close(attn.edge_bias(dist), dense)


def test_structure_indices_count_real_edges_and_input_distances() -> None:
    edges = torch.tensor([[0, 1, 1], [1, 2, 1], [0, 2, 2], [0, 3, 1], [3, 2, 1]])
    in_degree, out_degree, input_dist = structure_indices(dense_distances(edges, n_nodes=4))
    assert in_degree.tolist() == [0, 1, 2, 1] and out_degree.tolist() == [2, 1, 0, 1]
    assert input_dist.tolist() == [0, 1, 2, 1]


def _full_decode(decoder: ConvDecoder3, x: torch.Tensor, key, *, classifier: bool = False) -> torch.Tensor:
    """The reference's order of operations: the whole map, centre crop, every channel pair, then slicing."""
    out_ch, in_ch, kh, kw = decoder.max_shape
    k_out, k_in, k_h, k_w = key
    maps = decoder.fc(x).view(len(x), -1, kh, kw)[:, :, centred_window(kh, k_h), centred_window(kw, k_w)]
    w = decoder.conv(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    w = w.reshape(len(x), out_ch, in_ch, *w.shape[-2:])[:, :, :k_in]
    if min(k_h, k_w) > min(w.shape[-2:]):
        w = torch.stack([F.interpolate(wi, (k_h, k_w), mode="bilinear") for wi in w])
    if classifier:
        c = w.shape[-1] // 2
        return decoder.class_layer_predictor(w[:, :, :, c, c].permute(0, 2, 1)).permute(0, 2, 1)
    return w[:, :k_out]


@pytest.mark.parametrize("key", [(8, 4, 3, 3), (4, 8, 1, 1), (8, 8, 7, 7), (2, 3, 1, 7), (1, 8, 2, 2)])
def test_conv_decoder3_computes_only_what_the_key_needs(key) -> None:
    torch.manual_seed(0)
    decoder = ConvDecoder3(hid=8, max_shape=(8, 8, 5, 5), num_classes=10)
    x = torch.randn(3, 8)
    torch.testing.assert_close(decoder(x, key), _full_decode(decoder, x, key))


def test_conv_decoder3_classifier() -> None:
    torch.manual_seed(0)
    decoder = ConvDecoder3(hid=8, max_shape=(8, 8, 5, 5), num_classes=10)
    x = torch.randn(2, 8)
    out = decoder(x, (8, 6, 1, 1), classifier=True)
    assert out.shape == (2, 10, 6)
    torch.testing.assert_close(out, _full_decode(decoder, x, (8, 6, 1, 1), classifier=True))


def test_centred_crop() -> None:
    w = torch.arange(5 * 5.0).view(1, 1, 5, 5)
    assert crop_to_shape(w, (1, 1, 3, 3), centred=True).flatten().tolist() == [6, 7, 8, 11, 12, 13, 16, 17, 18]
    assert crop_to_shape(w, (1, 1), centred=True).item() == 12  # a kernel read at its centre
    assert crop_to_shape(w, (1, 1, 3, 3)).flatten().tolist() == [0, 1, 2, 5, 6, 7, 10, 11, 12]  # GHN-2: corner


def test_vit_position_embedding_rows() -> None:
    """Row 0 from the generator (tiled across channels), rows 1.. the decoded grid, cut to the tokens."""
    with torch.device("meta"):
        model = torchvision.models.vit_b_32()
    ghn = tiny_ghn3()
    graph = ghn.capture_graph(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    pos = ghn.predict(graph, shapes, generator=torch.Generator().manual_seed(7))["encoder.pos_embedding"]
    width = TINY_GHN3_CONFIG.max_shape[1]
    assert pos.shape == (1, 50, 768)
    expected_row = torch.normal(0.0, 0.02, size=(width,), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(pos[0, 0], expected_row.repeat(768 // width))
    assert "class_token" not in ghn.predict(graph, shapes)


def test_ghn3_graph_rules_on_torchvision_vit() -> None:
    with torch.device("meta"):
        model = torchvision.models.vit_b_32()
    ghn2, ghn3 = capture_graph(model), capture_graph(model, ghn3=True)
    assert "class_token" in {n.param for n in ghn2.param_nodes} and "msa" in ghn2.node_types
    assert "class_token" not in {n.param for n in ghn3.param_nodes} and "msa" not in ghn3.node_types
    pos = next(n for n in ghn3.param_nodes if n.param == "encoder.pos_embedding")
    assert pos.shape == (1, 768, 7, 7)


def test_ghn3_graph_types_an_explicit_softmax_as_attention() -> None:
    with torch.device("meta"):
        model = torchvision.models.swin_t()
    graph = capture_graph(model, ghn3=True)
    assert graph.node_types.count("msa") == 12  # one per block
