"""Graph capture and prediction never change the caller's model: shared modules, tied weights, failures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghn_helpers import tiny_ghn
from ghnorth_cli.graph import GraphCaptureError, capture_graph
from ghnorth_cli.ghn.predict import predict


@pytest.fixture(scope="module")
def ghn_tiny():
    return tiny_ghn()


def snapshot(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every state_dict entry: the tensor object itself and a copy of its values."""
    return {k: (v, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()}


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before)
    for name, (obj, values) in before.items():
        assert after[name] is obj, f"{name} was swapped"
        assert not after[name].is_meta, f"{name} left on the meta device"
        assert torch.equal(after[name].detach(), values), f"{name} changed"


class ConvTwice(nn.Module):
    """The same nn.Conv2d applied twice in a row."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.conv(torch.relu(self.conv(x)))
        return self.fc(self.bn(x).mean((2, 3)))


class SharedBlock(nn.Module):
    """One conv module registered under two names (as timm's CoaT shares its position encoders)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.first = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.second = self.first
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.first(x)
        x = x + self.second(torch.relu(x))
        return self.fc(x.mean((2, 3)))


class TiedWeights(nn.Module):
    """Two modules holding the same Parameter (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).mean((2, 3))
        return self.fc(self.b(torch.relu(self.a(x))))


class FailsAfterSharing(SharedBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x)
        raise RuntimeError("boom")


class CachesTensors(ConvTwice):
    """Stores a tensor attribute during the forward pass (a cache): capture must not leave it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache = x.sum()
        return super().forward(x)


class SpectralNormed(ConvTwice):
    """torch's spectral_norm hook writes the module's ``weight`` attribute and its ``u`` buffer each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.utils.spectral_norm(self.stem)


class WeightNormed(ConvTwice):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(self.conv)


@pytest.mark.parametrize("cls", [ConvTwice, SharedBlock, TiedWeights, CachesTensors, SpectralNormed, WeightNormed])
def test_capture_leaves_the_model_as_it_was(cls) -> None:
    model = cls()
    before = snapshot(model)
    graph = capture_graph(model, img_size=16, ve_cutoff=1)
    assert_unchanged(model, before)
    assert "cache" not in vars(model)
    assert graph.n_nodes > 3
    x = torch.randn(2, 3, 16, 16)
    assert torch.isfinite(model(x)).all()  # still a working model on real tensors


def test_a_reused_parameter_gets_a_node_at_each_use_and_one_prediction(ghn_tiny) -> None:
    model = ConvTwice()
    graph = capture_graph(model, img_size=16, ve_cutoff=1)
    uses = [p.index for p in graph.param_nodes if p.param == "conv.weight"]
    assert len(uses) == 2
    # each use is wired into the data path in order: input -> stem -> conv (1st) -> conv (2nd)
    edges = {(int(s), int(t)) for s, t, d in graph.edges.tolist() if d == 1}
    assert any(dst == uses[1] for src, dst in edges if src > uses[0])
    before = snapshot(model)
    result = predict(model, ghn_tiny, img_size=16)
    assert_unchanged(model, before)
    assert list(result.params).count("conv.weight") == 1
    assert {"stem.weight", "conv.weight", "conv.bias", "fc.weight", "fc.bias"} <= set(result.params)
    assert all(torch.isfinite(t).all() for t in result.params.values())


@pytest.mark.parametrize("cls", [SharedBlock, TiedWeights])
def test_predict_on_shared_and_tied_weights(cls, ghn_tiny) -> None:
    model = cls()
    before = snapshot(model)
    result = predict(model, ghn_tiny, img_size=16)
    assert_unchanged(model, before)
    names = [n for n, _ in model.named_parameters()]
    assert set(result.params) <= set(names)
    assert "stem.weight" in result.params


def test_failure_leaves_the_model_as_it_was() -> None:
    model = FailsAfterSharing()
    before = snapshot(model)
    with pytest.raises(GraphCaptureError, match="boom"):
        capture_graph(model, img_size=16)
    assert_unchanged(model, before)


def test_inplace_prediction_writes_each_shared_tensor_once(ghn_tiny) -> None:
    model = SharedBlock()
    result = predict(model, ghn_tiny, img_size=16, inplace=True)
    assert model.second.weight is model.first.weight
    assert torch.equal(model.first.weight.detach(), result.params["first.weight"])
    assert not any(p.is_meta for p in model.parameters())


def test_postprocess_gives_every_name_of_a_shared_tensor_one_result() -> None:
    from ghnorth_cli.checkpoint import load_tensors_into, model_tensors
    from ghnorth_cli.models import tied_tensor_names
    from ghnorth_cli.postprocess import postprocess

    model = SharedBlock()
    tensors, order = model_tensors(model)
    tied = tied_tensor_names(model)
    assert tied == {"second.weight": "first.weight", "second.bias": "first.bias"}
    out, changes = postprocess(tensors, order, beta=1e-2, orth_from=1, generator=torch.Generator().manual_seed(0),
                               tied=tied)
    assert {c.name: c.action for c in changes}["second.weight"] == "tied"
    assert not torch.equal(out["first.weight"], tensors["first.weight"])
    assert torch.equal(out["second.weight"], out["first.weight"])
    fresh = SharedBlock()
    load_tensors_into(fresh, out, strict=True)
    assert torch.equal(fresh.first.weight.detach(), out["first.weight"])


def test_predict_command_on_a_model_with_shared_modules(cli, tmp_path) -> None:
    """The issue's case: timm's CoaT shares its position encoders between blocks."""
    import ghnorth_cli
    from ghn_helpers import write_released_ghn

    ghn = write_released_ghn(tmp_path / "tiny.pt")
    out = tmp_path / "coat.safetensors"
    result = cli("predict", "--arch", "timm:coat_lite_tiny", "--img-size", "32", "--num-classes", "10",
                 "--ghn", str(ghn), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    model = ghnorth_cli.load_model(out)  # strict
    assert model.serial_blocks1[0].factoratt_crpe.crpe is model.crpe1
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
