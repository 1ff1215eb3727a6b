"""GHN files that ghnorth cannot use: one actionable line, nothing unpickled (issue 11, requirement 7)."""

from __future__ import annotations

import argparse
import io
import logging
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from ghn_helpers import TINY_CONFIG, tiny_ghn, write_released_ghn
from ghnorth_cli.ghn.io import GHNFileError, read_ghn_file

MAX_LINE = 400  # the longest error line anyone should have to read


class _Touch:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _one_line(result) -> str:
    assert result.exit_code == 1, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghnorth: error: "), result.stderr
    assert len(lines[0]) < MAX_LINE, lines[0]
    return lines[0]


def _predict(cli, ghn: Path, tmp_path: Path):
    """``predict --ghn NAME`` run in the GHN's folder, as a user would name a file beside them."""
    import os

    out = tmp_path / "out.safetensors"
    cwd = os.getcwd()
    os.chdir(ghn.parent)
    try:
        result = cli("-q", "predict", "-a", "timm:test_resnet", "--ghn", ghn.name, "-o", out)
    finally:
        os.chdir(cwd)
    assert not out.exists()
    return result


def _ghn_dict() -> dict:
    return {"state_dict": tiny_ghn().state_dict(), "config": TINY_CONFIG.to_dict()}


def test_a_ghn_saved_with_its_training_arguments_gets_the_resave_line(cli, tmp_path):
    path = tmp_path / "trained.pt"
    torch.save({**_ghn_dict(), "args": argparse.Namespace(lr=0.1, epochs=3)}, path)
    line = _one_line(_predict(cli, path, tmp_path))
    assert "argparse.Namespace" in line and "never unpickles" in line
    assert "safe_globals" not in line  # torch's advice, which a CLI user cannot follow
    resave = line[line.index("python -c ") + len("python -c "):].strip().strip('"')
    assert resave.startswith("import torch; ") and f"torch.load('{path.name}', weights_only=False)" in resave
    # the line it shows works: run it (the file is ours, so we trust it) and the result loads
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(resave, {})  # noqa: S102 - the command the message tells the user to run
    finally:
        os.chdir(cwd)
    assert read_ghn_file(tmp_path / "trained-ghn.pt").config == TINY_CONFIG


def test_a_file_that_would_run_code_is_never_unpickled(cli, tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.pt"
    torch.save({**_ghn_dict(), "extra": _Touch(marker)}, path)
    line = _one_line(_predict(cli, path, tmp_path))
    assert "never unpickles" in line and not marker.exists()


def test_a_plain_pickle_is_refused_without_torch_warnings_or_opcodes(cli, tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "bare.pkl"
    with open(path, "wb") as f:
        pickle.dump({**tiny_ghn().state_dict(), "x": _Touch(marker)}, f, protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail here
        line = _one_line(_predict(cli, path, tmp_path))
    # a plain pickle goes to the restricted GHN-3 reader, which refuses the first global it does not admit
    assert "refusing to load" in line and "nothing in it was run" in line
    assert "operand" not in line and "Warning" not in line
    assert not marker.exists()


def test_an_old_torch_save_with_a_newer_pickle_protocol_is_quiet(cli, tmp_path):
    path = tmp_path / "legacy.pt"
    buffer = io.BytesIO()
    torch.save(_ghn_dict(), buffer, _use_new_zipfile_serialization=False, pickle_protocol=4)
    path.write_bytes(buffer.getvalue())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = _one_line(_predict(cli, path, tmp_path))
    assert "old torch.save format" in line and "operand" not in line


def test_the_legacy_format_with_protocol_2_still_loads(tmp_path):
    path = tmp_path / "legacy2.pt"
    torch.save(_ghn_dict(), path, _use_new_zipfile_serialization=False)
    assert read_ghn_file(path).config == TINY_CONFIG


@pytest.mark.parametrize("what", ["ghn", "resnet"])
def test_a_bare_state_dict_names_a_few_keys_and_says_what_is_missing(cli, tmp_path, what):
    import torchvision

    state = tiny_ghn().state_dict() if what == "ghn" else torchvision.models.resnet18().state_dict()
    path = tmp_path / "sd.pt"
    torch.save(state, path)
    line = _one_line(_predict(cli, path, tmp_path))
    assert f"bare state_dict of {len(state)} tensors" in line and f"({len(state)} in all)" in line
    assert "'config'" in line


def test_weights_of_another_network_are_capped(cli, tmp_path):
    import torchvision

    path = tmp_path / "wrong.pt"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict(), "config": TINY_CONFIG.to_dict()}, path)
    line = _one_line(_predict(cli, path, tmp_path))
    assert "missing" in line and "unexpected" in line and "(122 in all)" in line


def test_a_wrong_shape_names_the_tensor_not_torchs_message(tmp_path):
    from ghnorth_cli.ghn.io import load_ghn

    data = _ghn_dict()
    data["state_dict"]["embed.weight"] = torch.zeros(3, 3)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(GHNFileError) as info:
        load_ghn(tmp_path / "bad.pt")
    assert str(info.value).endswith("embed.weight has shape [3, 3], the config says [15, 8]")


def test_a_dict_without_a_config_lists_a_few_keys(tmp_path):
    path = tmp_path / "many.pt"
    torch.save({f"key{i}": i for i in range(50)}, path)
    with pytest.raises(GHNFileError, match=r"expected 'state_dict' and 'config', found key0, .* \(50 in all\)$"):
        read_ghn_file(path)


def test_released_files_still_load(tmp_path):
    assert read_ghn_file(write_released_ghn(tmp_path / "g.pt")).meta == {"epoch": 3}


def test_library_warnings_are_hidden_by_quiet(cli, monkeypatch, tmp_path):
    import ghnorth_cli.cli.info as info_cli

    from ghnorth_cli.checkpoint import model_tensors, write_checkpoint
    from ghnorth_cli.models import create_model, resolve_spec

    spec = resolve_spec("timm:test_resnet", num_classes=3, img_size=16, small_input=False)
    tensors, order = model_tensors(create_model(spec))
    path = tmp_path / "c.safetensors"
    write_checkpoint(path, tensors, spec=spec, order=order, history=[])
    original = info_cli._summary

    def noisy(ckpt):
        warnings.warn("a library deprecation", FutureWarning)  # what torch or timm might say
        logging.getLogger("timm.models").warning("a library log warning")
        logging.getLogger("ghnorth_cli.info").warning("warning: ghnorth's own")
        return original(ckpt)

    monkeypatch.setattr(info_cli, "_summary", noisy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet = cli("-q", "info", path)
    assert quiet.exit_code == 0 and quiet.stderr == "" and caught == []  # -q: nothing but errors
    with pytest.warns(FutureWarning, match="a library deprecation"):  # shown (on stderr) without -q
        loud = cli("info", path)
    assert loud.exit_code == 0 and "a library log warning" in loud.stderr
