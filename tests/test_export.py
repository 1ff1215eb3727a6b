"""Model folders timm loads by name (`ghnorth export`, `-o DIR/`), `ghnorth_cli.create_model` / `load_model`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ghnorth_cli
from ghnorth_cli.checkpoint import model_tensors, read_checkpoint, write_checkpoint
from ghnorth_cli.errors import CheckpointError, GhnorthError
from ghnorth_cli.export import export_checkpoint, push_to_hub
from ghnorth_cli.models import create_model, resolve_spec


def _checkpoint(tmp_path: Path, arch: str, *, img_size: int | None = None, num_classes: int = 10, seed: int = 3,
                history: list | None = None, model=None) -> Path:
    spec = resolve_spec(arch, num_classes=num_classes, img_size=img_size)
    model = create_model(spec, seed=seed) if model is None else model
    tensors, order = model_tensors(model)
    path = tmp_path / f"{spec.name}-{spec.img_size}.safetensors"
    write_checkpoint(path, tensors, spec=spec, order=order, history=history or [{"command": "test"}])
    return path


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _timm_local(folder: Path) -> torch.nn.Module:
    import timm

    return timm.create_model(f"local-dir:{folder}", pretrained=True)


@pytest.mark.parametrize(("arch", "img_size"), [("timm:test_resnet", None), ("timm:test_vit", 32),
                                                ("timm:deit_tiny_distilled_patch16_224", 32)])
def test_timm_loads_the_folder_by_name_strictly(tmp_path: Path, arch: str, img_size: int | None) -> None:
    ckpt = _checkpoint(tmp_path, arch, img_size=img_size)
    result = export_checkpoint(ckpt, tmp_path / "out")
    assert result.timm_loadable and result.reason == ""
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    spec = read_checkpoint(ckpt).spec
    assert config["architecture"] == spec.name and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, spec.img_size, spec.img_size]
    assert config["model_args"]["num_classes"] == 10 and config["ghnorth"]["timm_loadable"] is True
    model = _timm_local(tmp_path / "out")  # timm loads pretrained weights strictly
    assert_same_state(model, ghnorth_cli.load_model(ckpt))
    assert model.pretrained_cfg["input_size"] == (3, spec.img_size, spec.img_size)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, spec.img_size, spec.img_size)).shape == (1, 10)


def test_small_input_and_torchvision_need_ghnorth_and_the_export_says_so(tmp_path: Path) -> None:
    for arch, why in (("timm:resnet18", "adapted to 32 px"), ("torchvision:resnet18", "torchvision model")):
        ckpt = _checkpoint(tmp_path, arch, img_size=32)
        folder = tmp_path / arch.replace(":", "-")
        result = export_checkpoint(ckpt, folder)
        assert not result.timm_loadable and why in result.reason
        assert "ghnorth_cli.load_model" in result.describe()
        config = json.loads((folder / "config.json").read_text())
        assert config["ghnorth"]["timm_loadable"] is False and why in config["ghnorth"]["timm_cannot"]
        loaded = ghnorth_cli.load_model(folder)
        assert_same_state(loaded, ghnorth_cli.load_model(ckpt))
        assert tuple(loaded.conv1.weight.shape[2:]) == (3, 3)  # the small-input stem, rebuilt
        with pytest.raises(RuntimeError):  # timm alone cannot: 7x7 stem, or no such timm model
            _timm_local(folder)


def test_output_folder_from_any_command(cli, tmp_path: Path) -> None:
    out = tmp_path / "orth"
    result = cli("init", "--arch", "timm:test_resnet", "--num-classes", "10", "--method", "orth", "-o", f"{out}/")
    assert result.exit_code == 0, result.stderr
    assert "local-dir" in result.stderr
    assert_same_state(_timm_local(out), ghnorth_cli.load_model(out))
    assert read_checkpoint(out / "model.safetensors").history[-1]["command"] == "init"


def test_export_command_and_its_errors(cli, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "timm:test_resnet")
    result = cli("export", str(ckpt), str(tmp_path / "dir"))
    assert result.exit_code == 0 and "pretrained=True" in result.stderr
    again = cli("export", str(ckpt), str(tmp_path / "dir"))  # into an existing folder: files replaced
    assert again.exit_code == 0
    info = cli("info", str(tmp_path / "dir"), "--json")  # every command reads a model folder as a checkpoint
    assert info.exit_code == 0 and json.loads(info.stdout)["model"]["name"] == "test_resnet"
    (tmp_path / "file").write_text("x")
    for args, message in (([str(ckpt), str(tmp_path / "file")], "not a folder"),
                          ([str(tmp_path / "missing.safetensors"), str(tmp_path / "d2")], "no such file"),
                          ([str(ckpt), str(tmp_path / "no" / "such")], "no such directory"),
                          ([str(ckpt), str(tmp_path / "d3"), "--push-to-hub", "noslash"], "user/name")):
        result = cli("export", *args)
        assert result.exit_code != 0 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_mean_and_std_follow_the_fine_tuning_data(tmp_path: Path) -> None:
    history = [{"command": "finetune", "data": {"name": "fashion-mnist"}}]
    ckpt = _checkpoint(tmp_path, "timm:test_resnet", history=history)
    export_checkpoint(ckpt, tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())["pretrained_cfg"]
    assert cfg["mean"] == [0.286] * 3 and cfg["std"] == [0.353] * 3


def test_create_and_load_model_rebuild_exactly(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "timm:test_resnet", img_size=32)
    empty = ghnorth_cli.create_model(ckpt)
    loaded = ghnorth_cli.load_model(ckpt)
    stored = read_checkpoint(ckpt).tensors
    assert all(torch.equal(v, stored[k]) for k, v in loaded.state_dict().items())
    assert not torch.equal(empty.state_dict()["fc.weight"], stored["fc.weight"])  # seed 0, not the file's
    from safetensors.torch import save_file

    bad = dict(stored)
    bad["fc.weight"] = torch.zeros(3, 3)
    plain = tmp_path / "plain.safetensors"
    save_file(bad, plain)
    with pytest.raises(CheckpointError, match="fc.weight"):
        ghnorth_cli.load_model(plain, arch="timm:test_resnet")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ghnorth_cli.load_model(tmp_path)  # a folder, but no model.safetensors in it


def test_auxiliary_heads_are_rebuilt(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    googlenet = torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=True, init_weights=True)
    ckpt = _checkpoint(tmp_path, "torchvision:googlenet", img_size=224, model=googlenet)
    loaded = ghnorth_cli.load_model(ckpt)
    assert loaded.aux_logits and loaded.aux1 is not None
    assert_same_state(loaded, googlenet)
    plain = ghnorth_cli.load_model(_checkpoint(tmp_path, "torchvision:googlenet", img_size=224))
    assert plain.aux1 is None


class FakeApi:
    calls: list = []

    def __init__(self, token=None, library_name=None):
        self.token = token

    def create_repo(self, repo_id, private=False, exist_ok=False):
        FakeApi.calls.append(("create_repo", repo_id, private, exist_ok))
        return type("Repo", (), {"repo_id": repo_id})()

    def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
        FakeApi.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_to_hub_uploads_the_folder(cli, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    ckpt = _checkpoint(tmp_path, "timm:test_resnet")
    result = cli("export", str(ckpt), str(tmp_path / "dir"), "--push-to-hub", "me/r", "--private")
    assert result.exit_code == 0, result.stderr
    assert FakeApi.calls == [("create_repo", "me/r", True, True),
                             ("upload_folder", "me/r", ["config.json", "model.safetensors"])]
    assert "commit/abc" in result.stderr


def test_push_to_hub_failure_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    class Refusing(FakeApi):
        def create_repo(self, *args, **kwargs):
            raise RuntimeError("401 Client Error: Unauthorized\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    with pytest.raises(GhnorthError, match=r"^cannot upload .* me/r: 401 Client Error: Unauthorized$"):
        push_to_hub(tmp_path, "me/r")


def test_load_model_refuses_what_is_not_a_path() -> None:
    from ghnorth_cli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="expected a checkpoint path .* got int 123"):
        ghnorth_cli.load_model(123)
