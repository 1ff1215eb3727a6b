"""Issue 12 req 2: URL downloads are verified before they are cached (loopback server only)."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from pathlib import Path

import pytest

from ghn_helpers import write_released_ghn
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn.download import DownloadError, download
from ghnorth_cli.ghn.io import check_ghn_file
from ghnorth_cli.ghn.registry import GHNNotAvailableError, resolve_ghn


@pytest.fixture(scope="module")
def ghn_bytes(tmp_path_factory) -> bytes:
    return write_released_ghn(tmp_path_factory.mktemp("ghn") / "tiny.pt").read_bytes()


@pytest.fixture
def server(ghn_bytes):
    """A loopback server whose paths misbehave in the ways downloads meet in the wild."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, body: bytes, *, length: int | None = None, headers: dict | None = None) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/good.pt":
                self._send(ghn_bytes)
            elif self.path == "/truncated.pt":
                self._send(ghn_bytes[:1000], length=len(ghn_bytes))
                self.close_connection = True
            elif self.path == "/page.pt":
                self._send(b"<!doctype html><html><body>Sign in to download</body></html>")
            elif self.path == "/garbage.pt":
                self._send(bytes(range(256)) * 64)
            elif self.path == "/gzip.pt":
                self._send(gzip.compress(ghn_bytes), headers={"Content-Encoding": "gzip"})
            elif self.path == "/drip.pt":
                self.send_response(200)
                self.send_header("Content-Length", str(len(ghn_bytes)))
                self.end_headers()
                try:
                    for byte in ghn_bytes:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass
            else:
                self.send_error(404)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()



def _cached(home: Path) -> list[str]:
    folder = home / "ghns" / "urls"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_good_url_is_cached_and_reused(server, home):
    first = resolve_ghn(f"{server}/good.pt", progress=False)
    assert first.path.is_file() and _cached(home) == [first.path.name]
    check_ghn_file(first.path)


@pytest.mark.parametrize(("path", "reason"), [
    ("truncated.pt", "truncated: 1000 of"),
    ("page.pt", "not a GHN file"),
    ("garbage.pt", "not a GHN file"),
    ("gzip.pt", "gzip-encoded"),
])
def test_a_bad_body_is_never_cached(server, home, path, reason):
    for _ in range(2):  # the second try downloads again: nothing bad was kept
        with pytest.raises(GHNNotAvailableError, match=reason) as info:
            resolve_ghn(f"{server}/{path}", progress=False)
        assert "\n" not in str(info.value)
        assert _cached(home) == []


def test_a_trickling_server_is_given_up(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError, match="too slow"):
        download(f"{server}/drip.pt", tmp_path / "g.pt", progress=False, min_rate=1000, grace_s=1.0)
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_cache_location_is_one_line(cli, server, home, tmp_path):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("a file, not a folder")
    with pytest.raises(GhnorthError, match="cannot use the download folder"):
        resolve_ghn(f"{server}/good.pt", progress=False)
    result = cli("-q", "predict", "--arch", "timm:test_resnet", "--ghn", f"{server}/good.pt", "-o", tmp_path / "x.st")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot use the download folder" in result.stderr
