"""``ghnorth analyze``: table on stdout, --json, --plot, labels, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghnorth_cli.checkpoint import model_tensors, provenance, write_checkpoint
from ghnorth_cli.models import create_model, resolve_spec


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    spec = resolve_spec("timm:test_resnet", num_classes=10)
    tensors, order = model_tensors(create_model(spec, seed=0))
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    write_checkpoint(path, tensors, spec=spec, order=order, history=[provenance(command="init", options={}, seed=0)])
    return path


def _assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghnorth: error: ") and fragment in lines[0], result.stderr


def test_table_on_stdout(cli, small_ckpt):
    result = cli("analyze", small_ckpt)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"# small.safetensors ({small_ckpt})"
    assert lines[1].split() == ["idx", "layer", "shape", "K", "mean|r|", "std(r)", "|r|>0.5", "dups", "sigma_max",
                                "eff_rank"]
    assert len(lines) == 2 + 16 and lines[-1].split()[:4] == ["16", "fc.weight", "10x96", "10"]
    assert "idx" not in result.stderr


def test_json_finds_the_ghn_tiling_of_the_parity_fixture(cli, parity_dir):
    source = parity_dir / "postprocess" / "squeezenet1_0_ghn2.safetensors"
    result = cli("analyze", source, "--json", "--label", "ghn2")
    assert result.exit_code == 0, result.stderr
    (run,) = json.loads(result.stdout)["checkpoints"]
    layers = run["layers"]
    assert run["label"] == "ghn2" and len(layers) == 26  # module order from the file's own `order` key
    assert layers[0]["name"] == "features.0.weight" and layers[0]["duplicate_channels"] == 32  # 96 = 64 + 32 tiled
    assert layers[-1]["name"] == "classifier.1.weight" and layers[-1]["channels"] == 1000
    assert "warning" not in result.stderr


def test_several_checkpoints_with_labels_and_a_plot(cli, small_ckpt, tmp_path):
    orth = tmp_path / "orth.safetensors"
    assert cli("postprocess", small_ckpt, "-o", orth, "--orth-from", "1").exit_code == 0
    figure = tmp_path / "fig2.svg"
    result = cli("analyze", small_ckpt, orth, "-l", "default", "-l", "orth", "--plot", figure, "--plot-layers", "2,5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n# ") == 1 and "# orth (" in result.stdout
    assert "<svg" in figure.read_text()[:500] and "figure 2 (layers 2, 5)" in result.stderr


def test_stdin(cli, small_ckpt):
    result = cli("analyze", "-", "--json", input=small_ckpt.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["checkpoints"][0]["label"] == "stdin"


def test_plain_file_without_order_warns(cli, small_ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    plain = tmp_path / "plain.safetensors"
    save_file(load_file(small_ckpt), plain)
    result = cli("analyze", plain)
    assert result.exit_code == 0 and "no module order" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-l", "one", "-l", "two"], "2 --label for 1 files"),
        (["--plot", "fig.jpg"], ".png"),
        (["--plot-layers", "a,b"], "--plot-layers"),
        (["--plot-layers", "0"], "--plot-layers"),
        (["--arch", "torchvision:resnet18"], "does not fit"),
    ],
)
def test_bad_options(cli, small_ckpt, tmp_path, args, fragment):
    _assert_one_line_error(cli("analyze", small_ckpt, *args), fragment)


def test_bad_inputs(cli, tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    _assert_one_line_error(cli("analyze", empty), "empty")
    _assert_one_line_error(cli("analyze", tmp_path / "missing.safetensors"), "no such file")
    _assert_one_line_error(cli("analyze", "-", "-"), "only once")


def test_unwritable_plot(cli, small_ckpt, tmp_path):
    _assert_one_line_error(cli("analyze", small_ckpt, "--plot", tmp_path / "no" / "fig.png"), "cannot write")
    assert list(tmp_path.iterdir()) == []
