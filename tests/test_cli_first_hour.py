"""A new user's first hour: -q/-v where users type them, quiet means quiet, --threads everywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from ghn_helpers import write_released_ghn
from ghnorth_cli.checkpoint import read_checkpoint
from ghnorth_cli.logs import name_list
from ghnorth_cli.threads import DEFAULT_THREADS, apply_threads

ARCH = "timm:test_convnext"  # its layer scales ("gamma") have no GHN-2 node: a list of names on stderr
IMG = 32


@pytest.fixture
def ghn_file(tmp_path: Path) -> Path:
    return write_released_ghn(tmp_path / "tiny.pt")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _predict(cli, ghn_file: Path, out: Path, *extra: str):
    return cli("predict", "-a", ARCH, "--img-size", IMG, "--num-classes", 10, "--ghn", ghn_file, "-o", out, *extra)


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_nothing_but_errors(cli, ghn_file: Path, tmp_path: Path, where: str, restore_threads) -> None:
    out = tmp_path / "p.safetensors"
    loud = _predict(cli, ghn_file, out)
    assert loud.exit_code == 0 and "cannot predict" in loud.stderr and "predicted" in loud.stderr
    args = ["predict", "-a", ARCH, "--img-size", IMG, "--num-classes", 10, "--ghn", ghn_file, "-o", out]
    quiet = cli("-q", *args) if where == "before" else cli(*args, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    failed = cli(*args[:-2], "-o", tmp_path / "missing" / "p.safetensors", "-q")
    assert failed.exit_code == 1 and failed.stderr.startswith("ghnorth: error: ")  # errors still show


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_silences_library_warnings(quiet: bool) -> None:
    import subprocess
    import sys

    code = ("import warnings; from ghnorth_cli.cli.app import set_verbosity; "
            f"set_verbosity(quiet={quiet}); warnings.warn('a library warning', UserWarning)")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert (err == "") if quiet else ("a library warning" in err and "Traceback" not in err)


def test_long_lists_are_capped_unless_verbose(cli, ghn_file: Path, tmp_path: Path, restore_threads) -> None:
    gammas = [n for n in read_checkpoint_names(cli, ghn_file, tmp_path) if n.endswith("gamma")]
    assert len(gammas) > 6  # test_convnext has more layer scales than the cap
    normal = _predict(cli, ghn_file, tmp_path / "a.safetensors")
    assert f"{len(gammas)} parameter tensor(s)" in normal.stderr and "-v lists all" in normal.stderr
    assert gammas[0] in normal.stderr and gammas[-1] not in normal.stderr
    verbose = _predict(cli, ghn_file, tmp_path / "b.safetensors", "-v")
    assert verbose.exit_code == 0 and all(g in verbose.stderr for g in gammas)
    assert "-v lists all" not in verbose.stderr


def read_checkpoint_names(cli, ghn_file: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "names.safetensors"
    assert _predict(cli, ghn_file, out, "-q").exit_code == 0
    return read_checkpoint(out).extra("ghnorth.unpredicted")


def test_name_list() -> None:
    logger = logging.getLogger("ghnorth-test-names")
    logger.setLevel(logging.INFO)
    assert name_list(["a", "b"], logger=logger) == "a, b"
    assert name_list(list("abcdefgh"), limit=3, logger=logger) == "a, b, c, ... and 5 more (-v lists all)"
    logger.setLevel(logging.DEBUG)
    assert name_list(list("abcdefgh"), limit=3, logger=logger) == "a, b, c, d, e, f, g, h"


def test_threads_default_and_record(cli, ghn_file: Path, tmp_path: Path, monkeypatch, restore_threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert apply_threads(None) == DEFAULT_THREADS == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert apply_threads(None) == 2  # the user's OMP_NUM_THREADS is the default then
    with pytest.raises(ValueError):
        apply_threads(0)
    out = tmp_path / "p.safetensors"
    assert _predict(cli, ghn_file, out, "--threads", "2", "-q").exit_code == 0
    (entry,) = read_checkpoint(out).history
    assert entry["threads"] == 2
    post = tmp_path / "post.safetensors"
    result = cli("postprocess", out, "--beta", "0.1", "-o", post, "--threads", "1", "-q")
    assert result.exit_code == 0, result.stderr
    assert [e["threads"] for e in read_checkpoint(post).history] == [2, 1]


COMPUTING = [["init"], ["predict"], ["postprocess"], ["analyze"], ["finetune"], ["train-ghn"], ["embed"],
             ["graph"], ["ghn", "eval"]]


@pytest.mark.parametrize("command", COMPUTING, ids=" ".join)
def test_every_computing_command_takes_threads(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0 and "--threads" in result.stdout
    assert "--quiet" in result.stdout and "--verbose" in result.stdout


def test_every_command_takes_quiet_and_verbose_after_its_name(cli) -> None:
    from typer.main import get_command

    from ghnorth_cli.cli import app

    def leaves(command, path):
        subs = getattr(command, "commands", None)
        if subs is None:
            yield path
            return
        for name, sub in subs.items():
            yield from leaves(sub, [*path, name])

    names = list(leaves(get_command(app), []))
    assert len(names) >= 15
    for path in names:
        text = cli(*path, "--help").stdout
        assert "-q, --quiet" in text and "-v, --verbose" in text, path


def test_json_stays_on_stdout_under_quiet(cli, ghn_file: Path, tmp_path: Path, restore_threads) -> None:
    result = _predict(cli, ghn_file, tmp_path / "p.safetensors", "--json", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout)["predicted"]["tensors"] > 0


def test_checkpoint_to_a_terminal_is_refused(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "ghnorth_cli", "predict", "-a", "resnet18", "-o", "-"],
                              stdout=follower, stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "ghnorth: error: refusing to write binary data to a terminal: redirect stdout (> FILE, | ghnorth ...) "
        "or pass -o FILE"]


def test_failed_download_removes_what_it_created(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.utils as tv_utils

    from ghnorth_cli.finetune.data import DatasetError, load_dataset

    def fail(url, root, filename=None, md5=None):
        (Path(root) / filename).write_bytes(b"partial")  # a half-downloaded archive
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fail)
    target = tmp_path / "new" / "data"
    with pytest.raises(DatasetError, match="could not download cifar10"):
        load_dataset("cifar10", data_dir=target, download=True)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    (existing / "keep.txt").parent.mkdir()
    (existing / "keep.txt").write_text("x")
    with pytest.raises(DatasetError):
        load_dataset("cifar10", data_dir=existing, download=True)
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]  # only what the download made is gone


def test_pretrained_offline_fails_at_once_in_one_line(cli, tmp_path: Path, monkeypatch) -> None:
    from ghnorth_cli.finetune import model as ft_model

    monkeypatch.setattr(ft_model, "_weights_source", lambda spec: ("https://huggingface.co/timm/x", False))
    monkeypatch.setattr(ft_model, "_reachable", lambda url, timeout=3.0: False)
    # the data folder does not exist: the pretrained check comes first, before any data is read
    result = cli("finetune", "--data", "cifar10", "--data-dir", tmp_path / "none", "-a", "resnet18",
                 "--init", "pretrained", "--epochs", "1")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "ghnorth: error: --init pretrained: timm:resnet18's weights are not cached and huggingface.co cannot be "
        "reached (offline?); run once with network access, or use --init default, orth or a checkpoint"]


def test_reachable_is_quick_for_a_closed_port() -> None:
    import socket
    import time

    from ghnorth_cli.finetune.model import _reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        start = time.perf_counter()
        assert _reachable(f"https://127.0.0.1:{port}/x") is False
    assert time.perf_counter() - start < 3


def test_data_hints_name_only_the_commands_options(tmp_path: Path) -> None:
    from ghnorth_cli.finetune.data import DatasetError, load_dataset
    from ghnorth_cli.ghn_training.data import load_task

    with pytest.raises(DatasetError, match="pass --download to fetch it"):
        load_dataset("cifar10", data_dir=tmp_path)  # finetune has --download
    with pytest.raises(DatasetError) as err:
        load_task("cifar10", data_dir=tmp_path)  # train-ghn and ghn eval do not
    assert "pass --download" not in str(err.value) and "ghnorth finetune --data cifar10" in str(err.value)


def test_predict_imports_only_what_it_uses(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = f"""
import sys
from ghnorth_cli.cli import app
app(["-q", "predict", "--ghn", "ghn2-fmnist-tiny", "-a", "timm:test_convnext", "--img-size", "32",
     "-o", {str(tmp_path / 'p.safetensors')!r}], standalone_mode=False)
print(" ".join(sorted(sys.modules)))
"""
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "ghnorth_cli.ghn.predict" in loaded and "ghnorth_cli.skip_init" in loaded
    unused = ["matplotlib", "rich", "ghnorth_cli.finetune", "ghnorth_cli.experiment",
              "ghnorth_cli.ghn_training", "ghnorth_cli.drawing", "ghnorth_cli.analysis", "ghnorth_cli.postprocess",
              "ghnorth_cli.latent_map"]
    assert [m for m in unused if m in loaded] == []
