"""CLI tests for init, info and archs: exit codes, and stdout kept apart from stderr."""

import json

import pytest
import torch
from safetensors.torch import load, load_file

from ghnorth_cli._version import __version__

ARCH = "torchvision:resnet18"


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"ghnorth {__version__}"


@pytest.mark.parametrize("method", ["default", "orth"])
def test_init_writes_a_checkpoint_that_loads_strictly(cli, tmp_path, method):
    out = tmp_path / f"{method}.safetensors"
    result = cli("init", "--arch", ARCH, "--method", method, "--img-size", "32", "--num-classes", "10",
                 "--seed", "3", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    from ghnorth_cli.models import create_model, resolve_spec

    model = create_model(resolve_spec(ARCH, img_size=32, num_classes=10), seed=99)
    model.load_state_dict(load_file(out), strict=True)


def test_init_is_deterministic(cli, tmp_path):
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path, seed in zip(paths, (1, 1, 2)):
        assert cli("init", "--arch", "timm:resnet10t", "--method", "orth", "--seed", seed, "-o", path).exit_code == 0
    a, b, c = (load_file(p) for p in paths)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.0.weight"], c["conv1.0.weight"])


def test_init_to_stdout_pipes_into_info(cli):
    result = cli("init", "--arch", "timm:resnet10t", "-o", "-")
    assert result.exit_code == 0
    data = result.stdout_bytes
    assert "conv1.0.weight" in load(data)
    info = cli("info", "-", "--json", input=data)
    assert info.exit_code == 0, info.stderr
    parsed = json.loads(info.stdout)
    assert parsed["model"]["name"] == "resnet10t"
    assert parsed["history"][0]["command"] == "init"
    assert parsed["history"][0]["options"]["method"] == "default"


def test_info_text(cli, tmp_path):
    out = tmp_path / "x.safetensors"
    cli("init", "--arch", ARCH, "--method", "orth", "-o", out)
    result = cli("info", out)
    assert result.exit_code == 0
    assert "torchvision:resnet18" in result.stdout and "init" in result.stdout and "method=orth" in result.stdout


def test_info_accepts_a_plain_safetensors_file(cli, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 3)}, tmp_path / "plain.safetensors")
    result = cli("info", tmp_path / "plain.safetensors")
    assert result.exit_code == 0 and "no ghnorth metadata" in result.stdout


def test_archs(cli):
    result = cli("archs", "convnext_ti*")
    assert result.exit_code == 0
    assert "timm:convnext_tiny" in result.stdout.split() and "torchvision:convnext_tiny" in result.stdout.split()


@pytest.mark.parametrize(
    "args, message",
    [
        (["init", "--arch", "resnt18", "-o", "{tmp}/x.safetensors"], "did you mean"),
        (["init", "--arch", ARCH, "--method", "xavier", "-o", "{tmp}/x.safetensors"], "unknown --method"),
        (["init", "--arch", ARCH, "-o", "{tmp}/no/such/dir/x.safetensors"], "cannot write"),
        (["info", "{tmp}/missing.safetensors"], "no such file"),
        (["info", "{tmp}/empty.safetensors"], "empty file"),
        (["info", "{tmp}/text.safetensors"], "not a safetensors file"),
    ],
)
def test_bad_input_is_one_line_and_no_output(cli, tmp_path, args, message):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "text.safetensors").write_text("hello, I am not a checkpoint")
    result = cli(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghnorth: error:") and message in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "x.safetensors").exists()
