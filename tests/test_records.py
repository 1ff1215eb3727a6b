"""Records say what was done, not what was asked (issue 11, requirement 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir
from ghnorth_cli.checkpoint import read_checkpoint
from ghnorth_cli.models import ModelSpec, create_model, resolve_spec


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fm"), train_per_class=3, test_per_class=2)


def _finetune(cli, fashion: Path, tmp_path: Path, *extra: str):
    out, metrics = tmp_path / "o.safetensors", tmp_path / "m.json"
    result = cli("finetune", "--data", "fashion-mnist", "--data-dir", fashion, "--arch", TINY_ARCH, "--img-size",
                 str(TINY_SIZE), "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-progress",
                 "-o", out, "--metrics", metrics, *extra)
    assert result.exit_code == 0, result.stderr
    return result, json.loads(metrics.read_text()), read_checkpoint(out)


def test_a_cpu_finetuning_records_no_amp_and_no_channels_last(cli, fashion, tmp_path):
    result, metrics, ckpt = _finetune(cli, fashion, tmp_path)
    for config in (metrics["config"], ckpt.history[-1]["options"]):
        assert config["amp"] is False and config["channels_last"] is False and config["deterministic"] is True
        assert config["device"] == "cpu"
    assert "CUDA only" not in result.stderr  # nothing was asked, so nothing to warn about


def test_flags_that_cannot_apply_warn(cli, fashion, tmp_path):
    result, metrics, _ = _finetune(cli, fashion, tmp_path, "--amp", "--channels-last")
    assert "--amp applies on CUDA only" in result.stderr and "--channels-last applies on CUDA only" in result.stderr
    assert metrics["config"]["amp"] is False and metrics["config"]["channels_last"] is False


def test_train_ghn_records_the_amp_it_used(tmp_path, caplog):
    from ghnorth_cli.ghn_training.config import GHNTrainConfig
    from ghnorth_cli.ghn_training.ghnfile import read_training_info
    from ghnorth_cli.ghn_training.run import train_ghn
    from test_train_ghn import TINY, tiny_task

    out = tmp_path / "g.safetensors"
    config = GHNTrainConfig(output=str(out), steps=1, device="cpu", amp=True, **TINY)
    train_ghn(config, task=tiny_task())
    assert "--amp applies on CUDA only" in caplog.text
    info = read_training_info(out)
    assert info["amp"] is False and info["channels_last"] is False


def test_small_input_records_whether_the_stem_was_adapted(cli, tmp_path):
    unadapted = resolve_spec("timm:test_vit", num_classes=3, img_size=32)  # a ViT: no small-input rule
    assert unadapted.small_input is False
    adapted = resolve_spec(TINY_ARCH, num_classes=3, img_size=32)
    assert adapted.small_input is True
    assert resolve_spec(TINY_ARCH, num_classes=3, img_size=32, small_input=False).small_input is False


@pytest.mark.parametrize(("flag", "size", "expected"), [("--no-small-input", "32", False),
                                                        ("--small-input", "64", True), (None, "32", True)])
def test_predict_takes_small_input_like_finetune(cli, tmp_path, flag, size, expected):
    out = tmp_path / "p.safetensors"
    args = ["-q", "predict", "-a", TINY_ARCH, "--ghn", "ghn2-fmnist-tiny", "--img-size", size,
            "--num-classes", "5", "-o", out] + ([flag] if flag else [])
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    ckpt = read_checkpoint(out)
    assert ckpt.spec.small_input is expected
    rebuilt = create_model(ckpt.spec)  # the record rebuilds exactly the model that was written
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ckpt.tensors.items()}


def test_init_takes_small_input_too(cli, tmp_path):
    out = tmp_path / "i.safetensors"
    result = cli("-q", "init", "-a", TINY_ARCH, "--img-size", "32", "--no-small-input", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert read_checkpoint(out).spec.small_input is False


def test_googlenet_records_that_it_has_no_aux_heads(cli, tmp_path):
    spec = resolve_spec("torchvision:googlenet", num_classes=10, img_size=32)
    assert spec.aux_logits is False and spec.to_dict()["aux_logits"] is False
    assert "aux_logits" not in resolve_spec(TINY_ARCH, num_classes=10).to_dict()  # models without the switch
    model = create_model(spec)
    assert model.aux1 is None and model.aux2 is None
    out = tmp_path / "g.safetensors"
    result = cli("-q", "init", "-a", "torchvision:googlenet", "--num-classes", "10", "--img-size", "32", "-o", out)
    assert result.exit_code == 0, result.stderr
    ckpt = read_checkpoint(out)
    assert json.loads(ckpt.metadata["ghnorth.model"])["aux_logits"] is False
    assert ckpt.spec == spec
    assert "aux_logits=False" in cli("info", out).stdout


def test_older_records_of_googlenet_read_as_built():
    old = {"source": "torchvision", "name": "inception_v3", "num_classes": 10, "img_size": 32, "small_input": True}
    assert ModelSpec.from_dict(old).aux_logits is False  # what ghnorth always built
    other = {"source": "timm", "name": "resnet18", "num_classes": 10, "img_size": 32, "small_input": True}
    assert ModelSpec.from_dict(other).aux_logits is None and ModelSpec.from_dict(other).to_dict() == other


def test_embed_takes_small_input_and_records_it(cli, tmp_path):
    out = tmp_path / "e.json"
    result = cli("-q", "embed", "--ghn", "ghn2-fmnist-tiny", "-a", TINY_ARCH, "--img-size", "32", "--no-small-input",
                 "-o", out)
    assert result.exit_code == 0, result.stderr
    model = json.loads(out.read_text())["models"][0]
    assert model["small_input"] is False and model["arch"] == TINY_ARCH
    reread = cli("-q", "analyze", "--embeddings", out, "--json")  # the latent map still reads the file
    assert reread.exit_code == 0, reread.stderr
