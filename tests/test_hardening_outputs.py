"""Issue 12: outputs never destroy what the user did not ask to replace; signals end cleanly."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ghnorth_cli.files import sweep_stale, write_bytes_atomic

TINY = "timm:test_resnet"


def _one_line(result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ghnorth: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from ghnorth_cli.cli import app

    path = tmp_path_factory.mktemp("ckpt") / "in.safetensors"
    result = CliRunner().invoke(app, ["init", "--arch", TINY, "--num-classes", "10", "-o", str(path)])
    assert result.exit_code == 0, result.stderr
    return path


def test_symlink_output_replaces_the_target_and_keeps_the_link(cli, tmp_path, ckpt):
    target = tmp_path / "real.safetensors"
    target.write_bytes(b"old")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    result = cli("postprocess", ckpt, "-o", link, "--beta", "0")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes()[:8] != b"old" and target.stat().st_size > 1000


def test_fifo_output_is_written_through(cli, tmp_path, ckpt):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def read() -> None:
        with open(fifo, "rb") as f:
            got.extend(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    result = cli("postprocess", ckpt, "-o", fifo, "--beta", "0")
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still a FIFO, not replaced by a regular file
    assert len(got) > 1000 and got[8:9] == b"{"


def test_character_device_output_stays_a_device(cli, ckpt):
    result = cli("postprocess", ckpt, "-o", "/dev/null", "--beta", "0")
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_directory_output_is_one_line(cli, tmp_path, ckpt):
    _one_line(cli("postprocess", ckpt, "-o", tmp_path, "--beta", "0"), "is a directory")


@pytest.mark.parametrize("args", [
    ("postprocess", "{ckpt}", "-o", "{x}", "--report", "{x}"),
    ("postprocess", "{ckpt}", "-o", "{x}", "--report", "{link}"),
    ("finetune", "--data", "fashion-mnist", "-o", "{x}", "--metrics", "{x}"),
    ("finetune", "--data", "fashion-mnist", "-o", "{x}", "--log", "{dotx}"),
    ("finetune", "--data", "fashion-mnist", "--metrics", "{x}", "--state", "{x}"),
    ("train-ghn", "-o", "{x}", "--log", "{x}"),
])
def test_two_outputs_on_one_path_are_refused_before_any_work(cli, tmp_path, ckpt, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    x = tmp_path / "x.out"
    (tmp_path / "link").symlink_to(x)
    values = {"ckpt": str(ckpt), "x": str(x), "link": str(tmp_path / "link"), "dotx": "./x.out"}
    result = cli(*[a.format(**values) for a in args])
    _one_line(result, "also the")
    assert not x.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_block_devices_and_sockets_are_refused(tmp_path):
    import socket

    from ghnorth_cli.errors import GhnorthError

    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(GhnorthError, match="socket"):
            write_bytes_atomic(path, b"x")
    finally:
        server.close()


def test_stdout_short_writes_are_retried_on_a_non_blocking_pipe():
    """A non-blocking pipe takes 64 KiB at a time; every byte must still arrive, or the exit code says so."""
    read_fd, write_fd = os.pipe()
    flags = fcntl.fcntl(write_fd, fcntl.F_GETFL)
    fcntl.fcntl(write_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    size = 3 * 2**20 + 17
    code = f"from ghnorth_cli.files import write_stdout; write_stdout(bytes(range(256)) * ({size} // 256) + b'x' * ({size} % 256))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=write_fd, stderr=subprocess.PIPE)
    os.close(write_fd)
    time.sleep(0.5)  # let the writer find the pipe full
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(1 << 16):
            chunks.append(chunk)
            time.sleep(0.001)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = b"".join(chunks)
    assert len(data) == size and data[:256] == bytes(range(256))


def test_stale_temp_files_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.safetensors.{pid}.abc123.tmp"
    stale.write_bytes(b"half")
    mine = tmp_path / f".out.safetensors.{os.getpid()}.abc123.tmp"
    mine.write_bytes(b"in progress")
    other = tmp_path / ".unrelated.tmp"
    other.write_bytes(b"not ours")
    write_bytes_atomic(tmp_path / "out.safetensors", b"new")
    assert not stale.exists() and mine.exists() and other.exists()
    assert (tmp_path / "out.safetensors").read_bytes() == b"new"
    assert sweep_stale(tmp_path, "out.safetensors") == []


def test_sigterm_removes_temporary_files_and_exits_143(tmp_path):
    """SIGTERM mid-write (as `timeout` sends it): one line, exit 143, no temporary file left."""
    code = ("import os, signal\n"
            "from ghnorth_cli.cli import app, main\n"
            "from ghnorth_cli.files import atomic_writer\n"
            "@app.command('write-slowly')\n"
            "def write_slowly(path: str) -> None:\n"
            "    with atomic_writer(path) as f:\n"
            "        f.write(b'half')\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        f.write(b'never')\n"
            "import sys\n"
            f"sys.argv = ['ghnorth', 'write-slowly', '{tmp_path / 'x.safetensors'}']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == "ghnorth: error: terminated (SIGTERM)\n"
    assert list(tmp_path.iterdir()) == []


def test_interrupt_inside_the_state_save_waits_for_the_save(tmp_path, monkeypatch):
    import torch

    from ghnorth_cli.finetune import state as state_module

    real_save = torch.save

    def interrupted_save(obj, f):
        os.kill(os.getpid(), signal.SIGINT)  # lands mid-write
        time.sleep(0.05)
        real_save(obj, f)

    monkeypatch.setattr(state_module.torch, "save", interrupted_save)
    path = tmp_path / "s.state.pt"
    with pytest.raises(KeyboardInterrupt):
        state_module.save_state(path, {"x": torch.ones(3)})
    monkeypatch.undo()
    assert state_module.load_state(path)["x"].sum() == 3  # the save finished before the interrupt acted
    assert [p.name for p in tmp_path.iterdir()] == ["s.state.pt"]
