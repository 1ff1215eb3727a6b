"""GHN files: the released .pt layout (weights_only), ghnorth's safetensors format, conversion."""

from __future__ import annotations

import hashlib
import json
import pathlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ghn_helpers import TINY_CONFIG, write_released_ghn
from ghnorth_cli.ghn.io import CONFIG_KEY, FORMAT, GHNFileError, convert_ghn, load_ghn, read_ghn_file


class _Marker:
    """Unpickling this would touch a file: weights_only loading must refuse it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def test_reads_the_released_layout(parity_dir: Path) -> None:
    path = parity_dir / "ghn2_random_imagenet.pt"
    ghn_file = read_ghn_file(path)
    assert ghn_file.format == "released" and ghn_file.meta == {"epoch": 7}
    assert ghn_file.config.max_shape == (64, 64, 16, 16) and ghn_file.config.num_classes == 1000
    assert ghn_file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    ghn = load_ghn(path, name="fixture")
    assert ghn.info.name == "fixture" and ghn.info.sha256 == ghn_file.sha256 and not ghn.training


def test_convert_round_trip(tmp_path: Path) -> None:
    src = write_released_ghn(tmp_path / "tiny.pt")
    dst = tmp_path / "tiny.safetensors"
    convert_ghn(src, dst)
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT
    assert json.loads(meta[CONFIG_KEY]) == TINY_CONFIG.to_dict()
    assert json.loads(meta["ghnorth.ghn.source"])["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    a, b = load_ghn(src), load_ghn(dst)
    assert a.config == b.config
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert read_ghn_file(dst).format == "safetensors"


def test_refuses_to_unpickle_objects(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "config": _Marker(marker)}, path)
    with pytest.raises(GHNFileError, match="refusing to load"):
        read_ghn_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"not a checkpoint at all", "not a GHN file"),
])
def test_rejects_non_ghn_bytes(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(GHNFileError, match=message):
        read_ghn_file(path)


def test_rejects_files_that_are_not_ghns(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(GHNFileError, match="ghnorth ghn convert"):
        read_ghn_file(plain)
    no_config = tmp_path / "noconfig.pt"
    torch.save({"state_dict": {}}, no_config)
    with pytest.raises(GHNFileError, match="expected 'state_dict' and 'config'"):
        read_ghn_file(no_config)
    with pytest.raises(GHNFileError, match="no such GHN file"):
        read_ghn_file(tmp_path / "missing.pt")


def test_rejects_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    path = write_released_ghn(tmp_path / "tiny.pt")
    data = torch.load(path, weights_only=True)
    data["config"]["hid"] = 16
    torch.save(data, path)
    with pytest.raises(GHNFileError, match="do not fit a GHN-2"):
        load_ghn(path)
    del data["state_dict"]["ln.weight"]
    data["config"]["hid"] = 8
    torch.save(data, path)
    with pytest.raises(GHNFileError, match="missing.*ln.weight"):
        load_ghn(path)


def test_convert_command(cli, tmp_path: Path) -> None:
    src = write_released_ghn(tmp_path / "tiny.pt")
    result = cli("ghn", "convert", src, tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert read_ghn_file(tmp_path / "out.safetensors").config == TINY_CONFIG

    (tmp_path / "bad.pt").write_bytes(b"junk")
    result = cli("ghn", "convert", tmp_path / "bad.pt", tmp_path / "bad.safetensors")
    assert result.exit_code == 1
    assert result.stderr.startswith("ghnorth: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
