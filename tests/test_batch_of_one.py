"""Batch norm never sees a batch of one image (issue 11, requirement 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir
from ghnorth_cli.finetune.data import Split, batch_bounds
from ghnorth_cli.ghn_training.evaluate import EvalSettings, accuracy


@pytest.mark.parametrize(("n", "size", "expected"), [
    (5, 2, [(0, 2), (2, 5)]),
    (7, 3, [(0, 3), (3, 7)]),
    (6, 3, [(0, 3), (3, 6)]),
    (1, 4, [(0, 1)]),
    (0, 4, []),
    (257, 256, [(0, 257)]),
])
def test_a_last_batch_of_one_joins_the_one_before(n, size, expected):
    assert batch_bounds(n, size) == expected


class _PooledBN(nn.Module):
    """A classifier whose batch norm sees one value per channel per image: a batch of 1 cannot be normalized."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x).mean((2, 3))))


def test_ghn_eval_accuracy_with_a_last_batch_of_one():
    g = torch.Generator().manual_seed(0)
    test = Split(torch.randint(0, 256, (5, 3, 8, 8), generator=g, dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 0]))
    settings = EvalSettings(num_classes=2, img_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # what a batch of 1 does
        _PooledBN().train()(torch.zeros(1, 3, 8, 8))
    assert 0 <= accuracy(_PooledBN(), test, settings=settings) <= 1


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return make_fashion_dir(tmp_path_factory.mktemp("fm"), train_per_class=3, test_per_class=3)


def _args(fashion, arch: str, *extra: str) -> list[str]:
    return ["finetune", "--data", "fashion-mnist", "--data-dir", str(fashion), "--arch", arch, "--img-size",
            str(TINY_SIZE), "--no-small-input", "--epochs", "1", "--no-progress", *extra]


def test_finetune_batch_size_one_with_batch_norm_is_one_line(cli, fashion, tmp_path):
    out = tmp_path / "o.safetensors"
    result = cli(*_args(fashion, TINY_ARCH, "--batch-size", "1", "-o", out))
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ghnorth: error: --batch-size 1: ResNet has batch norm")
    assert "--batch-size 2 or more" in lines[-1] and not out.exists()


def test_finetune_batch_size_one_without_batch_norm_trains(cli, fashion):
    result = cli("-q", *_args(fashion, "timm:test_vit", "--batch-size", "1", "--json"))
    assert result.exit_code == 0, result.stderr


def test_finetune_evaluation_with_a_last_batch_of_one(fashion):
    from ghnorth_cli.finetune import FinetuneConfig, finetune

    # 9 test images in batches of 4: the last has one image (evaluation uses the running statistics)
    config = FinetuneConfig(data="fashion-mnist", data_dir=str(fashion), arch=TINY_ARCH, img_size=TINY_SIZE,
                            small_input=False, epochs=1, batch_size=4, eval_batch_size=4)
    assert finetune(config).metrics["dataset"]["test"] == 9
