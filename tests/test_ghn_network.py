"""Unit tests of the GHN-2's parts against plain, slow restatements of what they compute."""

from __future__ import annotations

import math

import pytest
import torch

from ghnorth_cli.ghn.config import GHNConfig, GHNConfigError
from ghnorth_cli.ghn.decoder import ConvDecoder
from ghnorth_cli.ghn.fit import crop_to_shape, fit_to_shape, normalize, tile_to_shape, weight_gain
from ghnorth_cli.ghn.gnn import GatedGNN, build_schedule
from ghnorth_cli.ghn.network import GHN2
from ghnorth_cli.ghn.plan import GroupKey, Kind, capped, group_key, plan_prediction
from ghnorth_cli.ghn.shape_encoder import ShapeEncoder, as_4d, channel_vocabulary
from ghnorth_cli.graph.types import ModelGraph, ParamNode

MAX = (64, 64, 16, 16)


# --- tiling and normalization -------------------------------------------------------------------


def _tile_by_repeat(w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Slice, then repeat one axis at a time (the straightforward way)."""
    w = crop_to_shape(w, shape)
    for dim, n in enumerate(shape):
        if n > w.shape[dim]:
            reps = [1] * w.dim()
            reps[dim] = math.ceil(n / w.shape[dim])
            w = w.repeat(reps).narrow(dim, 0, n)
    return w


@pytest.mark.parametrize("src,shape", [
    ((64, 64, 3, 3), (512, 256, 3, 3)),
    ((64, 64, 3, 3), (96, 3, 3, 3)),
    ((64, 1, 7, 7), (96, 1, 7, 7)),
    ((64, 64, 1, 1), (1000, 768)),
    ((10, 64), (100, 512)),
    ((64,), (96,)),
    ((64,), (17,)),
    ((16, 16, 1, 1), (40, 24)),
    ((4, 4, 2, 2), (9, 6, 3, 5)),
    ((10, 64), (10, 512, 1, 1)),
])
def test_fit_to_shape_equals_repeat_and_slice(src, shape) -> None:
    w = torch.randn(src)
    expected = _tile_by_repeat(w, shape)
    got = fit_to_shape(w, shape)
    assert got.shape == shape and got.is_contiguous()
    assert torch.equal(got, expected)
    # channel c takes decoded channel c mod n
    if len(shape) >= 2 and len(src) >= 2:
        assert torch.equal(got[shape[0] - 1, shape[1] - 1], expected[shape[0] - 1, shape[1] - 1])


@pytest.mark.parametrize("shape", [(96, 32, 3, 3), (128, 64, 1, 1), (100, 48)])
def test_tile_into_an_existing_tensor(shape) -> None:
    w = torch.randn(64, 64, 3, 3)[: shape[0], : shape[1]]
    w = crop_to_shape(torch.randn(64, 64, 3, 3), shape)
    out = torch.empty(shape, dtype=torch.float64)
    result = tile_to_shape(w, shape, out=out)
    assert result is out
    torch.testing.assert_close(out, _tile_by_repeat(w, shape).double())


def test_weight_gain_is_fan_in() -> None:
    assert weight_gain((64, 32, 3, 3)) == pytest.approx(math.sqrt(2 / (32 * 9)))
    assert weight_gain((1000, 512)) == pytest.approx(math.sqrt(2 / 512))
    assert weight_gain((96, 1, 7, 7)) == pytest.approx(math.sqrt(1 / 49))  # depthwise: no ReLU gain
    assert weight_gain((64, 64, 1, 7)) == pytest.approx(math.sqrt(1 / 448))  # asymmetric kernel
    assert weight_gain((1, 768, 14, 14)) is None  # positional encoding: left as is


def test_normalize_vectors_and_commutes_with_tiling() -> None:
    w = torch.randn(64) * 5
    scale = normalize(w, shape=(64,), is_weight=True)
    bias = normalize(w, shape=(64,), is_weight=False)
    assert scale.min() > 0 and scale.max() < 2 and bias.abs().max() < 1
    small = torch.randn(64, 64, 3, 3)
    shape = (256, 128, 3, 3)
    before = tile_to_shape(normalize(small, shape=shape, is_weight=True), shape)
    after = normalize(fit_to_shape(small, shape), shape=shape, is_weight=True)
    assert torch.equal(before, after)


# --- grouping ------------------------------------------------------------------------------------


def test_capped_sizes() -> None:
    assert [capped(n, 64) for n in (1, 3, 9, 16, 24, 31, 32, 64, 96, 2048)] == [1, 4, 12, 16, 64, 31, 64, 64, 64, 64]
    assert capped(3, 16) == 4 and capped(7, 16) == 7 and capped(8, 16) == 16 and capped(1, 16) == 1


def test_group_keys() -> None:
    def key(shape, **kw):
        return group_key(shape, max_shape=MAX, last_weight=kw.get("w", False), last_bias=kw.get("b", False))

    assert key((64, 3, 7, 7)) == GroupKey(Kind.CONV, (64, 4, 7, 7))
    assert key((384, 96)) == GroupKey(Kind.CONV, (64, 64, 1, 1))
    assert key((1000, 512), w=True) == GroupKey(Kind.CLASSIFIER, (64, 64, 1, 1))
    assert key((1000,), b=True) == GroupKey(Kind.CLASSIFIER_BIAS, (64,))
    assert key((1000,), w=True) == GroupKey(Kind.VECTOR, (64,))  # a 1-D "last weight" is a plain vector
    assert key((16,)) == GroupKey(Kind.VECTOR, (16,))
    assert key((1, 197, 768)) == GroupKey(Kind.TENSOR_3D, (1, 64, 16))


def _graph(nodes: list[ParamNode], n_nodes: int, edges: list[tuple[int, int, int]]) -> ModelGraph:
    types = ["conv"] * n_nodes
    types[0] = "input"
    return ModelGraph(node_types=types, param_nodes=nodes, edges=torch.tensor(edges, dtype=torch.long).view(-1, 3))


def test_plan_pairs_norm_weight_and_bias_and_skips_unknown() -> None:
    shapes = {"pos": (1, 5, 8), "conv.weight": (8, 3, 3, 3), "bn.weight": (8,), "bn.bias": (8,),
              "fc.weight": (10, 8), "fc.bias": (10,), "scale": (8, 1, 1)}
    nodes = [ParamNode(0, "pos", "pos_enc", (1, 5, 8)),
             ParamNode(1, "conv.weight", "conv", (8, 3, 3, 3)), ParamNode(2, "bn.weight", "bn", (8,)),
             ParamNode(3, "max_pool", "max_pool", (1, 1, 3, 3)),
             ParamNode(4, "fc.weight", "conv", (10, 8), last_weight=True),
             ParamNode(5, "fc.bias", "bias", (10,), last_bias=True)]
    graph = _graph(nodes, 6, [(0, 1, 1), (1, 2, 1), (2, 3, 1), (3, 4, 1), (4, 5, 1)])
    graph.node_types[0] = "pos_enc"
    plan = plan_prediction(graph, shapes, max_shape=MAX)
    by_name = {t.name: t for t in plan.targets}
    # "scale" has no node; "pos" has one but a position embedding would come out constant
    assert set(by_name) == {"conv.weight", "bn.weight", "bn.bias", "fc.weight", "fc.bias"}
    assert plan.node_shapes[0] == (1, 5, 8)
    assert by_name["bn.bias"].node == by_name["bn.weight"].node == 2
    assert (by_name["bn.weight"].row, by_name["bn.bias"].row) == (0, 1)
    assert plan.node_shapes[3] == (1, 1, 3, 3) and plan.node_shapes[5] == (10,)
    kinds = {t.name: k.kind for k, group in plan.groups.items() for t in group}
    assert kinds["fc.weight"] is Kind.CLASSIFIER and kinds["fc.bias"] is Kind.CLASSIFIER_BIAS


# --- shape encoder -------------------------------------------------------------------------------


def test_shape_encoder_lookup() -> None:
    enc = ShapeEncoder(hid=32, num_classes=1000, max_kernel=16)
    vocab = list(channel_vocabulary(1000))
    idx = enc.shape_indices([(64, 3, 3, 3), (1000, 2048), (6, 2, 2, 2), (0, 100000, 17, 0), None, (5, 1, 1)])
    c, s = enc.n_channels, enc.n_spatial
    assert idx[0].tolist()[:2] == [vocab.index(64), vocab.index(3)]
    assert idx[1, 0] == vocab.index(1000)  # the class count is in the vocabulary
    assert idx[2, 0] == vocab.index(8)  # 4-7 channels count as 8
    assert idx[2, 1] == vocab.index(1)  # 2 is as close to 1 as to 3: the smaller wins
    assert idx[2, 2] == idx[0, 2]  # a 2x2 kernel counts as 3x3
    assert idx[3].tolist() == [c - 1, c - 1, s - 1, s - 1]  # zero or beyond the vocabulary: the largest
    assert idx[4].tolist() == [c, c, s, s]  # no shape: the reserved index
    assert as_4d((5, 1, 1)) == (5, 1, 1, 1) and as_4d((1, 197, 768)) == (1, 768, 14, 14)
    assert enc(idx).shape == (6, 32)


# --- gated GNN -----------------------------------------------------------------------------------


def _sequential_gnn(gnn: GatedGNN, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """One node at a time, every message computed from scratch (the definition)."""
    h = x.clone()
    n_steps = int(edges[:, 1].max()) + 1
    for receive_col, send_col, nodes in ((1, 0, range(n_steps)), (0, 1, reversed(range(n_steps)))):
        for v in nodes:
            m = torch.zeros(1, gnn.hid)
            for e in edges:
                if int(e[receive_col]) != v:
                    continue
                u, dist = int(e[send_col]), int(e[2])
                if dist == 1:
                    m = m + gnn.mlp(h[u : u + 1])
                if gnn.ve:
                    m = m + gnn.mlp_ve(h[u : u + 1]) / dist
            h[v : v + 1] = gnn.gru(m, h[v : v + 1])
    return h


@pytest.mark.parametrize("ve", [True, False])
def test_batched_gnn_equals_sequential_updates(ve: bool) -> None:
    g = torch.Generator().manual_seed(0)
    n = 14
    edges = [(0, 1, 1)] + [(i, i + 2, 1) for i in range(n - 2)] + [(i, i + 4, 2) for i in range(n - 4)]  # two branches
    edges += [(0, 5, 4), (2, 9, 3), (1, 6, 2), (3, 3, 1), (11, 4, 1), (13, 7, 2), (12, 13, 1)]  # far, self, back
    edges_t = torch.tensor(edges)
    torch.manual_seed(1)
    gnn = GatedGNN(hid=8, ve=ve)
    x = torch.randn(n, 8, generator=g)
    with torch.no_grad():
        expected = _sequential_gnn(gnn, x, edges_t)
        got = gnn(x, build_schedule(edges_t, n_nodes=n, ve=ve))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    schedule = build_schedule(edges_t, n_nodes=n, ve=ve)
    assert len(schedule.sweeps[0]) < n  # some nodes were batched


# --- decoder and network -------------------------------------------------------------------------


@pytest.mark.parametrize("key,classifier", [((64, 16, 3, 3), False), ((16, 64, 1, 1), False), ((64, 1, 7, 7), False),
                                             ((64, 4, 5, 5), False), ((10, 16, 1, 1), True)])
def test_sliced_decoding_equals_full_decoding(key, classifier) -> None:
    torch.manual_seed(0)
    dec = ConvDecoder(hid=8, max_shape=(64, 64, 7, 7), num_classes=10)
    x = torch.randn(3, 8)
    with torch.no_grad():
        got = dec(x, key, classifier=classifier)
        maps = dec.fc(x).view(3, -1, 7, 7)[:, :, : key[2], : key[3]]
        full = dec.conv(maps).view(3, 64, 64, key[2], key[3])
        n_out = 64 if classifier else key[0]
        expected = full[:, :n_out, : key[1]]
        if classifier:
            expected = dec.class_layer_predictor(expected[..., 0])[..., 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_config_validation() -> None:
    cfg = GHNConfig.from_dict({"max_shape": (64, 64, 16, 16), "num_classes": 1000, "ve": True, "debug_level": 1})
    assert cfg.ve_cutoff == 50 and GHNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(GHNConfigError, match="unknown GHN config keys: colour"):
        GHNConfig.from_dict({"max_shape": (8, 8, 3, 3), "num_classes": 10, "colour": 1})
    with pytest.raises(GHNConfigError, match="implements GHN-2"):
        GHNConfig(max_shape=(8, 8, 3, 3), num_classes=10, decoder="mlp")
    with pytest.raises(GHNConfigError, match="square"):
        GHNConfig(max_shape=(8, 8, 3, 5), num_classes=10)


def test_network_state_dict_keys_match_the_released_layout() -> None:
    ghn = GHN2(GHNConfig(max_shape=(64, 64, 16, 16), num_classes=1000, ve=True, layernorm=True))
    keys = set(ghn.state_dict())
    assert {"ln.weight", "embed.weight", "shape_enc.embed_channel.weight", "gnn.mlp_ve.fc.2.bias",
            "gnn.gru.weight_hh", "decoder.fc.0.weight", "decoder.conv.2.weight",
            "decoder.class_layer_predictor.1.weight", "decoder_1d.fc.2.weight", "bias_class.1.bias"} <= keys
    assert ghn.state_dict()["shape_enc.embed_channel.weight"].shape == (392, 8)
    assert ghn.state_dict()["shape_enc.embed_spatial.weight"].shape == (11, 8)
