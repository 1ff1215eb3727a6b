import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from ghnorth_cli.checkpoint import (
    model_tensors,
    provenance,
    read_checkpoint,
    write_checkpoint,
)
from ghnorth_cli.errors import CheckpointError, GhnorthError
from ghnorth_cli.models import create_model, resolve_spec


@pytest.fixture(scope="module")
def small():
    spec = resolve_spec("torchvision:resnet18", num_classes=10, img_size=32)
    model = create_model(spec, seed=0)
    tensors, order = model_tensors(model)
    return spec, model, tensors, order


def _write(path, small, **kw):
    spec, _, tensors, order = small
    write_checkpoint(path, tensors, spec=spec, order=order,
                     history=[provenance(command="test", options={}, seed=0)], **kw)


def test_round_trip_keeps_order_spec_and_values(tmp_path, small):
    spec, model, tensors, order = small
    _write(tmp_path / "a.safetensors", small, extra={"ghnorth.note": {"x": 1}})
    ckpt = read_checkpoint(tmp_path / "a.safetensors")
    assert ckpt.spec == spec and ckpt.order == order and list(ckpt.tensors) == order
    assert ckpt.history[0]["command"] == "test" and "torch" in ckpt.history[0]["versions"]
    assert ckpt.extra("ghnorth.note") == {"x": 1}
    assert all(torch.equal(ckpt.tensors[k], v) for k, v in tensors.items())
    assert len(ckpt.sha256) == 64


def test_plain_load_file_loads_strictly_into_torchvision(tmp_path, small):
    spec, _, _, _ = small
    _write(tmp_path / "a.safetensors", small)
    fresh = create_model(spec, seed=1)
    fresh.load_state_dict(load_file(tmp_path / "a.safetensors"), strict=True)


def test_timm_loads_it_as_pretrained_weights(tmp_path):
    import timm

    spec = resolve_spec("timm:resnet10t", num_classes=10)
    tensors, order = model_tensors(create_model(spec, seed=0))
    path = tmp_path / "t.safetensors"
    write_checkpoint(path, tensors, spec=spec, order=order, history=[])
    model = timm.create_model("resnet10t", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tensors.items())


def test_plain_safetensors_needs_arch_and_must_fit(tmp_path, small):
    _, model, _, _ = small
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="pass --arch"):
        read_checkpoint(path)
    ckpt = read_checkpoint(path, arch="torchvision:resnet18", img_size=32)
    assert ckpt.spec.num_classes == 10  # taken from the classifier's width
    assert ckpt.order[0] == "conv1.weight"
    with pytest.raises(CheckpointError, match=r"'conv1.weight' has shape \[64, 3, 3, 3\], the model expects \[64, 3, 7, 7\]"):
        read_checkpoint(path, arch="torchvision:resnet18", img_size=224)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"\x01\x02", "not a safetensors file"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!", "bad header"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_truncated_and_missing(tmp_path, small):
    _write(tmp_path / "a.safetensors", small)
    data = (tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_write_into_missing_folder_fails_cleanly(tmp_path, small):
    with pytest.raises(GhnorthError, match="cannot write"):
        _write(tmp_path / "missing-dir" / "a.safetensors", small)
    assert not (tmp_path / "missing-dir").exists()


def test_failed_write_leaves_nothing(tmp_path, small):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(GhnorthError, match="cannot write"):
            _write(folder / "a.safetensors", small)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(stat.S_IRWXU)


def test_replacing_keeps_old_file_until_the_new_one_is_complete(tmp_path, small, monkeypatch):
    path = tmp_path / "a.safetensors"
    _write(path, small)
    before = path.read_bytes()

    def broken_replace(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(GhnorthError, match="No space left"):
        _write(path, small, extra={"ghnorth.note": "new"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_source_date_epoch_makes_files_byte_identical(tmp_path, small, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    _write(tmp_path / "a.safetensors", small)
    _write(tmp_path / "b.safetensors", small)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    meta = read_checkpoint(tmp_path / "a.safetensors").metadata
    assert json.loads(meta["ghnorth.history"])[0]["time"] == "1970-01-01T00:00:00Z"


def test_written_files_get_the_usual_permissions(tmp_path, small):
    old = os.umask(0o022)
    try:
        _write(tmp_path / "a.safetensors", small)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644
