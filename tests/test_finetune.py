"""The fine-tuning library: determinism, resumption, inits, outputs and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir
from ghnorth_cli.errors import CheckpointError, GhnorthError
from ghnorth_cli.finetune import FinetuneConfig, apply_recipe, finetune
from ghnorth_cli.finetune.config import RECIPES


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory) -> Path:
    return make_fashion_dir(tmp_path_factory.mktemp("fashion"))


def tiny(fashion_dir: Path, **changes) -> FinetuneConfig:
    config = FinetuneConfig(
        data="fashion-mnist", data_dir=str(fashion_dir), arch=TINY_ARCH, img_size=TINY_SIZE, small_input=False,
        labels_per_class=4, val_size=6, epochs=2, batch_size=8, lr=0.05, wd=1e-4,
    )
    return config.replace(**changes)


def scores(metrics: dict) -> dict:
    """The numbers that must repeat (no timings)."""
    return {"final": metrics["final"], "best": metrics["best"], "best_epoch": metrics["best_epoch"]}


@pytest.mark.slow
def test_same_seeds_give_the_same_run_and_other_seeds_do_not(fashion_dir: Path) -> None:
    first = finetune(tiny(fashion_dir))
    again = finetune(tiny(fashion_dir))
    other = finetune(tiny(fashion_dir, seed=1))
    assert scores(first.metrics) == scores(again.metrics)
    assert [r["train_loss"] for r in first.epochs] == [r["train_loss"] for r in again.epochs]
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    assert first.epochs[0]["train_loss"] != other.epochs[0]["train_loss"]
    metrics = first.metrics
    assert metrics["dataset"] == {"name": "fashion-mnist", "classes": 3, "train": 12, "val": 6, "test": 12,
                                  "labels_per_class": 4, "data_seed": 0}
    assert metrics["epochs"] == 2 and metrics["images_per_second"] > 0
    assert metrics["model"]["num_classes"] == 3 and metrics["config"]["batch_size"] == 8
    assert "torch" in metrics["versions"]


def test_resume_after_an_interruption_gives_the_uninterrupted_result(fashion_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "run.state.pt"
    config = tiny(fashion_dir, epochs=3, save_every=1, state=str(state), log=str(tmp_path / "log.jsonl"))
    reference = finetune(config.replace(state=str(tmp_path / "other.pt"), log=None))

    def stop_after_epoch_2(record: dict) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(config, on_epoch=stop_after_epoch_2)
    assert state.is_file()
    resumed = finetune(config.replace(resume=True))
    assert scores(resumed.metrics) == scores(reference.metrics)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    with pytest.raises(GhnorthError, match="option lr was 0.05 there, now 0.1"):
        finetune(config.replace(resume=True, lr=0.1))


def test_nan_loss_stops_and_names_the_epoch_and_step(fashion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    with pytest.raises(GhnorthError, match=r"loss is (nan|inf) at epoch \d+, step \d+"):
        finetune(tiny(fashion_dir, lr=1e12, epochs=3, output=str(out)))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_nan_loss_keeps_the_last_saved_state(fashion_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from ghnorth_cli.finetune.state import load_state

    state = tmp_path / "run.state.pt"
    config = tiny(fashion_dir, epochs=3, save_every=1, state=str(state))
    holder = {}

    def poison_after_epoch_1(record: dict) -> None:  # runs after the state of epoch 1 is saved
        if record["epoch"] == 1:
            with torch.no_grad():
                next(holder["model"].parameters()).fill_(float("nan"))

    import ghnorth_cli.finetune.run as run

    class KeepModel(run.Trainer):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            holder["model"] = self.model

    monkeypatch.setattr(run, "Trainer", KeepModel)
    with pytest.raises(GhnorthError, match=r"at epoch 2, step 1; .*; the last good state \(epoch 1\) is kept in"):
        finetune(config, on_epoch=poison_after_epoch_1)
    saved = load_state(state)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_checkpoint_init_replaces_only_the_classifier(fashion_dir: Path, tmp_path: Path) -> None:
    from ghnorth_cli.checkpoint import model_tensors, read_checkpoint, write_checkpoint
    from ghnorth_cli.models import create_model, resolve_spec

    spec = resolve_spec(TINY_ARCH, num_classes=7, img_size=TINY_SIZE, small_input=False)
    tensors, order = model_tensors(create_model(spec, seed=5))
    init = tmp_path / "init.safetensors"
    write_checkpoint(init, tensors, spec=spec, order=order, history=[{"command": "test"}])
    out = tmp_path / "tuned.safetensors"
    result = finetune(tiny(fashion_dir, arch=None, img_size=None, small_input=None, init=str(init),
                           epochs=1, output=str(out)))
    assert result.spec == spec.__class__(**{**spec.to_dict(), "num_classes": 3})
    assert result.metrics["init"]["init_replaced"] == ["fc.weight", "fc.bias"]
    assert result.metrics["init"]["init_loaded"] == len(order) - 2
    tuned = read_checkpoint(out)
    assert tuned.spec.num_classes == 3 and tuned.tensors["fc.weight"].shape[0] == 3
    assert [h["command"] for h in tuned.history] == ["test", "finetune"]
    assert tuned.history[-1]["inputs"]["init"] == read_checkpoint(init).sha256


def test_checkpoint_of_another_architecture_names_the_tensor(fashion_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from ghnorth_cli.models import create_model, resolve_spec

    other = create_model(resolve_spec("timm:test_byobnet", num_classes=3, img_size=TINY_SIZE, small_input=False))
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="tensor '"):
        finetune(tiny(fashion_dir, init=str(path)))


def test_orth_init_differs_from_default(fashion_dir: Path) -> None:
    from ghnorth_cli.finetune.model import build_starting_model

    default = build_starting_model(tiny(fashion_dir), num_classes=3)
    orth = build_starting_model(tiny(fashion_dir, init="orth"), num_classes=3)
    assert orth.loaded and not default.loaded
    name = orth.loaded[0]
    assert not torch.equal(default.model.state_dict()[name], orth.model.state_dict()[name])


def test_pretrained_weights_offline_is_one_clear_error(fashion_dir: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, as offline
    with pytest.raises(GhnorthError, match="timm:test_resnet's weights are not cached and HF_HUB_OFFLINE is set"):
        finetune(tiny(fashion_dir, init="pretrained"))


def test_too_many_labels_per_class(fashion_dir: Path) -> None:
    with pytest.raises(GhnorthError, match="--labels-per-class 13 is more than the 12"):
        finetune(tiny(fashion_dir, labels_per_class=13, val_size=0))


def test_unwritable_outputs_fail_before_training(fashion_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(GhnorthError, match="no such directory"):
        finetune(tiny(fashion_dir, output=str(tmp_path / "missing" / "out.safetensors")))
    with pytest.raises(GhnorthError, match="is a directory"):
        finetune(tiny(fashion_dir, metrics=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder_fails_before_training(fashion_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(GhnorthError, match="not writable"):
        finetune(tiny(fashion_dir, metrics=str(locked / "m.json")))


def test_recipes_and_overrides() -> None:
    values = apply_recipe("resnet50-paper", {"lr": 0.1, "epochs": None})
    assert values["lr"] == 0.1 and values["epochs"] == 300 and values["opt"] == "sgd" and values["batch_size"] == 96
    convnext = RECIPES["convnext_base-paper"].values
    assert (convnext["opt"], convnext["lr"], convnext["wd"], convnext["batch_size"]) == ("adamw", 1e-3, 0.1, 48)
    with pytest.raises(GhnorthError, match="unknown recipe"):
        apply_recipe("nope", {})


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_zero() -> None:
    from ghnorth_cli.finetune.data import Split
    from ghnorth_cli.finetune.trainer import Trainer

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    train = Split(torch.zeros(20, 3, 4, 4, dtype=torch.uint8), torch.zeros(20, dtype=torch.long))
    config = FinetuneConfig(data="x", epochs=3, warmup_epochs=1, batch_size=5, lr=0.1)
    trainer = Trainer(model, config=config, train=train, mean=(0,) * 3, std=(1,) * 3, img_size=4,
                      device=torch.device("cpu"))
    lrs = [trainer.lr()]
    for step in range(1, 13):
        trainer.scheduler.step_update(num_updates=step)
        lrs.append(trainer.lr())
    assert lrs[0] == pytest.approx(0.001) and lrs[4] == pytest.approx(0.1)  # 4 steps per epoch
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5])) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[8] == pytest.approx(0.05) and lrs[12] == pytest.approx(0.0)
    assert type(trainer.optimizer).__name__ == "SGD" and trainer.optimizer.defaults["nesterov"] is False


def test_the_test_set_is_scored_once_when_the_best_epoch_is_the_last(fashion_dir: Path, monkeypatch) -> None:
    """With one epoch (or the best validation at the last), the test set was evaluated twice, same weights."""
    from ghnorth_cli.finetune.trainer import Trainer

    calls: list[int] = []
    evaluate = Trainer.evaluate

    def counting(self, split, *args, **kwargs):
        calls.append(len(split))
        return evaluate(self, split, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", counting)
    result = finetune(tiny(fashion_dir, epochs=1))
    assert calls == [6, 12]  # validation after epoch 1, then the test set once
    metrics = result.metrics
    assert metrics["best_epoch"] == 1
    assert metrics["best"]["test_acc"] == metrics["final"]["test_acc"]
    assert metrics["best"]["test_loss"] == metrics["final"]["test_loss"]
