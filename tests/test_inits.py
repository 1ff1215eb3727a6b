import pytest
import torch

from ghnorth_cli.inits import as_matrix, init_model_, orthogonalize
from ghnorth_cli.models import create_model, resolve_spec


@pytest.mark.parametrize("shape", [(64, 3, 3, 3), (16, 64, 3, 3), (10, 512), (512, 10), (32, 1, 7, 7)])
def test_orthogonalize_gives_orthonormal_columns(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    q = orthogonalize(w)
    assert q.shape == w.shape and q.dtype == w.dtype
    m, _ = as_matrix(q)
    torch.testing.assert_close(m.t() @ m, torch.eye(m.shape[1]), atol=1e-5, rtol=0)


def test_orthogonalize_keeps_the_sign_convention():
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = orthogonalize(w)
    r = q.t() @ w  # w = q r with r upper triangular and a positive diagonal
    assert (torch.diagonal(r) > 0).all()
    torch.testing.assert_close(torch.triu(r), r, atol=1e-10, rtol=0)


def _model():
    return create_model(resolve_spec("torchvision:resnet18", num_classes=10, img_size=32), seed=0)


def test_orth_init_leaves_classifier_and_norms():
    model, ref = _model(), _model()
    changed = init_model_(model, method="orth", generator=torch.Generator().manual_seed(0))
    assert len(changed) == 20 and "fc.weight" not in changed
    assert torch.equal(model.fc.weight, ref.fc.weight) and torch.equal(model.bn1.weight, ref.bn1.weight)
    assert not torch.equal(model.conv1.weight, ref.conv1.weight)
    m, _ = as_matrix(model.layer1[0].conv1.weight.detach())
    torch.testing.assert_close(m.t() @ m, torch.eye(m.shape[1]), atol=1e-5, rtol=0)


def test_default_init_changes_nothing_and_orth_is_seeded():
    model, ref = _model(), _model()
    assert init_model_(model, method="default", generator=torch.Generator()) == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    a, b = _model(), _model()
    init_model_(a, method="orth", generator=torch.Generator().manual_seed(5))
    init_model_(b, method="orth", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cli_init_says_what_it_changed(cli, tmp_path) -> None:
    """`init --method default` said "0 tensors initialized", as if nothing had been written."""
    args = ("init", "--arch", "resnet18", "--num-classes", "10", "--img-size", "32", "--threads", "1")
    default = cli(*args, "--method", "default", "-o", tmp_path / "rand.safetensors")
    assert default.exit_code == 0, default.stderr
    assert "all at the model's own init" in default.stderr and "0 tensors" not in default.stderr
    orth = cli(*args, "--method", "orth", "-o", tmp_path / "orth.safetensors")
    assert orth.exit_code == 0, orth.stderr
    assert "20 of 122 tensors changed from the model's own init" in orth.stderr
