"""The GHN registry and cache: downloads from a loopback HTTP server, verification, offline errors."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import logging
import socket
import threading
from pathlib import Path

import pytest

from ghn_helpers import TINY_CONFIG, write_released_ghn
from ghnorth_cli.ghn import registry
from ghnorth_cli.ghn.download import git_blob_id
from ghnorth_cli.ghn.io import GHNFileError
from ghnorth_cli.ghn.registry import (
    REGISTRY,
    GHNNotAvailableError,
    PretrainedGHN,
    cache_dir,
    load_pretrained,
    resolve_ghn,
)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path: Path):
    """Serve ``tmp_path / "www"`` on 127.0.0.1 (loopback only); yields (base URL, folder, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(_Handler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()



def _entry(url: str, blob: str, name: str = "tiny") -> PretrainedGHN:
    return PretrainedGHN(name=name, filename=f"{name}.pt", url=url, git_blob_id=blob, config=TINY_CONFIG,
                         dataset="cifar10", img_size=32, description="tiny test GHN")


def test_git_blob_id(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"


def test_registry_entries_are_explicit() -> None:
    assert set(REGISTRY) == {"ghn2-imagenet", "ghn2-cifar10", "ghn2-fmnist-tiny", "ghn3-t", "ghn3-s", "ghn3-l",
                             "ghn3-xl"}  # GHN-3 entries: tests/test_ghn3_hub.py
    imagenet, cifar = REGISTRY["ghn2-imagenet"], REGISTRY["ghn2-cifar10"]
    assert imagenet.url.endswith("/4673a42507a9dcd0a5ae04e74599e8c92af689b9/checkpoints/ghn2_imagenet.pt")
    assert imagenet.git_blob_id == "7b5d6733e9fdf0069bc6186cad3a0b1b54fda68d"
    assert cifar.git_blob_id == "4f290e0fad1b73066eeabb50be52e0c377d0b15b"
    assert imagenet.config.max_shape == (64, 64, 16, 16) and imagenet.config.num_classes == 1000
    assert cifar.config.max_shape == (64, 64, 11, 11) and cifar.config.num_classes == 10


def test_registry_configs_match_the_released_layout(parity_dir: Path) -> None:
    """The fixtures carry the released files' configs: the registry must agree with them."""
    from ghnorth_cli.ghn.io import read_ghn_file

    assert read_ghn_file(parity_dir / "ghn2_random_imagenet.pt").config == REGISTRY["ghn2-imagenet"].config
    assert read_ghn_file(parity_dir / "ghn2_random_cifar10.pt").config == REGISTRY["ghn2-cifar10"].config


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GHNORTH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ghnorth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "ghnorth"
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_download_verify_and_reuse(server, home: Path, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ghnorth_cli")  # progress follows the log level (-q silences it)
    base, root, requests = server
    src = write_released_ghn(root / "tiny.pt")
    entry = _entry(f"{base}/tiny.pt", git_blob_id(src))
    ghn = load_pretrained("tiny", registry={"tiny": entry})
    cached = home / "ghns" / "tiny.pt"
    assert cached.read_bytes() == src.read_bytes()
    assert ghn.info.name == "tiny" and ghn.info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "tiny.pt" in capsys.readouterr().err  # progress on stderr
    load_pretrained("tiny", registry={"tiny": entry})
    assert requests == ["/tiny.pt"]  # the second load came from the cache
    assert sorted(p.name for p in cached.parent.iterdir()) == ["tiny.pt"]


def test_corrupt_download_leaves_nothing(server, home: Path) -> None:
    base, root, _ = server
    src = write_released_ghn(root / "tiny.pt")
    entry = _entry(f"{base}/tiny.pt", git_blob_id(src))
    src.write_bytes(src.read_bytes()[:-10] + b"0123456789")  # served bytes differ from the released ones
    with pytest.raises(GHNNotAvailableError, match="corrupt.*git blob id"):
        resolve_ghn("tiny", registry={"tiny": entry}, progress=False)
    folder = home / "ghns"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_interrupted_download_leaves_nothing(server, home: Path, monkeypatch) -> None:
    from ghnorth_cli.ghn import download as download_module

    base, root, _ = server
    src = write_released_ghn(root / "tiny.pt")

    def interrupted(response, out, progress, **limits) -> None:
        out.write(response.read(100))
        raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "_stream_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_ghn("tiny", registry={"tiny": _entry(f"{base}/tiny.pt", git_blob_id(src))}, progress=False)
    assert list((home / "ghns").iterdir()) == []


def test_cached_file_that_is_not_the_release_is_refused(home: Path, tmp_path: Path) -> None:
    entry = _entry("http://127.0.0.1:9/tiny.pt", "0" * 40)
    (home / "ghns").mkdir(parents=True)
    write_released_ghn(home / "ghns" / "tiny.pt")
    with pytest.raises(GHNNotAvailableError, match="not the released file"):
        resolve_ghn("tiny", registry={"tiny": entry})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_says_where_to_get_the_file(home: Path) -> None:
    entry = dataclasses.replace(REGISTRY["ghn2-imagenet"], url=f"http://127.0.0.1:{_closed_port()}/ghn2_imagenet.pt")
    with pytest.raises(GHNNotAvailableError) as info:
        resolve_ghn("ghn2-imagenet", registry={"ghn2-imagenet": entry}, progress=False)
    message = str(info.value)
    assert "not cached" in message and entry.url in message and "give its path instead of" in message
    assert str(home / "ghns" / "ghn2_imagenet.pt") in message


def test_offline_variable_forbids_downloads(home: Path, monkeypatch, server) -> None:
    base, root, requests = server
    src = write_released_ghn(root / "tiny.pt")
    monkeypatch.setenv("GHNORTH_OFFLINE", "1")
    with pytest.raises(GHNNotAvailableError, match="GHNORTH_OFFLINE"):
        resolve_ghn("tiny", registry={"tiny": _entry(f"{base}/tiny.pt", git_blob_id(src))})
    assert requests == []


def test_http_errors_are_reported(server, home: Path) -> None:
    base, _, _ = server
    with pytest.raises(GHNNotAvailableError, match="HTTP 404"):
        resolve_ghn("tiny", registry={"tiny": _entry(f"{base}/missing.pt", "0" * 40)}, progress=False)


def test_local_paths_and_urls(server, home: Path, tmp_path: Path) -> None:
    base, root, requests = server
    src = write_released_ghn(root / "tiny.pt")
    assert resolve_ghn(str(src)).path == src
    by_url = resolve_ghn(f"{base}/tiny.pt", progress=False)
    assert by_url.path.read_bytes() == src.read_bytes() and by_url.path.is_relative_to(home)
    resolve_ghn(f"{base}/tiny.pt", progress=False)
    assert requests == ["/tiny.pt"]
    with pytest.raises(GHNNotAvailableError, match="no such file, and not a known GHN"):
        resolve_ghn(str(tmp_path / "nope.pt"))


def test_registry_file_with_another_config_is_refused(server, home: Path) -> None:
    base, root, _ = server
    src = write_released_ghn(root / "tiny.pt")
    entry = dataclasses.replace(_entry(f"{base}/tiny.pt", git_blob_id(src)),
                                config=dataclasses.replace(TINY_CONFIG, num_classes=100))
    with pytest.raises(GHNFileError, match="differs from the registry"):
        load_pretrained("tiny", registry={"tiny": entry}, progress=False)


def test_list_command_shows_cache_state(cli, home: Path) -> None:
    result = cli("ghn", "list")
    assert result.exit_code == 0
    assert "ghn2-imagenet *" in result.stdout and "ghn2-cifar10" in result.stdout
    assert str(home / "ghns") in result.stdout
    (home / "ghns").mkdir(parents=True)
    (home / "ghns" / "ghn2_cifar10.pt").write_bytes(b"x")
    import json

    rows = {r["name"]: r for r in json.loads(cli("ghn", "list", "--json").stdout)["ghns"]}
    assert rows["ghn2-cifar10"]["cached"] and not rows["ghn2-imagenet"]["cached"]
    assert rows["ghn2-imagenet"]["default"] and rows["ghn2-imagenet"]["url"] == registry.REGISTRY["ghn2-imagenet"].url


def test_download_command(cli, server, home: Path, monkeypatch) -> None:
    base, root, _ = server
    src = write_released_ghn(root / "tiny.pt")
    monkeypatch.setitem(REGISTRY, "tiny", _entry(f"{base}/tiny.pt", git_blob_id(src)))
    result = cli("ghn", "download", "tiny")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"tiny\t{home / 'ghns' / 'tiny.pt'}"
    assert "tiny.pt" in result.stderr  # progress on stderr
    result = cli("ghn", "download", "nope")
    assert result.exit_code == 1 and "not a known GHN" in result.stderr


def test_download_without_names_fetches_the_ghn2s_only(cli, monkeypatch) -> None:
    import ghnorth_cli.ghn.registry as registry_module

    asked = []

    def fake_resolve(name, **kwargs):
        asked.append(name)
        return dataclasses.make_dataclass("Resolved", ["path"])(path=Path("/cache") / name)

    monkeypatch.setattr(registry_module, "resolve_ghn", fake_resolve)
    result = cli("ghn", "download")
    assert result.exit_code == 0, result.stderr
    assert asked == [name for name, entry in REGISTRY.items() if entry.hub is None]
    assert asked and not any(name.startswith("ghn3") for name in asked)  # 3.7 GB only when asked by name


def test_a_ghn_path_that_is_not_a_file_says_what_it_is(tmp_path) -> None:
    """`--ghn DIR` said "no such file", sending the user to look for a typo."""
    import os

    folder = tmp_path / "ghns"
    folder.mkdir()
    with pytest.raises(GHNNotAvailableError, match=r"ghns': is a directory, not a GHN file$"):
        resolve_ghn(str(folder))
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(GHNNotAvailableError, match=r"pipe.pt': is a FIFO, not a GHN file$"):
        resolve_ghn(str(fifo))
