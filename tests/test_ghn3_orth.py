"""GHN-3-orth: GHN-3 predictions through ``predict``, ``postprocess`` presets, ``experiment`` inits and
``embed``, with a small random GHN-3 in ghnorth's format; GHN-3 on CUDA equals GHN-3 on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ghn_helpers import TINY_GHN3_CONFIG, tiny_ghn3, write_ghn3

from ghnorth_cli.checkpoint import read_checkpoint
from ghnorth_cli.experiment import parse_init
from ghnorth_cli.experiment.initspec import OrthSettings
from ghnorth_cli.experiment.materialize import LoadedGhnPredictor, materialize_init
from ghnorth_cli.ghn.ghn3 import GHN3
from ghnorth_cli.ghn.io import load_ghn
from ghnorth_cli.ghn.predict import predict_parameters
from ghnorth_cli.inits import as_matrix
from ghnorth_cli.models import create_model, resolve_spec

ARCH = "timm:test_resnet"  # 0.5M parameters


@pytest.fixture(scope="module")
def ghn3_file(tmp_path_factory) -> Path:
    return write_ghn3(tmp_path_factory.mktemp("ghn3") / "tiny-ghn3.safetensors")


def _is_orthogonal(weight: torch.Tensor) -> bool:
    w, _ = as_matrix(weight)
    return torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-4)


def test_a_ghn3_file_loads_as_a_ghn3(ghn3_file: Path) -> None:
    ghn = load_ghn(ghn3_file)
    assert isinstance(ghn, GHN3) and ghn.config == TINY_GHN3_CONFIG
    model = create_model(resolve_spec(ARCH, num_classes=10, img_size=32), seed=0)
    torch.testing.assert_close(predict_parameters(model, ghn, img_size=32),
                               predict_parameters(model, tiny_ghn3(), img_size=32), atol=0, rtol=0)


@pytest.mark.slow
def test_predict_then_postprocess_preset(cli, ghn3_file: Path, tmp_path: Path) -> None:
    predicted, orth = tmp_path / "r50.safetensors", tmp_path / "r50-orth.safetensors"
    assert cli("predict", "-a", "torchvision:resnet50", "--ghn", ghn3_file, "-o", predicted).exit_code == 0
    result = cli("postprocess", predicted, "--preset", "resnet50-paper", "-o", orth)
    assert result.exit_code == 0, result.stderr
    before, after = read_checkpoint(predicted), read_checkpoint(orth)
    assert before.extra("ghnorth.ghn")["config"]["hypernet"] == "transformer"
    layers = after.weight_layers()
    assert not torch.equal(after.tensors[layers[35]], before.tensors[layers[35]])  # layer 36: noise (beta)
    assert _is_orthogonal(after.tensors[layers[36]])  # layer 37 (orth_from) on: orthogonal
    assert torch.equal(after.tensors[layers[-1]], before.tensors[layers[-1]])  # the classifier is never touched
    assert [h["command"] for h in after.history] == ["predict", "postprocess"]


def test_experiment_ghn_orth_init_with_a_ghn3(ghn3_file: Path, tmp_path: Path) -> None:
    path = materialize_init(parse_init(f"ghn-orth:{ghn3_file}"), arch=ARCH, img_size=32, seed=0,
                            data="fashion-mnist", cache_dir=tmp_path / "inits",
                            orth=OrthSettings(beta=0.0, orth_from=3), predictor=LoadedGhnPredictor())
    ckpt = read_checkpoint(path)
    layers = ckpt.weight_layers()
    model = create_model(resolve_spec(ARCH, num_classes=10, img_size=32, small_input=True), seed=0)
    direct = predict_parameters(model, tiny_ghn3(), img_size=32)
    torch.testing.assert_close(ckpt.tensors[layers[1]], direct[layers[1]], atol=0, rtol=0)  # before orth_from
    assert _is_orthogonal(ckpt.tensors[layers[3]])
    assert [h["command"] for h in ckpt.history] == ["predict", "postprocess"]


def test_embed_with_a_ghn3(cli, ghn3_file: Path) -> None:
    result = cli("embed", "-a", ARCH, "--ghn", ghn3_file, "--img-size", "32", "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert f'"dim": {TINY_GHN3_CONFIG.hid}' in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ghn3_on_cuda_matches_cpu() -> None:
    model = create_model(resolve_spec("torchvision:vit_b_32", num_classes=10, img_size=224), seed=0)
    cpu = predict_parameters(model, tiny_ghn3())
    gpu = predict_parameters(model, tiny_ghn3().to("cuda"), device="cuda")
    assert sorted(cpu) == sorted(gpu)
    for name, tensor in cpu.items():
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), tensor, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_graph_command_draws_the_ghn3_graph(cli, tmp_path: Path) -> None:
    """torchvision's EfficientNet-B0: GHN-3 sees its channel gates as cse nodes, GHN-2 as glob_avg."""
    import json

    for flag, out in (((), "ghn2.json"), (("--ghn3",), "ghn3.json")):
        assert cli("graph", "-a", "torchvision:efficientnet_b0", "-o", tmp_path / out, *flag).exit_code == 0
    ghn2 = json.loads((tmp_path / "ghn2.json").read_text())["node_types"]
    ghn3 = json.loads((tmp_path / "ghn3.json").read_text())["node_types"]
    assert (ghn2.count("cse"), ghn2.count("glob_avg")) == (0, 17)
    assert (ghn3.count("cse"), ghn3.count("glob_avg")) == (16, 1)
