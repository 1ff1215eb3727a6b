"""Weight selection (Xu et al., ICLR 2024) with teachers made here: selected tensors are the teacher's slices."""

from __future__ import annotations

import json

import pytest
import torch

from ghnorth_cli.models import classifier_tensor_names, create_model, resolve_spec
from ghnorth_cli.weight_selection import select_uniform, uniform_indices, weight_selection_


def _perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with every float tensor moved off its init, as fine-tuning would."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for value in state.values():
        if value.is_floating_point():
            value.add_(torch.randn(value.shape, generator=gen))
    return state


def _slice(teacher: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Evenly spaced elements along every dimension, by advanced indexing (independent of index_select)."""
    index = [torch.tensor([i * t // s for i in range(s)]) for t, s in zip(teacher.shape, shape)]
    grids = torch.meshgrid(*index, indexing="ij") if index else ()
    return teacher[tuple(grids)] if index else teacher


def test_uniform_indices_are_evenly_spaced_and_inside() -> None:
    assert uniform_indices(8, 4).tolist() == [0, 2, 4, 6]  # i * step when S divides T, as the reference
    assert uniform_indices(384, 192).tolist() == list(range(0, 384, 2))
    assert uniform_indices(7, 3).tolist() == [0, 2, 4]
    assert uniform_indices(10, 10).tolist() == list(range(10))
    for t, s in ((7, 6), (1000, 999), (5, 1)):
        idx = uniform_indices(t, s)
        assert len(set(idx.tolist())) == s and idx.max() < t and bool((idx.diff() >= 1).all())
    with pytest.raises(ValueError):
        uniform_indices(3, 4)


def test_select_uniform_takes_the_slice_in_every_dimension() -> None:
    teacher = torch.arange(8 * 6 * 5 * 5, dtype=torch.float32).reshape(8, 6, 5, 5)
    picked = select_uniform(teacher, (4, 3, 3, 5))
    assert torch.equal(picked, teacher[0::2, 0::2][:, :, [0, 1, 3]])
    with pytest.raises(ValueError):
        select_uniform(teacher, (4, 3, 3))
    with pytest.raises(ValueError):
        select_uniform(teacher, (16, 3, 3, 5))


def test_wider_deeper_convnext_teacher_gives_slices_and_first_blocks() -> None:
    import timm

    # wider, deeper, and with linear MLPs (convnext_tiny's layout) where the student has 1x1 convolutions
    teacher = timm.create_model("convnext_atto", dims=(64, 96, 192, 384), depths=(2, 2, 7, 2), conv_mlp=False,
                                num_classes=10)
    teacher_state = _perturbed(teacher, seed=1)
    student = timm.create_model("convnext_atto", num_classes=10)  # dims (40, 80, 160, 320), depths (2, 2, 6, 2)
    own = {k: v.clone() for k, v in student.state_dict().items()}
    result = weight_selection_(student, teacher_state)
    state = student.state_dict()
    assert result.classifier == ["head.fc.weight", "head.fc.bias"] and not result.unmatched
    assert len(result.selected) == len(state) - 2
    for name in result.selected:
        source = teacher_state[name]
        if source.dim() == 2 and state[name].dim() == 4:  # linear (out, in) as a 1x1 convolution
            source = source[:, :, None, None]
        assert torch.equal(state[name], _slice(source, tuple(state[name].shape))), name
    # concretely: 40 of 64 stem channels, evenly spaced; a stage's first blocks (first-N layer selection)
    assert torch.equal(state["stem.0.weight"], teacher_state["stem.0.weight"][[i * 64 // 40 for i in range(40)]])
    keep = [i * 192 // 160 for i in range(160)]
    assert torch.equal(state["stages.2.blocks.5.conv_dw.weight"], teacher_state["stages.2.blocks.5.conv_dw.weight"][keep])
    assert state["stages.2.blocks.5.mlp.fc2.weight"].shape == (160, 640, 1, 1)
    assert torch.equal(state["stages.2.blocks.5.mlp.fc2.weight"][:, :, 0, 0],
                       teacher_state["stages.2.blocks.5.mlp.fc2.weight"][keep][:, [i * 768 // 640 for i in range(640)]])
    assert torch.equal(state["head.fc.weight"], own["head.fc.weight"])  # the classifier keeps its own init


def test_unmatched_tensors_keep_the_own_init_and_are_listed() -> None:
    spec = resolve_spec("timm:test_resnet", num_classes=3, img_size=16, small_input=False)
    student = create_model(spec, seed=0)
    own = {k: v.clone() for k, v in student.state_dict().items()}
    teacher = _perturbed(create_model(spec, seed=1), seed=2)
    first = next(iter(teacher))
    del teacher[first]
    conv = next(k for k, v in teacher.items() if v.dim() == 4)
    teacher[conv] = teacher[conv][:, :, :1, :1]  # a 1x1 teacher for a larger kernel
    result = weight_selection_(student, teacher)
    assert set(result.unmatched) == {first, conv}
    assert "not in the teacher" in result.unmatched[first] and "smaller" in result.unmatched[conv]
    for name in (first, conv, *result.classifier):
        assert torch.equal(student.state_dict()[name], own[name])
    assert result.classifier == classifier_tensor_names({k: tuple(v.shape) for k, v in own.items()})


def test_cli_resnet18_from_a_finetuned_resnet34_checkpoint(cli, tmp_path) -> None:
    from ghnorth_cli.checkpoint import model_tensors, read_checkpoint, write_checkpoint

    spec34 = resolve_spec("resnet34", num_classes=10, img_size=32)
    teacher = create_model(spec34, seed=3)
    teacher.load_state_dict(_perturbed(teacher, seed=4))
    tensors, order = model_tensors(teacher)
    write_checkpoint(tmp_path / "r34.safetensors", tensors, spec=spec34, order=order, history=[])
    out = tmp_path / "r18.safetensors"
    result = cli("init", "--arch", "resnet18", "--num-classes", "10", "--img-size", "32", "--method",
                 "weight-selection", "--teacher", tmp_path / "r34.safetensors", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "weight selection from" in result.stderr and "fc.weight, fc.bias kept at its init" in result.stderr
    ckpt = read_checkpoint(out)
    own = create_model(resolve_spec("resnet18", num_classes=10, img_size=32), seed=0).state_dict()
    for name, value in ckpt.tensors.items():
        expected = own[name] if name.startswith("fc.") else tensors[name]  # same widths: the teacher's own
        assert torch.equal(value, expected), name
    meta = ckpt.extra("ghnorth.weight_selection")
    assert meta["classifier"] == ["fc.weight", "fc.bias"] and meta["unmatched"] == {}
    assert meta["selected"] == len(own) - 2
    entry = ckpt.history[-1]
    assert entry["options"]["method"] == "weight-selection" and len(entry["inputs"]) == 1


def test_cli_errors_are_one_line(cli, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hf

    out = tmp_path / "x.safetensors"
    result = cli("init", "--arch", "resnet18", "--method", "weight-selection", "-o", out)
    assert result.exit_code == 1 and result.stderr.startswith("ghnorth: error: --teacher")
    result = cli("init", "--arch", "resnet18", "--method", "weight-selection", "--teacher", tmp_path / "no.safetensors",
                 "-o", out)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "no.safetensors" in result.stderr
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # offline, with an empty cache: no pretrained weights
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = cli("init", "--arch", "resnet18", "--img-size", "32", "--method", "weight-selection", "--teacher",
                 "timm:resnet34", "-o", out)
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("ghnorth: error: ") and "resnet34" in lines[-1]
    assert "Traceback" not in result.stderr and not out.exists()


def test_finetune_and_experiment_take_weight_selection(tmp_path) -> None:
    from safetensors.torch import save_file

    from ghnorth_cli.experiment.initspec import parse_init
    from ghnorth_cli.finetune import FinetuneConfig, finetune
    from finetune_helpers import TINY_ARCH, TINY_SIZE, make_fashion_dir

    spec = resolve_spec(TINY_ARCH, num_classes=3, img_size=TINY_SIZE, small_input=False)
    teacher = _perturbed(create_model(spec, seed=5), seed=6)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.items()}, str(path))  # plain safetensors, no metadata
    init = parse_init(f"weight-selection:{path}")
    assert init.label == "weight-selection:teacher" and init.finetune_init == f"weight-selection:{path}"
    config = FinetuneConfig(data="fashion-mnist", data_dir=str(make_fashion_dir(tmp_path / "fmnist")),
                            arch=TINY_ARCH, init=init.finetune_init, img_size=TINY_SIZE, small_input=False,
                            epochs=1, batch_size=8, labels_per_class=2, lr=0.0)
    result = finetune(config)
    assert result.metrics["init"]["method"] == "weight-selection"
    state = result.model.state_dict()
    classifier = result.metrics["init"]["init_replaced"]
    weights = [k for k in state if k.endswith(".weight") and k not in classifier and state[k].dim() == 4]
    assert weights and all(torch.equal(state[k], teacher[k]) for k in weights)  # lr 0: still the teacher's
    with pytest.raises(Exception, match="weight-selection:T needs a teacher"):
        FinetuneConfig(data="fashion-mnist", init="weight-selection:")
    assert json.dumps(result.metrics["init"])  # plain JSON for --metrics


def test_experiment_stops_before_any_run_when_the_teacher_cannot_be_had(cli, tmp_path) -> None:
    result = cli("experiment", "run", "-o", tmp_path / "e", "-a", "timm:test_resnet", "--data", "fashion-mnist",
                 "--init", f"weight-selection:{tmp_path / 'missing.safetensors'}", "--seeds", "1")
    assert result.exit_code == 1 and result.stderr.splitlines()[-1].startswith("ghnorth: error: ")
    assert "missing.safetensors" in result.stderr and not list((tmp_path / "e" / "runs").glob("*/metrics.json"))
