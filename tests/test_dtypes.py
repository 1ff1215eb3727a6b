"""float16 and bfloat16 checkpoints through every command that reads them (issue 11, requirement 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ghnorth_cli.analysis import layer_stats
from ghnorth_cli.checkpoint import model_tensors, provenance, read_checkpoint, write_checkpoint
from ghnorth_cli.models import create_model, resolve_spec
from ghnorth_cli.postprocess import postprocess

ARCH = "timm:test_resnet"
HALF = [torch.float16, torch.bfloat16]
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2]


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[torch.dtype, Path]:
    """The same seeded test_resnet (10 classes, 16 px, not adapted) stored in float32, float16 and bfloat16."""
    spec = resolve_spec(ARCH, num_classes=10, img_size=16, small_input=False)
    tensors, order = model_tensors(create_model(spec, seed=0))
    folder = tmp_path_factory.mktemp("dtypes")
    paths = {}
    for dtype in [torch.float32, *HALF]:
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        paths[dtype] = folder / f"{_name(dtype)}.safetensors"
        write_checkpoint(paths[dtype], cast, spec=spec, order=order,
                         history=[provenance(command="init", options={}, seed=0)])
    return paths


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
def test_layer_stats_take_any_floating_dtype(dtype):
    weight = torch.randn(12, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    weight[3] = weight[0]  # one duplicate channel, which every dtype keeps
    stats = layer_stats("w", weight.to(dtype), index=1)
    reference = layer_stats("w", weight.to(dtype).float(), index=1)  # the same values, exactly, in float32
    assert stats == reference
    assert stats.duplicate_channels == 1 and stats.channels == 12


@pytest.mark.parametrize("dtype", FLOATS, ids=_name)
def test_postprocess_computes_in_float32_and_keeps_the_dtype(dtype):
    g = torch.Generator().manual_seed(0)
    tensors = {"a.weight": torch.randn(16, 8, 3, 3, generator=g).to(dtype),
               "b.weight": torch.randn(3, 16, generator=g).to(dtype), "b.bias": torch.zeros(3, dtype=dtype)}
    order = list(tensors)
    out, changes = postprocess(tensors, order, beta=1e-3, orth_from=1, generator=torch.Generator().manual_seed(1))
    assert {v.dtype for v in out.values()} == {dtype}
    work = torch.float64 if dtype == torch.float64 else torch.float32
    wide = {k: v.to(work) for k, v in tensors.items()}
    expected, _ = postprocess(wide, order, beta=1e-3, orth_from=1, generator=torch.Generator().manual_seed(1))
    # float32 work (float64 for float64), rounded once at the end
    assert torch.equal(out["a.weight"], expected["a.weight"].to(dtype))
    assert changes[0].action == "noise+orth" and changes[-1].action == "classifier"


def test_noise_below_the_resolution_is_measured():
    g = torch.Generator().manual_seed(0)
    weight = 0.05 * torch.randn(64, 32, 3, 3, generator=g)
    tensors = {"a.weight": weight, "b.weight": torch.randn(10, 64, generator=g)}
    shares = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        cast = {k: v.to(dtype) for k, v in tensors.items()}
        _, changes = postprocess(cast, list(cast), beta=3e-5, generator=torch.Generator().manual_seed(1))
        shares[dtype] = changes[0].noise_rounded_away
        assert changes[1].noise_rounded_away is None  # the classifier gets no noise
    assert shares[torch.float32] < 0.05
    assert shares[torch.bfloat16] > 0.9 and shares[torch.float16] > 0.5
    # written as float32, the noise of a bfloat16 input survives
    cast = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    out, changes = postprocess(cast, list(cast), beta=3e-5, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float32)
    assert out["a.weight"].dtype == torch.float32 and changes[0].noise_rounded_away < 0.05
    assert not torch.equal(out["a.weight"], cast["a.weight"].float())


@pytest.mark.parametrize("dtype", HALF, ids=_name)
def test_info_and_analyze(cli, checkpoints, dtype):
    path = checkpoints[dtype]
    info = cli("-q", "info", path, "--json")
    assert info.exit_code == 0, info.stderr
    assert _name(dtype) in json.loads(info.stdout)["dtypes"]
    result = cli("-q", "analyze", path, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    layers = json.loads(result.stdout)["checkpoints"][0]["layers"]
    reference = json.loads(cli("-q", "analyze", checkpoints[torch.float32], "--json").stdout)["checkpoints"][0]
    assert len(layers) == len(reference["layers"]) == 16
    for got, want in zip(layers, reference["layers"]):
        assert got["mean_abs_corr"] == pytest.approx(want["mean_abs_corr"], abs=0.02)


@pytest.mark.parametrize("dtype", HALF, ids=_name)
def test_postprocess_warns_and_writes_float32_on_request(cli, checkpoints, dtype, tmp_path):
    kept, wide = tmp_path / "kept.safetensors", tmp_path / "f32.safetensors"
    result = cli("postprocess", checkpoints[dtype], "-o", kept, "--beta", "3e-5")
    assert result.exit_code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "below the dtype's resolution" in line]
    assert len(warning) == 1 and _name(dtype) in warning[0] and "--dtype float32" in warning[0]
    ckpt = read_checkpoint(kept)
    assert {t.dtype for t in ckpt.tensors.values() if t.is_floating_point()} == {dtype}
    assert ckpt.history[-1]["options"]["dtype"] == "keep"

    result = cli("postprocess", checkpoints[dtype], "-o", wide, "--beta", "3e-5", "--dtype", "float32", "--json")
    assert result.exit_code == 0, result.stderr
    assert "below the dtype's resolution" not in result.stderr
    assert all(layer["noise_rounded_away"] is None or layer["noise_rounded_away"] < 0.05
               for layer in json.loads(result.stdout)["layers"])
    ckpt = read_checkpoint(wide)
    assert {t.dtype for t in ckpt.tensors.values() if t.is_floating_point()} == {torch.float32}
    assert ckpt.history[-1]["options"]["dtype"] == "float32"


def test_postprocess_float32_input_does_not_warn(cli, checkpoints, tmp_path):
    result = cli("postprocess", checkpoints[torch.float32], "-o", tmp_path / "o.safetensors", "--beta", "3e-5")
    assert result.exit_code == 0 and "resolution" not in result.stderr


def test_postprocess_rejects_an_unknown_dtype(cli, checkpoints, tmp_path):
    out = tmp_path / "o.safetensors"
    result = cli("postprocess", checkpoints[torch.float16], "-o", out, "--dtype", "int8")
    assert result.exit_code == 1 and result.stderr.startswith("ghnorth: error: --dtype must be one of")
    assert not out.exists()


@pytest.mark.parametrize("dtype", HALF, ids=_name)
def test_finetune_starts_from_a_half_precision_checkpoint(cli, checkpoints, dtype, tmp_path):
    from finetune_helpers import make_fashion_dir

    data = make_fashion_dir(tmp_path / "fm", num_classes=10, train_per_class=2, test_per_class=1)
    out, metrics = tmp_path / "ft.safetensors", tmp_path / "m.json"
    result = cli("-q", "finetune", "--data", "fashion-mnist", "--data-dir", data, "--init", checkpoints[dtype],
                 "--epochs", "1", "--batch-size", "10", "-o", out, "--metrics", metrics, "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert json.loads(metrics.read_text())["init"]["classifier"] == "kept"  # 10 classes in the file and the data
    source, tuned = read_checkpoint(checkpoints[dtype]), read_checkpoint(out)
    assert {t.dtype for t in tuned.tensors.values() if t.is_floating_point()} == {torch.float32}
    assert tuned.order == source.order


@pytest.mark.parametrize("dtype", HALF, ids=_name)
def test_predict_with_a_half_precision_ghn(cli, tmp_path, dtype):
    from ghn_helpers import tiny_ghn

    from ghnorth_cli.ghn.io import ghn_bytes

    ghn = tiny_ghn()
    path = tmp_path / f"ghn-{_name(dtype)}.safetensors"
    path.write_bytes(ghn_bytes(ghn.config, {k: v.to(dtype) for k, v in ghn.state_dict().items()}))
    out = tmp_path / "pred.safetensors"
    result = cli("-q", "predict", "-a", ARCH, "--ghn", path, "--img-size", "16", "--num-classes", "10", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert {t.dtype for t in read_checkpoint(out).tensors.values() if t.is_floating_point()} == {torch.float32}


@pytest.mark.parametrize("dtype", HALF, ids=_name)
def test_embed_and_ghn_eval_with_a_half_precision_ghn(cli, tmp_path, dtype):
    from finetune_helpers import make_fashion_dir
    from ghn_helpers import tiny_ghn

    from ghnorth_cli.ghn.io import ghn_bytes

    ghn = tiny_ghn()
    half, full = tmp_path / "half.safetensors", tmp_path / "full.safetensors"
    half.write_bytes(ghn_bytes(ghn.config, {k: v.to(dtype) for k, v in ghn.state_dict().items()}))
    full.write_bytes(ghn_bytes(ghn.config, {k: v.to(dtype).float() for k, v in ghn.state_dict().items()}))
    embeddings = {}
    for path in (half, full):
        out = tmp_path / f"{path.stem}.json"
        result = cli("-q", "embed", "--ghn", path, "-a", ARCH, "--img-size", "16", "-o", out)
        assert result.exit_code == 0, result.stderr
        embeddings[path] = json.loads(out.read_text())["models"][0]["embedding"]
    assert embeddings[half] == embeddings[full]  # the GHN computes in float32 from the same values
    data = make_fashion_dir(tmp_path / "fm", num_classes=10, train_per_class=1, test_per_class=1)
    result = cli("-q", "ghn", "eval", half, "--data-dir", data, "--heldout", "1", "--json")
    assert result.exit_code == 0, result.stderr
