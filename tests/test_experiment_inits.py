"""GHN / GHN-orth inits made once and cached; one tiny real experiment through fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ghnorth_cli.checkpoint import read_checkpoint
from ghnorth_cli.experiment import DataSettings, Experiment, build_report, parse_init, plan_runs, run_experiment
from ghnorth_cli.experiment.executor import FinetuneExecutor
from ghnorth_cli.experiment.initspec import OrthSettings
from ghnorth_cli.experiment.materialize import materialize_init
from ghnorth_cli.inits import as_matrix

ARCH = "timm:test_resnet"  # 0.5M parameters
ORTH = OrthSettings(beta=0.0, orth_from=3)


class ConstantPredictor:
    """Stands in for a GHN: every 2+-D weight becomes 0.01 (rank one, far from orthogonal)."""

    def __init__(self):
        self.calls = 0

    @torch.no_grad()
    def __call__(self, model, *, ghn, img_size):
        self.calls += 1
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.fill_(0.01)
        return {"predicted": "all weights"}


def make(init: str, tmp_path: Path, predictor, *, seed: int = 0) -> Path:
    return materialize_init(parse_init(init), arch=ARCH, img_size=32, seed=seed, data="fashion-mnist",
                            cache_dir=tmp_path / "inits", orth=ORTH, predictor=predictor)


def test_ghn_inits_are_made_once_per_arch_size_init_and_seed(tmp_path):
    predictor = ConstantPredictor()
    first = make("ghn:some-ghn", tmp_path, predictor)
    assert make("ghn:some-ghn", tmp_path, predictor) == first and predictor.calls == 1
    assert make("ghn:some-ghn", tmp_path, predictor, seed=1) != first and predictor.calls == 2
    ckpt = read_checkpoint(first)
    assert ckpt.spec.small_input and ckpt.spec.num_classes == 10 and ckpt.spec.img_size == 32
    assert all(torch.all(ckpt.tensors[n] == 0.01) for n in ckpt.weight_layers())
    assert [h["command"] for h in ckpt.history] == ["predict"]


def test_ghn_orth_post_processes_from_layer_l(tmp_path):
    ckpt = read_checkpoint(make("ghn-orth:some-ghn", tmp_path, ConstantPredictor()))
    layers = ckpt.weight_layers()
    assert torch.all(ckpt.tensors[layers[1]] == 0.01)  # layer 2: before orth_from
    w, _ = as_matrix(ckpt.tensors[layers[3]])  # layer 4: orthogonalized (rows >= columns)
    assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-4)
    assert torch.all(ckpt.tensors[layers[-1]] == 0.01)  # the classifier is never touched
    assert [h["command"] for h in ckpt.history] == ["predict", "postprocess"]


def test_executor_passes_builtin_inits_and_files_through(tmp_path):
    executor = FinetuneExecutor(tmp_path, ORTH, predictor=ConstantPredictor())
    exp = Experiment(archs=(ARCH,), inits=(parse_init("orth"), parse_init("ghn:g")),
                     data=DataSettings("fashion-mnist"), seeds=(0,))
    orth_run, ghn_run = plan_runs(exp)
    assert executor.init_for(orth_run) == "orth"
    assert Path(executor.init_for(ghn_run)).parent == tmp_path / "inits"


def _tiny_imagefolder(root: Path) -> Path:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 10), ("test", 4)):
        for label, cls in enumerate(("dark", "light")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                base = 40 + 150 * label
                pixels = (base + torch.randint(0, 60, (16, 16, 3), generator=generator)).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_tiny_real_experiment_with_the_fixture_ghn(tmp_path, parity_dir):
    data = _tiny_imagefolder(tmp_path / "data")
    ghn = parity_dir / "ghn2_random_cifar10.pt"
    exp = Experiment(archs=(ARCH,), inits=(parse_init("default"), parse_init(f"ghn-orth:{ghn}")),
                     data=DataSettings(f"imagefolder:{data}", labels_per_class=4, val_size=4),
                     grids=({"epochs": (1,), "lr": (0.01,), "img_size": (16,), "batch_size": (4,)},), seeds=(0,),
                     orth=OrthSettings(beta=3e-5, orth_from=10))
    executor = FinetuneExecutor(tmp_path / "exp", exp.orth, device="cpu")
    outcomes = run_experiment(exp, plan_runs(exp), out_dir=tmp_path / "exp", executor=executor)
    assert [o.status for o in outcomes] == ["done", "done"], [o.metrics.get("failed") for o in outcomes]
    report = build_report([tmp_path / "exp"])
    assert len(report.selections) == 2 and all(s.test_mean is not None for s in report.selections)
    assert report.selections[0].num_params > 1e5
    assert len(list((tmp_path / "exp" / "inits").glob("*.safetensors"))) == 1
    assert all((tmp_path / "exp" / "runs" / o.run.run_id / "log.jsonl").is_file() for o in outcomes)
