"""train-ghn under torchrun with gloo: 2 processes train the GHN one process trains, and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from finetune_helpers import make_fashion_dir
from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.ghn_training.config import GHNTrainConfig
from ghnorth_cli.ghn_training.distributed import Distributed, from_environment, process_group, share_sizes
from ghnorth_cli.ghn_training.run import train_ghn
from ghnorth_cli.threads import intra_op_threads

OPTIONS = {"arch_space": "tiny-convnets", "hid": 8, "max_shape": (8, 8, 3, 3), "meta_batch": 3, "batch_size": 4,
           "heldout": 2, "steps": 3, "save_every": 1, "device": "cpu"}


def cli_options(config: GHNTrainConfig) -> list[str]:
    return ["-o", config.output, "--data-dir", config.data_dir, "--arch-space", config.arch_space,
            "--hid", str(config.hid), "--max-shape", ",".join(map(str, config.max_shape)),
            "--meta-batch", str(config.meta_batch), "--batch-size", str(config.batch_size),
            "--heldout", str(config.heldout), "--steps", str(config.steps), "--save-every", "1",
            "--device", "cpu", "--threads", "1"]


def torchrun(config: GHNTrainConfig, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ghnorth_cli", "train-ghn", *cli_options(config), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("wrote ") == 1  # rank 0 alone reports (and writes)


def assert_same_ghn(a: str, b: str) -> None:
    mine, theirs = load_file(a), load_file(b)
    assert mine.keys() == theirs.keys()
    for name in mine:
        torch.testing.assert_close(theirs[name], mine[name], rtol=1e-5, atol=1e-6, msg=name)


def training_header(path: str) -> dict:
    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["ghnorth.training"])


def _stop_after_first_step(record):
    if record["step"] == 1:
        raise KeyboardInterrupt


@pytest.mark.slow
def test_two_gloo_processes_train_the_ghn_one_process_trains_and_resume(tmp_path):
    data = make_fashion_dir(tmp_path / "fm", num_classes=3, train_per_class=8, test_per_class=2)
    single = GHNTrainConfig(output=str(tmp_path / "single.safetensors"), data_dir=str(data), **OPTIONS)
    with intra_op_threads(1):
        train_ghn(single)
    # 3 architectures a step over 2 ranks: shares of 2 and 1, weighted so the mean is the same.
    distributed = single.replace(output=str(tmp_path / "ddp.safetensors"))
    torchrun(distributed)
    assert_same_ghn(single.output, distributed.output)
    header = training_header(distributed.output)
    assert (header["world_size"], header["meta_batch_per_rank"], header["steps"]) == (2, [2, 1], 3)
    assert training_header(single.output)["world_size"] == 1
    # Stopped after step 1 by a single process, finished by two: still the same GHN.
    resumed = single.replace(output=str(tmp_path / "resumed.safetensors"))
    with intra_op_threads(1), pytest.raises(KeyboardInterrupt):
        train_ghn(resumed, on_step=_stop_after_first_step)
    torchrun(resumed, "--resume")
    assert_same_ghn(single.output, resumed.output)


def test_shares_of_the_meta_batch():
    assert share_sizes(8, 3) == [3, 3, 2] and share_sizes(4, 4) == [1] * 4 and share_sizes(5, 1) == [5]
    ranks = [Distributed(rank=r, world_size=3) for r in range(3)]
    assert [d.share(list("abcdefgh")) for d in ranks] == [list("abc"), list("def"), list("gh")]
    assert ranks[0].is_main and not ranks[1].is_main and ranks[2].enabled
    assert Distributed().device("auto") == "auto" and Distributed(rank=1, world_size=2).device("cpu") == "cpu"


def test_environment_and_too_small_meta_batch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_environment() == Distributed()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist = from_environment()
    assert (dist.rank, dist.world_size, dist.local_rank) == (2, 4, 0)
    with pytest.raises(GhnorthError, match="--meta-batch 2 is smaller than the 4 processes"):
        with process_group(dist, device="cpu", meta_batch=2):
            pass
