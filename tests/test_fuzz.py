"""Issue 12 req 8: malformed files and hostile option values through every command that reads them.

A seeded generator (``random.Random(SEED)``) builds a few hundred cases from valid files: safetensors
framing and header entries, every ``ghnorth.*`` metadata key, GHN files (released ``torch.save``
layout and ghnorth's safetensors layout, pickle payloads included) and option values. Every case
must end with exactly one ``ghnorth: error:`` line as the last stderr line, a non-zero exit, no
traceback, no file left beside the inputs, no pickle payload run, and bounded memory.
"""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import struct
from pathlib import Path

import pytest
import torch

from finetune_helpers import make_fashion_dir
from ghn_helpers import TINY_CONFIG, tiny_ghn
from ghnorth_cli.cli.app import INTERNAL_ERROR

SEED = 20261130
ARCH = "timm:test_resnet"
MAX_RSS_GROWTH_KB = 2 * 2**20  # 2 GB over the whole suite: no case may allocate without bound


# --- building and taking apart safetensors files ---------------------------------------------------


def _split(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _join(header, body: bytes) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


class Runner:
    """Runs cases in one folder and records every broken promise."""

    def __init__(self, cli, folder: Path) -> None:
        self.cli, self.folder, self.failures, self.count = cli, folder, [], 0
        self.marker = folder / "PWNED"
        self.out = folder / "out.safetensors"
        self.keep = set()

    def input(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        self.keep.add(path.name)
        return path

    def run(self, label: str, *args, stdin: bytes | None = None) -> None:
        self.count += 1
        result = self.cli(*args, input=stdin)
        err = result.stderr.strip().splitlines()
        errors = [line for line in err if line.startswith("ghnorth: error: ")]
        problems = []
        if result.exit_code == 0:
            problems.append("exit 0")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"raised {type(result.exception).__name__}: {result.exception}")
        if "Traceback" in result.stderr:
            problems.append("traceback")
        if len(errors) != 1 or not err or err[-1] != errors[0]:
            problems.append(f"stderr is not one final error line: {err[-3:]}")
        elif INTERNAL_ERROR in errors[0]:
            problems.append(f"unforeseen exception: {errors[0]}")
        left = sorted(p.name for p in self.folder.iterdir() if p.name not in self.keep)
        if left:
            problems.append(f"left {left}")
            for name in left:
                (self.folder / name).unlink()
        if self.marker.exists():
            problems.append("a pickle payload ran")
        if problems:
            self.failures.append(f"{label}: {'; '.join(problems)} [{' '.join(map(str, args))}]")

    def check(self, minimum: int) -> None:
        assert not self.failures, f"{len(self.failures)} of {self.count} cases failed:\n" + "\n".join(self.failures[:40])
        assert self.count >= minimum


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A valid checkpoint, a valid GHN (both layouts) and a tiny Fashion-MNIST folder."""
    from typer.testing import CliRunner

    from ghnorth_cli.cli import app
    from ghnorth_cli.ghn.io import ghn_bytes

    folder = tmp_path_factory.mktemp("fuzz-base")
    ckpt = folder / "valid.safetensors"
    result = CliRunner().invoke(app, ["init", "--arch", ARCH, "--num-classes", "10", "-o", str(ckpt)])
    assert result.exit_code == 0, result.stderr
    embeddings, graph = folder / "emb.json", folder / "graph.json"
    for args in (["embed", "--ghn", "ghn2-fmnist-tiny", "-a", ARCH, "-o", str(embeddings)],
                 ["graph", "-a", ARCH, "-o", str(graph)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
    state = tiny_ghn().state_dict()
    return {"embeddings": embeddings.read_text(), "graph": graph.read_text(), "ckpt": ckpt.read_bytes(), "ghn_state": state, "ghn_config": TINY_CONFIG.to_dict(),
            "ghn_safetensors": ghn_bytes(TINY_CONFIG, state), "fashion": make_fashion_dir(folder / "fmnist")}


@pytest.fixture
def runner(cli, tmp_path, monkeypatch) -> Runner:
    import typer.testing

    from ghnorth_cli.cli import app

    command = typer.testing._get_command(app)  # built once: typer rebuilds it on every invoke otherwise
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)
    monkeypatch.setenv("GHNORTH_HOME", str(tmp_path / "home-unused"))
    monkeypatch.setenv("GHNORTH_OFFLINE", "1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return Runner(cli, work)


def _checkpoint_commands(path: Path, out: Path, fashion: Path) -> list[tuple[str, ...]]:
    return [
        ("info", path),
        ("postprocess", path, "-o", out, "--beta", "0.1"),
        ("analyze", path),
        ("finetune", "--data", "fashion-mnist", "--data-dir", fashion, "--init", path, "--epochs", "1",
         "--img-size", "16", "-o", out),
    ]


# --- cases ---------------------------------------------------------------------------------------


_JUNK = [None, True, 5, -1, 1.5, "x", "", [], {}, [1, "a"], {"a": 1}]


def _header_cases(rng: random.Random, data: bytes) -> list[tuple[str, bytes]]:
    header, body = _split(data)
    names = [k for k in header if k != "__metadata__"]
    cases: list[tuple[str, bytes]] = []
    for value in ([], 5, "x", None, True):
        cases.append((f"header is {value!r}", _join(value, body)))
    for _ in range(20):
        h = copy.deepcopy(header)
        h[rng.choice(names)] = rng.choice([[], 5, "x", None, {}, {"dtype": "F32"}])
        cases.append(("entry not an object", _join(h, body)))
    fields = {
        "dtype": ["F33", 5, None, "", "I8"],
        "shape": [[-1], [1.5], "x", [2**70], [], [0], [3, 3, 3, 3, 3]],
        "data_offsets": [[5, 1], [0], [0, 2**62], ["a", 1], [0, len(body) + 8], None],
    }
    for _ in range(60):
        h = copy.deepcopy(header)
        name, field = rng.choice(names), rng.choice(list(fields))
        h[name][field] = rng.choice([v for v in fields[field] if v != header[name][field]])
        cases.append((f"entry {field}", _join(h, body)))
    for value in ([], 5, "x", {"format": 5}, {"ghnorth.model": ["x"]}):
        h = copy.deepcopy(header)
        h["__metadata__"] = value
        cases.append((f"__metadata__ {value!r}", _join(h, body)))
    raw = _join(header, body)
    for size in (0, 1, 7, 2**63, 2**64 - 1, len(raw), rng.randrange(9, 2**40)):
        cases.append((f"size prefix {size}", struct.pack("<Q", size) + raw[8:]))
    for _ in range(30):
        cases.append(("truncated", raw[: rng.randrange(0, len(raw) - 1)]))
    for _ in range(6):
        h = copy.deepcopy(header)
        del h[rng.choice(names)]
        cases.append(("tensor entry removed", _join(h, body)))
    cases.append(("empty", b""))
    cases.append(("zeros", bytes(4096)))
    cases.append(("random bytes", rng.randbytes(5000)))
    return cases


def _meta(header: dict, key: str, value) -> dict:
    h = copy.deepcopy(header)
    h["__metadata__"][key] = value
    return h


def _metadata_cases(rng: random.Random, data: bytes) -> list[tuple[str, bytes]]:
    header, body = _split(data)
    meta = header["__metadata__"]
    model = json.loads(meta["ghnorth.model"])
    order = json.loads(meta["ghnorth.order"])
    cases: list[tuple[str, dict]] = []
    for version in ("2", "", "1.0", "01"):
        cases.append((f"format_version {version!r}", _meta(header, "ghnorth.format_version", version)))
    for key in ("ghnorth.model", "ghnorth.order", "ghnorth.history", "ghnorth.format_version"):
        h = copy.deepcopy(header)
        del h["__metadata__"][key]
        cases.append((f"{key} missing", h))
    for key in ("ghnorth.model", "ghnorth.order", "ghnorth.history", "ghnorth.note", "ghnorth.classifier"):
        cases.append((f"{key} broken JSON", _meta(header, key, meta.get(key, "{}")[:-1] or "{")))
    for key, right in (("ghnorth.model", dict), ("ghnorth.order", list), ("ghnorth.history", list)):
        for value in _JUNK:
            if not isinstance(value, right) or value == right() and key != "ghnorth.history":
                cases.append((f"{key} = {value!r}", _meta(header, key, json.dumps(value))))
    bad_fields = {
        "num_classes": [-5, 0, 10**9, "10", True, 10.5, None, 999],
        "img_size": [0, 7, 10**9, "224", 1.5, None, -32],
        "small_input": ["false", "true", 0, 1, None],
        "source": ["x", "", 5, None, "TIMM"],
        "name": ["resnet18", "", "no_such_model", 5, "../x", "vit_base_patch16_224"],
    }
    for _ in range(60):
        field = rng.choice(list(bad_fields))
        m = dict(model, **{field: rng.choice(bad_fields[field])})
        cases.append((f"model {field}={m[field]!r}", _meta(header, "ghnorth.model", json.dumps(m))))
    cases.append(("model extra field", _meta(header, "ghnorth.model", json.dumps(dict(model, extra=1)))))
    cases.append(("model field missing", _meta(header, "ghnorth.model",
                                              json.dumps({k: v for k, v in model.items() if k != "name"}))))
    shuffled = order[:]
    while shuffled == order:
        rng.shuffle(shuffled)
    for label, value in (("reversed", order[::-1]), ("shuffled", shuffled), ("one missing", order[1:]),
                         ("duplicate", order + order[:1]), ("ints", list(range(len(order)))),
                         ("swapped", [order[1], order[0], *order[2:]])):
        cases.append((f"order {label}", _meta(header, "ghnorth.order", json.dumps(value))))
    for value in ([5], ["x"], [None]):
        cases.append((f"history {value!r}", _meta(header, "ghnorth.history", json.dumps(value))))
    return [(label, _join(h, body)) for label, h in cases]


def _nonfinite_cases(rng: random.Random, data: bytes) -> list[tuple[str, bytes]]:
    header, body = _split(data)
    floats = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"
              and v["data_offsets"][1] > v["data_offsets"][0]]
    cases = []
    for _ in range(12):
        name = rng.choice(floats)
        start, end = header[name]["data_offsets"]
        at = start + 4 * rng.randrange((end - start) // 4)
        value = rng.choice([float("nan"), float("inf"), float("-inf")])
        cases.append((f"{value} in {name}", _join(header, body[:at] + struct.pack("<f", value) + body[at + 4 :])))
    return cases


def test_malformed_checkpoints(runner, base) -> None:
    rng = random.Random(SEED)
    cases = _header_cases(rng, base["ckpt"]) + _metadata_cases(rng, base["ckpt"])
    for i, (label, data) in enumerate(cases):
        path = runner.input(f"case{i}.safetensors", data)
        commands = _checkpoint_commands(path, runner.out, base["fashion"])
        runner.run(label, *commands[i % len(commands)])
        if i % 7 == 0:
            runner.run(f"{label} (stdin)", "info", "-", stdin=data)
        path.unlink()
        runner.keep.discard(path.name)
    for i, (label, data) in enumerate(_nonfinite_cases(rng, base["ckpt"])):
        path = runner.input(f"nan{i}.safetensors", data)
        runner.run(label, *_checkpoint_commands(path, runner.out, base["fashion"])[1 + i % 3])
    runner.check(minimum=290)


class Payload:
    """Unpickling this would create the marker file: it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _released(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _ghn_cases(rng: random.Random, base: dict, marker: Path) -> list[tuple[str, bytes]]:
    config, state = base["ghn_config"], base["ghn_state"]
    good = {"config": config, "state_dict": state, "epoch": 1}
    cases: list[tuple[str, bytes]] = []
    bad_config = {"weight_norm": ["no", 0, None], "hid": [40000, 6, -4, "32", 32.0, True],
                  "max_shape": [[8, 8, 3], ["8", 8, 3, 3], [0, 8, 3, 3], [8, 8, 3, 5], 8],
                  "num_classes": [-1, 0, "10", 10**9], "hypernet": ["x", 5], "unknown_key": [1]}
    for _ in range(40):
        key = rng.choice(list(bad_config))
        cases.append((f"config {key}", _released(dict(good, config=dict(config, **{key: rng.choice(bad_config[key])})))))
    for value in (5, [1], "x", None):
        cases.append((f"config {value!r}", _released(dict(good, config=value))))
        cases.append((f"state_dict {value!r}", _released(dict(good, state_dict=value))))
    names = list(state)
    for _ in range(20):
        s = dict(state)
        name = rng.choice(names)
        choice = rng.randrange(4)
        if choice == 0:
            s[name] = 5
        elif choice == 1:
            del s[name]
        elif choice == 2:
            s[name] = torch.zeros(3, 3)
        else:
            s[name] = s[name].clone().fill_(float("nan"))
        cases.append((f"state_dict mutation {choice}", _released(dict(good, state_dict=s))))
    cases.append(("pickle payload at the top", _released(Payload(marker))))
    cases.append(("pickle payload in the config", _released(dict(good, config=Payload(marker)))))
    cases.append(("pickle payload in the state", _released(dict(good, state_dict={"x": Payload(marker)}))))
    cases.append(("not a dict", _released([1, 2, 3])))
    cases.append(("keys missing", _released({"state_dict": state})))
    raw = _released(good)
    for _ in range(8):
        cases.append(("zip truncated", raw[: rng.randrange(1, len(raw) - 1)]))
    cases.append(("zip magic then junk", b"PK\x03\x04" + rng.randbytes(3000)))
    cases.append(("pickle magic then junk", b"\x80\x02" + rng.randbytes(3000)))
    st_header, st_body = _split(base["ghn_safetensors"])
    for value in ("{", "5", "[]", json.dumps(dict(config, hid=40000)), json.dumps(dict(config, ve="yes"))):
        cases.append((f"safetensors config {value[:20]}", _join(_meta(st_header, "ghnorth.ghn.config", value), st_body)))
    h = copy.deepcopy(st_header)
    h["__metadata__"] = ["x"]
    cases.append(("safetensors __metadata__ list", _join(h, st_body)))
    return cases


def test_malformed_ghn_files(runner, base) -> None:
    rng = random.Random(SEED + 1)
    for i, (label, data) in enumerate(_ghn_cases(rng, base, runner.marker)):
        path = runner.input(f"ghn{i}.pt", data)
        commands = [("predict", "-a", ARCH, "--ghn", path, "-o", runner.out),
                    ("ghn", "convert", path, runner.out),
                    ("embed", "--ghn", path, "-a", ARCH, "-o", runner.out)]
        runner.run(label, *commands[i % len(commands)])
    runner.check(minimum=80)


def test_hostile_option_values(runner, base) -> None:
    path = runner.input("valid.safetensors", base["ckpt"])
    fashion = base["fashion"]
    finetune = ("finetune", "--data", "fashion-mnist", "--data-dir", fashion, "--init", path, "-o", runner.out)
    hostile = {
        ("postprocess", path, "-o", runner.out): {
            "--beta": ["nan", "inf", "-1", "1e300", "x", ""], "--orth-from": ["0", "-1", str(10**30), "x", "99"],
            "--seed": [str(2**70), str(-(2**70)), "x", "1.5", "nan"], "--img-size": ["0", str(10**9), "-3", "nan"],
            "--num-classes": ["0", "-5", str(10**9), "7"], "--noise-layers": ["some", ""],
            "--preset": ["x"], "--report": [str(runner.out), "-", "/"],
        },
        finetune: {
            "--lr": ["-1", "nan", "inf"], "--wd": ["-1", "nan"], "--clip-grad": ["-1", "-inf"], "--epochs": ["0", "-1"],
            "--val-size": ["nan", "-1", "inf"], "--crop-padding": ["100000", "-1"], "--label-smoothing": ["2", "nan"],
            "--device": ["tpu", "cuda:x", ""], "--batch-size": ["0"], "--img-size": [str(10**9), "0"],
            "--seed": [str(2**64)], "--metrics": [str(runner.out)], "--labels-per-class": ["0"],
        },
        ("predict", "-a", ARCH, "-o", runner.out): {
            "--img-size": [str(10**9)], "--device": ["tpu9"], "--num-classes": [str(10**9)], "--seed": ["x"],
        },
        ("train-ghn", "-o", runner.out): {
            "--lr": ["-1", "nan"], "--wd": ["-1"], "--grad-clip": ["-1"], "--hid": ["40000"], "--steps": ["0"],
            "--img-size": [str(10**9)], "--log": [str(runner.out)],
        },
    }
    for command, options in hostile.items():
        for option, values in options.items():
            for value in values:
                runner.run(f"{command[0]} {option} {value!r}", *command, option, value)
    runner.check(minimum=65)


def _json_cases(rng: random.Random, text: str) -> list[tuple[str, bytes]]:
    cases = [(f"top level {value!r}", json.dumps(value).encode()) for value in _JUNK]
    cases += [("not UTF-8", b'{"a": "\xff\xfe"}'), ("NUL bytes", bytes(64))]
    while len(cases) < len(_JUNK) + 14:
        cut = text[: rng.randrange(1, len(text) - 2)]
        try:
            json.loads(cut)
        except ValueError:
            cases.append(("truncated JSON", cut.encode()))
    return cases


def test_malformed_json_inputs(runner, base) -> None:
    rng = random.Random(SEED + 2)
    for i, (label, data) in enumerate(_json_cases(rng, base["embeddings"])):
        runner.run(f"embeddings: {label}", "analyze", "--embeddings", runner.input(f"emb{i}.json", data))
    for i, (label, data) in enumerate(_json_cases(rng, base["graph"])):
        runner.run(f"graph: {label}", "embed", "--ghn", "ghn2-fmnist-tiny", "--graph",
                   runner.input(f"graph{i}.json", data), "-o", runner.out)
    runner.run("endless text input", "analyze", "--embeddings", "/dev/zero")
    runner.check(minimum=50)


@pytest.fixture(scope="module", autouse=True)
def _memory_stays_bounded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < MAX_RSS_GROWTH_KB, f"peak memory grew by {grown / 2**20:.1f} GB"
