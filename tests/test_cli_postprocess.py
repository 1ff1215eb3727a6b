"""``ghnorth postprocess``: files and pipes, provenance, byte-identical reruns, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from ghnorth_cli.checkpoint import model_tensors, provenance, read_checkpoint, write_checkpoint
from ghnorth_cli.models import create_model, resolve_spec
from ghnorth_cli.postprocess import postprocess

ARCH = "timm:test_resnet"  # 16 conv/linear layers, 0.5M parameters


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    spec = resolve_spec(ARCH, num_classes=10)
    tensors, order = model_tensors(create_model(spec, seed=0))
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    entry = provenance(command="init", options={"method": "default"}, seed=0)
    write_checkpoint(path, tensors, spec=spec, order=order, history=[entry], extra={"ghnorth.note": {"kept": True}})
    return path


@pytest.fixture(autouse=True)
def _fixed_time(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # provenance time pinned: reruns are byte-identical


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghnorth: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]


def test_writes_the_library_result_and_one_more_history_entry(cli, small_ckpt, tmp_path):
    out = tmp_path / "out.safetensors"
    result = cli("postprocess", small_ckpt, "-o", out, "--beta", "1e-3", "--orth-from", "4", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "layer   4" in result.stderr and "noise+orth" in result.stderr and "classifier" in result.stderr
    before, after = read_checkpoint(small_ckpt), read_checkpoint(out)
    expected, _ = postprocess(before.tensors, before.order, beta=1e-3, orth_from=4,
                              generator=torch.Generator().manual_seed(3))
    assert after.order == before.order and after.spec == before.spec
    assert all(torch.equal(after.tensors[k], expected[k]) for k in before.order)
    assert after.history[:-1] == before.history and len(after.history) == 2
    entry = after.history[-1]
    assert entry["command"] == "postprocess" and entry["seed"] == 3
    assert entry["options"] == {"preset": None, "beta": 1e-3, "orth_from": 4, "noise_layers": "all", "dtype": "keep"}
    assert entry["inputs"] == {"input": hashlib.sha256(small_ckpt.read_bytes()).hexdigest()}
    assert after.extra("ghnorth.note") == {"kept": True}


@pytest.mark.slow
def test_same_seed_gives_identical_bytes(cli, small_ckpt, tmp_path):
    paths = [tmp_path / f"{name}.safetensors" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (5, 5, 6)):
        assert cli("postprocess", small_ckpt, "-o", path, "--preset", "resnet50-paper", "--orth-from", "8",
                   "--seed", seed).exit_code == 0
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c


def test_json_report_on_stdout_and_preset_overrides(cli, small_ckpt, tmp_path):
    result = cli("postprocess", small_ckpt, "-o", tmp_path / "o.safetensors", "--preset", "convnext_base-paper",
                 "--orth-from", "10", "--noise-layers", "from-orth", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["options"] == {"preset": "convnext_base-paper", "beta": 3e-5, "orth_from": 10,
                                 "noise_layers": "from-orth", "dtype": "keep"}
    assert report["summary"] == {"unchanged": 9, "noise+orth": 6, "classifier": 1}
    assert len(report["layers"]) == 16 and report["layers"][-1]["action"] == "classifier"
    assert "published for convnext_base" in result.stderr  # the preset's architecture is not this one


def test_pipe_stdin_to_stdout_with_report_file(cli, small_ckpt, tmp_path):
    from safetensors.torch import load

    report = tmp_path / "report.json"
    result = cli("postprocess", "-", "-o", "-", "--orth-from", "2", "--report", report,
                 input=small_ckpt.read_bytes())
    assert result.exit_code == 0, result.stderr
    tensors = load(result.stdout_bytes)
    before = read_checkpoint(small_ckpt)
    assert sorted(tensors) == sorted(before.tensors)
    assert not torch.equal(tensors["conv1.3.weight"], before.tensors["conv1.3.weight"])
    assert torch.equal(tensors["fc.weight"], before.tensors["fc.weight"])
    assert json.loads(report.read_text())["summary"] == {"unchanged": 1, "orth": 14, "classifier": 1}
    assert "layer" in result.stderr and b"layer" not in result.stdout_bytes[:8]


def test_reproduces_the_reference_fixture_through_the_cli(cli, parity_dir, tmp_path):
    from test_postprocess import assert_matches_determined_part

    source = parity_dir / "postprocess" / "squeezenet1_0_ghn2.safetensors"
    out = tmp_path / "orth.safetensors"
    result = cli("postprocess", source, "--arch", "torchvision:squeezenet1_0", "--orth-from", "5", "-o", out)
    assert result.exit_code == 0, result.stderr
    reference = json.loads((parity_dir / "postprocess" / "squeezenet1_0_orth_from_5.json").read_text())
    inputs, outputs = read_checkpoint(source, arch="torchvision:squeezenet1_0").tensors, read_checkpoint(out).tensors
    changed = {n for n in outputs if not torch.equal(outputs[n], inputs[n])}
    assert_matches_determined_part(outputs, inputs, reference["tensors"], changed)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--beta", "-0.1"], ["--beta", "minimum 0"]),
        (["--orth-from", "17"], ["orth-from 17", "16 layers"]),
        (["--orth-from", "16"], ["classifier"]),
        (["--orth-from", "0"], ["1-based"]),
        (["--preset", "vit-paper"], ["unknown --preset", "resnet50-paper"]),
        (["--preset", "resnet50-paper"], ["orth-from 37", "16 layers"]),  # no preset warning before the error
        (["--noise-layers", "some"], ["--noise-layers"]),
        (["--beta", "1e-3", "--noise-layers", "from-orth"], ["needs an orth-from"]),
        (["--arch", "torchvision:resnet18"], ["does not fit"]),
    ],
)
def test_bad_options(cli, small_ckpt, tmp_path, options, fragments):
    out = tmp_path / "out.safetensors"
    _assert_one_line_error(cli("postprocess", small_ckpt, "-o", out, *options), *fragments)
    assert list(tmp_path.iterdir()) == []


def _bad_input(tmp_path: Path, kind: str, small_ckpt: Path) -> Path:
    path = tmp_path / "in" / f"{kind}.safetensors"
    path.parent.mkdir()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(small_ckpt.read_bytes()[:5000])
    elif kind == "not-safetensors":
        path.write_bytes(b"PK\x03\x04 this is a zip file, not safetensors" * 10)
    return path  # "missing": never written


@pytest.mark.parametrize(("kind", "fragment"), [("missing", "no such file"), ("empty", "empty"),
                                                 ("truncated", "truncated"), ("not-safetensors", "not a safetensors")])
def test_bad_input_files(cli, small_ckpt, tmp_path, kind, fragment):
    source = _bad_input(tmp_path, kind, small_ckpt)
    out = tmp_path / "out.safetensors"
    _assert_one_line_error(cli("postprocess", source, "-o", out, "--orth-from", "2"), fragment)
    assert not out.exists()


def test_plain_safetensors_needs_arch(cli, parity_dir, tmp_path):
    source = parity_dir / "postprocess" / "squeezenet1_0_ghn2.safetensors"
    _assert_one_line_error(cli("postprocess", source, "-o", tmp_path / "o.safetensors", "--orth-from", "2"), "--arch")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_leaves_nothing(cli, small_ckpt, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "out.safetensors"
    _assert_one_line_error(cli("postprocess", small_ckpt, "-o", out, "--orth-from", "2"), "cannot write")
    assert list(tmp_path.iterdir()) == []
    target_dir = tmp_path / "is_a_dir"
    target_dir.mkdir()
    _assert_one_line_error(cli("postprocess", small_ckpt, "-o", target_dir, "--orth-from", "2"), "directory")


def test_unwritable_report_fails_before_any_output(cli, small_ckpt, tmp_path):
    out = tmp_path / "out.safetensors"
    result = cli("postprocess", small_ckpt, "-o", out, "--orth-from", "2", "--report", tmp_path / "no" / "r.json")
    _assert_one_line_error(result, "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_json_to_stdout_with_checkpoint_on_stdout_is_refused(cli, small_ckpt):
    result = cli("postprocess", small_ckpt, "-o", "-", "--orth-from", "2", "--json")
    _assert_one_line_error(result, "--report")
    assert result.stdout_bytes == b""
