"""``predict_parameters`` / ``load_prediction`` and the ``ghnorth predict`` command, with a tiny GHN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghn_helpers import tiny_ghn, write_released_ghn
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.predict import load_prediction, predict, predict_parameters
from ghnorth_cli.models import create_model, resolve_spec

ARCH = "timm:test_convnext"  # tiny, and its layer scales ("gamma") have no GHN-2 node
IMG = 64


def _model(num_classes: int = 10, seed: int = 0):
    return create_model(resolve_spec(ARCH, num_classes=num_classes, img_size=IMG), seed=seed)


@pytest.fixture(scope="module")
def ghn():
    return tiny_ghn()


@pytest.fixture
def ghn_file(tmp_path: Path) -> Path:
    return write_released_ghn(tmp_path / "tiny.pt")


def test_predict_parameters_leaves_the_model_alone(ghn) -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = predict_parameters(model, ghn, img_size=IMG)
    own = dict(model.named_parameters())
    assert params and set(params) < set(own)
    assert all(tuple(t.shape) == tuple(own[n].shape) and t.dtype == torch.float32 for n, t in params.items())
    assert not any(n.endswith("gamma") for n in params)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    again = predict_parameters(model, ghn, img_size=IMG)
    assert all(torch.equal(again[n], t) for n, t in params.items())  # deterministic


def test_unpredictable_and_classifier_bookkeeping(ghn) -> None:
    model = _model()
    result = predict(model, ghn, img_size=IMG)
    own = list(dict(model.named_parameters()))
    assert result.unpredicted == [n for n in own if n.endswith("gamma")]
    assert result.classifier == ["head.fc.weight", "head.fc.bias"]
    assert result.classifier_predicted and result.model_classes == 10  # auto: 10 == 10
    assert set(result.params) | set(result.unpredicted) == set(own)


@pytest.mark.parametrize("num_classes,mode,predicted", [
    (10, "auto", True), (100, "auto", False), (100, "predict", True), (10, "keep", False)])
def test_classifier_modes(ghn, num_classes: int, mode: str, predicted: bool) -> None:
    model = _model(num_classes)
    init = model.head.fc.weight.detach().clone()
    result = predict(model, ghn, img_size=IMG, classifier=mode, inplace=True)
    assert result.classifier_predicted is predicted
    assert ("head.fc.weight" in result.params) is predicted
    assert torch.equal(model.head.fc.weight, init) is not predicted
    assert ("head.fc.weight" in result.kept) is not predicted


def test_unknown_classifier_mode(ghn) -> None:
    with pytest.raises(GhnorthError, match="classifier mode"):
        predict(_model(), ghn, img_size=IMG, classifier="sometimes")


def test_load_prediction(ghn) -> None:
    model = _model()
    params = predict_parameters(model, ghn, img_size=IMG)
    assert load_prediction(model, params) == list(params)
    for name, tensor in params.items():
        assert torch.equal(model.get_parameter(name), tensor)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    bad = dict(params)
    bad["head.fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(GhnorthError, match="head.fc.weight.*shape"):
        load_prediction(_model(), bad)
    with pytest.raises(GhnorthError, match="does not have"):
        load_prediction(model, {"nope.weight": torch.zeros(1)})
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


def test_load_prediction_converts_dtype(ghn) -> None:
    params = predict_parameters(_model(), ghn, img_size=IMG)
    model = _model().to(torch.float64)
    load_prediction(model, params)
    name = next(iter(params))
    assert model.get_parameter(name).dtype == torch.float64
    torch.testing.assert_close(model.get_parameter(name).float(), params[name])


def test_lazy_exports_keep_the_import_light() -> None:
    import ghnorth_cli
    from ghnorth_cli.ghn import predict as predict_module

    assert ghnorth_cli.predict_parameters is predict_module.predict_parameters
    assert ghnorth_cli.load_prediction is predict_module.load_prediction
    code = "import sys, ghnorth_cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- the command --------------------------------------------------------------------------------


def _read(path_or_bytes):
    from ghnorth_cli.checkpoint import read_checkpoint

    if isinstance(path_or_bytes, bytes):  # read_checkpoint takes a path: go through a temporary file
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(path_or_bytes)
            f.flush()
            return read_checkpoint(f.name)
    return read_checkpoint(path_or_bytes)


def _predict_args(ghn_file: Path, out: str | Path, *extra: str) -> list[str]:
    return ["predict", "-a", ARCH, "--img-size", str(IMG), "--num-classes", "10", "--ghn", str(ghn_file),
            "-o", str(out), *extra]


def test_predict_command_writes_a_checkpoint(cli, ghn_file: Path, tmp_path: Path) -> None:
    import hashlib

    out = tmp_path / "pred.safetensors"
    result = cli(*_predict_args(ghn_file, out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    ckpt = _read(out)
    model = _model()
    assert ckpt.spec.arch == ARCH and ckpt.spec.num_classes == 10 and ckpt.spec.img_size == IMG
    assert ckpt.order == list(model.state_dict())
    gammas = [n for n, _ in model.named_parameters() if n.endswith("gamma")]
    assert ckpt.extra("ghnorth.unpredicted") == gammas
    sha = hashlib.sha256(ghn_file.read_bytes()).hexdigest()
    assert ckpt.extra("ghnorth.ghn")["sha256"] == sha and ckpt.extra("ghnorth.ghn")["name"] == str(ghn_file)
    assert ckpt.extra("ghnorth.classifier")["predicted"] is True
    assert "not predicted" in ckpt.extra("ghnorth.buffers")
    (entry,) = ckpt.history
    assert entry["command"] == "predict" and entry["inputs"] == {str(ghn_file): sha}
    assert entry["unpredicted"] == gammas
    assert all(g in result.stderr for g in gammas)  # unpredicted tensors are listed on stderr
    # the checkpoint holds exactly what the library predicts, and the model's own init elsewhere
    expected = predict_parameters(model, tiny_ghn(), img_size=IMG)
    for name, tensor in expected.items():
        assert torch.equal(ckpt.tensors[name], tensor), name
    for name in gammas:
        assert torch.equal(ckpt.tensors[name], model.get_parameter(name))


def test_predict_report_and_stdout(cli, ghn_file: Path, tmp_path: Path) -> None:
    result = cli(*_predict_args(ghn_file, tmp_path / "a.safetensors", "--report"))
    assert result.exit_code == 0, result.stderr
    assert "predicted" in result.stdout and "not predictable" in result.stdout and "gamma" in result.stdout
    result = cli(*_predict_args(ghn_file, tmp_path / "b.safetensors", "--json"))
    cov = json.loads(result.stdout)
    model = _model()
    assert cov["total"]["tensors"] == len(list(model.parameters()))
    assert cov["predicted"]["tensors"] + cov["not_predictable"]["tensors"] == cov["total"]["tensors"]
    assert {i["reason"] for i in cov["not_predicted"]} == {"no graph node"}

    piped = cli(*_predict_args(ghn_file, "-", "--report"))
    assert piped.exit_code == 0
    ckpt = _read(piped.stdout_bytes)  # stdout carries only the checkpoint
    assert ckpt.spec.arch == ARCH
    assert "not predictable" in piped.stderr


def test_predict_seed_and_kept_classifier(cli, ghn_file: Path, tmp_path: Path) -> None:
    args = ["predict", "-a", ARCH, "--img-size", str(IMG), "--ghn", str(ghn_file)]  # 1000 classes: kept
    assert cli(*args, "-o", tmp_path / "s0.safetensors", "--seed", "0").exit_code == 0
    assert cli(*args, "-o", tmp_path / "s1.safetensors", "--seed", "1").exit_code == 0
    a, b = _read(tmp_path / "s0.safetensors"), _read(tmp_path / "s1.safetensors")
    assert a.extra("ghnorth.classifier")["predicted"] is False
    kept = set(a.extra("ghnorth.unpredicted")) | {"head.fc.weight", "head.fc.bias"}
    for name in a.order:
        if name in kept:
            assert not torch.equal(a.tensors[name], b.tensors[name]) or name.endswith(("gamma", "bias")), name
        elif "running" not in name and "num_batches" not in name:
            assert torch.equal(a.tensors[name], b.tensors[name]), name  # predictions do not depend on --seed


def test_predict_offline_error(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GHNORTH_OFFLINE", "1")
    out = tmp_path / "x.safetensors"
    result = cli("predict", "-a", ARCH, "-o", out)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ghnorth: error: GHN 'ghn2-imagenet' is not cached")
    assert "give its path instead of" in lines[-1] and "ghn2_imagenet.pt" in lines[-1]
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--classifier", "maybe"], "unknown --classifier"),
    (["--device", "tpu9"], "--device"),
])
def test_predict_option_errors(cli, ghn_file: Path, tmp_path: Path, extra, message) -> None:
    result = cli(*_predict_args(ghn_file, tmp_path / "x.safetensors", *extra))
    assert result.exit_code == 1 and message in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_predict_refuses_unwritable_output_first(cli, ghn_file: Path, tmp_path: Path) -> None:
    result = cli(*_predict_args(ghn_file, tmp_path / "missing" / "x.safetensors"))
    assert result.exit_code == 1 and "no such directory" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_predict_cuda_unavailable(cli, ghn_file: Path, tmp_path: Path) -> None:
    result = cli(*_predict_args(ghn_file, tmp_path / "x.safetensors", "--device", "cuda"))
    assert result.exit_code == 1 and "no CUDA device" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_on_cuda_matches_cpu(ghn) -> None:
    model = _model()
    cpu = predict_parameters(model, ghn, img_size=IMG)
    gpu = predict_parameters(model, tiny_ghn().to("cuda"), img_size=IMG)
    for name, tensor in cpu.items():
        torch.testing.assert_close(gpu[name].cpu(), tensor, atol=1e-5, rtol=1e-4)


def test_prediction_threads_are_restored(ghn) -> None:
    from ghnorth_cli.threads import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    model = _model()
    one = predict_parameters(model, ghn, img_size=IMG, threads=1)
    default = predict_parameters(model, ghn, img_size=IMG, threads=None)
    assert torch.get_num_threads() == before
    for name, tensor in one.items():
        torch.testing.assert_close(default[name], tensor, atol=1e-6, rtol=1e-5)
