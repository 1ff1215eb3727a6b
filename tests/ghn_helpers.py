"""Tiny GHN-2 files for tests (random weights, the released file layout)."""

from __future__ import annotations

from pathlib import Path

import torch

from ghnorth_cli.ghn.config import GHNConfig
from ghnorth_cli.ghn.network import GHN2

TINY_CONFIG = GHNConfig(max_shape=(8, 8, 3, 3), num_classes=10, hid=8, weight_norm=True, ve=True, layernorm=True)


def tiny_ghn(*, seed: int = 0, config: GHNConfig = TINY_CONFIG) -> GHN2:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ghn = GHN2(config)
        for p in ghn.parameters():  # no tensor keeps a trivial init value
            p.data.add_(0.05 * torch.randn_like(p))
    return ghn.eval()


def write_released_ghn(path: Path, *, seed: int = 0, config: GHNConfig = TINY_CONFIG) -> Path:
    """A GHN file laid out like the released ones (misspelt 'optimzer' key included)."""
    raw_config = config.to_dict()
    raw_config["max_shape"] = tuple(raw_config["max_shape"])
    torch.save({"state_dict": tiny_ghn(seed=seed, config=config).state_dict(), "optimzer": {"state": {}},
                "epoch": 3, "config": raw_config}, path)
    return path


TINY_GHN3_CONFIG = GHNConfig(max_shape=(8, 8, 3, 3), num_classes=10, hid=16, hypernet="transformer", weight_norm=True,
                             ve=True, layernorm=True, layers=2, heads=4)


def tiny_ghn3(*, seed: int = 0, config: GHNConfig = TINY_GHN3_CONFIG):
    """A small random GHN-3 (no tensor at a trivial init value)."""
    from ghnorth_cli.ghn.ghn3 import GHN3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ghn = GHN3(config)
        for p in ghn.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    return ghn.eval()


def write_ghn3(path: Path, *, seed: int = 0, config: GHNConfig = TINY_GHN3_CONFIG) -> Path:
    """A small random GHN-3 in ghnorth's GHN format (safetensors)."""
    from ghnorth_cli.ghn.io import ghn_bytes

    path.write_bytes(ghn_bytes(config, tiny_ghn3(seed=seed, config=config).state_dict()))
    return path
