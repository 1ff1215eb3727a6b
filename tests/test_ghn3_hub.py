"""GHN-3 registry entries on the Hugging Face Hub: fetched through a fake HF cache, never the network."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from safetensors import safe_open

from ghnorth_cli.ghn.hub import HubFile
from ghnorth_cli.ghn.io import CONFIG_KEY, read_ghn_file
from ghnorth_cli.ghn.registry import REGISTRY, GHNNotAvailableError, PretrainedGHN, cached_file, resolve_ghn
from test_ghn3_file import GHN3_DIR, SMALL, random_state, write_joblib_like

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "SamsungSAILMontreal/ghn3"


@pytest.fixture
def home(monkeypatch, tmp_path: Path) -> Path:
    """An empty ghnorth cache and an empty Hugging Face cache, both offline unless a test says otherwise."""
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "ghnorth"))
    monkeypatch.delenv("GHNORTH_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def put_in_hf_cache(cache: Path, filename: str, content: Path) -> Path:
    """Lay out ``content`` as ``REPO@main/filename`` the way huggingface_hub's cache does."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    target = repo / "snapshots" / COMMIT / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(content.resolve())
    return target


def small_entry(*, size: int | None = None, sha256: str | None = None) -> PretrainedGHN:
    hub = HubFile(REPO, "small.pt", "main", size=size, sha256=sha256)
    return PretrainedGHN(name="small3", filename="small.pt", url=hub.url, git_blob_id=None, config=SMALL,
                         dataset="imagenet", img_size=224, description="small GHN-3 for tests", hub=hub)


def test_ghn3_entries_are_explicit() -> None:
    """The four released GHN-3s, with the fixture README's configs and parameter counts."""
    expected = {"ghn3-t": ("ghn3tm8.pt", 64, 3, 8, 6_906_632), "ghn3-s": ("ghn3sm8.pt", 128, 5, 16, 35_810_368),
                "ghn3-l": ("ghn3lm8.pt", 256, 12, 16, 214_668_960),
                "ghn3-xl": ("ghn3xlm16.pt", 384, 24, 16, 654_365_184)}
    for name, (filename, hid, layers, heads, n_params) in expected.items():
        entry = REGISTRY[name]
        assert entry.hub == HubFile(REPO, filename, "main", size=entry.size) and entry.filename == filename
        cfg = entry.config
        assert cfg.is_ghn3 and (cfg.hid, cfg.layers, cfg.heads) == (hid, layers, heads)
        assert cfg.max_shape == (hid, hid, 16, 16) and cfg.num_classes == 1000 and cfg.weight_norm and cfg.ve
        assert entry.n_params == n_params and entry.family == "GHN-3"
    assert REGISTRY["ghn3-s"].size == 143_269_744 and REGISTRY["ghn3-l"].size == 858_730_839
    assert REGISTRY["ghn2-imagenet"].family == "GHN-2" and REGISTRY["ghn2-imagenet"].n_params == 2_319_720


def test_fetch_converts_once_and_never_unpickles_again(home: Path, monkeypatch) -> None:
    src = write_joblib_like(home / "small.pt", random_state(SMALL, seed=2))
    put_in_hf_cache(home / "hf", "small.pt", src)
    entry = small_entry(size=src.stat().st_size)
    resolved = resolve_ghn("small3", registry={"small3": entry})
    assert resolved.path == cached_file(entry) == home / "ghnorth" / "ghns" / "small3.safetensors"
    with safe_open(str(resolved.path), "pt") as f:
        meta = f.metadata()
    source = json.loads(meta["ghnorth.ghn.source"])
    assert source["hub_repo"] == REPO and source["hub_revision"] == "main" and source["hub_commit"] == COMMIT
    assert source["format"] == "joblib" and json.loads(meta[CONFIG_KEY]) == SMALL.to_dict()

    def forbidden(*args, **kwargs):
        raise AssertionError("a later load must not download or unpickle")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    monkeypatch.setattr("ghnorth_cli.ghn.safe_pickle.load_state_dict_pickle", forbidden)
    again = resolve_ghn("small3", registry={"small3": entry})
    ghn_file = read_ghn_file(again.path)
    assert ghn_file.format == "safetensors" and ghn_file.config == SMALL
    expected = random_state(SMALL, seed=2)
    assert all(torch.equal(ghn_file.state_dict[k], v) for k, v in expected.items())


def test_released_ghn3_t_through_the_hf_cache(home: Path) -> None:
    """The fixture in the released file format, placed as ghn3tm8.pt, loads as the ghn3-t entry."""
    if not GHN3_DIR.is_dir():
        pytest.skip(f"GHN-3 parity fixtures not found at {GHN3_DIR}")
    put_in_hf_cache(home / "hf", "ghn3tm8.pt", GHN3_DIR / "ghn3tm8_random.pt")
    resolved = resolve_ghn("ghn3-t")
    ghn_file = read_ghn_file(resolved.path)
    assert ghn_file.config == REGISTRY["ghn3-t"].config and len(ghn_file.state_dict) == 60
    fingerprint = json.loads((GHN3_DIR / "ghn3tm8_random.json").read_text())["tensors"]["embed.weight"]
    assert abs(ghn_file.state_dict["embed.weight"].double().mean().item() - fingerprint["mean"]) < 1e-7


@pytest.mark.parametrize("offline_var", ["HF_HUB_OFFLINE", "GHNORTH_OFFLINE"])
def test_offline_and_not_cached_says_where_to_get_it(home: Path, monkeypatch, offline_var: str) -> None:
    monkeypatch.setenv(offline_var, "1")
    with pytest.raises(GHNNotAvailableError) as info:
        resolve_ghn("ghn3-xl")
    message = str(info.value)
    assert "https://huggingface.co/SamsungSAILMontreal/ghn3/resolve/main/ghn3xlm16.pt" in message
    assert "give its path instead of" in message and "ghnorth ghn convert ghn3xlm16.pt" in message and "\n" not in message
    assert not cached_file(REGISTRY["ghn3-xl"]).exists()


def test_cli_offline_error_is_one_line(cli, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    result = cli("predict", "--arch", "resnet18", "--ghn", "ghn3-t", "-o", out)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("ghnorth: error: GHN 'ghn3-t'"), lines
    assert not out.exists()


def _hub_error(cls: type[Exception], message: str) -> Exception:
    """An instance of a huggingface_hub HTTP error without an HTTP response object."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


@pytest.mark.parametrize("make_error", [
    lambda: hf_errors.LocalEntryNotFoundError("cannot reach the Hub"),
    lambda: _hub_error(hf_errors.RepositoryNotFoundError, "404 Client Error. Repository Not Found"),
    lambda: _hub_error(hf_errors.HfHubHTTPError, "503 Server Error: Service Unavailable\nfor url ..."),
    lambda: ConnectionError("Name or service not known\nmore detail"),
    lambda: OSError(28, "No space left on device"),
], ids=["unreachable", "not-found", "http", "connection", "disk"])
def test_hub_errors_become_one_line(home: Path, monkeypatch, make_error) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        raise make_error()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(GHNNotAvailableError) as info:
        resolve_ghn("ghn3-t")
    assert "\n" not in str(info.value) and "https://huggingface.co/SamsungSAILMontreal/ghn3" in str(info.value)
    assert calls[0]["repo_id"] == REPO and calls[0]["filename"] == "ghn3tm8.pt" and calls[0]["revision"] == "main"
    assert calls[0]["local_files_only"] is False


def test_progress_bar_follows_the_progress_flag(home: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    seen = []

    def fake_download(**kwargs):
        seen.append(kwargs["tqdm_class"])
        raise hf_errors.LocalEntryNotFoundError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    for progress in (True, False):
        with pytest.raises(GHNNotAvailableError):
            resolve_ghn("ghn3-t", progress=progress)
    assert seen[0] is None  # huggingface_hub's own bar
    assert seen[1](total=3).disable


@pytest.mark.parametrize("check", ["size", "sha256"])
def test_a_cached_file_that_is_not_the_release_is_refused(home: Path, check: str) -> None:
    src = write_joblib_like(home / "small.pt", random_state(SMALL))
    put_in_hf_cache(home / "hf", "small.pt", src)
    entry = small_entry(size=src.stat().st_size + 1) if check == "size" else small_entry(sha256="0" * 64)
    with pytest.raises(GHNNotAvailableError, match="not the released file's") as info:
        resolve_ghn("small3", registry={"small3": entry})
    assert f"hf cache rm model/{REPO}" in str(info.value) and not cached_file(entry).exists()


def test_a_file_with_another_config_is_refused(home: Path) -> None:
    """A GHN-3 of another size in the HF cache under a registry name is not converted."""
    other = SMALL.__class__(**{**SMALL.to_dict(), "max_shape": (16, 16, 16, 16), "layers": 1})
    src = write_joblib_like(home / "other.pt", random_state(other))
    put_in_hf_cache(home / "hf", "small.pt", src)
    entry = small_entry()
    with pytest.raises(GHNNotAvailableError, match="not the released one"):
        resolve_ghn("small3", registry={"small3": entry})
    assert not cached_file(entry).exists()


def test_hub_url_resolves_to_the_entry(home: Path) -> None:
    with pytest.raises(GHNNotAvailableError, match="GHN 'ghn3-l'"):
        resolve_ghn(REGISTRY["ghn3-l"].url)


def test_list_shows_size_and_parameters(cli, home: Path) -> None:
    text = cli("ghn", "list").stdout
    xl = next(line for line in text.splitlines() if line.startswith("ghn3-xl "))
    assert "654,365,184" in xl and "~2.6 GB" in xl and "GHN-3" in xl
    assert "143.3 MB" in next(line for line in text.splitlines() if line.startswith("ghn3-s "))
    rows = {r["name"]: r for r in json.loads(cli("ghn", "list", "--json").stdout)["ghns"]}
    assert rows["ghn3-l"]["size_bytes"] == 858_730_839 and rows["ghn3-l"]["n_params"] == 214_668_960
    assert rows["ghn3-t"]["hub"] == {"repo_id": REPO, "filename": "ghn3tm8.pt", "revision": "main"}
    assert rows["ghn2-imagenet"]["family"] == "GHN-2" and rows["ghn2-imagenet"]["hub"] is None


def test_conversion_from_another_revision_is_made_again(home: Path) -> None:
    src = write_joblib_like(home / "small.pt", random_state(SMALL, seed=3))
    put_in_hf_cache(home / "hf", "small.pt", src)
    old = small_entry()
    resolve_ghn("small3", registry={"small3": old})
    pinned = dataclasses.replace(old, hub=dataclasses.replace(old.hub, revision=COMMIT))
    stamp = cached_file(old).stat().st_mtime_ns
    path = resolve_ghn("small3", registry={"small3": pinned}).path  # HF resolves the sha offline too
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["ghnorth.ghn.source"])["hub_revision"] == COMMIT
    assert cached_file(old).stat().st_mtime_ns != stamp


def test_following_the_offline_advice_works(cli, home: Path, tmp_path: Path) -> None:
    """Offline: convert the file by hand where the error says, and the registry name then loads."""
    if not GHN3_DIR.is_dir():
        pytest.skip(f"GHN-3 parity fixtures not found at {GHN3_DIR}")
    dest = cached_file(REGISTRY["ghn3-t"])
    dest.parent.mkdir(parents=True)
    result = cli("ghn", "convert", GHN3_DIR / "ghn3tm8_random.pt", dest)
    assert result.exit_code == 0, result.stderr
    assert resolve_ghn("ghn3-t").path == dest and read_ghn_file(dest).config == REGISTRY["ghn3-t"].config


def test_convert_command_refuses_a_malicious_pickle(cli, tmp_path: Path) -> None:
    import collections
    import pickle

    from test_ghn3_file import _System

    marker, src, dst = tmp_path / "executed", tmp_path / "ghn3xlm16.pt", tmp_path / "ghn3-xl.safetensors"
    src.write_bytes(pickle.dumps(collections.OrderedDict({"w": _System(marker)}), protocol=4))
    result = cli("ghn", "convert", src, dst)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "posix.system" in lines[0], result.stderr
    assert not marker.exists() and not dst.exists() and list(tmp_path.iterdir()) == [src]


def test_convert_command_writes_a_ghn3_in_ghnorth_format(cli, tmp_path: Path) -> None:
    src = write_joblib_like(tmp_path / "ghn3sm.pt", random_state(SMALL, seed=4))
    dst = tmp_path / "ghn3.safetensors"
    result = cli("ghn", "convert", src, dst)
    assert result.exit_code == 0, result.stderr
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "ghnorth.ghn" and json.loads(meta[CONFIG_KEY])["hypernet"] == "transformer"
    assert read_ghn_file(dst).config == SMALL
