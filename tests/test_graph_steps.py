"""Each step of the graph-capture pipeline on tiny hand-made modules and graphs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.graph import GraphCaptureError, ModelGraph, capture_graph
from ghnorth_cli.graph.attention import mark_attention
from ghnorth_cli.graph.build import build_graph
from ghnorth_cli.graph.digraph import DiGraph, Node
from ghnorth_cli.graph.filter import filter_graph, filter_pass
from ghnorth_cli.graph.primitives import op_name, op_primitive, param_primitive
from ghnorth_cli.graph.rewire import (
    add_input,
    drop_data_free_ops,
    split_pos_enc,
    straighten_weights,
    topological_order,
)
from ghnorth_cli.graph.trace import first_tensor, trace_model
from ghnorth_cli.graph.virtual_edges import edge_table


def make_graph(names: list[str], edges: list[tuple[int, int]], **primitives: str | None) -> DiGraph:
    """A DiGraph of op nodes named ``names`` (primitive from the op table unless given)."""
    graph = DiGraph()
    for name in names:
        prim = primitives.get(name, op_primitive(op_name(name)))
        graph.add_node(Node(name=name, primitive=prim))
    for src, dst in edges:
        graph.add_edge(src, dst)
    return graph


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = x + self.dw(x)
        return self.fc(self.pool(x).flatten(1))


# --- primitives -------------------------------------------------------------------------------


def test_param_primitives_follow_the_owning_module() -> None:
    assert param_primitive(nn.Conv2d(4, 4, 3), "weight", ndim=4) == "conv"
    assert param_primitive(nn.Conv2d(4, 4, 3, groups=4), "weight", ndim=4) == "sep_conv"
    assert param_primitive(nn.Conv2d(4, 4, 3, groups=4, dilation=2), "weight", ndim=4) == "dil_conv"
    assert param_primitive(nn.Linear(2, 3), "weight", ndim=2) == "conv"
    assert param_primitive(nn.Linear(2, 3), "bias", ndim=1) == "bias"
    assert param_primitive(nn.BatchNorm2d(3), "weight", ndim=1) == "bn"
    assert param_primitive(nn.BatchNorm2d(3), "bias", ndim=1) is None  # predicted with the weight
    assert param_primitive(nn.LayerNorm(3), "weight", ndim=1) == "ln"
    assert param_primitive(nn.GroupNorm(1, 3), "weight", ndim=1) == "ln"
    assert param_primitive(nn.Module(), "pos_embed", ndim=3) == "pos_enc"
    assert param_primitive(nn.Module(), "cls_token", ndim=3) == "pos_enc"
    assert param_primitive(nn.Module(), "gamma", ndim=1) is None  # layer scale keeps its init
    assert param_primitive(nn.MultiheadAttention(4, 2), "in_proj_weight", ndim=2) == "conv"


def test_op_primitives() -> None:
    assert op_name("AddBackward0") == "Add"
    assert op_primitive("Add") == "sum"
    assert op_primitive("MaxPool2DWithIndices") == "max_pool"
    assert op_primitive("AdaptiveAvgPool2D") == "glob_avg"
    assert op_primitive("ScaledDotProductFlashAttentionForCpu") == "msa"
    assert op_primitive("Relu") is None


# --- trace ------------------------------------------------------------------------------------


def test_trace_leaves_model_untouched() -> None:
    model = TinyNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    trace = trace_model(model, img_size=8)

    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert trace.device == "meta" and trace.input_fn is not None
    assert {p.name for p in trace.params.values()} == {n for n, _ in model.named_parameters()}

    model.eval()
    capture_graph(model, img_size=8)
    assert not model.training


def test_model_needing_real_numbers_is_traced_on_cpu() -> None:
    class DataDependent(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if float(x.detach().abs().sum()) < 0:  # reads a value: impossible on the meta device
                raise AssertionError
            return super().forward(x)

    model = DataDependent()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace = trace_model(model, img_size=8)
    assert trace.device == "cpu"
    assert capture_graph(model, img_size=8).node_types == capture_graph(TinyNet(), img_size=8).node_types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_capture_under_no_grad_and_inference_mode() -> None:
    with torch.no_grad():
        assert capture_graph(TinyNet(), img_size=8).n_nodes == 9
    with torch.inference_mode():
        assert capture_graph(TinyNet(), img_size=8).n_nodes == 9


def test_first_tensor_of_structured_outputs() -> None:
    t = torch.ones(1)
    assert first_tensor(t) is t
    assert first_tensor((t, torch.zeros(1))) is t
    assert first_tensor({"aux": torch.zeros(1), "logits": t}) is t
    assert first_tensor("nope") is None


def test_failing_forward_is_a_capture_error() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("boom")

    with pytest.raises(GraphCaptureError, match="boom") as info:
        capture_graph(Broken(), img_size=8)
    assert isinstance(info.value, GhnorthError)


def test_output_without_input_is_a_capture_error() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w * 2

    with pytest.raises(GraphCaptureError, match="input"):
        capture_graph(Constant(), img_size=8)


# --- build ------------------------------------------------------------------------------------


def test_build_chains_weight_and_bias_and_finds_input_users() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    graph, users = build_graph(trace_model(model, img_size=8))
    names = [n.name for n in graph.nodes]
    assert names[0] == "ReluBackward0"
    w, b = names.index("0.weight"), names.index("0.bias")
    assert users == [w]
    assert b in graph.succ[w] and 0 in graph.succ[b]


def test_build_skips_norm_bias_and_layer_scale() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm2d(3)
            self.gamma = nn.Parameter(torch.ones(3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x) * self.gamma

    graph, _ = build_graph(trace_model(Scaled(), img_size=8))
    params = [n.name for n in graph.nodes if n.is_param]
    assert params == ["norm.weight"]


# --- rewire -----------------------------------------------------------------------------------


def test_add_input_goes_first() -> None:
    graph = add_input(make_graph(["AddBackward0", "ReluBackward0"], [(1, 0)]), users=[1])
    assert [n.name for n in graph.nodes] == ["input", "AddBackward0", "ReluBackward0"]
    assert graph.succ[0] == {2}
    with pytest.raises(GraphCaptureError):
        add_input(make_graph(["AddBackward0"], []), users=[])


def test_straighten_puts_linear_weight_on_the_data_path() -> None:
    # input -> bias <- weight   becomes   input -> weight -> bias
    graph = make_graph(["input", "fc.bias", "fc.weight"], [(0, 1), (2, 1)])
    graph.nodes[1] = Node(name="fc.bias", primitive="bias", is_param=True)
    graph.nodes[2] = Node(name="fc.weight", primitive="conv", is_param=True)
    straighten_weights(graph)
    assert graph.edges() == [(0, 2), (2, 1)]


def test_drop_data_free_ops_keeps_parameters() -> None:
    # input -> conv op; weight -> View -> conv op: the View goes, the weight stays
    graph = make_graph(["input", "ConvolutionBackward0", "ViewBackward0", "w"], [(0, 1), (2, 1), (3, 2)])
    graph.nodes[3] = Node(name="w", primitive="conv", is_param=True)
    out = drop_data_free_ops(graph, input_index=0)
    assert [n.name for n in out.nodes] == ["input", "ConvolutionBackward0", "w"]
    assert out.edges() == [(0, 1), (2, 1)]


def test_topological_order_is_kahn_by_generations() -> None:
    # 0 -> 3, 0 -> 1, 1 -> 2, 3 -> 2: generation order [0], [1, 3], [2]
    graph = make_graph(["a", "b", "c", "d"], [(0, 3), (0, 1), (1, 2), (3, 2)])
    assert topological_order(graph) == [0, 1, 3, 2]
    graph.add_edge(2, 0)
    with pytest.raises(GraphCaptureError, match="cycle"):
        topological_order(graph)


def test_split_pos_enc_feeds_a_sum() -> None:
    graph = make_graph(["input", "pos", "ReluBackward0"], [(0, 1), (1, 2)], input="input")
    graph.nodes[1] = Node(name="pos", primitive="pos_enc", is_param=True)
    out = split_pos_enc(graph)
    assert [n.primitive for n in out.nodes] == ["input", "pos_enc", "sum", None]
    assert out.edges() == [(0, 2), (1, 2), (2, 3)]


# --- filter -----------------------------------------------------------------------------------


def test_filter_removes_unsupported_and_single_input_sums() -> None:
    # input -> relu -> add (1 input) -> cat;  input -> x -> cat
    names = ["input", "ReluBackward0", "AddBackward0", "x", "CatBackward0"]
    graph = make_graph(names, [(0, 1), (1, 2), (2, 4), (0, 3), (3, 4)], input="input", x="conv")
    out = filter_graph(graph)
    assert [n.name for n in out.nodes] == ["input", "x", "CatBackward0"]
    assert out.edges() == [(0, 1), (0, 2), (1, 2)]


def test_filter_counts_inputs_from_nodes_removed_in_the_same_pass() -> None:
    # a -> add1 -> add2: add1 goes; its edge to add2 still counts, so add2 stays (reference behaviour)
    graph = make_graph(["a", "AddBackward0", "AddBackward0"], [(0, 1), (1, 2)])
    out = filter_pass(graph, select=lambda g, i: g.nodes[i].op == "Add", keep=lambda g, i: len(g.pred[i]) > 1)
    assert len(out) == 2 and out.edges() == [(0, 1)]


def test_filter_mul_is_cse_only_after_hard_gate() -> None:
    names = ["input", "HardsigmoidBackward0", "x", "MulBackward0", "MulBackward0"]
    graph = make_graph(names, [(0, 1), (1, 2), (2, 3), (3, 4)], x="conv", input="input")
    out = filter_graph(graph)
    assert [n.primitive for n in out.nodes] == ["input", "conv", "cse"]


def test_filter_mean_pools_only_keepdim_and_spatial() -> None:
    graph = make_graph(["input", "MeanBackward1", "MeanBackward1", "MeanBackward1", "out"], [(0, 1), (1, 2), (2, 3), (3, 4)])
    graph.nodes[0].primitive, graph.nodes[4].primitive = "input", "conv"
    graph.nodes[1].attrs = {"keepdim": True, "reduced_dims": 2}  # SE squeeze: pooling
    graph.nodes[2].attrs = {"keepdim": True, "reduced_dims": 1}  # channel mean: no pooling
    graph.nodes[3].attrs = {"keepdim": False, "reduced_dims": 2, "global_pool": True}  # timm head pool
    out = filter_graph(graph)
    assert [n.primitive for n in out.nodes] == ["input", "glob_avg", "glob_avg", "conv"]


# --- attention --------------------------------------------------------------------------------


def test_attention_product_after_softmax_is_msa() -> None:
    names = ["q", "SoftmaxBackward0", "ExpandBackward0", "v", "BmmBackward0", "o"]
    graph = make_graph(names, [(0, 1), (1, 2), (2, 4), (3, 4), (4, 5)])
    mark_attention(graph)
    assert graph.nodes[4].primitive == "msa"


# --- virtual edges ----------------------------------------------------------------------------


def test_virtual_edges_are_directed_shortest_paths() -> None:
    graph = make_graph(["a", "b", "c", "d"], [(0, 1), (1, 2), (2, 3), (0, 2)])
    table = edge_table(graph, ve_cutoff=50).tolist()
    assert table == [[0, 1, 1], [0, 2, 1], [0, 3, 2], [1, 2, 1], [1, 3, 2], [2, 3, 1]]
    assert edge_table(graph, ve_cutoff=1).tolist() == [[0, 1, 1], [0, 2, 1], [1, 2, 1], [2, 3, 1]]
    assert [0, 3, 2] not in edge_table(graph, ve_cutoff=1).tolist()
    assert all(row[2] <= 1 for row in edge_table(make_graph(["a", "b", "c"], [(0, 1), (1, 2)]), ve_cutoff=1).tolist())
    assert [0, 2, 2] not in edge_table(make_graph(["a", "b", "c"], [(0, 1), (1, 2)]), ve_cutoff=1).tolist()


# --- whole pipeline ---------------------------------------------------------------------------


def test_capture_tiny_net() -> None:
    graph = capture_graph(TinyNet(), img_size=8)
    assert graph.node_types == ["input", "conv", "bn", "sep_conv", "bias", "sum", "glob_avg", "conv", "bias"]
    params = [(p.param, p.op, p.last_weight, p.last_bias) for p in graph.param_nodes]
    assert params == [
        ("conv.weight", "conv", False, False),
        ("bn.weight", "bn", False, False),
        ("dw.weight", "sep_conv", False, False),
        ("dw.bias", "bias", False, False),
        ("fc.weight", "conv", True, False),
        ("fc.bias", "bias", False, True),
    ]
    assert graph.param_nodes[2].shape == (4, 1, 3, 3)
    assert ModelGraph.from_json(graph.to_json()).node_types == graph.node_types


def test_capture_mini_vit_maps_tokens_and_attention() -> None:
    class MiniViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, stride=4)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
            self.norm = nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
            y = self.norm(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return self.head(x[:, 0])

    graph = capture_graph(MiniViT(), img_size=8)
    ops = {p.param: p.op for p in graph.param_nodes}
    assert ops["cls_token"] == ops["pos_embed"] == "pos_enc"
    assert ops["attn.in_proj_weight"] == "conv" and ops["attn.out_proj.weight"] == "conv"
    assert graph.node_types.count("msa") == 1
    assert graph.node_types[0] == "input" and graph.node_types[-2:] == ["conv", "bias"]


def test_capture_standardized_conv_weight_is_on_the_data_path() -> None:
    class StdConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
            return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)

    model = nn.Sequential(StdConv(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    graph = capture_graph(model, img_size=8)
    assert graph.node_types == ["input", "conv", "bias", "conv", "bias"]
    assert graph.edges[graph.edges[:, 2] == 1].tolist() == [[0, 1, 1], [1, 2, 1], [2, 3, 1], [3, 4, 1]]
