"""GHN-2 and GHN-3 through one interface: predict, embed, ghn eval, experiment inits and the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from finetune_helpers import make_fashion_dir
from ghnorth_cli.checkpoint import read_checkpoint
from ghnorth_cli.experiment import parse_init
from ghnorth_cli.experiment.initspec import OrthSettings
from ghnorth_cli.experiment.materialize import LoadedGhnPredictor, materialize_init
from ghnorth_cli.ghn.ghn3 import GHN3
from ghnorth_cli.ghn.io import convert_ghn
from ghnorth_cli.ghn.predict import predict_parameters
from ghnorth_cli.ghn.registry import load_pretrained
from ghnorth_cli.models import create_model, resolve_spec
from test_ghn3_file import GHN3_DIR, SMALL, random_state, write_joblib_like
from test_ghn3_hub import put_in_hf_cache

ARCH = "timm:test_resnet"


@pytest.fixture(scope="module")
def small_ghn3(tmp_path_factory) -> tuple[Path, Path]:
    """A small random GHN-3 (10 classes) as a released-format pickle and as its ghnorth conversion."""
    root = tmp_path_factory.mktemp("ghn3")
    pt = write_joblib_like(root / "small3.pt", random_state(SMALL, seed=5))
    st = root / "small3.safetensors"
    convert_ghn(pt, st)
    return pt, st


def _model(seed: int = 0) -> torch.nn.Module:
    return create_model(resolve_spec(ARCH, num_classes=10, img_size=32), seed=seed)


def test_python_api_takes_either_file(small_ghn3) -> None:
    pt, st = small_ghn3
    ghn = load_pretrained(str(pt))
    assert isinstance(ghn, GHN3) and ghn.config == SMALL and not ghn.training
    a = predict_parameters(_model(), str(pt), img_size=32)
    b = predict_parameters(_model(), str(st), img_size=32)
    c = predict_parameters(_model(), ghn, img_size=32)
    assert a.keys() == b.keys() == c.keys() and len(a) > 10
    for name in a:
        assert torch.equal(a[name], b[name]) and torch.equal(a[name], c[name]), name


def test_predict_command_with_a_ghn3(cli, small_ghn3, tmp_path: Path) -> None:
    pt, st = small_ghn3
    outs = []
    for ghn in (pt, st):
        out = tmp_path / f"{ghn.suffix[1:]}.safetensors"
        result = cli("predict", "--arch", ARCH, "--num-classes", "10", "--img-size", "32", "--ghn", ghn, "-o", out)
        assert result.exit_code == 0, result.stderr
        outs.append(read_checkpoint(out))
    assert outs[0].tensors.keys() == outs[1].tensors.keys()
    assert all(torch.equal(outs[0].tensors[k], outs[1].tensors[k]) for k in outs[0].tensors)
    assert outs[0].history[-1]["command"] == "predict"


def test_embed_command_with_a_ghn3(cli, small_ghn3, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = cli("embed", "--ghn", small_ghn3[1], "-a", ARCH, "--img-size", "32", "-o", out)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["format"] == "ghnorth.embeddings" and doc["dim"] == SMALL.hid
    assert [m["name"] for m in doc["models"]] == [ARCH] and len(doc["models"][0]["embedding"]) == SMALL.hid


def test_ghn_eval_with_a_ghn3(cli, small_ghn3, tmp_path: Path) -> None:
    data = make_fashion_dir(tmp_path / "fm", num_classes=3, train_per_class=2, test_per_class=3)
    result = cli("ghn", "eval", small_ghn3[0], "--data-dir", data, "--classes", "0-2", "--heldout", "1",
                 "--arch-space", "tiny", "-a", ARCH, "--img-size", "32", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    rows = rows["heldout"] + rows["named"]
    assert len(rows) == 2 and all(0 <= r["accuracy"] <= 1 and r["predicted_share"] > 0.9 for r in rows)


@pytest.mark.parametrize("kind", ["ghn", "ghn-orth"])
def test_experiment_inits_with_a_ghn3(small_ghn3, tmp_path: Path, kind: str) -> None:
    path = materialize_init(parse_init(f"{kind}:{small_ghn3[1]}"), arch=ARCH, img_size=32, seed=0,
                            data="fashion-mnist", cache_dir=tmp_path / "inits",
                            orth=OrthSettings(beta=0.0, orth_from=3), predictor=LoadedGhnPredictor())
    ckpt = read_checkpoint(path)
    expected = ["predict"] + (["postprocess"] if kind == "ghn-orth" else [])
    assert [h["command"] for h in ckpt.history] == expected
    direct = predict_parameters(_model(), str(small_ghn3[1]), img_size=32)
    layer = ckpt.weight_layers()[0]  # before orth_from: the GHN-3's prediction as it is
    assert torch.equal(ckpt.tensors[layer], direct[layer])


def test_registry_name_predicts_like_the_released_file(cli, monkeypatch, tmp_path: Path) -> None:
    """``--ghn ghn3-t`` (through a fake HF cache and the cached conversion) equals the file itself."""
    if not GHN3_DIR.is_dir():
        pytest.skip(f"GHN-3 parity fixtures not found at {GHN3_DIR}")
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    put_in_hf_cache(tmp_path / "hf", "ghn3tm8.pt", GHN3_DIR / "ghn3tm8_random.pt")
    args = ("predict", "--arch", "torchvision:resnet18", "-o")
    by_name = cli(*args, tmp_path / "a.safetensors", "--ghn", "ghn3-t")
    by_file = cli(*args, tmp_path / "b.safetensors", "--ghn", GHN3_DIR / "ghn3tm8_random.pt")
    assert by_name.exit_code == 0 and by_file.exit_code == 0, by_name.stderr + by_file.stderr
    a, b = read_checkpoint(tmp_path / "a.safetensors"), read_checkpoint(tmp_path / "b.safetensors")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
