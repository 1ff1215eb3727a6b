"""Released GHN-3 files: the restricted unpickler, config inference and the layout check."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pathlib
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from ghnorth_cli.ghn.config import GHNConfig, GHNConfigError
from ghnorth_cli.ghn.ghn3_file import infer_ghn3_config
from ghnorth_cli.ghn.io import GHNFileError, convert_ghn, ghn_tensor_shapes, read_ghn_file
from ghnorth_cli.ghn.safe_pickle import LEGACY_MAGIC, UnsafePickleError, load_state_dict_pickle

GHN3_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ghn3-parity"
SMALL = GHNConfig(max_shape=(16, 16, 11, 11), num_classes=10, hid=16, hypernet="transformer", weight_norm=True,
                  ve=True, layernorm=True, layers=2, heads=8)


@pytest.fixture(scope="module")
def ghn3_dir() -> Path:
    if not GHN3_DIR.is_dir():
        pytest.skip(f"GHN-3 parity fixtures not found at {GHN3_DIR} (they live beside the team's checkout)")
    return GHN3_DIR


def random_state(config: GHNConfig, *, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) for name, shape in ghn_tensor_shapes(config).items()}


def write_joblib_like(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """What ``joblib.dump(state_dict)`` writes: one protocol-4 pickle, tensors pickled by torch."""
    path.write_bytes(pickle.dumps(collections.OrderedDict(state), protocol=4))
    return path


class _Touch:
    """Unpickling this would create a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


class _System:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_reads_the_released_fixture(ghn3_dir: Path) -> None:
    expected = json.loads((ghn3_dir / "ghn3tm8_random.json").read_text())
    ghn_file = read_ghn_file(ghn3_dir / "ghn3tm8_random.pt")
    assert ghn_file.format == "joblib" and ghn_file.sha256 == expected["sha256"]
    cfg = expected["config"]
    assert ghn_file.config == GHNConfig(max_shape=tuple(cfg["max_shape"]), num_classes=cfg["num_classes"],
                                        hid=cfg["hid"], hypernet="transformer", weight_norm=True, ve=True,
                                        layernorm=True, layers=cfg["layers"], heads=cfg["heads"])
    state = ghn_file.state_dict
    assert list(state) == expected["order"] and len(state) == expected["n_tensors"] == 60
    assert sum(t.numel() for t in state.values()) == expected["n_params"]
    for name, fp in expected["tensors"].items():
        t = state[name].double()
        assert list(t.shape) == fp["shape"] and t.dtype == torch.float64 and not state[name].requires_grad
        stats = [t.mean(), t.std(), t.min(), t.max()]
        assert torch.allclose(torch.stack(stats), torch.tensor([fp[k] for k in ("mean", "std", "min", "max")],
                                                                dtype=torch.float64), atol=1e-7, rtol=0), name
        assert torch.allclose(t.flatten()[fp["idx"]], torch.tensor(fp["values"], dtype=torch.float64), atol=1e-7,
                              rtol=0), name
        assert abs(t.abs().sum().item() - fp["abs_sum"]) <= 1e-7 * max(1.0, fp["abs_sum"]), name


def test_layout_of_every_released_size() -> None:
    """The network each released config builds has the released files' parameter counts (fixture README)."""
    counts = {64: 6_906_632, 128: 35_810_368, 256: 214_668_960, 384: 654_365_184}
    for hid, layers in ((64, 3), (128, 5), (256, 12), (384, 24)):
        cfg = GHNConfig(max_shape=(hid, hid, 16, 16), num_classes=1000, hid=hid, hypernet="transformer",
                        weight_norm=True, ve=True, layernorm=True, layers=layers, heads=16 if hid > 64 else 8)
        total = sum(torch.Size(s).numel() for s in ghn_tensor_shapes(cfg).values())
        assert total == counts[hid], hid


def test_infers_the_config_of_a_small_ghn3(tmp_path: Path) -> None:
    state = random_state(SMALL)
    path = write_joblib_like(tmp_path / "small.pt", state)
    ghn_file = read_ghn_file(path)
    assert ghn_file.config == SMALL and list(ghn_file.state_dict) == list(state)
    for name, value in state.items():
        assert torch.equal(ghn_file.state_dict[name], value), name


def test_non_contiguous_and_offset_tensors_are_rebuilt(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32)
    state = {"t": base.view(6, 10).t(), "s": base[7:19].view(3, 4), "h": torch.ones(5, dtype=torch.float16)}
    with (tmp_path / "x.pkl").open("wb") as f:
        pickle.dump(collections.OrderedDict(state), f, protocol=4)
    with (tmp_path / "x.pkl").open("rb") as f:
        got = load_state_dict_pickle(f)
    for name, value in state.items():
        assert torch.equal(got[name], value) and got[name].dtype == value.dtype, name


@pytest.mark.parametrize("change", ["missing", "extra", "shape", "gru"])
def test_tensors_that_do_not_fit_are_refused(tmp_path: Path, change: str) -> None:
    state = random_state(SMALL)
    if change == "missing":
        del state["gnn.1.ff.net.3.bias"]
    elif change == "extra":
        state["gnn.0.attn.extra.weight"] = torch.zeros(3)
    elif change == "shape":
        state["decoder_1d.fc.2.weight"] = torch.zeros(30, 32)
    else:
        state["gnn.gru.weight_ih"] = torch.zeros(3)
    path = write_joblib_like(tmp_path / "bad.pt", state)
    fragment = {"missing": "missing gnn.1.ff.net.3.bias", "extra": "unexpected gnn.0.attn.extra.weight",
                "shape": r"decoder_1d.fc.2.weight has shape \[30, 32\], the config says \[32, 32\]", "gru": "GHN-2 saved in GHN-3"}[change]
    with pytest.raises(GHNFileError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_ghn_file(path)


def test_infer_needs_the_defining_tensors() -> None:
    with pytest.raises(GHNConfigError, match="not a GHN-3 state dict: no embed.weight"):
        infer_ghn3_config({"x": torch.zeros(1)})


@pytest.mark.parametrize("payload", ["touch", "system"])
def test_malicious_pickle_runs_nothing(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "executed"
    evil = (_Touch if payload == "touch" else _System)(marker)
    path = tmp_path / "ghn3tm8.pt"
    path.write_bytes(pickle.dumps(collections.OrderedDict({"embed.weight": evil}), protocol=4))
    with pytest.raises(GHNFileError, match="refusing to load it, nothing in it was run"):
        read_ghn_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("after_header", [False, True])
def test_malicious_storage_record_runs_nothing(tmp_path: Path, after_header: bool) -> None:
    """The legacy storage bytes are pickles too: a payload there is refused as well."""
    marker = tmp_path / "executed"
    header = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, {"little_endian": True}))
    record = (header if after_header else b"") + pickle.dumps(_System(marker), protocol=2)

    class _Record:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (record,))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(collections.OrderedDict({"w": _Record()}), protocol=4))
    with pytest.raises(GHNFileError, match="asks for posix.system"):
        read_ghn_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("offset, size, stride, message", [
    (2, (3,), (1,), "reaches past its storage"),
    (0, (100_000, 100_000), (0, 0), "more elements than its storage"),
])
def test_tensors_outside_their_storage_are_refused(offset, size, stride, message) -> None:
    class _Tensor:
        def __reduce__(self):
            with warnings.catch_warnings():  # torch warns (once) that TypedStorage is deprecated
                warnings.simplefilter("ignore")
                storage = torch.ones(4).storage()  # what torch pickles tensors with
            return (torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, collections.OrderedDict()))

    data = pickle.dumps(collections.OrderedDict({"w": _Tensor()}), protocol=4)
    with pytest.raises(UnsafePickleError, match=message):
        load_state_dict_pickle(io.BytesIO(data))


def test_garbage_after_the_pickle_opcode_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x80\x04\x95" + os.urandom(64))
    with pytest.raises(GHNFileError, match="junk.pt: "):
        read_ghn_file(path)


def test_cli_refuses_a_malicious_ghn_with_one_line(cli, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(collections.OrderedDict({"embed.weight": _Touch(marker)}), protocol=4))
    out = tmp_path / "out.safetensors"
    result = cli("predict", "--arch", "resnet18", "--ghn", path, "-o", out)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("ghnorth: error: "), result.stderr
    assert "pathlib" in lines[0] and "nothing in it was run" in lines[0]
    assert not marker.exists() and not out.exists()


def test_convert_writes_the_ghnorth_format(tmp_path: Path) -> None:
    src = write_joblib_like(tmp_path / "ghn3sm.pt", random_state(SMALL, seed=1))
    dst = tmp_path / "ghn3.safetensors"
    convert_ghn(src, dst)
    a, b = read_ghn_file(src), read_ghn_file(dst)
    assert b.format == "safetensors" and b.config == a.config == SMALL
    assert b.meta["sha256"] == a.sha256 and b.meta["format"] == "joblib"
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 3")  # torch's note on the protocol-3 case
@pytest.mark.parametrize("protocol", [2, 3])
def test_legacy_torch_save_still_goes_to_torch(tmp_path: Path, protocol: int) -> None:
    """A GHN-2 saved in torch's legacy format (any pickle protocol) is read by torch.load(weights_only=True)."""
    from ghn_helpers import TINY_CONFIG, tiny_ghn

    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": tiny_ghn().state_dict(), "config": TINY_CONFIG.to_dict()}, path,
               _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    ghn_file = read_ghn_file(path)
    assert ghn_file.format == "released" and ghn_file.config == TINY_CONFIG


def test_reads_from_a_pipe(tmp_path: Path) -> None:
    """A GHN-3 pickle from a FIFO (e.g. process substitution) is read once, in memory."""
    import threading

    data = pickle.dumps(collections.OrderedDict(random_state(SMALL)), protocol=4)
    fifo = tmp_path / "ghn.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    try:
        ghn_file = read_ghn_file(fifo)
    finally:
        writer.join(timeout=30)
    assert ghn_file.config == SMALL and ghn_file.sha256 == hashlib.sha256(data).hexdigest()


def test_safetensors_whose_header_size_starts_like_a_pickle(tmp_path: Path) -> None:
    """A safetensors header of 128 + 256 k bytes makes the file's first byte 0x80, as a pickle's is."""
    from ghnorth_cli.ghn.io import ghn_bytes

    for pad in range(0, 256, 8):
        data = ghn_bytes(SMALL, random_state(SMALL), source={"pad": "x" * pad})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    path = tmp_path / "g.safetensors"
    path.write_bytes(data)
    assert read_ghn_file(path).format == "safetensors"
