"""GHN-orth post-processing as a library: parity with the reference, orthogonality, noise, determinism."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ghnorth_cli.inits import as_matrix
from ghnorth_cli.postprocess import PRESETS, PostprocessError, correlation_std, postprocess


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _toy(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Four layers (tall and wide 2-D views, a linear one), biases and a norm, and a classifier."""
    g = _gen(seed)
    shapes = {
        "stem.weight": (32, 3, 3, 3),  # 32 x 27: tall view
        "stem.bias": (32,),
        "block.conv.weight": (16, 32, 3, 3),  # 16 x 288: wide view (transposed)
        "block.norm.weight": (16,),
        "block.proj.weight": (64, 16),
        "wide.weight": (8, 64),
        "fc.weight": (10, 8),
        "fc.bias": (10,),
    }
    tensors = {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}
    return tensors, list(shapes)


# --- parity with the reference (orthogonal re-init on, noise off) --------------------------------------


def _fixture(parity_dir):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = parity_dir / "postprocess" / "squeezenet1_0_ghn2.safetensors"
    with safe_open(str(path), "pt") as handle:
        order = json.loads(handle.metadata()["order"])
    return load_file(str(path)), order


def assert_matches_fingerprints(tensors: dict[str, torch.Tensor], reference: dict) -> None:
    """Shapes, statistics (1e-5; sums 1e-4 relative) and sampled values (1e-5) as in the fixture README."""
    assert sorted(tensors) == sorted(reference)
    for name, ref in reference.items():
        x = tensors[name].detach().double().flatten()
        assert list(tensors[name].shape) == ref["shape"], name
        for stat in ("mean", "std", "min", "max"):
            assert getattr(x, stat)().item() == pytest.approx(ref[stat], abs=1e-5), (name, stat)
        assert x.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=1e-4, abs=1e-5), name
        sampled = x[ref["idx"]]
        torch.testing.assert_close(sampled, torch.tensor(ref["values"], dtype=torch.float64), atol=1e-5, rtol=0)


def determined_indices(weight: torch.Tensor) -> torch.Tensor | None:
    """Flat indices of ``weight`` whose Eq. 2 value the input fixes, or None when all of them are.

    A GHN's tiled channels make the 2-D view rank-deficient. Householder QR then fixes Q's columns
    only up to the first dependent column; that column, and every later one (built orthogonal to
    it), is set by round-off, so it differs between LAPACK builds and CPUs (MKL's AVX2 and AVX-512
    paths differ here). Those entries are checked for orthogonality instead of against the reference.
    """
    matrix, _ = as_matrix(weight.detach().double())
    diag = torch.linalg.qr(matrix).R.diagonal().abs()
    dependent = (diag < 1e-4 * diag.max()).nonzero()
    if len(dependent) == 0:
        return None
    index_view, _ = as_matrix(torch.arange(weight.numel()).reshape(weight.shape))
    return index_view[:, : int(dependent[0])].flatten()


def assert_matches_determined_part(out: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
                                   reference: dict, changed: set[str]) -> None:
    """The fingerprints where the result is fixed by the input; orthogonality where round-off decides."""
    full = {n: r for n, r in reference.items() if n not in changed or determined_indices(inputs[n]) is None}
    assert_matches_fingerprints({n: out[n] for n in full}, full)
    for name in sorted(set(reference) - set(full)):
        ref, x = reference[name], out[name].detach().double()
        keep = set(determined_indices(inputs[name]).tolist())
        picked = [(i, v) for i, v in zip(ref["idx"], ref["values"]) if i in keep]
        got = x.flatten()[[i for i, _ in picked]]
        torch.testing.assert_close(got, torch.tensor([v for _, v in picked], dtype=torch.float64), atol=1e-5, rtol=0)
        view, _ = as_matrix(x)
        torch.testing.assert_close(view.t() @ view, torch.eye(view.shape[1], dtype=torch.float64), atol=1e-5, rtol=0)
        # The norm of an orthonormal-column view does not depend on which orthonormal columns.
        assert (x ** 2).sum().item() == pytest.approx(view.shape[1], rel=1e-5)


# The reference counts layers from 1 and re-initializes those with index >= its `layer`: its 0 means all
# layers, the same as our --orth-from 1.
@pytest.mark.parametrize(("reference_layer", "orth_from"), [(0, 1), (5, 5)])
def test_orthogonal_reinit_matches_reference(parity_dir, reference_layer, orth_from):
    tensors, order = _fixture(parity_dir)
    reference = json.loads((parity_dir / "postprocess" / f"squeezenet1_0_orth_from_{reference_layer}.json").read_text())
    assert reference["beta"] == 0 and reference["orth"] is True
    out, changes = postprocess(tensors, order, orth_from=orth_from, generator=_gen())
    orthogonalized = {c.name for c in changes if c.orthogonalized}
    assert any(determined_indices(tensors[n]) is not None for n in orthogonalized)  # the case this guards
    assert_matches_determined_part(out, tensors, reference["tensors"], orthogonalized)
    for name, ref in reference["tensors"].items():
        assert (not torch.equal(out[name], tensors[name])) == ref["changed"], name
    assert [c.orthogonalized for c in changes].count(True) == len(changes) - orth_from


# --- orthogonality, classifier, what gets noise ------------------------------------------------------------


def test_reinitialized_layers_are_orthogonal():
    tensors, order = _toy()
    out, changes = postprocess(tensors, order, orth_from=1, generator=_gen())
    for change in changes[:-1]:
        assert change.orthogonalized and change.action == "orth"
        view, transposed = as_matrix(out[change.name])
        eye = torch.eye(view.shape[1])
        # as_matrix transposes wide views: Q Q^T = I for those, Q^T Q = I for tall ones
        torch.testing.assert_close(view.t() @ view, eye, atol=1e-5, rtol=0)
        assert transposed == (change.name in ("block.conv.weight", "wide.weight"))


def test_classifier_biases_and_norms_are_never_touched():
    tensors, order = _toy()
    out, changes = postprocess(tensors, order, beta=0.1, orth_from=1, generator=_gen())
    assert changes[-1].name == "fc.weight" and changes[-1].action == "classifier"
    for name in ("fc.weight", "fc.bias", "stem.bias", "block.norm.weight"):
        assert out[name] is tensors[name]


def test_input_is_not_modified_and_order_is_kept():
    tensors, order = _toy()
    before = {k: v.clone() for k, v in tensors.items()}
    out, _ = postprocess(tensors, order, beta=0.5, orth_from=2, generator=_gen())
    assert list(out) == order
    assert all(torch.equal(tensors[k], before[k]) for k in order)


@pytest.mark.parametrize(("noise_layers", "noised"), [("all", [1, 2, 3, 4]), ("from-orth", [3, 4])])
def test_noise_layers_paper_vs_reference(noise_layers, noised):
    tensors, order = _toy()
    out, changes = postprocess(tensors, order, beta=1e-3, orth_from=3, noise_layers=noise_layers, generator=_gen())
    assert [c.index for c in changes if c.noise_std is not None] == noised
    assert [c.action for c in changes][:2] == (["noise"] * 2 if noise_layers == "all" else ["unchanged"] * 2)
    assert [c.action for c in changes][2:] == ["noise+orth", "noise+orth", "classifier"]
    if noise_layers == "from-orth":
        assert out["stem.weight"] is tensors["stem.weight"]


def test_orth_only_leaves_earlier_layers_alone():
    tensors, order = _toy()
    out, changes = postprocess(tensors, order, orth_from=4, generator=_gen())
    assert [c.action for c in changes] == ["unchanged"] * 3 + ["orth", "classifier"]
    assert out["block.proj.weight"] is tensors["block.proj.weight"]


# --- noise -----------------------------------------------------------------------------------------------


def test_correlation_std_is_the_references_statistic():
    for shape in [(16, 32, 3, 3), (300, 20)]:  # wide (transposed view) and tall
        w = torch.randn(shape, generator=_gen(3))
        view, _ = as_matrix(w)
        expected = torch.corrcoef(view).flatten().std().item()
        assert correlation_std(w) == pytest.approx(expected, rel=1e-5)


def test_noise_std_is_within_ten_percent_of_target_on_a_large_layer():
    g = _gen(1)
    tensors = {"big.weight": torch.randn(256, 128, 3, 3, generator=g), "fc.weight": torch.randn(10, 256, generator=g)}
    order = list(tensors)
    beta = 3e-3
    out, changes = postprocess(tensors, order, beta=beta, generator=_gen(2))
    target = beta * correlation_std(tensors["big.weight"])
    assert changes[0].noise_std == pytest.approx(target)
    measured = (out["big.weight"].double() - tensors["big.weight"].double()).std().item()
    assert abs(measured / target - 1) < 0.10
    assert abs((out["big.weight"] - tensors["big.weight"]).mean().item()) < 0.1 * target


def test_noise_breaks_exact_duplicates_before_orthogonalization():
    base = torch.randn(8, 27, generator=_gen(4))
    tensors = {"conv.weight": base.repeat(4, 1).reshape(32, 3, 3, 3), "fc.weight": torch.randn(10, 32)}
    out, _ = postprocess(tensors, list(tensors), beta=1e-2, generator=_gen())
    rows = out["conv.weight"].reshape(32, -1)
    assert torch.unique(rows, dim=0).shape[0] == 32


def test_same_seed_same_result_other_seed_other_result():
    tensors, order = _toy()
    a, _ = postprocess(tensors, order, beta=1e-2, orth_from=3, generator=_gen(7))
    b, _ = postprocess(tensors, order, beta=1e-2, orth_from=3, generator=_gen(7))
    c, _ = postprocess(tensors, order, beta=1e-2, orth_from=3, generator=_gen(8))
    assert all(torch.equal(a[k], b[k]) for k in order)
    assert not torch.equal(a["stem.weight"], c["stem.weight"])


def test_half_precision_weights_keep_their_dtype():
    tensors, order = _toy()
    half = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    out, _ = postprocess(half, order, beta=1e-3, orth_from=1, generator=_gen())
    assert all(out[k].dtype == torch.bfloat16 for k in order)


def test_constant_channels_do_not_poison_the_noise():
    w = torch.randn(16, 40, generator=_gen(5))
    w[3] = 0.0
    tensors = {"lin.weight": w, "fc.weight": torch.randn(4, 16)}
    out, changes = postprocess(tensors, list(tensors), beta=1e-2, generator=_gen())
    assert math.isfinite(changes[0].noise_std) and torch.isfinite(out["lin.weight"]).all()


# --- options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": -1e-5}, "beta must be"),
        ({"beta": math.nan}, "beta must be"),
        ({"orth_from": 0}, "1-based"),
        ({"orth_from": 5}, "beyond"),  # layer 5 of 5 is the classifier
        ({"orth_from": 99}, "beyond"),
        ({"beta": 1e-3, "noise_layers": "from-orth"}, "needs an orth-from"),
        ({"noise_layers": "some"}, "noise layers must be"),
    ],
)
def test_bad_options_raise_one_clear_error(options, message):
    tensors, order = _toy()
    with pytest.raises(PostprocessError, match=message):
        postprocess(tensors, order, generator=_gen(), **options)


def test_presets_hold_the_published_values():
    assert PRESETS["resnet50-paper"].beta == 3e-5 and PRESETS["resnet50-paper"].orth_from == 37
    assert PRESETS["convnext_base-paper"].beta == 3e-5 and PRESETS["convnext_base-paper"].orth_from == 94
    assert all(name == preset.name for name, preset in PRESETS.items())
